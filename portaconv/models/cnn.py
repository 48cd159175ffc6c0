"""A 1-d CNN classifier (the handout's section 9): conv layers with activations, Flatten,
one Linear layer, and a loss; trained with plain gradient descent.

Shapes, with ``L = len(num_channels)`` conv layers::

    A  (N, num_input_channels, input_width)
    -> conv_i, activation_i        (N, num_channels[i], width_i),
                                   width_i = (width_{i-1} - kernel_sizes[i]) // strides[i] + 1
    -> flatten                     (N, num_channels[-1] * width_{L-1})
    -> linear_layer                Z (N, num_linear_neurons)
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence
from typing import Any

from ..backend._windows import conv_out_size
from ..checks import check_array, check_int
from ..layers import Conv1d, Flatten, Linear
from ._model import Model, _is_layer_like, _layer_errors, _shape


def _int_list(arg: str, value: Any) -> list[int]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise TypeError(
            f"CNN: {arg} must be a list of positive integers, got {type(value).__name__}"
        )
    return [check_int("CNN", f"{arg}[{i}]", v) for i, v in enumerate(value)]


class CNN(Model):
    """Conv1d layers, each followed by its activation, then Flatten and Linear.

    Conv layer ``i`` is ``Conv1d(C_i, num_channels[i], kernel_sizes[i], strides[i])`` with
    ``C_0 = num_input_channels`` and ``C_i = num_channels[i - 1]``; ``activations[i]``
    follows it (one distinct layer instance per conv layer, e.g. ``[Tanh(), ReLU(),
    Sigmoid()]``). The linear layer maps ``num_channels[-1] * final_width`` features to
    ``num_linear_neurons``. ``conv_weight_init_fn(out, in, kernel)``,
    ``linear_weight_init_fn(out, in)`` and ``bias_init_fn(out)`` may be None (PyTorch's
    default draws). ``criterion`` is a loss layer (e.g. CrossEntropyLoss) and ``lr`` the
    step size of :meth:`step`.

    ``forward(A)``: (N, num_input_channels, input_width) -> ``Z`` (N, num_linear_neurons).
    ``backward(labels)``: loss of the last ``Z`` (stored in ``self.loss``), backpropagated;
    returns ``dLdA`` (N, num_input_channels, input_width).
    """

    def __init__(
        self,
        input_width: int,
        num_input_channels: int,
        num_channels: Sequence[int],
        kernel_sizes: Sequence[int],
        strides: Sequence[int],
        num_linear_neurons: int,
        activations: Sequence[Any],
        conv_weight_init_fn: Callable[..., Any] | None,
        bias_init_fn: Callable[..., Any] | None,
        linear_weight_init_fn: Callable[..., Any] | None,
        criterion: Any,
        lr: float,
    ) -> None:
        self.input_width = check_int("CNN", "input_width", input_width)
        self.num_input_channels = check_int("CNN", "num_input_channels", num_input_channels)
        num_channels = _int_list("num_channels", num_channels)
        kernel_sizes = _int_list("kernel_sizes", kernel_sizes)
        strides = _int_list("strides", strides)
        self.num_linear_neurons = check_int("CNN", "num_linear_neurons", num_linear_neurons)
        if isinstance(activations, (str, bytes)) or not isinstance(activations, Sequence):
            raise TypeError(
                f"CNN: activations must be a list of activation layers, got "
                f"{type(activations).__name__}"
            )
        activations = list(activations)
        self.nlayers = len(num_channels)
        if self.nlayers == 0:
            raise ValueError("CNN: num_channels must list at least one conv layer, got []")
        lengths = {
            "num_channels": len(num_channels),
            "kernel_sizes": len(kernel_sizes),
            "strides": len(strides),
            "activations": len(activations),
        }
        if len(set(lengths.values())) != 1:
            listed = ", ".join(f"{k}={v}" for k, v in lengths.items())
            raise ValueError(
                f"CNN: num_channels, kernel_sizes, strides and activations must have one "
                f"entry per conv layer (equal lengths), got lengths {listed}"
            )
        for i, activation in enumerate(activations):
            if not _is_layer_like(activation):
                raise TypeError(
                    f"CNN: activations[{i}] must be a layer with forward and backward "
                    f"(an instance such as ReLU()), got {activation!r}"
                )
            for j in range(i):
                if activations[j] is activation:
                    raise ValueError(
                        f"CNN: activations[{j}] and activations[{i}] are the same object; "
                        "each layer needs its own instance, as an activation keeps what its "
                        "backward needs"
                    )
        if not _is_layer_like(criterion):
            raise TypeError(
                f"CNN: criterion must be a loss layer with forward(A, Y) and backward(), "
                f"got {criterion!r}"
            )
        if isinstance(lr, bool) or not isinstance(lr, numbers.Real):
            raise TypeError(f"CNN: lr must be a real number, got {type(lr).__name__}")
        if not lr >= 0:
            raise ValueError(f"CNN: lr must be a non-negative number, got {lr!r}")

        widths = [self.input_width]
        for i, (kernel_size, stride) in enumerate(zip(kernel_sizes, strides)):
            if kernel_size > widths[-1]:
                raise ValueError(
                    f"CNN: conv layer {i} has kernel_sizes[{i}]={kernel_size}, wider than its "
                    f"input width {widths[-1]} (widths so far {widths}, from "
                    f"input_width={self.input_width})"
                )
            widths.append(conv_out_size(widths[-1], kernel_size, stride))
        self.widths = widths

        self.activations = activations
        self.criterion = criterion
        self.lr = float(lr)
        self.convolutional_layers = []
        in_channels = [self.num_input_channels, *num_channels[:-1]]
        for i, spec in enumerate(zip(in_channels, num_channels, kernel_sizes, strides)):
            with _layer_errors("CNN", f"building convolutional_layers[{i}]"):
                self.convolutional_layers.append(
                    Conv1d(*spec, weight_init_fn=conv_weight_init_fn, bias_init_fn=bias_init_fn)
                )
        self.flatten = Flatten()
        with _layer_errors("CNN", "building linear_layer"):
            self.linear_layer = Linear(
                num_channels[-1] * widths[-1],
                self.num_linear_neurons,
                linear_weight_init_fn,
                bias_init_fn,
            )
        self.Z = None
        self.loss = None

    def __repr__(self) -> str:
        body = []
        for conv, activation in zip(self.convolutional_layers, self.activations):
            body += [repr(conv), repr(activation)]
        return f"CNN({', '.join(body)}, {self.flatten!r}, {self.linear_layer!r})"

    def forward(self, A: Any) -> Any:
        """``A`` (N, num_input_channels, input_width) -> ``Z`` (N, num_linear_neurons)."""
        layout = f"(N, {self.num_input_channels}, {self.input_width})"
        check_array("CNN", A, "A", layout, 3)
        if _shape(A.shape[1:]) != (self.num_input_channels, self.input_width):
            raise ValueError(f"CNN: A must have shape {layout}, got {_shape(A.shape)}")
        for i, (conv, activation) in enumerate(zip(self.convolutional_layers, self.activations)):
            with _layer_errors("CNN", f"convolutional_layers[{i}] {conv!r}"):
                A = conv.forward(A)
            with _layer_errors("CNN", f"activations[{i}] {activation!r}"):
                A = activation.forward(A)
        A = self.flatten.forward(A)
        with _layer_errors("CNN", f"linear_layer {self.linear_layer!r}"):
            self.Z = self.linear_layer.forward(A)
        return self.Z

    def backward(self, labels: Any) -> Any:
        """Set ``self.loss = criterion.forward(Z, labels)`` and backpropagate it.

        ``labels``: whatever the criterion takes (for CrossEntropyLoss, integer classes (N,)
        or one-hot / probability rows (N, num_linear_neurons)), an array of the backend's
        library. Returns ``dLdA`` (N, num_input_channels, input_width) and sets every layer's
        dLdW and dLdb.
        """
        if self.Z is None:
            raise ValueError("CNN: backward called before forward")
        with _layer_errors("CNN", f"criterion {self.criterion!r}"):
            self.loss = self.criterion.forward(self.Z, labels)
            grad = self.criterion.backward()
        with _layer_errors("CNN", f"linear_layer {self.linear_layer!r}"):
            grad = self.linear_layer.backward(grad)
        grad = self.flatten.backward(grad)
        for i in range(self.nlayers - 1, -1, -1):
            with _layer_errors("CNN", f"activations[{i}] {self.activations[i]!r}"):
                grad = self.activations[i].backward(grad)
            with _layer_errors("CNN", f"convolutional_layers[{i}]"):
                grad = self.convolutional_layers[i].backward(grad)
        return grad

    def named_layers(self) -> list[tuple[str, Any]]:
        convs = [(f"convolutional_layers.{i}", c) for i, c in enumerate(self.convolutional_layers)]
        acts = [(f"activations.{i}", a) for i, a in enumerate(self.activations)]
        return [*convs, *acts, ("flatten", self.flatten), ("linear_layer", self.linear_layer)]

    def _parametrised_layers(self) -> list[Any]:
        return [*self.convolutional_layers, self.linear_layer]

    def step(self) -> None:
        """One gradient-descent step: ``W = W - lr * dLdW``, ``b = b - lr * dLdb`` (new arrays)."""
        for layer in self._parametrised_layers():
            layer.W = layer.W - self.lr * layer.dLdW
            layer.b = layer.b - self.lr * layer.dLdb
