"""Flatten: (N, C, *spatial) -> (N, C * prod(spatial)), and back."""

from __future__ import annotations

import math
from typing import Any

from ._base import Layer, spec_of


class Flatten(Layer):
    """Reshape every sample to one row in C order: ``A`` (N, ...) -> ``Z`` (N, prod(...))."""

    def __init__(self) -> None:
        self._in_shape: tuple[int, ...] | None = None
        self._spec = None

    def __repr__(self) -> str:
        return "Flatten()"

    def forward(self, A: Any) -> Any:
        xp = self._array_arg(A, "A", "(N, ...)", range(1, 64))
        self._in_shape, self._spec = tuple(A.shape), spec_of(A)
        N = -1 if A.shape[0] is None else A.shape[0]  # None: unknown while a graph is recorded
        return xp.reshape(A, (N, math.prod(A.shape[1:])))

    def backward(self, dLdZ: Any) -> Any:
        self._forward_done("_in_shape")
        N = self._in_shape[0]
        xp = self._gradient_arg(dLdZ, "dLdZ", (N, math.prod(self._in_shape[1:])), self._spec)
        return xp.reshape(dLdZ, self._in_shape)
