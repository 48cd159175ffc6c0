"""Losses: ``forward(A, Y)`` -> a 0-d array (mean over the batch), ``backward()`` -> dLdA."""

from __future__ import annotations

import math
from typing import Any

from array_api_compat import device

from ._base import Layer, shape_str


class _Loss(Layer):
    def __init__(self) -> None:
        self.A = None
        self.Y = None

    def __repr__(self) -> str:
        return f"{self.name}()"

    def backward(self) -> Any:
        raise NotImplementedError


class MSELoss(_Loss):
    """L = sum((A - Y)^2) / (N * C): the mean over every element, as ``torch.nn.MSELoss()``.

    ``A`` and ``Y`` are (N, C) (any equal shapes work); ``backward()`` = 2 (A - Y) / (N * C).
    """

    def forward(self, A: Any, Y: Any) -> Any:
        xp = self._array_arg(A, "A", "(N, C)", range(1, 64))
        self._array_arg(Y, "Y", "(N, C)", range(1, 64))
        if tuple(Y.shape) != tuple(A.shape):
            raise ValueError(
                f"MSELoss: Y must have the shape of A {shape_str(A.shape)}, "
                f"got {shape_str(Y.shape)}"
            )
        self._same_place(Y, "Y", A, "A")
        self.A, self.Y = A, Y
        diff = A - Y
        return xp.sum(diff * diff) / math.prod(A.shape)

    def backward(self) -> Any:
        self._forward_done("A")
        return 2.0 * (self.A - self.Y) / math.prod(self.A.shape)


class CrossEntropyLoss(_Loss):
    """Softmax cross-entropy on logits, averaged over the batch (``torch.nn.CrossEntropyLoss()``).

    ``A`` (N, C) are logits. ``Y`` is either integer class labels (N,) in [0, C) or a float
    (N, C) array of one-hot rows or class probabilities. ``L = -sum(Y log softmax(A)) / N``
    and ``backward()`` = (softmax(A) - Y) / N. With ``label_smoothing`` = e the targets are
    first mixed with the uniform distribution, ``Y (1 - e) + e / C``, as in PyTorch.
    """

    def __init__(self, label_smoothing: float = 0.0) -> None:
        super().__init__()
        if isinstance(label_smoothing, bool) or not isinstance(label_smoothing, (int, float)):
            raise TypeError(
                f"CrossEntropyLoss: label_smoothing must be a number in [0, 1], got "
                f"{type(label_smoothing).__name__}"
            )
        if not 0.0 <= label_smoothing <= 1.0:
            raise ValueError(
                f"CrossEntropyLoss: label_smoothing must be in [0, 1], got {label_smoothing!r}"
            )
        self.label_smoothing = float(label_smoothing)
        self.softmax = None

    def __repr__(self) -> str:
        if self.label_smoothing:
            return f"CrossEntropyLoss(label_smoothing={self.label_smoothing})"
        return "CrossEntropyLoss()"

    def forward(self, A: Any, Y: Any) -> Any:
        xp = self._array_arg(A, "A", "(N, C)", 2)
        N, C = A.shape
        Y = self._targets(xp, A, Y)
        if self.label_smoothing:
            Y = Y * (1.0 - self.label_smoothing) + self.label_smoothing / C
        shifted = A - xp.max(A, axis=1, keepdims=True)
        log_sum = xp.log(xp.sum(xp.exp(shifted), axis=1, keepdims=True))
        log_softmax = shifted - log_sum
        self.softmax = xp.exp(log_softmax)
        self.A, self.Y = A, Y
        return -xp.sum(Y * log_softmax) / N

    def backward(self) -> Any:
        self._forward_done("A")
        return (self.softmax - self.Y) / self.A.shape[0]

    def _targets(self, xp: Any, A: Any, Y: Any) -> Any:
        """Integer labels become one-hot rows of A's dtype; float targets are checked."""
        N, C = A.shape
        if not hasattr(Y, "dtype") or not hasattr(Y, "shape"):
            raise TypeError(
                f"CrossEntropyLoss: Y must be an array of labels (N,) or targets (N, C), "
                f"got {type(Y).__name__}"
            )
        self._same_place(Y, "Y", A, "A", dtype=False)
        if xp.isdtype(Y.dtype, "integral"):
            if tuple(Y.shape) != (N,):
                raise ValueError(
                    f"CrossEntropyLoss: integer labels Y must have shape ({N},), "
                    f"got {shape_str(Y.shape)}"
                )
            if N and (int(xp.min(Y)) < 0 or int(xp.max(Y)) >= C):
                raise ValueError(
                    f"CrossEntropyLoss: labels must lie in [0, {C}), got values from "
                    f"{int(xp.min(Y))} to {int(xp.max(Y))}"
                )
            classes = xp.arange(C, dtype=Y.dtype, device=device(Y))
            return xp.astype(xp.reshape(Y, (N, 1)) == classes, A.dtype)
        self._array_arg(Y, "Y", "(N, C)", 2)
        if tuple(Y.shape) != (N, C):
            raise ValueError(
                f"CrossEntropyLoss: targets Y must have the shape of A {shape_str(A.shape)}, "
                f"got {shape_str(Y.shape)}"
            )
        self._same_place(Y, "Y", A, "A")
        return Y
