"""The few-operations convolution engine: im2col as one strided view, col2im as one scatter-add.

For libraries with native strided views and a scatter-add (``strided_native``: PyTorch),
where every dispatched operation costs a kernel launch on a GPU. ``im2col`` and ``col2im``
(``portaconv.backend``) gather and scatter channels-first, kernel offsets minor, the order
of ``W``'s own axes, so ``W`` is the weight matrix as it is (a view) and ``dL/dW`` is the
product's result reshaped::

    cols (C_in K^d, n L)   = im2col(A_pad)                       (one view, one copy)
    forward   Z (C_out, n L)  = W (C_out, C_in K^d) @ cols        (then + b, seen NCHW)
    dL/dW     (C_out, C_in K^d) = dZ (C_out, n L) @ cols^T
    dL/dA     col2im(W^T @ dZ)                                    (one scatter-add)

The batch is processed in chunks whose ``cols`` fit a workspace budget (one chunk for the
zoo's networks on a CPU at batch 128; peak memory bounded whatever the batch). When all of
them fit ``keep`` bytes, forward keeps them for backward; otherwise backward gathers each
chunk again from the padded input, which forward keeps by reference.
"""

from __future__ import annotations

import math
from typing import Any

from array_api_compat import array_namespace

from .._windows import col2im, im2col, pad_spatial, swap_leading_axes
from .blas import batch_chunks
from .native import applies as strided_native


def strided_applies(A: Any) -> bool:
    """Whether :class:`StridedConv` computes convolutions of arrays like ``A``."""
    return strided_native(A)


class StridedConv:
    """Forward and backward of a ``d``-dimensional convolution in few, large operations.

    ``forward(A, W, b)`` returns Z (N, C_out, *out) (a channels-first view);
    ``backward(dZ, need_dA)`` returns ``(dA or None, dW, db)`` for the last forward.
    """

    def __init__(
        self, nd: int, kernel_size: int, stride: int, padding: int, workspace: int, keep: int
    ) -> None:
        self.nd, self.K, self.stride, self.padding = nd, kernel_size, stride, padding
        self.workspace, self.keep = workspace, keep
        self._A_first: Any = None  # the padded input, channels first (C_in, N, *in_pad)
        self._W: Any = None
        self._cols: list[Any] | None = None  # its im2col matrices, when small enough to keep
        self._chunks: list[slice] = []

    def forward(self, A: Any, W: Any, b: Any) -> Any:
        xp, nd, K, s, p = array_namespace(A), self.nd, self.K, self.stride, self.padding
        C_out = W.shape[0]
        self._A_first = pad_spatial(swap_leading_axes(A), (p,) * nd)
        self._out = tuple((n - K) // s + 1 for n in self._A_first.shape[2:])
        self._W = W
        N, width = A.shape[0], W.shape[1] * K**nd
        item_bytes = width * math.prod(self._out) * (xp.finfo(A.dtype).bits // 8)
        self._chunks = batch_chunks(N, item_bytes, self.workspace)
        keep = N * item_bytes <= self.keep
        W_matrix = xp.reshape(W, (C_out, width))
        parts, kept = [], []
        for batch in self._chunks:
            cols = self._im2col(batch)
            Z = xp.matmul(W_matrix, cols)  # (C_out, n L)
            parts.append(xp.reshape(Z, (C_out, -1, *self._out)))
            kept.append(cols if keep else None)
        self._cols = kept if keep else None
        Z = _join(parts, axis=1) + xp.reshape(b, (C_out,) + (1,) * (nd + 1))
        return swap_leading_axes(Z)

    def backward(self, dZ_all: Any, need_dA: bool = True) -> tuple[Any, Any, Any]:
        xp, nd, K, s, p = array_namespace(dZ_all), self.nd, self.K, self.stride, self.padding
        W, out = self._W, self._out
        C_out, C_in = W.shape[0], W.shape[1]
        W_matrix = xp.reshape(W, (C_out, C_in * K**nd))
        dZ_first = swap_leading_axes(dZ_all)  # (C_out, N, *out)
        kept, self._cols = self._cols, None  # used once: a second backward gathers again
        dW = db = None
        dA_parts = []
        for i, batch in enumerate(self._chunks):
            cols = self._im2col(batch) if kept is None else kept[i]
            dZ = xp.reshape(_batch(dZ_first, batch, len(self._chunks)), (C_out, -1))
            dW_part = xp.matmul(dZ, xp.matrix_transpose(cols))
            db_part = xp.sum(dZ, axis=1)
            dW = dW_part if dW is None else dW + dW_part
            db = db_part if db is None else db + db_part
            del cols
            if need_dA:
                n = batch.stop - batch.start
                d_cols = xp.matmul(xp.matrix_transpose(W_matrix), dZ)  # (C_in K^d, n L)
                d_cols = xp.reshape(d_cols, (C_in, K**nd, n, *out))
                padded = (C_in, n, *self._A_first.shape[2:])
                dA_parts.append(col2im(d_cols, padded, (K,) * nd, (s,) * nd, out))
        dA = None
        if need_dA:
            dA = _join(dA_parts, axis=1)
            if p:
                dA = dA[(slice(None), slice(None), *(slice(p, n - p) for n in dA.shape[2:]))]
            dA = swap_leading_axes(dA)
        return dA, xp.reshape(dW, tuple(W.shape)), db

    def _im2col(self, batch: slice) -> Any:
        """The (C_in K^d, n L) im2col matrix of one chunk of the padded input."""
        xp, nd, K, s = array_namespace(self._A_first), self.nd, self.K, self.stride
        A_first = _batch(self._A_first, batch, len(self._chunks))
        cols = im2col(A_first, (K,) * nd, (s,) * nd, self._out)
        return xp.reshape(cols, (cols.shape[0] * cols.shape[1], -1))


def _batch(x_first: Any, batch: slice, chunks: int) -> Any:
    """``x_first[:, batch]`` (no operation at all when there is one chunk)."""
    return x_first if chunks == 1 else x_first[:, batch, ...]


def _join(parts: list[Any], axis: int) -> Any:
    return parts[0] if len(parts) == 1 else array_namespace(parts[0]).concat(parts, axis=axis)
