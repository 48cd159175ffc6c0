"""Transposed convolution with the handout's semantics.

``ConvTranspose{1,2}d(in_channels, out_channels, kernel_size, upsampling_factor)`` computes
what the handout defines: upsample the input by zero insertion (factor k), then a stride-1
valid convolution with ``W`` of shape (C_out, C_in, K, ..., K)::

    Z = Conv_stride1(Upsample(A, k), W) + b,     out = k * (in - 1) + 1 - K + 1

This is *not* ``torch.nn.ConvTranspose`` with the same weight tensor. The two agree with::

    torch.nn.functional.conv_transpose2d(
        A, W.flip(-1, -2).transpose(0, 1), b, stride=k, padding=K - 1)

i.e. PyTorch's weight is ours flipped in space with the channel axes swapped, stride is the
upsampling factor and padding is ``K - 1``.

It is computed without materialising the zeros: the forward pass is the input-gradient of a
stride-k convolution (a matrix product, then a col2im scatter), and the backward pass is a
stride-k convolution of the gradient, so no work is spent on inserted zeros. On NumPy an
engine does this in threaded chunks (``portaconv.backend.conv.TransposedConv``); elsewhere
the layer's own portable products below, on the whole batch at once.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from array_api_compat import array_namespace

from ..backend._arrays import astype
from ..backend._conv import transposed_engine
from ..backend._windows import col2im, im2col, matmul, pad_spatial, swap_leading_axes
from ..checks import shape_str
from ._base import Layer, fan_in_bound, spec_of

_LAYOUT = {1: "(N, C_in, W_in)", 2: "(N, C_in, H_in, W_in)"}


class _ConvTransposeNd(Layer):
    _nd = 0
    param_names = ("W", "b")

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        upsampling_factor: int,
        weight_init_fn: Callable[..., Any] | None = None,
        bias_init_fn: Callable[..., Any] | None = None,
    ) -> None:
        self.in_channels = self._int_arg("in_channels", in_channels)
        self.out_channels = self._int_arg("out_channels", out_channels)
        self.kernel_size = self._int_arg("kernel_size", kernel_size)
        self.upsampling_factor = self._int_arg("upsampling_factor", upsampling_factor)
        kernel = (self.kernel_size,) * self._nd
        bound = fan_in_bound(self.in_channels * math.prod(kernel))
        w_shape = (self.out_channels, self.in_channels, *kernel)
        self.W = self._init_param(weight_init_fn, "weight_init_fn", w_shape, bound)
        self.b = self._init_param(bias_init_fn, "bias_init_fn", (self.out_channels,), bound)
        xp = array_namespace(self.W)
        self.dLdW = xp.zeros_like(self.W)
        self.dLdb = xp.zeros_like(self.b)
        self._A2 = None  # the input as (C_in, N * L), kept for dLdW (portable path)
        self._engine: Any = None  # the engine that ran the last forward, if one did
        self._in_shape: tuple[int, ...] | None = None
        self._spec: Any = None  # (namespace, device, dtype) of the last forward's computation
        self._out_shape: tuple[int, ...] | None = None

    def __repr__(self) -> str:
        return (
            f"{self.name}({self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"upsampling_factor={self.upsampling_factor})"
        )

    def _kernel_matrix(self, W: Any) -> Any:
        """W flipped in space, channels swapped, as (C_in, C_out * K**d) (PyTorch's layout)."""
        xp, spatial = array_namespace(W), tuple(range(2, self._nd + 2))
        V = xp.permute_dims(xp.flip(W, axis=spatial), (1, 0, *spatial))
        return xp.reshape(V, (self.in_channels, -1))

    def forward(self, A: Any) -> Any:
        """``A`` (N, C_in, *in) -> ``Z`` (N, C_out, *(k (in - 1) + 2 - K))."""
        xp = self._array_arg(A, "A", _LAYOUT[self._nd], self._nd + 2)
        self._axis_size(A, "A", 1, "C_in", self.in_channels)
        A, W, b = self._promote(A)
        nd, K, k = self._nd, self.kernel_size, self.upsampling_factor
        in_size = tuple(A.shape[2:])
        upsampled = tuple(k * (n - 1) + 1 for n in in_size)
        if any(n < K for n in upsampled):
            raise ValueError(
                f"{self.name}: kernel_size={K} is larger than the upsampled input "
                f"{shape_str(upsampled)} (input {shape_str(in_size)}, upsampling_factor={k})"
            )
        self._in_shape, self._spec = tuple(A.shape), spec_of(A)
        self._engine = transposed_engine(A, nd, K, k)
        if self._engine is not None:
            self._A2 = None
            Z = self._engine.forward(A, W, b)
            self._out_shape = tuple(Z.shape)
            return Z
        N, L = A.shape[0], math.prod(in_size)
        # Channels first (as in Conv): (C_in, N L) so the batch is one matrix product.
        A2 = xp.reshape(swap_leading_axes(A), (self.in_channels, N * L))
        cols = matmul(xp.matrix_transpose(self._kernel_matrix(W)), A2)
        cols = xp.reshape(cols, (self.out_channels, K**nd, N, *in_size))
        full = (self.out_channels, N, *(k * (n - 1) + K for n in in_size))
        Z = col2im(cols, full, (K,) * nd, (k,) * nd, in_size)
        Z = Z[(..., *(slice(K - 1, K - 1 + n - K + 1) for n in upsampled))]
        Z = swap_leading_axes(Z + xp.reshape(b, (self.out_channels,) + (1,) * (nd + 1)))
        self._A2, self._out_shape = A2, tuple(Z.shape)
        return Z

    def backward(self, dLdZ: Any) -> Any:
        """``dLdZ`` (N, C_out, *out) -> ``dLdA`` (N, C_in, *in); sets ``dLdW`` and ``dLdb``."""
        self._forward_done("_in_shape")
        xp = self._gradient_arg(dLdZ, "dLdZ", self._out_shape, self._spec)
        if self._engine is not None:
            dA, dLdW, dLdb = self._engine.backward(dLdZ, self.needs_input_grad)
            self._set_grads(W=dLdW, b=dLdb)
            return self._as_input(dA)
        nd, K, k = self._nd, self.kernel_size, self.upsampling_factor
        N, in_size = self._in_shape[0], self._in_shape[2:]
        L = math.prod(in_size)
        dZ_full = pad_spatial(swap_leading_axes(dLdZ), (K - 1,) * nd)
        cols = im2col(dZ_full, (K,) * nd, (k,) * nd, in_size)
        cols = xp.reshape(cols, (self.out_channels * K**nd, N * L))
        dA = matmul(self._kernel_matrix(astype(self.W, dLdZ.dtype)), cols)
        dA = swap_leading_axes(xp.reshape(dA, (self.in_channels, N, *in_size)))

        dV = matmul(self._A2, xp.matrix_transpose(cols))
        dV = xp.reshape(dV, (self.in_channels, self.out_channels, *(K,) * nd))
        spatial = tuple(range(2, nd + 2))
        dLdW = xp.flip(xp.permute_dims(dV, (1, 0, *spatial)), axis=spatial)
        self._set_grads(W=dLdW, b=xp.sum(dLdZ, axis=(0, *spatial)))
        return self._as_input(dA)


class ConvTranspose1d(_ConvTransposeNd):
    """Upsample (factor ``upsampling_factor``) then stride-1 Conv1d; see the module docstring.

    ``A`` (N, C_in, W_in) -> ``Z`` (N, C_out, k (W_in - 1) + 2 - K).
    """

    _nd = 1


class ConvTranspose2d(_ConvTransposeNd):
    """Upsample (factor ``upsampling_factor``) then stride-1 Conv2d; see the module docstring.

    ``A`` (N, C_in, H, W) -> ``Z`` (N, C_out, k (H - 1) + 2 - K, k (W - 1) + 2 - K).
    """

    _nd = 2
