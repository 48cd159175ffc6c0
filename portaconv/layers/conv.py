"""Convolution (cross-correlation, as in deep learning) in 1-d and 2-d.

One implementation, :class:`_ConvNd`, serves both: an im2col gather (a loop over the
kernel offsets, each a strided slice) followed by one matrix product per chunk of the batch.
Strided convolution is computed directly, never as stride-1 convolution followed by
downsampling (which would waste stride**d of the work).

The gather is ``portaconv.backend.im2row``: one row per output position holding its
K**d * C_in window values (its memory layout is the backend's choice). With ``dZ`` the
gradient as a channels-first (C_out, n L) matrix, the products are::

    forward   Z (C_out, n L)        = W_rows^T @ rows^T        (then NCHW, plus the bias)
    dL/dW     W_rows (K^d C_in, C_out) = rows^T @ dZ^T
    dL/dA     row2im(dZ^T @ W_rows^T)                           (a scatter-add per offset)

On NumPy, a stride-1 2-d convolution with at least ``MIN_CHANNELS`` input channels takes
``portaconv.backend.RowConv2d`` instead: it gathers only the K horizontal offsets and runs K
products per pass, the chunks split between threads (see that module).

The batch is processed in chunks whose im2row matrix fits a workspace budget
(``portaconv.backend.workspace_bytes``: a few MiB on NumPy, so each chunk is gathered,
multiplied and scattered back while it sits in the cache, and peak memory does not grow
with the batch). When the whole matrix is small (``portaconv.backend.keep_bytes``) forward
keeps it for backward; otherwise backward gathers each chunk again from the input, which
forward keeps by reference (as Chainer does): modify it in place before backward and
dL/dW is wrong.

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

from array_api_compat import array_namespace, device

from ..backend import (
    RowConv2d,
    Scratch,
    astype,
    batch_chunks,
    channels_first_matrix,
    conv_out_size,
    im2row,
    keep_bytes,
    matmul,
    matmul_for_row2im,
    row2im,
    row_conv_applies,
    set_batch,
    to_channels_last,
    workspace_bytes,
)
from ..checks import shape_str
from ._base import Layer, fan_in_bound, spec_of

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
        self._A = None  # the input, kept for backward
        self._rows: list[Any] | None = None  # its im2row matrices, when small enough to keep
        self._chunks: list[slice] = []
        self._row_conv: RowConv2d | None = None  # the NumPy fast path, when it served forward
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
        A, W, b = self._promote(A)
        nd, K, s, p = self._nd, self.kernel_size, self.stride, self.padding
        padded = tuple(n + 2 * p for n in A.shape[2:])
        if any(n < K for n in padded):
            raise ValueError(
                f"{self.name}: kernel_size={K} is larger than the padded input "
                f"{shape_str(padded)} (input {shape_str(A.shape[2:])}, padding={p})"
            )
        out = tuple(conv_out_size(n, K, s) for n in padded)
        self._in_shape = tuple(A.shape)
        self._out_shape = (A.shape[0], self.out_channels, *out)
        self._row_conv = None
        if row_conv_applies(A, nd, K, s, self.in_channels):
            self._row_conv = RowConv2d(p, workspace_bytes(A), keep_bytes(A))
            self._A, self._rows, self._chunks = A, None, []
            return self._row_conv.forward(A, W, b)
        N, L = A.shape[0], math.prod(out)
        width = self.in_channels * K**nd
        chunks = batch_chunks(N, width * L * _itemsize(A), workspace_bytes(A))
        keep = N * width * L * _itemsize(A) <= keep_bytes(A)
        W_cols = xp.matrix_transpose(self._weight_rows(W))
        scratch = Scratch(A)
        Z = xp.empty((N, self.out_channels, *out), dtype=A.dtype, device=device(A))
        kept = []
        for i, batch in enumerate(chunks):
            n = batch.stop - batch.start
            # a kept matrix needs a block of its own; otherwise one block serves every chunk
            rows = self._im2row(A[batch, ...], out, scratch, f"rows{i}" if keep else "rows")
            Z_cols = matmul(
                W_cols, xp.matrix_transpose(rows), scratch("Z", (self.out_channels, n * L))
            )
            Z_cols = xp.reshape(Z_cols, (self.out_channels, n, *out))
            Z = set_batch(Z, batch, Z_cols, (1, 0, *range(2, nd + 2)), b)
            if keep:
                kept.append(rows)
        self._A, self._chunks = A, chunks
        self._rows = kept if keep else None
        return Z

    def backward(self, dLdZ: Any) -> Any:
        """``dLdZ`` (N, C_out, *out) -> ``dLdA`` (N, C_in, *in); sets ``dLdW`` and ``dLdb``.

        With ``needs_input_grad = False`` only ``dLdW`` and ``dLdb`` are computed and the
        result is None.
        """
        self._forward_done("_A")
        xp = self._gradient_arg(dLdZ, "dLdZ", self._out_shape, spec_of(self._A))
        if self._row_conv is not None:
            dLdA, dLdW, dLdb = self._row_conv.backward(dLdZ, self.needs_input_grad)
            self._set_grads(W=dLdW, b=dLdb)
            return self._as_input(dLdA)
        nd, K, s, p = self._nd, self.kernel_size, self.stride, self.padding
        in_size, out = self._in_shape[2:], self._out_shape[2:]
        L = math.prod(out)
        W_rows = self._weight_rows(astype(self.W, dLdZ.dtype))
        scratch = Scratch(dLdZ)
        dLdA = None
        if self.needs_input_grad:
            dLdA = xp.empty(self._in_shape, dtype=dLdZ.dtype, device=device(dLdZ))
        dW_rows = dLdb = None
        for i, batch in enumerate(self._chunks):
            n = batch.stop - batch.start
            rows = None if self._rows is None else self._rows[i]
            if rows is None:
                rows = self._im2row(self._A[batch, ...], out, scratch, "rows")
            else:  # used once: let it go as soon as dL/dW has it (a second backward regathers)
                self._rows[i] = None
            dZ = channels_first_matrix(dLdZ[batch, ...], scratch("dZ", (self.out_channels, n * L)))
            dZ_t = xp.matrix_transpose(dZ)
            dW = xp.matmul(xp.matrix_transpose(rows), dZ_t)
            db = xp.sum(dZ, axis=1)
            dW_rows, dLdb = (dW, db) if dW_rows is None else (dW_rows + dW, dLdb + db)
            rows_shape = rows.shape
            del rows
            if dLdA is None:
                continue
            d_rows = matmul_for_row2im(
                dZ_t, xp.matrix_transpose(W_rows), (K,) * nd, out, scratch("d", rows_shape)
            )
            padded = (n, *(size + 2 * p for size in in_size), self.in_channels)
            dA = row2im(d_rows, padded, (K,) * nd, (s,) * nd, out, scratch("dA", padded))
            if p:
                dA = dA[(slice(None), *(slice(p, p + size) for size in in_size), slice(None))]
            dLdA = set_batch(dLdA, batch, dA, (0, nd + 1, *range(1, nd + 1)))
        # W_rows' layout (K, ..., K, C_in, C_out) back to W's (C_out, C_in, K, ..., K)
        dW = xp.reshape(dW_rows, (*(K,) * nd, self.in_channels, self.out_channels))
        dW = xp.permute_dims(dW, (nd + 1, nd, *range(nd)))
        self._set_grads(W=xp.asarray(dW, copy=True), b=dLdb)
        return self._as_input(dLdA)

    def _im2row(self, A: Any, out: tuple[int, ...], scratch: Scratch, block: str) -> Any:
        """(n, C_in, *in) -> the (n L, K^d C_in) matrix of its zero-padded windows."""
        nd, K, s, p = self._nd, self.kernel_size, self.stride, self.padding
        n, C = A.shape[0], self.in_channels
        padded = (n, *(size + 2 * p for size in A.shape[2:]), C)
        # (a 1x1 im2row matrix is a view of A_last: a kept one needs its own block too)
        A_last = to_channels_last(A, (p,) * nd, (K,) * nd, out, scratch("A_" + block, padded))
        shape = (n * math.prod(out), K**nd * C)
        return im2row(A_last, (K,) * nd, (s,) * nd, out, scratch(block, shape))

    def _weight_rows(self, W: Any) -> Any:
        """``W`` as (K^d C_in, C_out), matching the column order of the im2row matrix."""
        nd, xp = self._nd, array_namespace(W)
        W = xp.permute_dims(W, (*range(2, nd + 2), 1, 0))
        return xp.reshape(W, (-1, self.out_channels))


def _itemsize(x: Any) -> int:
    """Bytes per element of a floating-point array (the standard has no ``itemsize``)."""
    return array_namespace(x).finfo(x.dtype).bits // 8


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
