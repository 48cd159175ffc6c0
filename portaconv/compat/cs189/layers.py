"""The package's layers on NHWC arrays, each running portaconv's layer of the same job.

Every layer keeps the package's three dicts: ``parameters`` (the arrays it trains),
``gradients`` (dL/d of each, same keys and shapes, zero after initialisation) and ``cache``
(what ``backward`` needs). ``FullyConnected`` and ``Conv2D`` build their weights on their
first ``forward`` (``_init_parameters(X.shape)``; ``n_in`` is None until then) with the
package's initialisers (:mod:`.weights`, NumPy's global generator), in the namespace, device
and floating dtype of that first input, and apply their activation themselves::

    FullyConnected  X (N, n_in)          W (n_in, n_out)          b (1, n_out)
    Conv2D          X (N, H, W, C_in)    W (kh, kw, C_in, C_out)  b (1, C_out)
                    out = floor((H + 2 pad - kh) / stride) + 1, likewise for W
    Pool2D          X (N, H, W, C) -> (N, H_out, W_out, C), windows over X zero-padded
    Flatten         keep_dim "first": (N, ...) -> (N, rest); "last": (..., C) -> (rest, C)

``pad``: "same" is ``(k - 1) // 2`` zeros on each side (even kernels shrink by one),
"valid" none, an int that many on each side. ``Pool2D`` pools windows of the zero-padded
input as the package defines it: a window's maximum may be a padding zero (never -inf), and
an average counts the padding zeros (PyTorch's ``count_include_pad=True``); any padding is
allowed.

Under the hood: ``FullyConnected`` runs :class:`portaconv.layers.Linear` on ``W`` transposed,
``Conv2D`` :class:`~portaconv.layers.Conv2d` on ``X`` and ``W`` permuted to NCHW (views where
the library has them), ``Pool2D`` :class:`~portaconv.layers.MaxPool2d` or
:class:`~portaconv.layers.AvgPool2d` over the padded input; so every backend and its fast
paths run them. The dicts hold the truth: each ``forward`` reads ``parameters`` afresh, so
the package's in-place update (``layer.parameters["W"] -= delta``) and replacement
(``forward_with_param``) both work.

>>> import numpy as np
>>> from portaconv.compat.cs189.layers import Conv2D
>>> np.random.seed(0)
>>> conv = Conv2D(n_out=4, kernel_shape=(3, 5), activation="relu", stride=3, pad="same")
>>> conv.n_in is None
True
>>> out = conv.forward(np.random.randn(2, 9, 10, 3))
>>> out.shape, conv.parameters["W"].shape, conv.parameters["b"].shape, conv.pad
((2, 3, 4, 4), (3, 5, 3, 4), (1, 4), (1, 2))
>>> conv.backward(np.ones_like(out)).shape, conv.gradients["W"].shape
((2, 9, 10, 3), (3, 5, 3, 4))
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from array_api_compat import array_namespace, device

from ... import layers as _layers
from ...backend import get_backend
from ...checks import check_array, check_int, shape_str
from .activations import initialize_activation
from .utils import unknown_name
from .weights import initialize_weights

__all__ = [
    "Conv2D",
    "Flatten",
    "FullyConnected",
    "Layer",
    "Pool2D",
    "initialize_layer",
]

_NHWC = "(N, H, W, C)"


class Layer(ABC):
    """Abstract class defining the ``Layer`` interface: ``forward(X)``, ``backward(dLdY)``
    and the ``parameters``, ``gradients`` and ``cache`` dicts."""

    def __init__(self) -> None:
        self.activation = None
        self.n_in = None
        self.n_out = None
        self.parameters: dict[str, Any] = {}
        self.cache: dict[str, Any] = {}
        self.gradients: dict[str, Any] = {}

    def __call__(self, X: Any) -> Any:
        return self.forward(X)

    @abstractmethod
    def forward(self, X: Any) -> Any: ...

    def backward(self, dLdY: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} has no backward")

    def clear_gradients(self) -> None:
        """Empty the cache and set every gradient to zeros."""
        self.cache = OrderedDict({key: [] for key in self.cache})
        self.gradients = OrderedDict(
            {key: array_namespace(g).zeros_like(g) for key, g in self.gradients.items()}
        )

    def forward_with_param(self, param_name: str, X: Any) -> Callable[[Any], Any]:
        """A function of one parameter's value: sets ``parameters[param_name]`` to it and
        runs ``forward(X)`` (what :func:`.utils.check_gradients` differentiates)."""

        def inner_forward(param_val: Any) -> Any:
            self.parameters[param_name] = param_val
            return self.forward(X)

        return inner_forward

    def _get_parameters(self) -> list[Any]:
        return list(self.parameters.values())

    def _get_cache(self) -> list[Any]:
        return list(self.cache.values())

    def _get_gradients(self) -> list[Any]:
        return list(self.gradients.values())

    def _forwarded(self, key: str) -> Any:
        """The cached ``key`` of the last forward, or the error of a backward before it."""
        value = self.cache.get(key)
        if value is None or isinstance(value, list):
            raise ValueError(f"{type(self).__name__}: backward called before forward")
        return value

    def _upstream(self, dLdY: Any, shape: tuple[int, ...]) -> None:
        """``dLdY`` must be a float array of the forward output's ``shape``."""
        owner = type(self).__name__
        check_array(owner, dLdY, "dLdY", "(the forward output's shape)", len(shape))
        if tuple(dLdY.shape) != tuple(shape):
            raise ValueError(
                f"{owner}: dLdY must have the forward output's shape {shape_str(shape)}, "
                f"got {shape_str(dLdY.shape)}"
            )


