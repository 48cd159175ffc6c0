"""The portable convolution engine: an im2row gather and one matrix product per batch chunk.

Any library, any number of spatial axes, any stride and padding. The gather is
``portaconv.backend.im2row``: one row per output position holding its K**d * C_in window
values (its memory layout is the backend's choice). With ``dZ`` the gradient as a
channels-first (C_out, n L) matrix, the products are::

    forward   Z (C_out, n L)           = W_rows^T @ rows^T        (then NCHW, plus the bias)
    dL/dW     W_rows (K^d C_in, C_out) = rows^T @ dZ^T
    dL/dA     row2im(dZ^T @ W_rows^T)                              (a scatter-add per offset)

The batch is processed in chunks whose im2row matrix fits a workspace budget
(``workspace_bytes``: a few MiB on NumPy, so each chunk is gathered, multiplied and scattered
back while it sits in the cache, and peak memory does not grow with the batch). On NumPy the
chunks are shared between threads (``_chunks``), OpenBLAS single-threaded meanwhile. When the
whole matrix is small (``keep_bytes``) forward keeps it for backward; otherwise backward
gathers each chunk again from the input, which forward keeps by reference (as Chainer does):
modify it in place before backward and dL/dW is wrong. On NumPy dL/dA's rows take the
memory of the chunk's rows once dL/dW has read them (one block less per thread), so a
kept matrix serves one backward.
"""

from __future__ import annotations

import math
from typing import Any

from array_api_compat import array_namespace, device, is_numpy_array

from .._ops import (
    Scratch,
    channels_first_matrix,
    im2row,
    matmul,
    matmul_for_row2im,
    row2im,
    set_batch,
    to_channels_last,
)
from ._chunks import plan_chunks, run_chunks, threads_for


