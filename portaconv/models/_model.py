"""What every model shares: its layers by name, and everything derived from them.

A model lists its layers with :meth:`Model.named_layers`; from that list come the flat,
dotted names of its parameters (``"0.W"`` in a :class:`~portaconv.models.Sequential`,
``"layers.0.W"`` in the handout's ``MLP``), their gradients, ``zero_grad`` (alias
``zero_grads``, the handout's name), ``train``/``eval`` and
``state_dict``/``load_state_dict``, the same protocol a single
:class:`~portaconv.layers.Layer` follows. Optimizers and the trainer rely on it alone. On top
of it every model has :meth:`Model.predict` (class probabilities, batched, in evaluation
mode), :meth:`Model.summary` (a table of its layers) and :meth:`Model.num_parameters`.

This module also holds the few argument checks the models share, so that every model
reports bad input the same way: which model, what it expected, what it got.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

import array_api_compat

from ..backend import execution_plan, fast_paths_mode
from ..checks import check_array, check_int, check_state_keys
from ..layers import Softmax
from ._summary import parameter_count, restore_modes, summary_table, training_modes

# ------------------------------------------------------------------ checks shared by the models


def _shape(shape: Any) -> tuple[int | None, ...]:
    """A shape as a plain tuple of ints (torch.Size and friends print differently); None
    stays None (a size a lazy library does not know while it records a graph: the batch
    axis of an ONNX export)."""
    return tuple(None if n is None else int(n) for n in shape)


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
    :meth:`_forward_layers` / :meth:`_backward_layers`: a loop over the layers in order,
    and in reverse, that names the failing layer in any error. The loop runs the steps of
    the backend's execution plan (``portaconv.backend.execution_plan``): each layer alone,
    or where the fast paths are on, a group of layers fused into one step with the same
    results.
    """

    training: bool = True
    layers: list[Any]

    @property
    def name(self) -> str:
        return type(self).__name__

    def __call__(self, A: Any) -> Any:
        return self.forward(A)

    def named_layers(self) -> list[tuple[str, Any]]:
        """``(name, layer)`` for every layer, in order; names prefix the parameter names."""
        return [(f"layers.{i}", layer) for i, layer in enumerate(self.layers)]

    # ------------------------------------------------------------ parameters and their state

    def parameters(self) -> dict[str, Any]:
        """Every parameter by dotted name, the arrays themselves: the layer's name from
        :meth:`named_layers`, then the attribute (``W``, ``b``, BatchNorm's ``BW``, ``Bb``).

        :class:`~portaconv.models.Sequential` names its layers by position (``"0.W"``,
        ``"0.b"``), a layer inside a nested container by both places (``"2.0.body.0.W"``:
        Sequential, Residual's body); the models that keep a ``layers`` list without naming
        them otherwise (the handout's ``MLP``) say ``"layers.0.W"``; ``CNN`` says
        ``"convolutional_layers.0.W"`` and ``"linear_layer.W"``.

        >>> from portaconv.layers import Linear, ReLU
        >>> from portaconv.models import Sequential
        >>> sorted(Sequential(Linear(4, 3), ReLU(), Sequential(Linear(3, 2))).parameters())
        ['0.W', '0.b', '2.0.W', '2.0.b']
        """
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
        """Replace the parameter ``name`` (a key of :meth:`parameters`) by ``value``: how an
        optimizer hands back an updated parameter that could not change in place (a JAX
        array)."""
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

    def zero_grads(self) -> None:
        """:meth:`zero_grad` under the handout's name (its ``CNN.zero_grads()``): every
        model answers to both."""
        self.zero_grad()

    def num_parameters(self) -> int:
        """How many numbers the model trains: the sizes of every array of
        :meth:`parameters` added up (PyTorch's ``sum(p.numel() for p in
        model.parameters())``, Keras's ``count_params()``); buffers such as BatchNorm's
        running statistics are not parameters.

        >>> from portaconv.layers import Linear, ReLU
        >>> from portaconv.models import Sequential
        >>> Sequential(Linear(4, 16), ReLU(), Linear(16, 3)).num_parameters()  # 4*16+16 + 16*3+3
        131
        """
        return parameter_count(self)

    def summary(self, input_shape: Any = None) -> str:
        """A table of the model's layers: dotted name (nested layers indented under their
        block), the layer, its output shape for an input of ``input_shape`` (one input
        without the batch axis, e.g. ``(1, 28, 28)``; the batch axis shows as N) and its
        parameter count (a block's: its layers' together), then the total. Print it.

        With ``input_shape``, one forward pass of a single input of zeros runs, in
        evaluation mode (each layer's mode is restored afterwards), which replaces what a
        pending ``backward`` would have used: call it between training steps. Without it,
        the layers are listed in the order of :meth:`named_layers`, without shapes. An
        input the model cannot take is a ValueError that names the shape and the layer.

        >>> from portaconv.layers import Linear, ReLU
        >>> from portaconv.models import Sequential
        >>> print(Sequential(Linear(4, 16), ReLU(), Linear(16, 3)).summary((4,)))
        Sequential, input (N, 4)
        name  layer          output shape  parameters
        ---------------------------------------------
        0     Linear(4, 16)  (N, 16)               80
        1     ReLU()         (N, 16)                0
        2     Linear(16, 3)  (N, 3)                51
        ---------------------------------------------
        total: 131 parameters
        """
        return summary_table(self, input_shape)

    def predict(self, X: Any, batch_size: int = 256) -> Any:
        """Class probabilities for the inputs ``X``: softmax of the outputs (logits) along
        their last axis.

        ``X`` ``(N, *input)`` is an array of the model's library and device, prepared as the
        training data was (the same normalisation); returns (N, classes) in the output's
        dtype, in the same library: ``argmax`` along axis 1 is the predicted class. The
        model runs in evaluation mode (BatchNorm's running statistics, no Dropout) on
        ``batch_size`` inputs at a time, so memory stays bounded whatever N; afterwards every
        layer has its previous mode back, also when a batch raises. A forward pass replaces
        what a pending ``backward`` would have used: call it between training steps.

        >>> import numpy as np
        >>> from portaconv.layers import Linear
        >>> from portaconv.models import Sequential
        >>> net = Sequential(Linear(3, 2, lambda o, i: np.zeros((o, i)), np.zeros))
        >>> net.predict(np.ones((4, 3)), batch_size=3)  # equal logits: 1/2 each
        array([[0.5, 0.5],
               [0.5, 0.5],
               [0.5, 0.5],
               [0.5, 0.5]])
        """
        owner = f"{self.name}.predict"
        xp = check_array(owner, X, "X", "(N, ...) of inputs", range(1, 64))
        batch_size = check_int(owner, "batch_size", batch_size)
        count = int(X.shape[0])
        if count == 0:
            raise ValueError(f"{owner}: X holds no inputs (shape {_shape(X.shape)})")
        modes = training_modes(self)
        try:
            self.eval()
            # the stop within bounds: the array API leaves a slice past the end unspecified
            batches = [
                Softmax(dim=-1).forward(
                    self.forward(X[start : min(start + batch_size, count), ...])
                )
                for start in range(0, count, batch_size)
            ]
        finally:
            restore_modes(modes)
        return batches[0] if len(batches) == 1 else xp.concat(batches, axis=0)

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

    def _steps(self) -> Any:
        """The backend's plan for ``self.layers`` (each layer a step, or fused groups where
        the fast paths are on), made again only when the layers or the mode change."""
        key = (tuple(map(id, self.layers)), fast_paths_mode())
        cached = getattr(self, "_plan", None)
        if cached is None or cached[0] != key:
            cached = self._plan = (key, execution_plan(self.layers))
        return cached[1]

    def _forward_layers(self, A: Any) -> Any:
        """Run the layers in turn; an error names the failing layer."""
        plan = self._steps()
        self._ran = plan
        Z = A
        with plan.held(A):
            for step in plan.steps:
                with _layer_errors(self.name, step.where):
                    Z = step.forward(Z)
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
        steps = self._ran.steps
        first = 0
        if not input_grad:
            trained = [i for i, step in enumerate(steps) if step.param_names]
            if not trained:
                return None
            first = trained[0]
        grad = dLdZ
        with self._ran.held(dLdZ):
            for i in range(len(steps) - 1, first - 1, -1):
                with _layer_errors(self.name, steps[i].where):
                    grad = steps[i].backward(grad, input_grad or i != first)
        return grad if input_grad else None