def _pad_pair(owner: str, pad: Any, kernel_shape: tuple[int, int]) -> tuple[int, int]:
    """The package's padding: "same" -> (k - 1) // 2 per axis, "valid" -> 0, an int p -> p."""
    if pad == "same":
        return ((kernel_shape[0] - 1) // 2, (kernel_shape[1] - 1) // 2)
    if pad == "valid":
        return (0, 0)
    if isinstance(pad, (tuple, list)) and len(pad) == 2:  # the resolved form, given back
        return tuple(check_int(owner, f"pad[{i}]", p, minimum=0) for i, p in enumerate(pad))
    if isinstance(pad, str):
        raise ValueError(f"{owner}: pad must be 'same', 'valid' or an integer >= 0, got {pad!r}")
    return (check_int(owner, "pad", pad, minimum=0),) * 2


def _kernel_pair(owner: str, kernel_shape: Any) -> tuple[int, int]:
    if isinstance(kernel_shape, (tuple, list)):
        if len(kernel_shape) != 2:
            raise ValueError(
                f"{owner}: kernel_shape must be an integer or a pair (kh, kw), got {kernel_shape!r}"
            )
        return tuple(check_int(owner, f"kernel_shape[{i}]", k) for i, k in enumerate(kernel_shape))
    k = check_int(owner, "kernel_shape", kernel_shape)
    return (k, k)


def _like_input(value: Any, X: Any | None) -> Any:
    """A drawn NumPy parameter in the namespace, device and floating dtype of ``X`` (without
    ``X``: on the active backend, float64 as drawn)."""
    if X is None:
        backend = get_backend()
        return backend.xp.asarray(value, dtype=backend.xp.float64, device=backend.device)
    xp = array_namespace(X)
    return xp.asarray(value, dtype=X.dtype, device=device(X))


def _zero_padded(xp: Any, A: Any, rows: int, cols: int) -> Any:
    """``A`` (N, C, H, W) with ``rows`` zeros above and below and ``cols`` on each side."""
    n, c, h, w = A.shape
    if rows:
        zeros = xp.zeros((n, c, rows, w), dtype=A.dtype, device=device(A))
        A = xp.concat([zeros, A, zeros], axis=2)
    if cols:
        zeros = xp.zeros((n, c, h + 2 * rows, cols), dtype=A.dtype, device=device(A))
        A = xp.concat([zeros, A, zeros], axis=3)
    return A


def _nchw(xp: Any, X: Any) -> Any:
    return xp.permute_dims(X, (0, 3, 1, 2))


def _nhwc(xp: Any, A: Any) -> Any:
    return xp.permute_dims(A, (0, 2, 3, 1))


class _Trainable(Layer):
    """What ``FullyConnected`` and ``Conv2D`` share: the activation, the initialiser, and
    the bookkeeping between the package's dicts and the portaconv layer that computes."""

    def __init__(self, n_out: int, activation: str, weight_init: str | None) -> None:
        super().__init__()
        self.n_out = check_int(type(self).__name__, "n_out", n_out)
        self.activation = initialize_activation(activation)
        weight_init = "xavier_uniform" if weight_init is None else weight_init
        self.init_weights = initialize_weights(weight_init, activation=activation)
        self._layer: Any = None  # the portaconv layer, built at the first forward

    def _build(self, W: Any, b: Any) -> Any:
        raise NotImplementedError

    def _run(self, A: Any, W: Any, b: Any) -> Any:
        """The portaconv layer's forward of ``A`` with ``W`` and ``b`` in its layout: the
        parameters as they are now (the package updates them in place or replaces them)."""
        if self._layer is None:
            self._layer = self._build(W, b)
        self._layer.W, self._layer.b = W, b
        return self._layer.forward(A)

    def _store(self, W: Any, b: Any) -> None:
        xp = array_namespace(W)
        self._layer = None  # built anew, for these parameters, at the next forward
        self.parameters = OrderedDict({"W": W, "b": b})
        self.cache = OrderedDict({"Z": [], "X": []})
        self.gradients = OrderedDict({"W": xp.zeros_like(W), "b": xp.zeros_like(b)})

    def _check_parameters(self, W_shape: tuple[int, ...]) -> tuple[Any, Any]:
        W, b = self.parameters["W"], self.parameters["b"]
        for key, value, shape in (("W", W, W_shape), ("b", b, (1, self.n_out))):
            if tuple(getattr(value, "shape", ())) != shape:
                raise ValueError(
                    f"{type(self).__name__}: parameters[{key!r}] must have shape "
                    f"{shape_str(shape)}, got {shape_str(getattr(value, 'shape', ()))}"
                )
        return W, b


class FullyConnected(_Trainable):
    """``out = activation(X @ W + b)``: X (N, n_in), W (n_in, n_out), b (1, n_out).

    ``backward(dLdY)`` sets ``gradients["W"] = X^T dLdZ`` and ``gradients["b"]`` (the sum of
    dLdZ over the batch), and returns ``dLdZ W^T``, with dLdZ from the activation."""

    def __init__(self, n_out: int, activation: str, weight_init: str = "xavier_uniform") -> None:
        super().__init__(n_out, activation, weight_init)

    def __repr__(self) -> str:
        return f"FullyConnected(n_out={self.n_out}, activation={self.activation!r})"

    def _init_parameters(self, X_shape: tuple[int, int], X: Any | None = None) -> None:
        """Draw ``W`` (n_in, n_out) with the initialiser and zero ``b`` (1, n_out)."""
        self.n_in = check_int("FullyConnected", "X_shape[1]", X_shape[1])
        W = _like_input(self.init_weights((self.n_in, self.n_out)), X)
        b = array_namespace(W).zeros((1, self.n_out), dtype=W.dtype, device=device(W))
        self._store(W, b)

    def _build(self, W: Any, b: Any) -> Any:
        return _layers.Linear(
            self.n_in, self.n_out, weight_init_fn=lambda *_: W, bias_init_fn=lambda *_: b
        )

    def forward(self, X: Any) -> Any:
        """X (N, n_in) -> activation(X W + b) (N, n_out)."""
        xp = check_array("FullyConnected", X, "X", "(N, n_in)", 2)
        if self.n_in is None:
            self._init_parameters(X.shape, X)
        if X.shape[1] != self.n_in:
            raise ValueError(
                f"FullyConnected: X must have n_in={self.n_in} columns, got shape "
                f"{shape_str(X.shape)}"
            )
        W, b = self._check_parameters((self.n_in, self.n_out))
        Z = self._run(X, xp.matrix_transpose(W), xp.reshape(b, (self.n_out,)))
        self.cache["Z"], self.cache["X"] = Z, X
        return self.activation(Z)

    def backward(self, dLdY: Any) -> Any:
        """dL/d(out) (N, n_out) -> dL/dX (N, n_in); fills ``gradients``."""
        Z = self._forwarded("Z")
        self._upstream(dLdY, Z.shape)
        xp = array_namespace(Z)
        dX = self._layer.backward(self.activation.backward(Z, dLdY))
        self.gradients["W"] = xp.matrix_transpose(self._layer.dLdW)
        self.gradients["b"] = xp.reshape(self._layer.dLdb, (1, self.n_out))
        return dX


class Conv2D(_Trainable):
    """``out = activation(X * W + b)`` (cross-correlation) on NHWC arrays.

    X (N, H, W, C_in), W (kh, kw, C_in, C_out), b (1, C_out), out (N, H_out, W_out, C_out);
    ``kernel_shape`` (kh, kw) (an int: square), ``stride`` an int, ``pad`` "same", "valid"
    or an int. ``pad`` becomes the pair (rows, columns) at initialisation, as the package's.
    """

    def __init__(
        self,
        n_out: int,
        kernel_shape: tuple[int, int],
        activation: str,
        stride: int = 1,
        pad: str | int = "same",
        weight_init: str = "xavier_uniform",
    ) -> None:
        super().__init__(n_out, activation, weight_init)
        self.kernel_shape = _kernel_pair("Conv2D", kernel_shape)
        self.stride = check_int("Conv2D", "stride", 1 if stride is None else stride)
        self.pad = "same" if pad is None else pad
        _pad_pair("Conv2D", self.pad, self.kernel_shape)  # refuse a bad pad now, not later

    def __repr__(self) -> str:
        return (
            f"Conv2D(n_out={self.n_out}, kernel_shape={self.kernel_shape}, "
            f"activation={self.activation!r}, stride={self.stride}, pad={self.pad!r})"
        )

    def _init_parameters(self, X_shape: tuple[int, ...], X: Any | None = None) -> None:
        """Draw ``W`` (kh, kw, C_in, C_out), zero ``b`` (1, C_out), resolve ``pad``."""
        self.n_in = check_int("Conv2D", "X_shape[3]", X_shape[3])
        W = _like_input(self.init_weights((*self.kernel_shape, self.n_in, self.n_out)), X)
        b = array_namespace(W).zeros((1, self.n_out), dtype=W.dtype, device=device(W))
        self._store(W, b)
        self.pad = _pad_pair("Conv2D", self.pad, self.kernel_shape)

    def _build(self, W: Any, b: Any) -> Any:
        self.pad = _pad_pair("Conv2D", self.pad, self.kernel_shape)
        return _layers.Conv2d(
            self.n_in,
            self.n_out,
            kernel_size=self.kernel_shape,
            stride=self.stride,
            padding=self.pad,
            weight_init_fn=lambda *_: W,
            bias_init_fn=lambda *_: b,
        )

    def forward(self, X: Any) -> Any:
        """X (N, H, W, C_in) -> out (N, H_out, W_out, C_out)."""
        xp = check_array("Conv2D", X, "X", _NHWC, 4)
        if self.n_in is None:
            self._init_parameters(X.shape, X)
        if X.shape[3] != self.n_in:
            raise ValueError(
                f"Conv2D: X must have C_in={self.n_in} channels (axis 3, NHWC), got shape "
                f"{shape_str(X.shape)}"
            )
        W, b = self._check_parameters((*self.kernel_shape, self.n_in, self.n_out))
        W_oihw, bias = xp.permute_dims(W, (3, 2, 0, 1)), xp.reshape(b, (self.n_out,))
        Z = _nhwc(xp, self._run(_nchw(xp, X), W_oihw, bias))
        self.cache["Z"], self.cache["X"] = Z, X
        return self.activation(Z)

    def backward(self, dLdY: Any) -> Any:
        """dL/d(out) (N, H_out, W_out, C_out) -> dL/dX (N, H, W, C_in); fills ``gradients``."""
        Z = self._forwarded("Z")
        self._upstream(dLdY, Z.shape)
        xp = array_namespace(Z)
        dZ = self.activation.backward(Z, dLdY)
        dX = _nhwc(xp, self._layer.backward(_nchw(xp, dZ)))
        self.gradients["W"] = xp.permute_dims(self._layer.dLdW, (2, 3, 1, 0))
        self.gradients["b"] = xp.reshape(self._layer.dLdb, (1, self.n_out))
        return dX


class Pool2D(Layer):
    """Max or average pooling of NHWC arrays over ``kernel_shape`` windows every ``stride``
    of the input with ``pad`` zeros on each side (see the module's note on padding).

    X (N, H, W, C) -> (N, H_out, W_out, C), out = floor((H + 2 pad - kh) / stride) + 1.
    ``mode``: "max" (the gradient goes to the window's first maximum, dropped when that is a
    padding zero) or "average" (spread evenly, padding included).
    """

    def __init__(
        self,
        kernel_shape: tuple[int, int] | int,
        mode: str = "max",
        stride: int = 1,
        pad: str | int = 0,
    ) -> None:
        super().__init__()
        self.kernel_shape = _kernel_pair("Pool2D", kernel_shape)
        self.stride = check_int("Pool2D", "stride", 1 if stride is None else stride)
        self.pad = _pad_pair("Pool2D", 0 if pad is None else pad, self.kernel_shape)
        if mode not in ("max", "average"):
            raise ValueError(f"Pool2D: mode must be 'max' or 'average', got {mode!r}")
        self.mode = mode
        pool = _layers.MaxPool2d if mode == "max" else _layers.AvgPool2d
        self._layer = pool(self.kernel_shape, self.stride)
        self.cache = {"X": [], "out_rows": [], "out_cols": []}

    def __repr__(self) -> str:
        return (
            f"Pool2D(kernel_shape={self.kernel_shape}, mode={self.mode!r}, "
            f"stride={self.stride}, pad={self.pad})"
        )

    def forward(self, X: Any) -> Any:
        """X (N, H, W, C) -> pooled (N, H_out, W_out, C)."""
        xp = check_array("Pool2D", X, "X", _NHWC, 4)
        for axis, (n, k, p) in enumerate(zip(X.shape[1:3], self.kernel_shape, self.pad)):
            if n + 2 * p < k:
                raise ValueError(
                    f"Pool2D: kernel_shape={self.kernel_shape} is larger than the padded input "
                    f"(axis {axis + 1}: {n} + 2 * {p}) of X with shape {shape_str(X.shape)}"
                )
        padded = _zero_padded(xp, _nchw(xp, X), *self.pad)
        pooled = _nhwc(xp, self._layer.forward(padded))
        self.cache["X"] = X
        self.cache["out_rows"], self.cache["out_cols"] = pooled.shape[1], pooled.shape[2]
        return pooled

    def backward(self, dLdY: Any) -> Any:
        """dL/d(pooled) (N, H_out, W_out, C) -> dL/dX (N, H, W, C)."""
        X = self._forwarded("X")
        xp = array_namespace(X)
        self._upstream(
            dLdY, (*X.shape[:1], self.cache["out_rows"], self.cache["out_cols"], X.shape[3])
        )
        dX_padded = self._layer.backward(_nchw(xp, dLdY))
        (top, left), (rows, cols) = self.pad, X.shape[1:3]
        return _nhwc(xp, dX_padded[:, :, top : top + rows, left : left + cols])


class Flatten(Layer):
    """Reshape, no copy where the library allows: ``keep_dim`` "first" (N, ...) -> (N, rest),
    "last" (..., C) -> (rest, C), -1 everything into one row (1, size)."""

    def __init__(self, keep_dim: str | int = "first") -> None:
        super().__init__()
        if keep_dim not in ("first", "last", -1):
            raise ValueError(f"Flatten: keep_dim must be 'first', 'last' or -1, got {keep_dim!r}")
        self.keep_dim = keep_dim
        self.cache = {"in_dims": []}

    def __repr__(self) -> str:
        return f"Flatten(keep_dim={self.keep_dim!r})"

    def forward(self, X: Any, retain_derived: bool = True) -> Any:
        xp = check_array("Flatten", X, "X", "(N, ...)", range(1, 64))
        self.cache["in_dims"] = tuple(X.shape)
        if self.keep_dim == -1:
            return xp.reshape(X, (1, -1))
        return xp.reshape(X, (X.shape[0], -1) if self.keep_dim == "first" else (-1, X.shape[-1]))

    def backward(self, dLdY: Any) -> Any:
        in_dims = self._forwarded("in_dims")
        return array_namespace(dLdY).reshape(dLdY, in_dims)


_LAYERS = ("fully_connected", "conv2d", "pool2d", "flatten")


def initialize_layer(
    name: str,
    activation: str | None = None,
    weight_init: str | None = None,
    n_out: int | None = None,
    kernel_shape: tuple[int, int] | None = None,
    stride: int | None = None,
    pad: str | int | None = None,
    mode: str | None = None,
    keep_dim: str = "first",
) -> Layer:
    """The layer called ``name`` ("fully_connected", "conv2d", "pool2d", "flatten") built
    from the arguments it takes; the ones left None take the constructor's default."""
    if name == "fully_connected":
        return FullyConnected(n_out=n_out, activation=activation, weight_init=weight_init)
    if name == "conv2d":
        return Conv2D(
            n_out=n_out,
            activation=activation,
            kernel_shape=kernel_shape,
            stride=stride,
            pad=pad,
            weight_init=weight_init,
        )
    if name == "pool2d":
        return Pool2D(kernel_shape=kernel_shape, mode=mode or "max", stride=stride, pad=pad)
    if name == "flatten":
        return Flatten(keep_dim=keep_dim)
    raise unknown_name("initialize_layer", "layer type", name, _LAYERS)
