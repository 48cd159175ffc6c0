"""What every layer shares: the call protocol and the checks that turn bad input into the
library's own ValueError or TypeError (which layer, what it expected, what it got)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import array_api_compat
from array_api_compat import array_namespace, device

from ..backend._arrays import astype, shared_zeros, supplied_dtype, to_backend, to_numpy
from ..backend._config import get_backend
from ..backend._random import uniform
from ..checks import check_array, check_int, check_state_keys, shape_str


def spec_of(x: Any) -> tuple[Any, Any, Any]:
    """(namespace, device, dtype) of an array: what a matching gradient must have."""
    return array_namespace(x), device(x), x.dtype


class Layer:
    """Base class: ``forward`` computes and remembers what ``backward`` needs.

    Layers with parameters list them in ``param_names``; each parameter ``P`` is a plain
    attribute with its gradient in ``dLdP`` (``W``/``dLdW``, ``b``/``dLdb``).
    """

    param_names: tuple[str, ...] = ()
    #: State that is saved and restored but not trained (BatchNorm's running statistics).
    buffer_names: tuple[str, ...] = ()
    #: Training mode (the default) or evaluation mode; see :meth:`train` and :meth:`eval`.
    training: bool = True
    #: Set to False on a network's first layer when nothing needs dL/dA (the input is data):
    #: convolutions then skip that product and ``backward`` returns None, as PyTorch skips
    #: the gradient of an input that does not require one.
    needs_input_grad: bool = True
    #: The dtype of the input the last forward received (its dLdA is returned in it).
    _input_dtype: Any = None

    def __call__(self, *args: Any) -> Any:
        return self.forward(*args)

    @property
    def name(self) -> str:
        return type(self).__name__

    def parameters(self) -> dict[str, Any]:
        """The layer's parameters by name (the arrays themselves, not copies).

        Optimizers update these arrays in place where the library allows it (a parameter
        keeps its identity), and replace them through :meth:`set_parameter` where it does
        not (JAX)."""
        return {p: getattr(self, p) for p in self.param_names}

    def gradients(self) -> dict[str, Any]:
        """The gradients of the last ``backward``, keyed like :meth:`parameters`."""
        return {p: getattr(self, "dLd" + p) for p in self.param_names}

    def set_parameter(self, name: str, value: Any) -> None:
        """Replace the parameter ``name`` by ``value`` (its shape and dtype): how an optimizer
        hands back an updated parameter that could not change in place (a JAX array)."""
        if name not in self.param_names:
            raise ValueError(
                f"{self.name}: set_parameter: no parameter {name!r}; the layer has "
                f"{list(self.param_names)}"
            )
        current = getattr(self, name)
        if tuple(value.shape) != tuple(current.shape) or value.dtype != current.dtype:
            raise ValueError(
                f"{self.name}: set_parameter({name!r}): expected shape "
                f"{shape_str(current.shape)} and dtype {current.dtype}, got "
                f"{shape_str(value.shape)} and {value.dtype}"
            )
        setattr(self, name, value)

    def zero_grad(self) -> None:
        """Set every gradient to zeros.

        Backward replaces the gradients rather than adds into them, so the zeros are made
        once per parameter and shared: read-only views of one zero (no zero fill per step,
        which the next backward would only overwrite)."""
        zeros = getattr(self, "_zero_grads", None)  # not __dict__.setdefault: torch 2.11's
        if zeros is None:  # compiler stops at it (graph break), as seen on a CUDA machine
            zeros = self._zero_grads = {}
        for p in self.param_names:
            grad = getattr(self, "dLd" + p)
            zero = zeros.get(p)
            if zero is None or spec_of(zero) != spec_of(grad) or zero.shape != grad.shape:
                zero = zeros[p] = shared_zeros(grad)
            setattr(self, "dLd" + p, zero)

    def train(self, mode: bool = True) -> Layer:
        """Switch to training mode (``mode=False``: evaluation mode); returns the layer."""
        self.training = bool(mode)
        return self

    def eval(self) -> Layer:
        """Evaluation mode: BatchNorm uses its running statistics, Dropout passes through."""
        return self.train(False)

    def state_dict(self) -> dict[str, Any]:
        """Copies of the parameters and buffers by name, on the layer's backend."""
        names = (*self.param_names, *self.buffer_names)
        return {n: _copy(getattr(self, n)) for n in names}

    def load_state_dict(self, state: Any) -> None:
        """Set parameters and buffers from ``state`` (arrays of any library, e.g. NumPy from a
        checkpoint): same names, same shapes; values are copied into the layer's dtype."""
        load_state(self.name, self, (*self.param_names, *self.buffer_names), state)

    # ------------------------------------------------------------------ argument checks

    def _int_arg(self, arg: str, value: Any, minimum: int = 1) -> int:
        return check_int(self.name, arg, value, minimum)

    def _array_arg(self, x: Any, arg: str, layout: str, ndim: int | Sequence[int]) -> Any:
        return check_array(self.name, x, arg, layout, ndim)

    def _axis_size(self, x: Any, arg: str, axis: int, what: str, expected: int) -> None:
        if x.shape[axis] != expected:
            raise ValueError(
                f"{self.name}: {arg} must have {what}={expected} (axis {axis}), "
                f"got shape {shape_str(x.shape)}"
            )

    def _same_place(
        self,
        x: Any,
        arg: str,
        other: Any,
        other_name: str = "the layer's parameters",
        dtype: bool = True,
    ) -> None:
        """``x`` must live with ``other``: same library, same device (and same dtype)."""
        try:
            array_namespace(x, other)
        except TypeError:
            theirs = (
                f"A is {_a(_library(other))} array"
                if other_name == "A"
                else f"{other_name} are {_library(other)} arrays"
            )
            raise TypeError(
                f"{self.name}: {arg} is {_a(_library(x))} array but {theirs}; move it with "
                "portaconv.to_backend or build the layer under the matching backend"
            ) from None
        if device(x) != device(other):
            raise ValueError(
                f"{self.name}: {arg} is on device {device(x)} but {other_name} "
                f"{'is' if other_name == 'A' else 'are'} on {device(other)}"
            )
        if dtype and x.dtype != other.dtype:
            hint = (
                "cast the input, or build the layer with portaconv.set_backend(dtype=...) "
                "/ PORTACONV_DTYPE"
                if other_name != "A"
                else f"cast {arg} to {other.dtype}"
            )
            raise TypeError(
                f"{self.name}: {arg} has dtype {x.dtype} but {other_name} "
                f"{'has' if other_name == 'A' else 'are'} {other.dtype}; {hint}"
            )

    def _promote(self, A: Any, arg: str = "A", *others: str) -> tuple[Any, ...]:
        """``A``, the parameters and the named ``others`` (attributes), in the dtype forward
        computes in: the array API's type promotion of them all (float32 with float64 is
        float64), as NumPy would compute ``A @ W``.

        ``A`` must live with the parameters (same library, same device); only the floating
        dtype may differ. Arrays already in that dtype are returned as they are. Backward
        casts each gradient back with :meth:`_as_input` and :meth:`_set_grads`, so ``dLdA``
        has A's dtype and ``dLdP`` has P's.
        """
        arrays = [getattr(self, name) for name in (*self.param_names, *others)]
        for p in arrays:
            self._same_place(A, arg, p, dtype=False)
        xp = array_namespace(A)
        dtype = xp.result_type(A, *arrays)
        self._input_dtype = A.dtype
        return tuple(astype(x, dtype) for x in (A, *arrays))

    def _as_input(self, dLdA: Any) -> Any:
        """``dLdA`` in the dtype of the input the last forward received."""
        return dLdA if dLdA is None else astype(dLdA, self._input_dtype)

    def _set_grads(self, **grads: Any) -> None:
        """Store ``dLd<P>`` for each parameter P given, in P's own dtype and shape."""
        for name, grad in grads.items():
            param = getattr(self, name)
            grad = astype(grad, param.dtype)
            if tuple(grad.shape) != tuple(param.shape):
                grad = array_namespace(grad).reshape(grad, param.shape)
            setattr(self, "dLd" + name, grad)

    def _gradient_arg(self, grad: Any, arg: str, expected_shape: Sequence[int], spec: Any) -> Any:
        """Check an upstream gradient against what forward produced: shape, library, device
        and dtype (``spec`` is :func:`spec_of` an array from forward)."""
        xp, dev, dtype = spec
        if not array_api_compat.is_array_api_obj(grad) or isinstance(grad, (int, float, complex)):
            raise TypeError(
                f"{self.name}: {arg} must be an array of shape {shape_str(expected_shape)}, "
                f"got {type(grad).__name__}"
            )
        if array_namespace(grad) is not xp:
            raise TypeError(
                f"{self.name}: {arg} is {_a(_library(grad))} array but forward ran on "
                f"{_namespace_library(xp)} arrays"
            )
        if tuple(grad.shape) != tuple(expected_shape):
            raise ValueError(
                f"{self.name}: {arg} must have the shape of the forward output "
                f"{shape_str(expected_shape)}, got {shape_str(grad.shape)}"
            )
        if device(grad) != dev:
            raise ValueError(
                f"{self.name}: {arg} is on device {device(grad)} but forward ran on {dev}"
            )
        if grad.dtype != dtype:
            raise TypeError(f"{self.name}: {arg} has dtype {grad.dtype} but forward ran in {dtype}")
        return xp

    def _forward_done(self, *attributes: str) -> None:
        if any(getattr(self, a, None) is None for a in attributes):
            raise ValueError(f"{self.name}: backward called before forward")

    # -------------------------------------------------------------------- parameters

    def _init_param(
        self,
        init_fn: Callable[..., Any] | None,
        fn_name: str,
        shape: tuple[int, ...],
        bound: float,
        also: tuple[tuple[int, ...], ...] = (),
    ) -> Any:
        """Create one parameter on the active backend.

        ``init_fn(*shape)`` may return any array (NumPy included) of ``shape`` (or one of the
        shapes in ``also``); a floating array keeps its dtype, anything else takes the
        backend's default. Without one, draw from U(-bound, bound) like PyTorch's default
        (kaiming-uniform with a=sqrt(5) for weights) in the backend's default dtype.
        """
        backend = get_backend()
        if init_fn is None:
            return uniform(shape, bound, backend)
        value = init_fn(*shape)
        if value is None or isinstance(value, (str, bytes)):
            raise TypeError(
                f"{self.name}: {fn_name}{shape_str(shape)} must return an array, "
                f"got {type(value).__name__}"
            )
        try:
            param = to_backend(value, backend, dtype=supplied_dtype(value, backend), copy=True)
        except Exception as exc:
            raise TypeError(
                f"{self.name}: {fn_name}{shape_str(shape)} must return an array, "
                f"got {type(value).__name__}"
            ) from exc
        if tuple(param.shape) not in (shape, *also):
            wanted = " or ".join(shape_str(s) for s in (shape, *also))
            raise ValueError(
                f"{self.name}: {fn_name}{shape_str(shape)} must return an array of shape "
                f"{wanted}, got {shape_str(param.shape)}"
            )
        return param


