"""Global average pooling: the mean over every spatial position of each channel.

    Z[n, c] = mean(A[n, c, ...])        dLdA[n, c, ...] = dLdZ[n, c] / (number of positions)

The same as ``torch.nn.functional.adaptive_avg_pool2d(A, 1).flatten(1)`` (1-d: ``..._pool1d``).
"""

from __future__ import annotations

import math
from typing import Any

from array_api_compat import device

from ..checks import shape_str
from ._base import Layer, spec_of


class _GlobalAvgPoolNd(Layer):
    _nd = 0
    _layout = ""

    def __init__(self) -> None:
        self._in_shape: tuple[int, ...] | None = None
        self._spec = None

    def __repr__(self) -> str:
        return f"{self.name}()"

    def forward(self, A: Any) -> Any:
        """``A`` (N, C, *spatial) -> ``Z`` (N, C)."""
        xp = self._array_arg(A, "A", self._layout, self._nd + 2)
        if any(n < 1 for n in A.shape[2:]):
            raise ValueError(
                f"{self.name}: every spatial size of A must be >= 1, got shape {shape_str(A.shape)}"
            )
        self._in_shape, self._spec = tuple(A.shape), spec_of(A)
        return xp.mean(A, axis=tuple(range(2, A.ndim)))

    def backward(self, dLdZ: Any) -> Any:
        """``dLdZ`` (N, C) -> ``dLdA`` (N, C, *spatial): each position gets an equal share."""
        self._forward_done("_in_shape")
        shape = self._in_shape
        xp = self._gradient_arg(dLdZ, "dLdZ", shape[:2], self._spec)
        share = xp.reshape(dLdZ / math.prod(shape[2:]), (*shape[:2], *(1,) * self._nd))
        return xp.zeros(shape, dtype=dLdZ.dtype, device=device(dLdZ)) + share


class GlobalAvgPool1d(_GlobalAvgPoolNd):
    """Mean over the length: ``A`` (N, C, L) -> ``Z`` (N, C)."""

    _nd = 1
    _layout = "(N, C, L)"


class GlobalAvgPool2d(_GlobalAvgPoolNd):
    """Mean over height and width: ``A`` (N, C, H, W) -> ``Z`` (N, C)."""

    _nd = 2
    _layout = "(N, C, H, W)"
