"""What every model shares: its layers by name, and everything derived from them.

A model lists its layers with :meth:`Model.named_layers`; from that list come the flat,
dotted names of its parameters (``"layers.0.W"``), their gradients, ``zero_grad``,
``train``/``eval`` and ``state_dict``/``load_state_dict``, the same protocol a single
:class:`~portaconv.layers.Layer` follows. Optimizers and the trainer rely on it alone.

This module also holds the few argument checks the models share, so that every model
reports bad input the same way: which model, what it expected, what it got.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

import array_api_compat

from ..backend import single_threaded_blas
from ..checks import check_state_keys
from ..layers import MaxPool1d, MaxPool2d, ReLU

# ------------------------------------------------------------------ checks shared by the models


def _shape(shape: Any) -> tuple[int, ...]:
    """A shape as a plain tuple of ints (torch.Size and friends print differently)."""
    return tuple(int(n) for n in shape)


def _gradient_shape(model: str, grad: Any, arg: str, expected: tuple[int, ...] | None) -> None:
    """``grad`` is an array of the shape forward returned (and forward has run)."""
    if expected is None:
        raise ValueError(f"{model}: backward called before forward")
    if not array_api_compat.is_array_api_obj(grad) or isinstance(grad, (int, float, complex)):
        raise TypeError(
            f"{model}: {arg} must be an array of the forward output's shape {expected}, "
            f"got {type(grad).__name__}"
        )
    if _shape(grad.shape) != expected:
        raise ValueError(
            f"{model}: {arg} must have the shape of the forward output {expected}, "
            f"got {_shape(grad.shape)}"
        )


@contextlib.contextmanager
def _layer_errors(model: str, where: str) -> Iterator[None]:
    """Re-raise a layer's ValueError/TypeError with the model and the layer's place in front."""
    try:
        yield
    except (ValueError, TypeError) as exc:
        kind = TypeError if isinstance(exc, TypeError) else ValueError
        raise kind(f"{model}: {where}: {exc}") from exc


def _is_layer_like(obj: Any) -> bool:
    return callable(getattr(obj, "forward", None)) and callable(getattr(obj, "backward", None))


# ------------------------------------------------------------------------------ the protocol


class Model:
    """Base of the models: subclasses define :meth:`named_layers`, ``forward`` and ``backward``.

    Models whose layers run one after the other keep them in ``self.layers`` and may use
    :meth:`_forward_layers` / :meth:`_backward_layers`, which name the failing layer in
    any error.
    """

    training: bool = True
    layers: list[Any]

    @property
    def name(self) -> str:
        return type(self).__name__

    def __call__(self, A: Any) -> Any:
        return self.forward(A)

    @property
    def threads_own_work(self) -> bool:
        """Whether any layer shares its NumPy work between portaconv's threads."""
        return any(getattr(layer, "threads_own_work", False) for _, layer in self.named_layers())

    def named_layers(self) -> list[tuple[str, Any]]:
        """``(name, layer)`` for every layer, in order; names prefix the parameter names."""
        return [(f"layers.{i}", layer) for i, layer in enumerate(self.layers)]

    # ------------------------------------------------------------ parameters and their state

    def parameters(self) -> dict[str, Any]:
        """Every parameter by dotted name (``"layers.0.W"``): the arrays themselves."""
        return self._gather("parameters")

    def gradients(self) -> dict[str, Any]:
        """The gradients of the last ``backward``, keyed like :meth:`parameters`."""
        return self._gather("gradients")

    def state_dict(self) -> dict[str, Any]:
        """Copies of every parameter and buffer (BatchNorm's running statistics) by name."""
        return self._gather("state_dict")

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Set every parameter and buffer from ``state`` (arrays of any library, e.g. the
        NumPy arrays of a checkpoint); the names must match :meth:`state_dict` exactly."""
        check_state_keys(self.name, list(self.state_dict()), state)
        for prefix, layer in self.named_layers():
            if not hasattr(layer, "load_state_dict"):
                continue
            part = {k[len(prefix) + 1 :]: v for k, v in state.items() if k.startswith(prefix + ".")}
            with _layer_errors(self.name, prefix):
                layer.load_state_dict(part)

    def set_parameter(self, name: str, value: Any) -> None:
        """Replace the parameter ``name`` (``"layers.0.W"``) by ``value``: how an optimizer
        hands back an updated parameter that could not change in place (a JAX array)."""
        for prefix, layer in self.named_layers():
            key = name[len(prefix) + 1 :]
            if name.startswith(prefix + ".") and key in getattr(layer, "parameters", dict)():
                layer.set_parameter(key, value)
                return
        raise ValueError(
            f"{self.name}: set_parameter: no parameter {name!r}; the model has "
            f"{list(self.parameters())}"
        )

    def zero_grad(self) -> None:
        """Set every gradient to zeros."""
        for _, layer in self.named_layers():
            if hasattr(layer, "zero_grad"):
                layer.zero_grad()

    def train(self, mode: bool = True) -> Model:
        """Training mode for every layer (``mode=False``: evaluation); returns the model."""
        self.training = bool(mode)
        for _, layer in self.named_layers():
            if hasattr(layer, "train"):
                layer.train(mode)
        return self

    def eval(self) -> Model:
        """Evaluation mode: BatchNorm uses running statistics, Dropout passes through."""
        return self.train(False)

    def _gather(self, method: str) -> dict[str, Any]:
        out = {}
        for prefix, layer in self.named_layers():
            if hasattr(layer, method):
                for key, value in getattr(layer, method)().items():
                    out[f"{prefix}.{key}"] = value
        return out

    # ------------------------------------------------------------ running a chain of layers

    def _forward_layers(self, A: Any) -> Any:
        """Run the layers in turn; a BatchNorm followed by a ReLU runs as one step
        (:func:`_relu_pairs`), and a ReLU followed by a max pooling runs after it
        (:func:`_pool_first`), with the same results. On NumPy, OpenBLAS may stay on one
        thread meanwhile (:func:`_blas_held`)."""
        with _blas_held(A, self):
            return self._run_forward(A)

    def _run_forward(self, A: Any) -> Any:
        Z = A
        pairs = _relu_pairs(self.layers)
        swapped = _pool_first(self.layers, pairs)
        triples = _pooled_triples(self.layers, pairs)
        for i, layer in enumerate(self.layers):
            if i - 1 in pairs:  # the ReLU ran with the BatchNorm before it
                continue
            if i - 2 in triples:  # the pooling ran with the BatchNorm and ReLU before it
                continue
            if i in triples:
                relu, pool = self.layers[i + 1], self.layers[i + 2]
                where = f"layers[{i}:{i + 3}] {layer!r}, {relu!r}, {pool!r}"
                with _layer_errors(self.name, where):
                    Z = layer.forward_relu_pool(Z, relu, pool)
                continue
            if i in swapped:  # the pooling after this ReLU first, then the ReLU
                pool = self.layers[i + 1]
                with _layer_errors(self.name, f"layers[{i + 1}] {pool!r}"):
                    Z = pool.forward(Z)
            if i - 1 in swapped:  # the pooling that ran before its ReLU
                continue
            with _layer_errors(self.name, f"layers[{i}] {layer!r}"):
                if i in pairs:
                    Z = layer.forward_relu(Z, self.layers[i + 1])
                else:
                    Z = layer.forward(Z)
        self._out_shape = _shape(Z.shape)
        return Z

    def _backward_layers(self, dLdZ: Any, input_grad: bool = True) -> Any:
        """Backpropagate ``dLdZ`` from the last layer to the first; returns dL/dA.

        ``input_grad=False`` (the input is data: nothing reads its gradient) stops at the
        first layer with parameters and has it skip its own dL/dA where it can
        (``needs_input_grad``, as PyTorch skips the gradient of an input that does not
        require one); returns None then.
        """
        _gradient_shape(self.name, dLdZ, "dLdZ", getattr(self, "_out_shape", None))
        with _blas_held(dLdZ, self):
            return self._run_backward(dLdZ, input_grad)

    def _run_backward(self, dLdZ: Any, input_grad: bool) -> Any:
        first = 0
        if not input_grad:
            layers = enumerate(self.layers)
            trained = [i for i, layer in layers if getattr(layer, "param_names", ())]
            if not trained:
                return None
            first = trained[0]
        grad = dLdZ
        pairs = _relu_pairs(self.layers)
        swapped = _pool_first(self.layers, pairs)
        triples = _pooled_triples(self.layers, pairs)
        for i in range(len(self.layers) - 1, first - 1, -1):
            layer = self.layers[i]
            if i in triples or i - 1 in triples:  # part of the step at its pooling
                continue
            if i - 2 in triples:  # the pooling after a BatchNorm and a ReLU: the three
                norm, relu = self.layers[i - 2], self.layers[i - 1]
                where = f"layers[{i - 2}:{i + 1}] {norm!r}, {relu!r}, {layer!r}"
                with _layer_errors(self.name, where):
                    grad = norm.backward_relu_pool(grad, relu, layer)
                continue
            if i in pairs:  # its ReLU's backward was part of this step (one step after it)
                continue
            if i - 1 in swapped:  # a pooling that ran before its ReLU: the ReLU's turn
                relu = self.layers[i - 1]
                with _layer_errors(self.name, f"layers[{i - 1}] {relu!r}"):
                    grad = relu.backward(grad)
            if i in swapped:  # the ReLU whose backward ran before its pooling's
                continue
            if i - 1 in pairs:  # the ReLU after a BatchNorm: both, as one step
                with _layer_errors(self.name, f"layers[{i - 1}] {self.layers[i - 1]!r}"):
                    grad = self.layers[i - 1].backward_relu(grad, layer)
                continue
            with _layer_errors(self.name, f"layers[{i}] {layer!r}"):
                if i == first and not input_grad:
                    grad = _backward_without_input_grad(layer, grad)
                else:
                    grad = layer.backward(grad)
        return grad if input_grad else None


def _blas_held(A: Any, model: Model) -> contextlib.AbstractContextManager:
    """For a NumPy ``A`` and a model with layers that share their work between portaconv's
    threads: OpenBLAS held at one thread while the layers run (``single_threaded_blas``),
    so that none of its idle threads spins beside portaconv's after a product (~0.1 s
    each time, a core lost); the other products are then shared between portaconv's
    threads (``split_matmul``). Else nothing: an MLP's products run on OpenBLAS's own
    threads, which wake faster than portaconv's."""
    if array_api_compat.is_numpy_array(A) and model.threads_own_work:
        return single_threaded_blas()
    return contextlib.nullcontext()


