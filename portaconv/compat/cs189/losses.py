"""The package's loss: cross-entropy on probabilities (the output of a ``softmax`` layer).

``forward(Y, Y_hat)`` = -sum(Y log(Y_hat + eps)) / N and ``backward(Y, Y_hat)`` = -Y / (N Y_hat)
for one-hot (or probability) rows ``Y`` and predicted probabilities ``Y_hat``, both
(N, classes); eps is float64's machine epsilon, as in the package. portaconv's own
:class:`~portaconv.layers.CrossEntropyLoss` takes logits instead (it applies the softmax
itself), so this one is computed here.

>>> import numpy as np
>>> from portaconv.compat.cs189.losses import initialize_loss
>>> loss = initialize_loss("cross_entropy")
>>> Y, Y_hat = np.array([[0.0, 1.0]]), np.array([[0.5, 0.5]])
>>> round(loss.forward(Y, Y_hat), 6), loss.backward(Y, Y_hat).tolist()
(0.693147, [[-0.0, -2.0]])
"""

from __future__ import annotations

import sys
from abc import ABC, abstractmethod
from typing import Any

from ...checks import check_array, shape_str
from .utils import unknown_name

__all__ = ["CrossEntropy", "Loss", "initialize_loss"]

_EPS = sys.float_info.epsilon  # np.finfo(float).eps, the package's guard against log(0)


class Loss(ABC):
    """``forward(Y, Y_hat)`` -> the loss (a float); ``backward(Y, Y_hat)`` -> dL/dY_hat."""

    @abstractmethod
    def forward(self, Y: Any, Y_hat: Any) -> float: ...

    @abstractmethod
    def backward(self, Y: Any, Y_hat: Any) -> Any: ...


def _pair(owner: str, Y: Any, Y_hat: Any) -> Any:
    check_array(owner, Y, "Y", "(N, classes)", 2)
    xp = check_array(owner, Y_hat, "Y_hat", "(N, classes)", 2)
    if tuple(Y.shape) != tuple(Y_hat.shape):
        raise ValueError(
            f"{owner}: Y and Y_hat must have the same shape (N, classes), got "
            f"{shape_str(Y.shape)} and {shape_str(Y_hat.shape)}"
        )
    return xp


class CrossEntropy(Loss):
    """Cross-entropy of probability rows; ``name`` is kept as the package keeps it (the
    model's ``error`` reads it)."""

    def __init__(self, name: str = "cross_entropy") -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"CrossEntropy({self.name!r})"

    def __call__(self, Y: Any, Y_hat: Any) -> float:
        return self.forward(Y, Y_hat)

    def forward(self, Y: Any, Y_hat: Any) -> float:
        """-sum(Y log(Y_hat + eps)) / N, a float."""
        xp = _pair("CrossEntropy", Y, Y_hat)
        return float(-xp.sum(Y * xp.log(Y_hat + _EPS)) / Y.shape[0])

    def backward(self, Y: Any, Y_hat: Any) -> Any:
        """dL/dY_hat = -Y / (N Y_hat), (N, classes)."""
        _pair("CrossEntropy", Y, Y_hat)
        return -Y / (Y_hat * Y.shape[0])


def initialize_loss(name: str) -> Loss:
    """The loss called ``name``: "cross_entropy"."""
    if name == "cross_entropy":
        return CrossEntropy(name)
    raise unknown_name("initialize_loss", "loss", name, ("cross_entropy",))
