"""Max and mean pooling in 1-d and 2-d, computed directly for any stride.

Each window is visited as a loop over the kernel offsets (strided slices of the input), so
nothing the size of the unfolded input is built. Max pooling keeps the first maximum in
row-major order within the window (the handout's rule) and propagates NaN like PyTorch; its
forward records which offset won (``window_max``) and backward sends each output gradient
to that one input (``window_max_grad``: one masked slice assignment per offset); both have
NumPy fast paths in ``portaconv.backend``.
Mean pooling spreads it evenly.

    out = floor((in - kernel) / stride) + 1        (no padding; PyTorch's ceil_mode=False)
"""

from __future__ import annotations

import math
from typing import Any

from ..backend._windows import conv_out_size, window_max, window_max_grad, window_scatter, windows
from ..checks import shape_str
from ._base import Layer, spec_of

_LAYOUT = {1: "(N, C, W_in)", 2: "(N, C, H_in, W_in)"}


class _PoolNd(Layer):
    _nd = 0
    _max = True

    def __init__(self, kernel: int, stride: int | None = None) -> None:
        self.kernel = self._int_arg("kernel", kernel)
        self.stride = self.kernel if stride is None else self._int_arg("stride", stride)
        self._in_shape: tuple[int, ...] | None = None
        self._out_shape: tuple[int, ...] | None = None
        self._spec = None
        self._argmax = None  # index of the chosen kernel offset, per output element

    def __repr__(self) -> str:
        return f"{self.name}(kernel={self.kernel}, stride={self.stride})"

    @property
    def kernel_size(self) -> int:
        return self.kernel

    def _geometry(self) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        nd = self._nd
        out = self._out_shape[2:]
        return (self.kernel,) * nd, (self.stride,) * nd, out

    def forward(self, A: Any) -> Any:
        """``A`` (N, C, *in) -> ``Z`` (N, C, *out)."""
        self._array_arg(A, "A", _LAYOUT[self._nd], self._nd + 2)
        if any(n < self.kernel for n in A.shape[2:]):
            raise ValueError(
                f"{self.name}: kernel={self.kernel} is larger than the input "
                f"{shape_str(A.shape[2:])}"
            )
        out = tuple(conv_out_size(n, self.kernel, self.stride) for n in A.shape[2:])
        self._in_shape, self._out_shape = tuple(A.shape), (*A.shape[:2], *out)
        self._spec = spec_of(A)
        if self._max:
            Z, self._argmax = window_max(A, *self._geometry())
            return Z
        views = windows(A, *self._geometry())
        Z = views[0]
        for view in views[1:]:
            Z = Z + view
        return Z / math.prod(self._geometry()[0])

    def backward(self, dLdZ: Any) -> Any:
        """``dLdZ`` (N, C, *out) -> ``dLdA`` (N, C, *in)."""
        self._forward_done("_in_shape")
        self._gradient_arg(dLdZ, "dLdZ", self._out_shape, self._spec)
        kernel, stride, out = self._geometry()
        if self._max:
            return window_max_grad(dLdZ, self._argmax, self._in_shape, kernel, stride, out)
        share = dLdZ / math.prod(kernel)
        return window_scatter(lambda k: share, dLdZ, self._in_shape, kernel, stride, out)


class MaxPool1d(_PoolNd):
    """Max over windows of ``kernel`` samples every ``stride``: (N, C, W) -> (N, C, W_out)."""

    _nd, _max = 1, True


class MeanPool1d(_PoolNd):
    """Mean over windows of ``kernel`` samples every ``stride``: (N, C, W) -> (N, C, W_out)."""

    _nd, _max = 1, False


class MaxPool2d(_PoolNd):
    """Max over ``kernel`` x ``kernel`` windows every ``stride``; first maximum wins ties."""

    _nd, _max = 2, True


class MeanPool2d(_PoolNd):
    """Mean over ``kernel`` x ``kernel`` windows every ``stride``."""

    _nd, _max = 2, False


class MaxPool2d_stride1(MaxPool2d):
    """Max pooling with stride 1: (N, C, H, W) -> (N, C, H - K + 1, W - K + 1)."""

    def __init__(self, kernel: int) -> None:
        super().__init__(kernel, 1)


class MeanPool2d_stride1(MeanPool2d):
    """Mean pooling with stride 1: (N, C, H, W) -> (N, C, H - K + 1, W - K + 1)."""

    def __init__(self, kernel: int) -> None:
        super().__init__(kernel, 1)
