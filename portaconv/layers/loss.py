"""Losses: ``forward(A, Y)`` -> a 0-d array (mean over the batch), ``backward()`` -> dLdA."""

from __future__ import annotations

import math
from typing import Any

from array_api_compat import array_namespace, device

from ..backend._arrays import astype, on_host
from ..checks import shape_str
from ._base import Layer


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
    Float32 with float64 computes in float64 (the array API's promotion); ``backward()``
    returns ``dLdA`` in A's dtype.
    """

    def forward(self, A: Any, Y: Any) -> Any:
        xp = self._array_arg(A, "A", "(N, C)", range(1, 64))
        self._array_arg(Y, "Y", "(N, C)", range(1, 64))
        if tuple(Y.shape) != tuple(A.shape):
            raise ValueError(
                f"MSELoss: Y must have the shape of A {shape_str(A.shape)}, "
                f"got {shape_str(Y.shape)}"
            )
        self._same_place(Y, "Y", A, "A", dtype=False)
        self._input_dtype = A.dtype
        dtype = xp.result_type(A, Y)
        self.A, self.Y = astype(A, dtype), astype(Y, dtype)
        diff = self.A - self.Y
        # a mean, not sum / size: NumPy 1.x turns a float32 scalar divided by an int into float64
        return xp.mean(diff * diff)

    def backward(self) -> Any:
        self._forward_done("A")
        return self._as_input(2.0 * (self.A - self.Y) / math.prod(self.A.shape))


class CrossEntropyLoss(_Loss):
    """Softmax cross-entropy on logits, averaged over the batch (``torch.nn.CrossEntropyLoss()``).

    ``A`` (N, C) are logits. ``Y`` is either integer class labels (N,) in [0, C) or a float
    (N, C) array of one-hot rows or class probabilities. ``L = -sum(Y log softmax(A)) / N``
    and ``backward()`` = (softmax(A) sum_c Y - Y) / N, i.e. (softmax(A) - Y) / N for targets
    that sum to 1 (PyTorch's gradient for any targets). With ``label_smoothing`` = e the
    targets are first mixed with the uniform distribution, ``Y (1 - e) + e / C``, as in
    PyTorch. A class whose target is 0 adds nothing, even where its logit is -inf (PyTorch's
    convention, so the loss stays finite). Float targets and logits of different float
    dtypes compute in the promoted dtype; ``backward()`` returns ``dLdA`` in A's dtype.

    A label outside [0, C) is a ValueError on NumPy and array-api-strict; on the other
    libraries checking it would wait for the device, so it makes the loss (and the
    gradient of its row) NaN instead, which the Trainer reports.
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
        self._input_dtype = A.dtype
        dtype = xp.result_type(A, Y)
        A, Y = astype(A, dtype), astype(Y, dtype)
        if self.label_smoothing:
            Y = Y * (1.0 - self.label_smoothing) + self.label_smoothing / C
        shifted = A - xp.max(A, axis=1, keepdims=True)
        log_sum = xp.log(xp.sum(xp.exp(shifted), axis=1, keepdims=True))
        log_softmax = shifted - log_sum
        self.softmax = xp.exp(log_softmax)
        self.A, self.Y = A, Y
        # 0 * -inf is NaN: a class with no target mass contributes exactly 0
        log_softmax = xp.where(Y == 0, xp.zeros_like(log_softmax), log_softmax)
        return -xp.mean(xp.sum(Y * log_softmax, axis=1))

    def backward(self) -> Any:
        """(softmax(A) sum_c Y - Y) / N: (softmax(A) - Y) / N for targets that sum to 1."""
        self._forward_done("A")
        xp = array_namespace(self.Y)
        mass = xp.sum(self.Y, axis=1, keepdims=True)
        return self._as_input((self.softmax * mass - self.Y) / self.A.shape[0])

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
            # Reading the labels' range waits for the device: only host arrays are checked
            # here. Elsewhere a label outside [0, C) matches no class, its one-hot row sums
            # to 0, and 0 / 0 makes the loss and its gradient NaN, on the device.
            host = on_host(Y)
            if host and N and (int(xp.min(Y)) < 0 or int(xp.max(Y)) >= C):
                raise ValueError(
                    f"CrossEntropyLoss: labels must lie in [0, {C}), got values from "
                    f"{int(xp.min(Y))} to {int(xp.max(Y))}"
                )
            classes = xp.arange(C, dtype=Y.dtype, device=device(Y))
            one_hot = xp.astype(xp.reshape(Y, (N, 1)) == classes, A.dtype)
            return one_hot if host else one_hot / xp.sum(one_hot, axis=1, keepdims=True)
        self._array_arg(Y, "Y", "(N, C)", 2)
        if tuple(Y.shape) != (N, C):
            raise ValueError(
                f"CrossEntropyLoss: targets Y must have the shape of A {shape_str(A.shape)}, "
                f"got {shape_str(Y.shape)}"
            )
        return Y
