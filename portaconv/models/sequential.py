"""A chain of layers run in order, like ``torch.nn.Sequential``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ._model import Model, _is_layer_like


class Sequential(Model):
    """``forward`` runs the layers first to last, ``backward`` last to first.

    Parameters are named by position, as in PyTorch: ``"0.W"``, ``"3.running_M"``. The loss
    is not part of the chain: compute it on the output and pass its gradient to ``backward``.
    The loop runs the steps of the backend's execution plan: each layer alone under
    ``fast_paths("never")``, else fused groups where the backend has them (see
    ``portaconv.backend.execution_plan``), with the same results.

    >>> from portaconv.layers import Linear, ReLU
    >>> net = Sequential(Linear(4, 16), ReLU(), Linear(16, 3))
    >>> sorted(net.parameters())
    ['0.W', '0.b', '2.W', '2.b']
    """

    def __init__(self, *layers: Any) -> None:
        if len(layers) == 1 and isinstance(layers[0], (list, tuple)):
            layers = tuple(layers[0])
        for i, layer in enumerate(layers):
            if not _is_layer_like(layer):
                raise TypeError(
                    f"Sequential: layer {i} must have forward and backward methods (a layer "
                    f"instance such as ReLU()), got {layer!r}"
                )
        self.layers = list(layers)
        self._out_shape: tuple[int, ...] | None = None

    def named_layers(self) -> list[tuple[str, Any]]:
        return [(str(i), layer) for i, layer in enumerate(self.layers)]

    def forward(self, A: Any) -> Any:
        """Each layer's output is the next one's input; returns the last output."""
        return self._forward_layers(A)

    def backward(self, dLdZ: Any, input_grad: bool = True) -> Any:
        """``dLdZ`` has the shape of the last forward output; returns the input's gradient.

        ``input_grad=False`` when the input is data (the Trainer's call): every parameter's
        gradient is computed as usual, but not dL/dA, which no one reads (the first layer
        with parameters skips that product; the layers before it are not run); returns None.
        """
        return self._backward_layers(dLdZ, input_grad)

    def __len__(self) -> int:
        return len(self.layers)

    def __iter__(self) -> Iterator[Any]:
        return iter(self.layers)

    def __getitem__(self, index: int) -> Any:
        return self.layers[index]

    def __repr__(self) -> str:
        body = "".join(
            f"\n  ({i}): " + repr(layer).replace("\n", "\n  ")  # nested models indented
            for i, layer in enumerate(self.layers)
        )
        return f"Sequential({body}\n)" if self.layers else "Sequential()"
