"""Convolution (cross-correlation, as in deep learning) in 1-d and 2-d.

One implementation, :class:`_ConvNd`, serves both: an im2col gather (a loop over the
kernel offsets, each a strided slice) followed by one matrix product whose result lands in
``(N, C_out, *out)`` order. Strided convolution is computed directly, never as stride-1
convolution followed by downsampling (which would waste stride**d of the work).

Shapes, with ``d`` spatial axes::

    A    (N, C_in, *in)          W    (C_out, C_in, K, ..., K)
    Z    (N, C_out, *out)        b    (C_out,)
    out = floor((in + 2 * padding - K) / stride) + 1

    Z[n, o, *x] = b[o] + sum_{c, k} W[o, c, *k] * A_pad[n, c, *(x * stride + k)]
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from array_api_compat import array_namespace

from ..backend import col2im, conv_out_size, im2col, pad_spatial, swap_leading_axes
from ._base import Layer, fan_in_bound, shape_str, spec_of

_LAYOUT = {1: "(N, C_in, W_in)", 2: "(N, C_in, H_in, W_in)"}


class _ConvNd(Layer):
    """Shared body of every convolution layer; ``_nd`` is the number of spatial axes."""

    _nd = 0
    param_names = ("W", "b")

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        weight_init_fn: Callable[..., Any] | None = None,
        bias_init_fn: Callable[..., Any] | None = None,
    ) -> None:
        self.in_channels = self._int_arg("in_channels", in_channels)
        self.out_channels = self._int_arg("out_channels", out_channels)
        self.kernel_size = self._int_arg("kernel_size", kernel_size)
        self.stride = self._int_arg("stride", stride)
        self.padding = self._int_arg("padding", padding, minimum=0)

        kernel = (self.kernel_size,) * self._nd
        bound = fan_in_bound(self.in_channels * math.prod(kernel))
        w_shape = (self.out_channels, self.in_channels, *kernel)
        self.W = self._init_param(weight_init_fn, "weight_init_fn", w_shape, bound)
        self.b = self._init_param(bias_init_fn, "bias_init_fn", (self.out_channels,), bound)
        xp = array_namespace(self.W)
        self.dLdW = xp.zeros_like(self.W)
        self.dLdb = xp.zeros_like(self.b)
        self._cols = None  # im2col of the padded input, kept for backward
        self._in_shape: tuple[int, ...] | None = None
        self._out_shape: tuple[int, ...] | None = None

    def __repr__(self) -> str:
        return (
            f"{self.name}({self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding})"
        )

    def forward(self, A: Any) -> Any:
        """``A`` (N, C_in, *in) -> ``Z`` (N, C_out, *out)."""
        xp = self._array_arg(A, "A", _LAYOUT[self._nd], self._nd + 2)
        self._axis_size(A, "A", 1, "C_in", self.in_channels)
        self._same_place(A, "A", self.W)
        nd, K, s, p = self._nd, self.kernel_size, self.stride, self.padding
        padded = tuple(n + 2 * p for n in A.shape[2:])
        if any(n < K for n in padded):
            raise ValueError(
                f"{self.name}: kernel_size={K} is larger than the padded input "
                f"{shape_str(padded)} (input {shape_str(A.shape[2:])}, padding={p})"
            )
        out = tuple(conv_out_size(n, K, s) for n in padded)
        N, L = A.shape[0], math.prod(out)
        # Channels first, so the whole batch is one (C_in K^d, N L) matrix and one GEMM.
        At = pad_spatial(swap_leading_axes(A), (p,) * nd)
        cols = im2col(At, (K,) * nd, (s,) * nd, out)
        cols = xp.reshape(cols, (self.in_channels * K**nd, N * L))
        Z = xp.matmul(self._weight_matrix(xp), cols)
        Z = xp.reshape(Z, (self.out_channels, N, *out))
        Z = swap_leading_axes(Z + xp.reshape(self.b, (self.out_channels,) + (1,) * (nd + 1)))
        self._cols, self._in_shape, self._out_shape = cols, tuple(A.shape), tuple(Z.shape)
        return Z

    def backward(self, dLdZ: Any) -> Any:
        """``dLdZ`` (N, C_out, *out) -> ``dLdA`` (N, C_in, *in); sets ``dLdW`` and ``dLdb``."""
        self._forward_done("_cols")
        xp = self._gradient_arg(dLdZ, "dLdZ", self._out_shape, spec_of(self._cols))
        nd, K, s, p = self._nd, self.kernel_size, self.stride, self.padding
        N, out = self._in_shape[0], self._out_shape[2:]
        dZ = xp.reshape(swap_leading_axes(dLdZ), (self.out_channels, N * math.prod(out)))

        self.dLdW = xp.reshape(xp.matmul(dZ, xp.matrix_transpose(self._cols)), self.W.shape)
        self.dLdb = xp.sum(dZ, axis=1)

        dcols = xp.matmul(xp.matrix_transpose(self._weight_matrix(xp)), dZ)
        dcols = xp.reshape(dcols, (self.in_channels, K**nd, N, *out))
        padded = (self.in_channels, N, *(n + 2 * p for n in self._in_shape[2:]))
        dA = col2im(dcols, padded, (K,) * nd, (s,) * nd, out)
        if p:
            dA = dA[(..., *(slice(p, p + n) for n in self._in_shape[2:]))]
        return swap_leading_axes(dA)

    def _weight_matrix(self, xp: Any) -> Any:
        """``W`` as (C_out, C_in * K**d), matching the row order of the im2col matrix."""
        return xp.reshape(self.W, (self.out_channels, -1))


class Conv1d_stride1(_ConvNd):
    """1-d convolution with stride 1 and no padding. ``A`` (N, C_in, W_in) -> (N, C_out, W_in-K+1).

    ``weight_init_fn(out_channels, in_channels, kernel_size)`` and
    ``bias_init_fn(out_channels)`` are called once, here; they may return NumPy arrays.
    """

    _nd = 1

    def __init__(
        self, in_channels, out_channels, kernel_size, weight_init_fn=None, bias_init_fn=None
    ):
        super().__init__(in_channels, out_channels, kernel_size, 1, 0, weight_init_fn, bias_init_fn)


class Conv2d_stride1(_ConvNd):
    """2-d convolution, stride 1, no padding: (N, C_in, H, W) -> (N, C_out, H-K+1, W-K+1).

    ``weight_init_fn(out_channels, in_channels, kernel_size, kernel_size)`` and
    ``bias_init_fn(out_channels)`` are called once, here; they may return NumPy arrays.
    """

    _nd = 2

    def __init__(
        self, in_channels, out_channels, kernel_size, weight_init_fn=None, bias_init_fn=None
    ):
        super().__init__(in_channels, out_channels, kernel_size, 1, 0, weight_init_fn, bias_init_fn)


class Conv1d(_ConvNd):
    """1-d convolution with stride and zero padding; same results as ``torch.nn.Conv1d``.

    ``A`` (N, C_in, W_in) -> ``Z`` (N, C_out, (W_in + 2 padding - K) // stride + 1).
    The handout reaches the parameters through ``layer.conv1d_stride1.W``; that path works
    and names this same layer.
    """

    _nd = 1

    @property
    def conv1d_stride1(self) -> Conv1d:
        return self


class Conv2d(_ConvNd):
    """2-d convolution with stride and zero padding; same results as ``torch.nn.Conv2d``.

    ``A`` (N, C_in, H, W) -> ``Z`` (N, C_out, H_out, W_out), each spatial size
    ``(n + 2 padding - K) // stride + 1``. ``layer.conv2d_stride1.W`` (the handout's path)
    names this same layer's ``W``.
    """

    _nd = 2

    @property
    def conv2d_stride1(self) -> Conv2d:
        return self
