"""NumPy bodies of the elementwise and pooling operations: single passes into preallocated
arrays, shared between portaconv's threads when the arrays are large. Each returns None
for an input it leaves to the portable body."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from array_api_compat import is_numpy_array

from .._windows import kernel_offsets, window_index, windows
from .._windows import tiles as _tiles
from .blas import _split_threads, split_evenly, split_matmul
from .threads import run_threaded

#: Elements from which an elementwise NumPy pass is split between threads (below it,
#: waking a thread costs about what it saves).
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
    loop; a 0-d zero takes a slower scalar loop), the array's parts between threads."""
    if not _fast_elementwise(x):
        return None
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
        return None
    out = np.empty_like(grad)
    _split_flat(lambda g, a, o: np.multiply(g, a != 0, out=o), grad, A, out)
    return out


#: Elements of a pooling layer's input from which NumPy's passes are shared between
#: threads, each taking a part of the batch (the zoo cnn's pools, over 3.2M and 1.6M
#: elements, gain clearly). LeNet's first pool, 0.6M elements, is shared too: alone it
#: loses by sharing (its short passes wait on the GIL), but inside ``Trainer.fit``, where
#: the convolution's threads have just written its input, it gains; LeNet's second, 0.2M,
#: loses both ways.
SPLIT_POOL_MIN = 1 << 19


def _batch_parts(batch: int, size: int) -> list[slice] | None:
    """The batch split into one part per thread for NumPy work over ``size`` elements, or
    None: one part, in the calling thread."""
    threads = _split_threads(size, SPLIT_POOL_MIN, batch)
    if threads <= 1:
        return None
    return split_evenly(batch, threads)


def _argmax_dtype(offsets: int) -> Any:
    return np.int8 if offsets <= 127 else np.int32


def _window_max_threaded(
    x: Any, kernel_size: Sequence[int], stride: Sequence[int], out_size: Sequence[int]
) -> tuple[Any, Any] | None:
    """:func:`_window_max_numpy`, its batch shared between threads when large."""
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
    # (masked copies or np.where each cost several plain passes).
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
) -> tuple[Any, Any] | None:
    """``window_max`` on NumPy: the maximum first (``np.maximum`` in place, one pass per
    offset), then the first offset equal to it, the batch shared between threads when large;
    None if any window holds a NaN (the portable loop knows which NaN came first)."""
    return _window_max_threaded(x, kernel_size, stride, out_size)


def _window_max_grad_threaded(dLdZ, argmax, in_shape, kernel_size, stride, out_size):
    """:func:`_window_max_grad_numpy`, its batch shared between threads when large."""
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


def window_max_grad(dLdZ, argmax, in_shape, kernel_size, stride, out_size) -> Any:
    """``window_max_grad`` on NumPy: the mask as a product written straight into the
    strided slice, the batch shared between threads when large; None for a ``dLdZ``
    holding inf or NaN, where a masked-out position must stay exactly 0 (a product would
    make it NaN)."""
    if not np.isfinite(dLdZ).all():
        return None
    return _window_max_grad_threaded(dLdZ, argmax, in_shape, kernel_size, stride, out_size)


BODIES = {
    "relu": relu,
    "relu_grad": relu_grad,
    "window_max": window_max,
    "window_max_grad": window_max_grad,
    "matmul": split_matmul,
}
