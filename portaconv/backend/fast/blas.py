"""NumPy's matrix products and batch chunks: products into reused blocks, OpenBLAS's
``cblas_?gemm`` called directly, products shared between portaconv's threads, and the
budgets that split a batch into cache-sized chunks."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from array_api_compat import array_namespace, is_numpy_array

from .._arrays import is_gpu_array
from .threads import blas_gemm, blas_held, in_threaded_task, num_threads, run_threaded

#: Bytes of im2row workspace a convolution may fill at a time, by kind of array. NumPy
#: gathers, multiplies and scatters back a chunk of the batch while it sits in the cache: a
#: few MiB (copies within the cache are faster than through one batch-wide buffer, and a
#: reused chunk-sized block costs no page faults); peak memory stays bounded whatever the
#: batch. Other libraries on a CPU (torch) pay a fixed cost per operation and parallelise
#: inside one, so they get larger chunks (a few MiB leaves torch paying that cost too
#: often); GPUs larger still, to stay busy.
WORKSPACE_BYTES = {"numpy": 4 * 2**20, "cpu": 32 * 2**20, "gpu": 512 * 2**20}

#: Bytes of im2row matrices a convolution may keep from forward to backward (all of its
#: chunks, or none). NumPy keeps up to 3 chunks' worth rather than gather them again (the
#: zoo cnn's second convolution, 10.5 MiB of rows at batch 128, then skips a gather; the
#: few-channel engine keeps less, ``conv.nchw.MAX_KEEP_BYTES``); beyond that, memory wins.
#: Other libraries keep what fits in one chunk.
KEEP_BYTES = {"numpy": 12 * 2**20}


def workspace_bytes(x: Any) -> int:
    """The im2row workspace budget for arrays like ``x`` (see :data:`WORKSPACE_BYTES`)."""
    if is_numpy_array(x):
        return WORKSPACE_BYTES["numpy"]
    return WORKSPACE_BYTES["gpu" if is_gpu_array(x) else "cpu"]


def keep_bytes(x: Any) -> int:
    """How much im2row matrix a convolution on arrays like ``x`` may keep for backward
    (see :data:`KEEP_BYTES`)."""
    if is_numpy_array(x):
        return KEEP_BYTES["numpy"]
    return workspace_bytes(x)


def batch_chunks(batch: int, bytes_per_item: int, budget: int) -> list[slice]:
    """Split ``range(batch)`` into the fewest slices of at most ``budget`` bytes (at least
    one item each), as equal as possible, larger ones first: ``batch_chunks(10, 3, 9)`` ->
    sizes 3, 3, 2, 2."""
    if batch <= 0:
        return [slice(0, 0)]
    per_chunk = max(1, min(batch, budget // max(1, bytes_per_item)))
    return split_evenly(batch, -(-batch // per_chunk))


def split_evenly(batch: int, count: int) -> list[slice]:
    """Split ``range(batch)`` into ``count`` consecutive slices whose sizes differ by at most
    one, larger ones first (``count`` between 1 and ``batch``)."""
    base, extra = divmod(batch, count)
    chunks, start = [], 0
    for i in range(count):
        stop = start + base + (i < extra)
        chunks.append(slice(start, stop))
        start = stop
    return chunks


class Scratch:
    """Reusable blocks for the chunks of one batch.

    On NumPy the first request under a name allocates; later ones (for a size not larger)
    return a view of the same memory, so a chunk loop touches fresh pages once. ``order="F"``
    gives the transposed memory layout. Elsewhere it returns ``None`` and the functions that
    take ``out=`` allocate as they go.
    """

    def __init__(self, like: Any) -> None:
        self._numpy = is_numpy_array(like)
        self._dtype = like.dtype
        self._blocks: dict[str, Any] = {}

    def __call__(self, name: str, shape: Sequence[int], order: str = "C") -> Any:
        if not self._numpy:
            return None
        size = math.prod(shape)
        block = self._blocks.get(name)
        if block is None or block.size < size:
            block = self._blocks[name] = np.empty(size, dtype=self._dtype)
        if order == "F":
            return block[:size].reshape(tuple(shape)[::-1]).T
        return block[:size].reshape(tuple(shape))


def matmul(a: Any, b: Any, out: Any = None) -> Any:
    """``a @ b`` for matrices; on NumPy into ``out`` when given (a reused block: no fresh
    pages), which may be C- or F-ordered (then ``b.T @ a.T`` fills its transpose), and
    through :func:`dot` (which lets other threads run)."""
    if is_numpy_array(a) and is_numpy_array(b):
        if out is None or out.flags.c_contiguous:
            return dot(a, b, out)
        dot(b.T, a.T, out.T)
        return out
    return array_namespace(a, b).matmul(a, b)


def dot(a: Any, b: Any, out: Any = None) -> Any:
    """``a @ b`` for NumPy matrices (into the C-contiguous ``out`` when given) by
    ``np.dot``, not ``np.matmul``: matmul keeps the GIL through the whole BLAS call when the
    product has at most 500 elements (NumPy releases it by output size), so the threads of
    a convolution whose dL/dW is such a product (LeNet's 6 -> 16, 16 x 30 per kernel row)
    would take turns, where ``np.dot`` lets them run at once. Same BLAS call, same
    numbers."""
    return np.dot(a, b) if out is None else np.dot(a, b, out=out)


def _blas_layout(x: Any) -> tuple[bool, int] | None:
    """(transposed, leading dimension) of a NumPy matrix as BLAS reads it in row-major
    order, or None where it cannot (no unit stride, or a leading stride below a row)."""
    rows, cols = x.shape
    s0, s1 = x.strides
    item = x.itemsize
    if s1 == item and s0 % item == 0 and s0 // item >= max(1, cols):
        return False, s0 // item
    if s0 == item and s1 % item == 0 and s1 // item >= max(1, rows):
        return True, s1 // item
    return None


_dtype_names: dict[Any, str] = {}


def _dtype_name(dtype: Any) -> str:
    """``dtype.name``, cached: NumPy builds that string anew on every access, and
    :func:`gemm` asks for it on every product, holding the GIL."""
    name = _dtype_names.get(dtype)
    if name is None:
        name = _dtype_names[dtype] = dtype.name
    return name


def gemm(a: Any, b: Any, out: Any, accumulate: bool = False) -> None:
    """``out = a @ b``, or ``out += a @ b`` with ``accumulate``, for NumPy matrices.

    OpenBLAS's ``cblas_?gemm`` (``blas_gemm``) is called directly where the three share a
    float dtype and BLAS can read them as they lie: ``out`` may be a block of a larger
    matrix (rows of any stride), and ``accumulate`` is BLAS's ``beta = 1``, so a sum of
    products needs no scratch block and no pass to add each one (the row-gather
    convolution's kernel rows). Elsewhere (another BLAS, other dtypes or layouts) NumPy's
    ``matmul``, the sum through a temporary. ``ctypes`` releases the GIL for the call, as
    ``np.dot`` does."""
    (m, k), n = a.shape, b.shape[1]
    if b.shape[0] != k or out.shape != (m, n):
        raise ValueError(f"gemm: shapes {a.shape} @ {b.shape} -> {out.shape} do not agree")
    dtype = out.dtype
    fn = blas_gemm(_dtype_name(dtype)) if a.dtype == dtype == b.dtype else None
    layout_a = layout_b = layout_out = None
    if fn is not None and m * n * k > 0:
        layout_a, layout_b, layout_out = _blas_layout(a), _blas_layout(b), _blas_layout(out)
    direct = None not in (layout_a, layout_b, layout_out) and not layout_out[0]
    if not (direct and a.flags.aligned and b.flags.aligned and out.flags.aligned):
        if accumulate:
            out += np.matmul(a, b)
        else:
            np.matmul(a, b, out=out)
        return
    no, yes = 111, 112  # CblasNoTrans, CblasTrans; 101 is CblasRowMajor
    fn(
        101,
        yes if layout_a[0] else no,
        yes if layout_b[0] else no,
        m,
        n,
        k,
        1.0,
        a.ctypes.data,
        layout_a[1],
        b.ctypes.data,
        layout_b[1],
        1.0 if accumulate else 0.0,
        out.ctypes.data,
        layout_out[1],
    )


# A product is split between threads from this many multiply-adds (m n k) on: below it,
# handing work to a thread costs about what it saves, so one thread is as fast (with
# OpenBLAS held to one thread, 128x512x256 gains nothing split, 128x784x512 gains).
SPLIT_MATMUL_MIN = 1 << 25


def _split_threads(work: int, minimum: int, parts: int) -> int:
    """How many of portaconv's threads to share ``work`` units between, in at most
    ``parts`` parts: 1 below ``minimum`` units or inside a task of ``run_threaded``."""
    if work < minimum or in_threaded_task():
        return 1
    return max(1, min(num_threads(), parts))


def split_matmul(a: Any, b: Any) -> Any:
    """``a @ b`` for matrices (Linear's and the transposed convolution's products). On
    NumPy while OpenBLAS is held at one thread (``blas_held``: a model with convolutions
    runs), a product of at least ``SPLIT_MATMUL_MIN`` multiply-adds has its rows of ``a``
    shared between :func:`num_threads` threads instead (``run_threaded``); otherwise
    OpenBLAS threads it itself. The rows are shared the same way on every call, so the
    result is the same bits from call to call at a given thread count (another count may
    round differently, as OpenBLAS's own threads do). Inside a task of ``run_threaded`` it
    is one product on that thread."""
    if not is_numpy_array(b) or a.ndim != 2 or b.ndim != 2:
        return None
    m, k = a.shape
    n = b.shape[1]
    threads = _split_threads(m * n * k, SPLIT_MATMUL_MIN, m)
    if threads <= 1 or not blas_held():
        return np.matmul(a, b)
    out = np.empty((m, n), dtype=np.result_type(a, b))

    def part(rows: slice) -> Callable[[], None]:
        return lambda: np.matmul(a[rows], b, out=out[rows])

    run_threaded([part(rows) for rows in split_evenly(m, threads)])
    return out
