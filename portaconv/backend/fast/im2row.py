"""The NumPy im2row engine: an im2row gather and one matrix product per batch chunk.

Any number of spatial axes, any stride and padding: the NumPy engine for what the NCHW and
row-gather engines do not take. The gather (:func:`im2row`) makes one row per output
position holding its K**d * C_in window values, in the memory layout whose copies run
longest for the channel count (see the section comment below). With ``dZ`` the gradient as a
channels-first (C_out, n L) matrix, the products are::

    forward   Z (C_out, n L)           = W_rows^T @ rows^T        (then NCHW, plus the bias)
    dL/dW     W_rows (K^d C_in, C_out) = rows^T @ dZ^T
    dL/dA     row2im(dZ^T @ W_rows^T)                              (a scatter-add per offset)

The batch is processed in chunks whose im2row matrix fits a workspace budget
(``workspace_bytes``: a few MiB, so each chunk is gathered, multiplied and scattered back
while it sits in the cache, and peak memory does not grow with the batch). The chunks are
shared between threads (``_chunks``), OpenBLAS single-threaded meanwhile. When the
whole matrix is small (``keep_bytes``) forward keeps it for backward; otherwise backward
gathers each chunk again from the input, which forward keeps by reference (as Chainer does):
modify it in place before backward and dL/dW is wrong. On NumPy dL/dA's rows take the
memory of the chunk's rows once dL/dW has read them (one block less per thread), so a
kept matrix serves one backward.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from array_api_compat import array_namespace, device, is_numpy_array

from .._arrays import slice_add, slice_set
from .._windows import kernel_offsets, swap_leading_axes, window_index
from ._chunks import plan_chunks, run_chunks, threads_for
from .blas import Scratch, matmul

# ------------------------------------------------------------------- im2row convolution
#
# The convolutions see their windows as the "im2row" matrix: one row per output position
# holding its K**d * C values, offsets major, channels minor. Its memory layout is the
# backend's business. The portable path stores it transposed: a channels-first im2col of
# shape (K**d, C, n, *out), each kernel offset copying runs of one output row (Chainer's
# loop). The NumPy fast path picks, separately for the gather (im2row) and the scatter-add
# (row2im), the layout with the longer contiguous runs: transposed (runs of W_out values)
# or row-major, i.e. channels-last (one ``sliding_window_view`` copy with runs of K * C
# values to gather, runs of C to scatter): the rule is "the longer run wins". The matrix
# products take either layout as it is (BLAS transposes for free).


def _gather_transposed(
    x: Any, channels: int, kernel_size: Sequence[int], out_size: Sequence[int]
) -> bool:
    """Whether im2row gathers into the transposed layout (always, off NumPy)."""
    if not is_numpy_array(x):
        return True
    return math.prod(kernel_size) == 1 or out_size[-1] >= kernel_size[-1] * channels


def _scatter_transposed(
    x: Any, channels: int, kernel_size: Sequence[int], out_size: Sequence[int]
) -> bool:
    """Whether row2im reads its matrix fastest in the transposed layout (always, off NumPy)."""
    if not is_numpy_array(x):
        return True
    return math.prod(kernel_size) == 1 or out_size[-1] >= channels


def _spatial_index(ndim: int, spatial: tuple) -> tuple:
    """``(:, *spatial, :)`` for a channels-last array (batch, *space, channels)."""
    return (slice(None), *spatial) + (slice(None),) * (ndim - 1 - len(spatial))


def _channels_first_view(block: Any, shape: Sequence[int]) -> Any:
    """The memory of ``block`` as a channels-first array, seen channels-last with ``shape``
    (n, *space, C)."""
    first = np.reshape(block, (shape[-1], *shape[:-1]))
    return np.moveaxis(first, 0, -1)


def to_channels_last(
    x: Any,
    padding: Sequence[int],
    kernel_size: Sequence[int],
    out_size: Sequence[int],
    out: Any = None,
) -> Any:
    """``(n, C, *in)`` -> ``(n, *(in + 2 padding), C)``, zero-padded, ready for
    :func:`im2row` with ``kernel_size`` and ``out_size``.

    The result is a view of a channels-first array where the gather reads those faster (see
    the section comment), else a channels-last copy; im2row follows the layout it gets.
    ``out`` (NumPy only) is a block of that size to fill instead of a new array.
    """
    nd = len(padding)
    xp = array_namespace(x)
    n, C = x.shape[0], x.shape[1]
    shape = (n, *(size + 2 * p for size, p in zip(x.shape[2:], padding)), C)
    inside = tuple(slice(p, p + size) for size, p in zip(x.shape[2:], padding))
    if out is not None and is_numpy_array(out):
        if _gather_transposed(x, C, kernel_size, out_size):
            out = _channels_first_view(out, shape)
        if any(padding):
            out[...] = 0
        out[_spatial_index(nd + 2, inside)] = xp.permute_dims(x, (0, *range(2, nd + 2), 1))
        return out
    first = swap_leading_axes(x)  # (C, n, *in)
    if any(padding):
        padded = xp.zeros((C, n, *shape[1:-1]), dtype=x.dtype, device=device(x))
        first = slice_set(padded, (slice(None), slice(None), *inside), first)
    return xp.permute_dims(first, (1, *range(2, nd + 2), 0))


def im2row(
    x: Any,
    kernel_size: Sequence[int],
    stride: Sequence[int],
    out_size: Sequence[int],
    out: Any = None,
) -> Any:
    """The im2row matrix of ``x`` (n, *in, C): ``(n * prod(out_size), prod(K) * C)``.

    ``rows[(m, *o), (k, c)] = x[m, *(o * stride + offset_k), c]``, offsets in row-major
    order. Portable path: one strided slice per kernel offset, stacked channels-first
    (Chainer's loop), returned transposed. NumPy fast path (``out``: a block of the
    matrix's size, reused), following the layout of ``x`` from :func:`to_channels_last`: the
    portable loop into the transposed layout (a 1x1 kernel at stride 1 copies nothing), or
    one copy of a ``sliding_window_view`` row-major (see the section comment).
    """
    nd = len(kernel_size)
    n, C, KK = x.shape[0], x.shape[-1], math.prod(kernel_size)
    shape = (n * math.prod(out_size), KK * C)
    offsets = kernel_offsets(kernel_size)
    xp = array_namespace(x)
    first = xp.permute_dims(x, (nd + 1, 0, *range(1, nd + 1)))  # (C, n, *in), a view
    if is_numpy_array(x):
        if first.flags.c_contiguous:  # to_channels_last chose the transposed layout
            if KK == 1 and tuple(first.shape[2:]) == tuple(out_size):
                return np.reshape(first, (C, -1)).T  # a 1x1 kernel at stride 1: x itself
            if out is None:
                out = np.empty(shape, dtype=x.dtype)
            cols = np.reshape(out, (-1,))[: math.prod(shape)].reshape(KK, C, n, *out_size)
            for k, offset in enumerate(offsets):
                cols[k] = first[(slice(None), *window_index(offset, stride, out_size))]
            return np.reshape(cols, (KK * C, -1)).T
        from numpy.lib.stride_tricks import sliding_window_view

        if out is None:
            out = np.empty(shape, dtype=x.dtype)
        view = sliding_window_view(x, tuple(kernel_size), axis=tuple(range(1, nd + 1)))
        positions = tuple(slice(0, s * (m - 1) + 1, s) for s, m in zip(stride, out_size))
        view = np.moveaxis(view[_spatial_index(view.ndim, positions)], nd + 1, -1)
        rows = np.reshape(out, (-1,))[: math.prod(shape)].reshape(shape)
        np.copyto(np.reshape(rows, view.shape), view)  # (n, *out, *K, C)
        return rows
    views = [first[(slice(None), *window_index(o, stride, out_size))] for o in offsets]
    cols = xp.reshape(xp.stack(views, axis=0), (KK * C, shape[0]))
    return xp.matrix_transpose(cols)


def matmul_for_row2im(
    a: Any, b: Any, kernel_size: Sequence[int], out_size: Sequence[int], out: Any = None
) -> Any:
    """``a @ b``, an im2row-shaped matrix that :func:`row2im` will scatter for
    ``kernel_size`` and ``out_size``, stored in the layout it reads fastest: transposed
    (``(b^T a^T)^T``, BLAS does it at no cost) or row-major (see the section comment).
    ``out``: a reusable NumPy block of the result's size, or ``None``."""
    xp = array_namespace(a, b)
    channels = b.shape[1] // math.prod(kernel_size)
    transposed = _scatter_transposed(a, channels, kernel_size, out_size)
    if out is not None and is_numpy_array(out):
        shape = (a.shape[0], b.shape[1])
        block = np.reshape(out, (-1,))[: math.prod(shape)]
        if transposed:
            result = block.reshape(shape[::-1])
            np.matmul(b.T, a.T, out=result)
            return result.T
        return np.matmul(a, b, out=block.reshape(shape))
    if transposed:
        return xp.matrix_transpose(xp.matmul(xp.matrix_transpose(b), xp.matrix_transpose(a)))
    return xp.matmul(a, b)


def row2im(
    rows: Any,
    in_shape: Sequence[int],
    kernel_size: Sequence[int],
    stride: Sequence[int],
    out_size: Sequence[int],
    out: Any = None,
) -> Any:
    """Adjoint of :func:`im2row`: scatter-add the matrix ``rows`` (n L, prod(K) C) into an
    array of ``in_shape`` (n, *in, C), a loop over the kernel offsets, each a ``+=`` on one
    strided slice (none for a 1x1 kernel at stride 1). Channels-first (the result is then a
    transposed view) on the portable path and when NumPy's ``rows`` is transposed (see
    :func:`matmul_for_row2im`), else channels-last. ``out`` (NumPy only) is a block of that
    size to use instead of a new array."""
    nd = len(kernel_size)
    n, C = in_shape[0], in_shape[-1]
    KK = math.prod(kernel_size)
    offsets = kernel_offsets(kernel_size)
    xp = array_namespace(rows)
    first_shape = (C, n, *in_shape[1:-1])
    numpy_block = None
    if out is not None and is_numpy_array(rows):
        numpy_block = np.reshape(out, (-1,))[: math.prod(in_shape)]
    if not is_numpy_array(rows) or (rows.T.flags.c_contiguous and not rows.flags.c_contiguous):
        if KK == 1 and tuple(in_shape[1:-1]) == tuple(out_size):  # 1x1 at stride 1: a view
            first = xp.reshape(xp.matrix_transpose(rows), first_shape)
            return xp.permute_dims(first, (1, *range(2, nd + 2), 0))
        if numpy_block is None:
            first = xp.zeros(first_shape, dtype=rows.dtype, device=device(rows))
        else:
            first = numpy_block.reshape(first_shape)
            first[...] = 0
        cols = xp.reshape(xp.matrix_transpose(rows), (KK, C, n, *out_size))
        for k, offset in enumerate(offsets):
            first = slice_add(
                first, (slice(None), *window_index(offset, stride, out_size)), cols[k, ...]
            )
        return xp.permute_dims(first, (1, *range(2, nd + 2), 0))
    if numpy_block is None:
        result = xp.zeros(tuple(in_shape), dtype=rows.dtype, device=device(rows))
    else:
        result = numpy_block.reshape(tuple(in_shape))
        result[...] = 0
    windows_of_rows = xp.reshape(rows, (n, *out_size, KK, C))
    for k, offset in enumerate(offsets):
        index = _spatial_index(nd + 2, window_index(offset, stride, out_size)[1:])
        result = slice_add(result, index, windows_of_rows[..., k, :])
    return result


def set_batch(out: Any, batch: slice, x: Any, axes: Sequence[int], bias: Any = None) -> Any:
    """``out[batch] = permute_dims(x, axes) + bias[c]`` for ``out`` (N, C, *sp); ``bias``
    (C,) is optional. Returns ``out``, updated in place where the library allows.

    Where the matrix products' blocks reach the caller's NCHW layout; NumPy does the
    transposed copy and the bias in one pass, straight into ``out``.
    """
    nd = out.ndim - 2
    if is_numpy_array(out) and out.flags.writeable:
        moved = np.transpose(x, tuple(axes))
        if bias is None:
            np.copyto(out[batch], moved)
        else:
            np.add(moved, np.reshape(bias, (-1,) + (1,) * nd), out=out[batch])
        return out
    xp = array_namespace(x)
    value = xp.permute_dims(x, tuple(axes))
    if bias is not None:
        value = value + xp.reshape(bias, (1, -1) + (1,) * nd)
    return slice_set(out, (batch, ...), value)


def channels_first_matrix(x: Any, out: Any = None) -> Any:
    """``(n, C, *sp)`` -> the contiguous ``(C, n * prod(sp))`` matrix (one copy whose
    inner runs are whole images; into ``out`` on NumPy if given)."""
    xp = array_namespace(x)
    moved = swap_leading_axes(x)
    if out is not None and is_numpy_array(out):
        np.copyto(np.reshape(out, moved.shape), moved)
        return out
    return xp.reshape(moved, (x.shape[1], -1))



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