def load_state(owner: str, target: Any, names: Sequence[str], state: Any) -> None:
    """Copy ``state[name]`` onto ``target.<name>`` for each name, after checking that the keys
    match exactly and each shape agrees with the current value."""
    check_state_keys(owner, names, state)
    values = {}
    for n in names:
        current = getattr(target, n)
        xp = array_namespace(current)
        given = state[n]
        if not array_api_compat.is_array_api_obj(given) or isinstance(given, (int, float)):
            raise TypeError(
                f"{owner}: load_state_dict[{n!r}] must be an array, got {type(given).__name__}"
            )
        value = xp.asarray(to_numpy(given), dtype=current.dtype, device=device(current), copy=True)
        if tuple(value.shape) != tuple(current.shape):
            raise ValueError(
                f"{owner}: load_state_dict[{n!r}] must have shape {shape_str(current.shape)}, "
                f"got {shape_str(value.shape)}"
            )
        values[n] = value
    for n, value in values.items():
        setattr(target, n, value)


def fan_in_bound(fan_in: int) -> float:
    """PyTorch's default init bound for weights and biases: 1 / sqrt(fan_in)."""
    return 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0


def _copy(x: Any) -> Any:
    return array_namespace(x).asarray(x, copy=True)


def _namespace_library(xp: Any) -> str:
    name = xp.__name__
    for key, label in (("torch", "PyTorch"), ("cupy", "CuPy"), ("jax", "JAX"), ("numpy", "NumPy")):
        if key in name:
            return label
    return "array-api-strict" if "array_api_strict" in name else name


def _a(word: str) -> str:
    return ("an " if word[0].lower() in "aeiou" else "a ") + word


def _library(x: Any) -> str:
    for name in ("numpy", "torch", "cupy", "jax"):
        if getattr(array_api_compat, f"is_{name}_array")(x):
            return {"numpy": "NumPy", "torch": "PyTorch", "cupy": "CuPy", "jax": "JAX"}[name]
    module = type(x).__module__.split(".")[0]
    return "array-api-strict" if module == "array_api_strict" else module
