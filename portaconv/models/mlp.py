"""A multi-layer perceptron: Linear layers with an activation between each pair."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..checks import check_array, check_int
from ..layers import Linear, ReLU
from ._model import Model, _is_layer_like, _layer_errors, _shape

# ---------------------------------------------------------------------------------- the model


class MLP(Model):
    """Linear layers ``layer_sizes[i] -> layer_sizes[i+1]``, a fresh activation after each
    but the last.

    ``A`` (N, layer_sizes[0]) -> ``Z`` (N, layer_sizes[-1]); extra leading axes pass through
    as in :class:`~portaconv.layers.Linear`. ``activation`` is called with no arguments once
    per hidden layer (a class such as ``ReLU``, or any factory of layers). The init
    functions are handed to every Linear: ``weight_init_fn(out_features, in_features)``,
    ``bias_init_fn(out_features)``. Parameters and gradients live on the layers.

    >>> MLP([8 * 24, 8, 16, 4]).layers
    [Linear(192, 8), ReLU(), Linear(8, 16), ReLU(), Linear(16, 4)]
    """

    def __init__(
        self,
        layer_sizes: Any,
        activation: Callable[[], Any] = ReLU,
        weight_init_fn: Callable[..., Any] | None = None,
        bias_init_fn: Callable[..., Any] | None = None,
    ) -> None:
        if isinstance(layer_sizes, (str, bytes)) or not hasattr(layer_sizes, "__iter__"):
            raise TypeError(
                f"MLP: layer_sizes must be a list of positive integers, got "
                f"{type(layer_sizes).__name__}"
            )
        sizes = [check_int("MLP", f"layer_sizes[{i}]", n) for i, n in enumerate(layer_sizes)]
        if len(sizes) < 2:
            raise ValueError(
                f"MLP: layer_sizes must give at least 2 sizes (inputs and outputs), got {sizes}"
            )
        if not callable(activation):
            raise TypeError(
                f"MLP: activation must be a layer class or factory such as ReLU, got {activation!r}"
            )
        self.layer_sizes = sizes
        self.layers: list[Any] = []
        for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            with _layer_errors("MLP", f"building layers[{len(self.layers)}]"):
                self.layers.append(Linear(fan_in, fan_out, weight_init_fn, bias_init_fn))
            if i < len(sizes) - 2:
                layer = activation()
                if not _is_layer_like(layer):
                    raise TypeError(
                        f"MLP: activation() must return a layer with forward and backward, "
                        f"got {type(layer).__name__}"
                    )
                self.layers.append(layer)
        self._out_shape: tuple[int, ...] | None = None

    def __repr__(self) -> str:
        return f"MLP({self.layer_sizes})"

    def forward(self, A: Any) -> Any:
        """``A`` (N, layer_sizes[0]) -> ``Z`` (N, layer_sizes[-1])."""
        check_array("MLP", A, "A", f"(N, {self.layer_sizes[0]})", range(2, 64))
        if A.shape[-1] != self.layer_sizes[0]:
            raise ValueError(
                f"MLP: A must have {self.layer_sizes[0]} features on its last axis, "
                f"got shape {_shape(A.shape)}"
            )
        return self._forward_layers(A)

    def backward(self, dLdZ: Any) -> Any:
        """``dLdZ`` (N, layer_sizes[-1]) -> ``dLdA`` (N, layer_sizes[0]); sets every dLdW, dLdb."""
        return self._backward_layers(dLdZ)
