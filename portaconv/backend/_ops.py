"""Gap-fillers: what the array API standard lacks and the layers need, written once.

Every function takes and returns arrays of the caller's namespace. Where a library has a
native routine that does the same job faster it may be used here, behind the same
signature ("delegation", as array-api-extra calls it); the portable path stays tested on
NumPy and array-api-strict.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any

import array_api_compat
import array_api_extra as xpx
from array_api_compat import (
    array_namespace,
    device,
    is_cupy_array,
    is_cupy_namespace,
    is_jax_array,
    is_numpy_array,
    is_torch_array,
    is_torch_namespace,
)

from ._config import Backend, get_backend
from ._native import (
    index_add,
    index_table,
    pad,
    strided_native,
    strided_windows,
    take,
    take_add,
    window_argmax,
)
from ._threads import blas_gemm, blas_held, in_threaded_task, num_threads, run_threaded

# --------------------------------------------------------------------------- conversion


def to_backend(
    x: Any, backend: Backend | None = None, dtype: Any = None, copy: bool | None = None
) -> Any:
    """Move ``x`` (a NumPy array, nested sequence or any array) to ``backend``.

    The result has ``dtype`` (default: the backend's float dtype). Like ``asarray`` it may
    share memory with ``x`` when nothing needs converting; ``copy=True`` always copies.
    """
    backend = backend or get_backend()
    xp = backend.xp
    dtype = backend.dtype if dtype is None else dtype
    if array_api_compat.is_array_api_obj(x) and not array_api_compat.is_numpy_array(x):
        try:
            same = array_namespace(x) is xp and device(x) == backend.device
        except TypeError:
            same = False
        if not same:
            x = to_numpy(x)
    return xp.asarray(x, dtype=dtype, device=backend.device, copy=copy)


def supplied_dtype(x: Any, backend: Backend | None = None) -> Any:
    """The dtype a parameter built from the user's array ``x`` takes on ``backend``.

    A floating array keeps its precision (float32 or float64, as the backend's namespace
    spells it); anything else (an integer array, a nested list) takes the backend's
    default dtype. This is portaconv's dtype rule: a parameter has the dtype of the array
    the user supplied, else the backend default.
    """
    backend = backend or get_backend()
    if array_api_compat.is_array_api_obj(x) and not isinstance(x, (int, float, complex)):
        xp = array_namespace(x)
        for name in ("float64", "float32"):
            if x.dtype == getattr(xp, name):
                return getattr(backend.xp, name)
    return backend.dtype


def astype(x: Any, dtype: Any) -> Any:
    """``x`` in ``dtype``: ``x`` itself when it already has it (no copy)."""
    return x if x.dtype == dtype else array_namespace(x).astype(x, dtype)


def to_numpy(x: Any) -> Any:
    """A NumPy copy (or view) of any supported array, wherever it lives."""
    import numpy as np

    if array_api_compat.is_numpy_array(x):
        return x
    if array_api_compat.is_torch_array(x):
        return x.detach().cpu().numpy()
    if array_api_compat.is_cupy_array(x):
        return x.get()
    if is_jax_array(x):
        return np.asarray(x)  # from any device (DLPack export works on the CPU only)
    if hasattr(x, "__dlpack__"):
        return np.from_dlpack(x)
    return np.asarray(x)


# ------------------------------------------------------------------------ in-place updates


def _mutable_in_place(x: Any) -> bool:
    """Whether ``x[index] op= values`` may update ``x`` itself: a writable NumPy array, a
    CuPy array, or a torch tensor outside autograd. (array-api-extra's ``at`` decides the
    same way, at ~20 us a call; the convolution and pooling loops make K**d such calls per
    step, and on torch it copies the whole array first.)"""
    if is_numpy_array(x):
        return bool(x.flags.writeable)
    if is_torch_array(x):
        return not x.requires_grad
    return is_cupy_array(x)


def slice_add(x: Any, index: tuple, values: Any) -> Any:
    """``x[index] += values`` for basic (slice) indices; returns the updated array.

    Works where arrays are immutable (array-api-extra's ``at``); slices never repeat an
    element, so there is no scatter-with-duplicates ambiguity. NumPy, CuPy and torch add
    into the view ``x[index]`` in place (Python's ``x[index] += values`` would also copy the
    view back onto itself: one more operation, a whole pass over the slice).
    """
    if _mutable_in_place(x):
        view = x[index]
        view += values
        return x
    return xpx.at(x, index).add(values)


def slice_set(x: Any, index: tuple, values: Any) -> Any:
    """``x[index] = values`` for basic (slice) indices; returns the updated array."""
    if _mutable_in_place(x):
        x[index] = values
        return x
    return xpx.at(x, index).set(values)


def shared_zeros(like: Any) -> Any:
    """Zeros with the shape, dtype and device of ``like``: a broadcast view of one zero (no
    memory, no fill), read-only where the library refuses writes through such views (NumPy,
    torch)."""
    xp = array_namespace(like)
    zero = xp.zeros((), dtype=like.dtype, device=device(like))
    return xp.broadcast_to(zero, tuple(like.shape))


def updates_in_place(x: Any) -> bool:
    """Whether an update may write into ``x`` itself: a writable NumPy array, a torch tensor
    outside autograd, a CuPy or array-api-strict array; not a JAX array (immutable)."""
    if is_numpy_array(x):
        return bool(x.flags.writeable)
    if is_torch_array(x):
        return not x.requires_grad
    return is_cupy_array(x) or type(x).__module__.startswith("array_api_strict")


def scaled_add(
    y: Any,
    x: Any,
    alpha: float,
    scale: float = 1.0,
    rebind: Callable[[Any], None] | None = None,
) -> Any:
    """``scale * y + alpha * x`` (Python floats ``alpha``, ``scale``; ``x`` None: ``scale *
    y`` alone), written into ``y`` itself where the library allows (:func:`updates_in_place`);
    returns the result. Elsewhere (JAX, any immutable array) the result is a new array,
    passed to ``rebind`` (the setter of whatever holds ``y``: ``model.set_parameter``) before
    it is returned, so that no update can silently change a local copy only.

    The optimizers' one update. torch: ``y.mul_(scale).add_(x, alpha=alpha)``, two native
    in-place operations and no temporary (``torch.optim``'s own form); other mutable
    libraries: ``y *= scale; y += alpha * x``.
    """
    if not updates_in_place(y):
        y = scale * y if x is None else scale * y + alpha * x
        if rebind is not None:
            rebind(y)
        return y
    if is_torch_array(y):
        if scale != 1:
            y.mul_(scale)
        return y if x is None else y.add_(x, alpha=alpha)
    if scale != 1:
        y *= scale
    if x is not None:
        y += alpha * x
    return y


# ------------------------------------------------------------------------ batch chunking

#: Bytes of im2row workspace a convolution may fill at a time, by kind of array. NumPy
#: gathers, multiplies and scatters back a chunk of the batch while it sits in the cache: a
#: few MiB (copies ~2x faster than one batch-wide buffer on the 2-core development machine,
#: and a reused chunk-sized block costs no page faults); peak memory stays bounded whatever
#: the batch. Other libraries on a CPU (torch) pay a fixed cost per operation and
#: parallelise inside one, so they get larger chunks (torch, measured: 4 MiB chunks 2x
#: slower than 16-512 MiB); GPUs larger still, to stay busy.
WORKSPACE_BYTES = {"numpy": 4 * 2**20, "cpu": 32 * 2**20, "gpu": 512 * 2**20}

#: Bytes of im2row matrices a convolution may keep from forward to backward (all of its
#: chunks, or none). NumPy keeps up to 3 chunks' worth rather than gather them again (the
#: zoo cnn's second convolution, 10.5 MiB of rows at batch 128, then skips a gather; the
#: few-channel engine keeps less, ``conv.nchw.MAX_KEEP_BYTES``); beyond that, memory wins.
#: Other libraries keep what fits in one chunk.
KEEP_BYTES = {"numpy": 12 * 2**20}


def is_gpu_array(x: Any) -> bool:
    """Whether ``x`` lives on a GPU (CuPy, or a torch or JAX array on a non-CPU device)."""
    if is_cupy_array(x):
        return True
    if is_jax_array(x):
        dev = device(x)  # None for an array being traced by jax.jit: placed by its inputs
        return dev is not None and dev.platform != "cpu"
    return is_torch_array(x) and x.device.type != "cpu"


def on_host(x: Any) -> bool:
    """Whether reading ``x``'s values back costs no wait on a device: NumPy arrays, and
    array-api-strict's (NumPy arrays underneath, whatever device they name)."""
    return is_numpy_array(x) or type(x).__module__.startswith("array_api_strict")


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


# --------------------------------------------------------------------- windows and padding


def conv_out_size(in_size: int, kernel_size: int, stride: int = 1, padding: int = 0) -> int:
    """Output length of a valid sliding window: floor((in + 2p - k) / s) + 1 (PyTorch's)."""
    return (in_size + 2 * padding - kernel_size) // stride + 1


def swap_leading_axes(x: Any) -> Any:
    """``(N, C, ...)`` <-> ``(C, N, ...)``, as a view where the library allows."""
    xp = array_namespace(x)
    return xp.permute_dims(x, (1, 0, *range(2, x.ndim)))


def pad_spatial(x: Any, padding: Sequence[int]) -> Any:
    """Zero-pad the trailing ``len(padding)`` axes of ``x`` by ``padding[i]`` on each side.

    A zero array and one slice assignment: the same result as ``xpx.pad``, at a tenth of its
    fixed cost (~15 us against ~180 us a call on NumPy), which the batch-chunked
    convolutions pay once per chunk. Native (torch): the library's pad, one operation.
    """
    if not any(padding):
        return x
    if strided_native(x):
        return pad(x, padding)
    xp = array_namespace(x)
    lead = x.ndim - len(padding)
    shape = (*x.shape[:lead], *(n + 2 * p for n, p in zip(x.shape[lead:], padding)))
    padded = xp.zeros(shape, dtype=x.dtype, device=device(x))
    interior = (...,) + tuple(slice(p, p + n) for n, p in zip(x.shape[lead:], padding))
    return slice_set(padded, interior, x)


def window_index(offset: Sequence[int], stride: Sequence[int], out_size: Sequence[int]) -> tuple:
    """The strided slices that pick, for each output position, the element at ``offset``."""
    return (...,) + tuple(
        slice(o, o + s * (n - 1) + 1, s) for o, s, n in zip(offset, stride, out_size)
    )


def kernel_offsets(kernel_size: Sequence[int]) -> list[tuple[int, ...]]:
    """All kernel offsets in row-major order: (0, 0), (0, 1), ..., (K-1, K-1)."""
    return list(itertools.product(*(range(k) for k in kernel_size)))


def windows(
    x: Any, kernel_size: Sequence[int], stride: Sequence[int], out_size: Sequence[int]
) -> list[Any]:
    """The strided views ``x[..., i::s, j::s]`` (cropped to ``out_size``), one per offset."""
    return [x[window_index(o, stride, out_size)] for o in kernel_offsets(kernel_size)]


def im2col(
    x: Any, kernel_size: Sequence[int], stride: Sequence[int], out_size: Sequence[int]
) -> Any:
    """Gather sliding windows: ``(C, N, *in)`` -> ``(C, prod(K), N, *out_size)``.

    ``cols[c, k, n, *o] = x[c, n, *(o * stride + offset_k)]`` with offsets in row-major
    order. One copy, made as a loop over the kernel offsets (Chainer's ``im2col_cpu``).
    Channels lead so that ``reshape(cols, (C * prod(K), N * prod(out)))`` is a view and a
    convolution is a single matrix product over the whole batch. Native (torch): every
    window as one strided view, then that one copy.
    """
    xp = array_namespace(x)
    if strided_native(x):
        view = strided_windows(x, kernel_size, stride, out_size, kernel_axis=1)
        return xp.reshape(view, (x.shape[0], math.prod(kernel_size), x.shape[1], *out_size))
    return xp.stack(windows(x, kernel_size, stride, out_size), axis=1)


def col2im(
    cols: Any,
    in_shape: Sequence[int],
    kernel_size: Sequence[int],
    stride: Sequence[int],
    out_size: Sequence[int],
) -> Any:
    """Adjoint of :func:`im2col`: scatter-add ``(C, prod(K), N, *out)`` into ``in_shape``.

    A loop over the kernel offsets, each a ``+=`` on one strided slice. Native (torch): one
    scatter-add of every column at once, at positions from an index table made once.
    """
    xp = array_namespace(cols)
    if math.prod(kernel_size) == 1 and tuple(in_shape[2:]) == tuple(out_size):
        return cols[:, 0, ...]  # a 1x1 kernel at stride 1: every input is hit exactly once
    if strided_native(cols):
        C, N, spatial = in_shape[0], in_shape[1], tuple(in_shape[2:])
        geometry = (N, spatial, tuple(kernel_size), tuple(stride), tuple(out_size))
        index = index_table(cols, "col2im", *geometry)
        x = xp.zeros((C, N * math.prod(spatial)), dtype=cols.dtype, device=device(cols))
        x = index_add(x, 1, index, xp.reshape(cols, (C, -1)))
        return xp.reshape(x, tuple(in_shape))
    x = xp.zeros(tuple(in_shape), dtype=cols.dtype, device=device(cols))
    for k, offset in enumerate(kernel_offsets(kernel_size)):
        x = slice_add(x, window_index(offset, stride, out_size), cols[:, k, ...])
    return x


# ------------------------------------------------------------------- im2row convolution
#
# The convolutions see their windows as the "im2row" matrix: one row per output position
# holding its K**d * C values, offsets major, channels minor. Its memory layout is the
# backend's business. The portable path stores it transposed: a channels-first im2col of
# shape (K**d, C, n, *out), each kernel offset copying runs of one output row (Chainer's
# loop). The NumPy fast path picks, separately for the gather (im2row) and the scatter-add
# (row2im), the layout with the longer contiguous runs: transposed (runs of W_out values)
# or row-major, i.e. channels-last (one ``sliding_window_view`` copy with runs of K * C
# values to gather, runs of C to scatter). Measured on the 2-core machine, per ~3.5 MiB
# chunk, row-major against transposed: gather C=1, K=5, W_out=28: 1.62/0.36 ms; C=3, K=3,
# W_out=32: 0.21/0.08; C=6, K=5, W_out=10: 0.22/0.39; C=16, K=5, W_out=28: 0.13/0.20;
# C=32, K=3, W_out=14: 0.10/0.25; scatter C=6: 2.03/0.86, C=16: 0.93/0.43, C=32:
# 0.52/0.58, C=128, W_out=14: 0.45/0.76. The matrix products take either layout as it is
# (BLAS transposes for free).


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
            import numpy as np

            block = self._blocks[name] = np.empty(size, dtype=self._dtype)
        if order == "F":
            return block[:size].reshape(tuple(shape)[::-1]).T
        return block[:size].reshape(tuple(shape))


def _spatial_index(ndim: int, spatial: tuple) -> tuple:
    """``(:, *spatial, :)`` for a channels-last array (batch, *space, channels)."""
    return (slice(None), *spatial) + (slice(None),) * (ndim - 1 - len(spatial))


def _channels_first_view(block: Any, shape: Sequence[int]) -> Any:
    """The memory of ``block`` as a channels-first array, seen channels-last with ``shape``
    (n, *space, C)."""
    import numpy as np

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
        import numpy as np

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
        import numpy as np

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
        import numpy as np

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
        import numpy as np

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
        import numpy as np

        np.copyto(np.reshape(out, moved.shape), moved)
        return out
    return xp.reshape(moved, (x.shape[1], -1))


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
    took turns: two threads' products ran 0.95x as fast as one thread's, against 1.39x by
    ``np.dot`` (``benchmarks/numpy_paths.py``, the "dot" row). Same BLAS call, same
    numbers."""
    import numpy as np

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


#: Whether :func:`gemm` calls OpenBLAS's ``cblas_?gemm`` itself where it can (False: NumPy's
#: matmul and an add for every product, for comparisons such as ``benchmarks/step_profile.py
#: --variant portaconv.backend._ops.DIRECT_GEMM=False``).
DIRECT_GEMM = True


def gemm(a: Any, b: Any, out: Any, accumulate: bool = False) -> None:
    """``out = a @ b``, or ``out += a @ b`` with ``accumulate``, for NumPy matrices.

    OpenBLAS's ``cblas_?gemm`` (``blas_gemm``) is called directly where the three share a
    float dtype and BLAS can read them as they lie: ``out`` may be a block of a larger
    matrix (rows of any stride), and ``accumulate`` is BLAS's ``beta = 1``, so a sum of
    products needs no scratch block and no pass to add each one (the row-gather
    convolution's kernel rows: ``benchmarks/numpy_paths.py``, the "accumulated products"
    rows). Elsewhere (another BLAS, other dtypes or layouts) NumPy's ``matmul``, the sum
    through a temporary. ``ctypes`` releases the GIL for the call, as ``np.dot`` does."""
    (m, k), n = a.shape, b.shape[1]
    if b.shape[0] != k or out.shape != (m, n):
        raise ValueError(f"gemm: shapes {a.shape} @ {b.shape} -> {out.shape} do not agree")
    dtype = out.dtype
    fn = blas_gemm(_dtype_name(dtype)) if DIRECT_GEMM and a.dtype == dtype == b.dtype else None
    layout_a = layout_b = layout_out = None
    if fn is not None and m * n * k > 0:
        layout_a, layout_b, layout_out = _blas_layout(a), _blas_layout(b), _blas_layout(out)
    direct = None not in (layout_a, layout_b, layout_out) and not layout_out[0]
    if not (direct and a.flags.aligned and b.flags.aligned and out.flags.aligned):
        import numpy as np

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


# A product is split between threads from this many multiply-adds (m n k) on. Handing
# work to a thread costs ~50 us on the 2-core development machine, so below it one thread
# is as fast (``benchmarks/numpy_paths.py``, OpenBLAS held: 128x512x256 275 us on one
# thread, 267 split; 128x784x512 824 and 557).
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
    if not is_numpy_array(a) or a.ndim != 2 or b.ndim != 2:
        return array_namespace(a, b).matmul(a, b)
    import numpy as np

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


# ------------------------------------------------------------------ elementwise on threads

#: Elements from which an elementwise NumPy pass is split between threads (below it,
#: ~0.3 ms of work, waking a thread costs about what it saves).
SPLIT_ELEMENTWISE_MIN = 1 << 21
_ROW = 1024  # NumPy's vector loops want arrays, not a 0-d operand: a row of this many


def _split_flat(fn: Callable[..., None], *arrays: Any) -> None:
    """``fn(*parts)`` over consecutive parts (multiples of ``_ROW`` elements) of the flat
    C-contiguous NumPy ``arrays``, one part per thread; the whole at once when small."""
    size = arrays[0].size
    threads = _split_threads(size, SPLIT_ELEMENTWISE_MIN, -(-size // _ROW))
    flat = [a.reshape(-1) for a in arrays]
    if threads <= 1:
        fn(*flat)
        return
    bounds = [min(size, -(-size * i // threads // _ROW) * _ROW) for i in range(threads + 1)]
    bounds[-1] = size
    parts = [slice(lo, hi) for lo, hi in itertools.pairwise(bounds) if hi > lo]
    run_threaded([lambda s=s: fn(*(f[s] for f in flat)) for s in parts])


def _fast_elementwise(*arrays: Any) -> bool:
    """NumPy arrays of one floating dtype and shape, each C-contiguous."""
    first = arrays[0]
    return all(
        is_numpy_array(a)
        and a.flags.c_contiguous
        and a.dtype == first.dtype
        and a.shape == first.shape
        and a.dtype.kind == "f"
        for a in arrays
    )


def relu(x: Any) -> Any:
    """``max(x, 0)`` elementwise, NaN staying NaN. NumPy: against a row of zeros (its vector
    loop; a 0-d zero takes a scalar loop: 180 against 83 us for 128x6x28x28 float32 in
    ``benchmarks/numpy_paths.py``), the array's parts between threads."""
    if not _fast_elementwise(x):
        xp = array_namespace(x)
        return xp.maximum(x, xp.zeros((), dtype=x.dtype, device=device(x)))
    import numpy as np

    out = np.empty_like(x)
    zeros = np.zeros(_ROW, dtype=x.dtype)

    def part(src: Any, dst: Any) -> None:
        whole = src.size - src.size % _ROW
        np.maximum(src[:whole].reshape(-1, _ROW), zeros, out=dst[:whole].reshape(-1, _ROW))
        np.maximum(src[whole:], zeros[: src.size - whole], out=dst[whole:])

    _split_flat(part, x, out)
    return out


def relu_grad(grad: Any, A: Any) -> Any:
    """ReLU's backward from its output ``A = max(Z, 0)``: ``grad * (A != 0)``. ``A`` is 0
    exactly where ``Z <= 0`` (a NaN ``Z`` gives a NaN ``A``, which passes its gradient, as
    in PyTorch). NumPy: the parts between threads."""
    if not _fast_elementwise(grad, A):
        xp = array_namespace(grad, A)
        return grad * xp.astype(A != 0, grad.dtype)
    import numpy as np

    out = np.empty_like(grad)
    _split_flat(lambda g, a, o: np.multiply(g, a != 0, out=o), grad, A, out)
    return out


def _window_max_portable(
    x: Any, kernel_size: Sequence[int], stride: Sequence[int], out_size: Sequence[int]
) -> tuple[Any, Any]:
    xp = array_namespace(x)
    views = windows(x, kernel_size, stride, out_size)
    Z = views[0]
    argmax = xp.zeros(Z.shape, dtype=xp.int32, device=device(x))
    for k, view in enumerate(views[1:], start=1):
        # strictly greater keeps the first maximum; a NaN wins over any number, once
        better = (view > Z) | (xp.isnan(view) & ~xp.isnan(Z))
        Z = xp.where(better, view, Z)
        argmax = xp.where(better, xp.asarray(k, dtype=xp.int32, device=device(x)), argmax)
    return Z, argmax


#: Elements of a pooling layer's input from which NumPy's passes are shared between
#: threads, each taking a part of the batch (``benchmarks/numpy_paths.py``, 2 cores,
#: forward + backward: the zoo cnn's pools over 3.2M and 1.6M elements 5.7 -> 3.3 ms and
#: 2.7 -> 1.8 ms). LeNet's first pool, 0.6M elements, is shared too: alone in that
#: benchmark it was 17 % slower shared (its short passes wait on the GIL), but inside
#: ``Trainer.fit``, where the convolution's threads have just written its input, 10 %
#: faster (``benchmarks/step_profile.py --model lenet --variant
#: portaconv.backend._ops.SPLIT_POOL_MIN=1048576``: 0.80 against 0.89 ms); LeNet's second,
#: 0.2M, was slower shared both ways.
SPLIT_POOL_MIN = 1 << 19


def _batch_parts(batch: int, size: int) -> list[slice] | None:
    """The batch split into one part per thread for NumPy work over ``size`` elements, or
    None: one part, in the calling thread."""
    threads = _split_threads(size, SPLIT_POOL_MIN, batch)
    if threads <= 1:
        return None
    return split_evenly(batch, threads)


def _argmax_dtype(offsets: int) -> Any:
    import numpy as np

    return np.int8 if offsets <= 127 else np.int32


def _window_max_threaded(
    x: Any, kernel_size: Sequence[int], stride: Sequence[int], out_size: Sequence[int]
) -> tuple[Any, Any] | None:
    """:func:`_window_max_numpy`, its batch shared between threads when large."""
    import numpy as np

    lead = x.ndim - len(kernel_size)
    parts = _batch_parts(x.shape[0], x.size) if lead else None
    if parts is None:
        return _window_max_numpy(x, kernel_size, stride, out_size)
    shape = (*x.shape[:lead], *out_size)
    Z = np.empty(shape, dtype=x.dtype)
    argmax = np.empty(shape, dtype=_argmax_dtype(math.prod(kernel_size)))
    found = run_threaded(
        [
            lambda s=s: _window_max_numpy(x[s], kernel_size, stride, out_size, (Z[s], argmax[s]))
            for s in parts
        ]
    )
    return (Z, argmax) if all(r is not None for r in found) else None


def _window_max_numpy(
    x: Any,
    kernel_size: Sequence[int],
    stride: Sequence[int],
    out_size: Sequence[int],
    out: tuple[Any, Any] | None = None,
) -> tuple[Any, Any] | None:
    """``(Z, argmax)`` on NumPy, into ``out`` when given; None if a window holds a NaN (the
    portable loop knows which NaN came first)."""
    import numpy as np

    views = windows(x, kernel_size, stride, out_size)
    if out is None:
        Z = np.array(views[0], copy=True)
        argmax = np.zeros(Z.shape, dtype=_argmax_dtype(len(views)))
    else:
        Z, argmax = out
        np.copyto(Z, views[0])
        argmax[...] = 0
    for view in views[1:]:
        np.maximum(Z, view, out=Z)  # propagates NaN
    if np.isnan(np.max(Z)):  # rare: one reduction, NaN wins it
        return None
    # The first offset that holds the maximum is the number of offsets before it that do
    # not: argmax = sum over k < K-1 of [views 0..k all differ from Z], each term one
    # comparison folded into a running "not yet" mask and one add of that mask, on bytes
    # (masked copies or np.where cost ~5x a plain pass).
    before = np.empty(Z.shape, dtype=bool)  # no offset up to k holds the maximum
    differs = np.empty(Z.shape, dtype=bool)
    np.not_equal(views[0], Z, out=before)
    for k in range(1, len(views)):
        np.add(argmax, before, out=argmax)
        if k < len(views) - 1:
            np.not_equal(views[k], Z, out=differs)
            np.logical_and(before, differs, out=before)
    return Z, argmax


def window_max(
    x: Any, kernel_size: Sequence[int], stride: Sequence[int], out_size: Sequence[int]
) -> tuple[Any, Any]:
    """Max over sliding windows and where it was: ``(Z, argmax)``, each ``(..., *out_size)``.

    ``argmax`` (a small integer dtype) is the row-major index of the chosen kernel offset
    within its window: the first maximum, or the first NaN when the window holds one (NaN
    propagates, as in PyTorch). Portable path: a loop over the kernel offsets keeping a
    running maximum and where it came from. NumPy fast path: the maximum first
    (``np.maximum`` in place, one pass per offset), then the first offset equal to it; if
    any window holds a NaN the whole call takes the portable path. (``np.argmax`` over a
    ``sliding_window_view`` copy was tried: reductions along a short last axis ran ~3x
    slower than these passes.) Native (torch): the windows as one strided view, one copy
    and one reduction that gives both (``argmax`` then in int64).
    """
    if is_numpy_array(x):
        found = _window_max_threaded(x, kernel_size, stride, out_size)
        if found is None:  # a NaN: the portable loop knows which NaN came first
            return _window_max_portable(x, kernel_size, stride, out_size)
        return found
    if strided_native(x):
        lead = x.ndim - len(kernel_size)
        views = strided_windows(x, kernel_size, stride, out_size, kernel_axis=lead)
        views = array_namespace(x).reshape(
            views, (*x.shape[:lead], math.prod(kernel_size), *out_size)
        )
        return window_argmax(views, lead)
    return _window_max_portable(x, kernel_size, stride, out_size)


def _tiles(in_shape, kernel_size, stride, out_size) -> bool:
    """Whether the windows tile the input exactly (stride == kernel, nothing left over)."""
    return all(
        s == k and n == o * k for s, k, n, o in zip(stride, kernel_size, in_shape[2:], out_size)
    )


def window_scatter(
    value: Callable[[int], Any],
    like: Any,
    in_shape: Sequence[int],
    kernel_size: Sequence[int],
    stride: Sequence[int],
    out_size: Sequence[int],
) -> Any:
    """An ``in_shape`` array (dtype and device of ``like``) holding, at the window slice of
    each kernel offset ``k``, the sum of ``value(k)`` over the windows that cover it: the
    adjoint of :func:`windows`. One slice assignment per offset where windows do not
    overlap (no zero fill where they tile the input), a slice add where they do."""
    xp = array_namespace(like)
    create = xp.empty if _tiles(in_shape, kernel_size, stride, out_size) else xp.zeros
    x = create(tuple(in_shape), dtype=like.dtype, device=device(like))
    put = slice_set if all(s >= k for s, k in zip(stride, kernel_size)) else slice_add
    for k, offset in enumerate(kernel_offsets(kernel_size)):
        x = put(x, window_index(offset, stride, out_size), value(k))
    return x


def _window_max_grad_threaded(dLdZ, argmax, in_shape, kernel_size, stride, out_size):
    """:func:`_window_max_grad_numpy`, its batch shared between threads when large."""
    import numpy as np

    lead = len(in_shape) - len(kernel_size)
    parts = _batch_parts(in_shape[0], math.prod(in_shape)) if lead else None
    if parts is None:
        return _window_max_grad_numpy(dLdZ, argmax, in_shape, kernel_size, stride, out_size)
    dLdA = np.empty(tuple(in_shape), dtype=dLdZ.dtype)
    run_threaded(
        [
            lambda s=s: _window_max_grad_numpy(
                dLdZ[s], argmax[s], dLdA[s].shape, kernel_size, stride, out_size, dLdA[s]
            )
            for s in parts
        ]
    )
    return dLdA


def _window_max_grad_numpy(dLdZ, argmax, in_shape, kernel_size, stride, out_size, out=None):
    import numpy as np

    overlap = any(s < k for s, k in zip(stride, kernel_size))
    tiled = _tiles(in_shape, kernel_size, stride, out_size)
    if out is None:
        dLdA = (np.empty if tiled else np.zeros)(tuple(in_shape), dtype=dLdZ.dtype)
    else:
        dLdA = out
        if not tiled:
            dLdA[...] = 0
    match = np.empty(argmax.shape, dtype=bool)
    grad = np.empty(dLdZ.shape, dtype=dLdZ.dtype) if overlap else None
    for k, offset in enumerate(kernel_offsets(kernel_size)):
        np.equal(argmax, k, out=match)
        window = dLdA[window_index(offset, stride, out_size)]
        if overlap:
            np.multiply(dLdZ, match, out=grad)
            window += grad
        else:  # each window owns its slice: the product lands there directly
            np.multiply(dLdZ, match, out=window)
    return dLdA


def window_max_grad_into(
    dLdZ: Any, argmax: Any, kernel_size: Sequence[int], stride: Sequence[int], out: Any
) -> Any:
    """:func:`window_max_grad` of NumPy arrays written into ``out`` (the input's shape),
    on the calling thread: for callers that work through a batch in chunks and go on with
    each chunk's gradient while it is in the cache. ``dLdZ`` must be finite (a product
    would turn a masked-out position's 0 into NaN, see :func:`window_max_grad`)."""
    out_size = argmax.shape[len(argmax.shape) - len(kernel_size) :]
    return _window_max_grad_numpy(dLdZ, argmax, out.shape, kernel_size, stride, out_size, out)


def _window_max_grad_native(dLdZ, argmax, in_shape, kernel_size, stride, out_size):
    xp, nd = array_namespace(dLdZ), len(kernel_size)
    lead, spatial = tuple(in_shape[:-nd]), tuple(in_shape[-nd:])
    offsets = index_table(dLdZ, "offsets", spatial, tuple(kernel_size))
    starts = index_table(dLdZ, "window_starts", spatial, tuple(stride), tuple(out_size))
    offset = take(offsets, xp.reshape(astype(argmax, xp.int64), (*lead, -1)))
    dLdA = xp.zeros((*lead, math.prod(spatial)), dtype=dLdZ.dtype, device=device(dLdZ))
    dLdA = take_add(dLdA, offset + starts, xp.reshape(dLdZ, (*lead, -1)))
    return xp.reshape(dLdA, tuple(in_shape))


def window_max_grad(
    dLdZ: Any,
    argmax: Any,
    in_shape: Sequence[int],
    kernel_size: Sequence[int],
    stride: Sequence[int],
    out_size: Sequence[int],
) -> Any:
    """Backward of :func:`window_max`: each ``dLdZ`` element goes to the one input its
    ``argmax`` names; an ``in_shape`` array, zero elsewhere (summed where windows overlap).

    Portable path: one masked slice assignment (or add) per kernel offset. NumPy fast path:
    the mask as a product written straight into the strided slice (``np.where`` costs ~5x
    a plain pass); a ``dLdZ`` holding inf or NaN takes the portable path, where a masked-out
    position stays exactly 0 (a product would make it NaN). Native (torch): one scatter-add
    of every element to the flat input position its window start and offset name.
    """
    if is_numpy_array(dLdZ) and is_numpy_array(argmax):
        import numpy as np

        if np.isfinite(dLdZ).all():
            return _window_max_grad_threaded(dLdZ, argmax, in_shape, kernel_size, stride, out_size)
    xp = array_namespace(dLdZ)
    if strided_native(dLdZ):
        return _window_max_grad_native(dLdZ, argmax, in_shape, kernel_size, stride, out_size)
    zero = xp.zeros((), dtype=dLdZ.dtype, device=device(dLdZ))
    return window_scatter(
        lambda k: xp.where(argmax == k, dLdZ, zero),
        dLdZ,
        in_shape,
        kernel_size,
        stride,
        out_size,
    )


# ------------------------------------------------------------------------ special functions

# Cephes' rational approximations (S. L. Moshier, Cephes Math Library 2.9, BSD licence):
# erf(x) = x T(x^2) / U(x^2) for |x| < 1; erfc(x) = exp(-x^2) P(x) / Q(x) for 1 <= x < 8,
# and exp(-x^2) R(x) / S(x) for x >= 8. Cephes leaves the leading 1 of U, Q and S implicit.
_ERF_T = (
    9.60497373987051638749e0,
    9.00260197203842689217e1,
    2.23200534594684319226e3,
    7.00332514112805075473e3,
    5.55923013010394962768e4,
)
_ERF_U = (
    1.0,
    3.35617141647503099647e1,
    5.21357949780152679795e2,
    4.59432382970980127987e3,
    2.26290000613890934246e4,
    4.92673942608635921086e4,
)
_ERFC_P = (
    2.46196981473530512524e-10,
    5.64189564831068821977e-1,
    7.46321056442269912687e0,
    4.86371970985681366614e1,
    1.96520832956077098242e2,
    5.26445194995477358631e2,
    9.34528527171957607540e2,
    1.02755188689515710272e3,
    5.57535335369399327526e2,
)
_ERFC_Q = (
    1.0,
    1.32281951154744992508e1,
    8.67072140885989742329e1,
    3.54937778887819891062e2,
    9.75708501743205489753e2,
    1.82390916687909736289e3,
    2.24633760818710981792e3,
    1.65666309194161350182e3,
    5.57535340817727675546e2,
)
_ERFC_R = (
    5.64189583547755073984e-1,
    1.27536670759978104416e0,
    5.01905042251180477414e0,
    6.16021097993053585195e0,
    7.40974269950448939160e0,
    2.97886665372100240670e0,
)
_ERFC_S = (
    1.0,
    2.26052863220117276590e0,
    9.39603524938001434673e0,
    1.20489539808096656605e1,
    1.70814450747565897222e1,
    9.60896809063285878198e0,
    3.36907645100081516050e0,
)


def _polyval(coefficients: Sequence[float], x: Any) -> Any:
    """Horner's rule, highest power first."""
    result = coefficients[0] + 0 * x
    for c in coefficients[1:]:
        result = result * x + c
    return result


def erf_portable(x: Any) -> Any:
    """The error function from array-API arithmetic alone (Cephes; ~1e-16 relative in float64)."""
    xp = array_namespace(x)
    ax = xp.abs(x)
    small = ax < 1.0
    # Evaluate each branch only on arguments inside its range, so neither overflows.
    xs = xp.where(small, x, xp.zeros_like(x))
    z = xs * xs
    erf_small = xs * _polyval(_ERF_T, z) / _polyval(_ERF_U, z)
    xl = xp.clip(ax, 1.0, 30.0)
    mid = xl < 8.0
    ratio = xp.where(
        mid,
        _polyval(_ERFC_P, xl) / _polyval(_ERFC_Q, xl),
        _polyval(_ERFC_R, xl) / _polyval(_ERFC_S, xl),
    )
    erfc_large = xp.exp(-xl * xl) * ratio
    erf_large = xp.where(x < 0, erfc_large - 1.0, 1.0 - erfc_large)
    return xp.where(small, erf_small, erf_large)


def erf(x: Any) -> Any:
    """The error function, elementwise; the library's own kernel where it has one."""
    xp = array_namespace(x)
    if is_torch_namespace(xp):
        import torch

        return torch.special.erf(x)
    if is_cupy_namespace(xp):
        import cupyx.scipy.special

        return cupyx.scipy.special.erf(x)
    return erf_portable(x)


SQRT_2 = math.sqrt(2.0)
SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