def _relu_pairs(layers: list[Any]) -> set[int]:
    """Indices of the BatchNorm layers (those with ``forward_relu``) followed by a ``ReLU``:
    the model runs each pair as one step, ``forward_relu`` and ``backward_relu``, which on
    NumPy in training make one pass over the activations where the two layers make two
    (``portaconv/backend/norm.py``); elsewhere they run the two layers in turn."""
    return {
        i
        for i in range(len(layers) - 1)
        if hasattr(layers[i], "forward_relu") and type(layers[i + 1]) is ReLU
    }


def _pooled_triples(layers: list[Any], pairs: set[int]) -> set[int]:
    """Indices of the BatchNorm layers paired with a ReLU (:func:`_relu_pairs`) that a max
    pooling follows: the model runs the three as one step, ``forward_relu_pool`` and
    ``backward_relu_pool``, which on NumPy in training pool the BatchNorm's input first
    and normalise the pooled values (``portaconv/backend/norm.py``; the same results where
    every channel's scale is positive, else the three in turn)."""
    return {
        i
        for i in pairs
        if i + 2 < len(layers)
        and isinstance(layers[i + 2], (MaxPool1d, MaxPool2d))
        and hasattr(layers[i], "forward_relu_pool")
    }


def _pool_first(layers: list[Any], pairs: set[int]) -> set[int]:
    """Indices of the ``ReLU`` layers followed by a max pooling (not already fused with a
    BatchNorm before them, see :func:`_relu_pairs`): the model runs the pooling first and the
    ReLU on its output, in backward the ReLU's backward first. Max commutes with the ReLU
    (a nondecreasing function), so the outputs are equal (a zero's sign aside) and, as both
    orders send a window's gradient to its first maximum, so are the gradients; the ReLU
    then touches 1/kernel^d of the values (a quarter under LeNet's 2x2 pooling)."""
    return {
        i
        for i in range(len(layers) - 1)
        if type(layers[i]) is ReLU
        and isinstance(layers[i + 1], (MaxPool1d, MaxPool2d))
        and i - 1 not in pairs
    }


def _backward_without_input_grad(layer: Any, grad: Any) -> Any:
    """``layer.backward(grad)`` with the layer's ``needs_input_grad`` off for this call."""
    if not hasattr(layer, "needs_input_grad"):
        return layer.backward(grad)
    saved = layer.needs_input_grad
    layer.needs_input_grad = False
    try:
        return layer.backward(grad)
    finally:
        layer.needs_input_grad = saved