class Im2RowConv:
    """Forward and backward of a ``d``-dimensional convolution on any array library.

    ``forward(A, W, b)`` returns Z (N, C_out, *out); ``backward(dZ, need_dA)`` returns
    ``(dA or None, dW, db)`` for the last forward. ``workspace`` bounds the im2row matrix of
    one chunk; ``keep`` bounds what forward may keep for backward.
    """

    def __init__(
        self, nd: int, kernel_size: int, stride: int, padding: int, workspace: int, keep: int
    ) -> None:
        self.nd, self.K, self.stride, self.padding = nd, kernel_size, stride, padding
        self.workspace, self.keep = workspace, keep
        self._A: Any = None  # the input, kept for backward
        self._W: Any = None
        self._rows: list[Any] | None = None  # its im2row matrices, when small enough to keep
        self._chunks: list[slice] = []

    def forward(self, A: Any, W: Any, b: Any) -> Any:
        xp, nd, K, s, p = array_namespace(A), self.nd, self.K, self.stride, self.padding
        C_out, C_in = W.shape[0], W.shape[1]
        out = tuple((n + 2 * p - K) // s + 1 for n in A.shape[2:])
        N, L = A.shape[0], math.prod(out)
        width = C_in * K**nd
        itemsize = xp.finfo(A.dtype).bits // 8
        self._threads = threads_for(A)
        self._chunks = plan_chunks(N, width * L * itemsize, self.workspace, self._threads)
        keep = N * width * L * itemsize <= self.keep
        self._out = out
        W_cols = xp.matrix_transpose(_weight_rows(W))
        Z = xp.empty((N, C_out, *out), dtype=A.dtype, device=device(A))

        def one_chunk(scratch: Scratch, i: int, batch: slice) -> Any:
            nonlocal Z  # NumPy writes the chunk into Z in place; immutable libraries rebind
            n = batch.stop - batch.start
            # a kept matrix needs a block of its own; otherwise one block serves every chunk
            rows = self._im2row(A[batch, ...], scratch, f"rows{i}" if keep else "rows")
            Z_cols = matmul(W_cols, xp.matrix_transpose(rows), scratch("Z", (C_out, n * L)))
            Z_cols = xp.reshape(Z_cols, (C_out, n, *out))
            Z = set_batch(Z, batch, Z_cols, (1, 0, *range(2, nd + 2)), b)
            return rows if keep else None

        kept = run_chunks(self._chunks, one_chunk, lambda: Scratch(A), self._threads)
        self._A, self._W = A, W
        self._rows = kept if keep else None
        return Z

    def backward(self, dZ_all: Any, need_dA: bool = True) -> tuple[Any, Any, Any]:
        xp, nd, K, s, p = array_namespace(dZ_all), self.nd, self.K, self.stride, self.padding
        C_out, C_in = self._W.shape[0], self._W.shape[1]
        in_size, out = self._A.shape[2:], self._out
        L = math.prod(out)
        W_rows = _weight_rows(self._W)
        dA_all = None
        if need_dA:
            dA_all = xp.empty(self._A.shape, dtype=dZ_all.dtype, device=device(dZ_all))
        kept, self._rows = self._rows, None  # used once: a second backward gathers again

        def one_chunk(scratch: Scratch, i: int, batch: slice) -> tuple[Any, Any]:
            nonlocal dA_all
            n = batch.stop - batch.start
            rows = None if kept is None else kept[i]
            if rows is None:
                rows = self._im2row(self._A[batch, ...], scratch, "rows")
            dZ = channels_first_matrix(dZ_all[batch, ...], scratch("dZ", (C_out, n * L)))
            dZ_t = xp.matrix_transpose(dZ)
            dW = matmul(xp.matrix_transpose(rows), dZ_t)  # small: NumPy lets the threads run
            db = xp.sum(dZ, axis=1)
            # the rows are dead once dL/dW has them: dL/dA's rows take their memory
            rows_shape, block = rows.shape, _memory_of(rows)
            del rows
            if dA_all is not None:
                if block is None:
                    block = scratch("d", rows_shape)
                d_rows = matmul_for_row2im(dZ_t, xp.matrix_transpose(W_rows), (K,) * nd, out, block)
                padded = (n, *(size + 2 * p for size in in_size), C_in)
                dA = row2im(d_rows, padded, (K,) * nd, (s,) * nd, out, scratch("dA", padded))
                if p:
                    dA = dA[(slice(None), *(slice(p, p + m) for m in in_size), slice(None))]
                dA_all = set_batch(dA_all, batch, dA, (0, nd + 1, *range(1, nd + 1)))
            return dW, db

        parts = run_chunks(self._chunks, one_chunk, lambda: Scratch(dZ_all), self._threads)
        dW_rows, db = parts[0]
        for dW, db_chunk in parts[1:]:  # in chunk order: the same sums however threads ran
            dW_rows, db = dW_rows + dW, db + db_chunk
        # W_rows' layout (K, ..., K, C_in, C_out) back to W's (C_out, C_in, K, ..., K)
        dW = xp.reshape(dW_rows, (*(K,) * nd, C_in, C_out))
        dW = xp.permute_dims(dW, (nd + 1, nd, *range(nd)))
        return dA_all, xp.asarray(dW, copy=True), db

    def _im2row(self, A: Any, scratch: Scratch, block: str) -> Any:
        """(n, C_in, *in) -> the (n L, K^d C_in) matrix of its zero-padded windows."""
        nd, K, s, p, out = self.nd, self.K, self.stride, self.padding, self._out
        n, C = A.shape[0], A.shape[1]
        padded = (n, *(size + 2 * p for size in A.shape[2:]), C)
        # (a 1x1 im2row matrix is a view of A_last: a kept one needs its own block too)
        A_last = to_channels_last(A, (p,) * nd, (K,) * nd, out, scratch("A_" + block, padded))
        shape = (n * math.prod(out), K**nd * C)
        return im2row(A_last, (K,) * nd, (s,) * nd, out, scratch(block, shape))


def _memory_of(x: Any) -> Any:
    """A NumPy array's memory as a flat array (C- or F-ordered ``x``), else None."""
    if not is_numpy_array(x):
        return None
    if x.flags.c_contiguous:
        return x.reshape(-1)
    if x.flags.f_contiguous:
        return x.T.reshape(-1)
    return None


def _weight_rows(W: Any) -> Any:
    """``W`` (C_out, C_in, K, ..., K) as (K^d C_in, C_out), the im2row matrix's column order."""
    xp, nd = array_namespace(W), W.ndim - 2
    W = xp.permute_dims(W, (*range(2, nd + 2), 1, 0))
    return xp.reshape(W, (-1, W.shape[-1]))
