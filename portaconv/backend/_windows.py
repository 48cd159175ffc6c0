"""Sliding windows, padding, pooling maxima, ReLU and matrix products: the portable bodies.

Each function is written once against the array API: loops over kernel offsets (never over
batch elements or pixels), each offset a strided slice, as Chainer's ``im2col_cpu``. Where
the fast half has a body for the library at hand (``portaconv.backend.fast``: NumPy's
threaded passes, PyTorch's strided views and scatter-adds), the function hands the call to
it (array-api-extra's "delegation"); ``fast_paths("never")`` keeps every call here.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any

from array_api_compat import array_namespace, device

from ._arrays import slice_add, slice_set
from .fast import body


def conv_out_size(in_size: int, kernel_size: int, stride: int = 1, padding: int = 0) -> int:
    """Output length of a valid sliding window: floor((in + 2p - k) / s) + 1 (PyTorch's)."""
    return (in_size + 2 * padding - kernel_size) // stride + 1


def swap_leading_axes(x: Any) -> Any:
    """``(N, C, ...)`` <-> ``(C, N, ...)``, as a view where the library allows."""
    xp = array_namespace(x)
    return xp.permute_dims(x, (1, 0, *range(2, x.ndim)))


def pad_spatial(x: Any, padding: Sequence[int]) -> Any:
    """Zero-pad the trailing ``len(padding)`` axes of ``x`` by ``padding[i]`` on each side:
    a zero array and one slice assignment (``xpx.pad``'s result, with less fixed cost)."""
    if not any(padding):
        return x
    if (fast := body("pad_spatial", x)) is not None:
        return fast(x, padding)
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
    order: one copy, made as a loop over the kernel offsets (Chainer's ``im2col_cpu``).
    Channels lead so that ``reshape(cols, (C * prod(K), N * prod(out)))`` is a view and a
    convolution is a single matrix product over the whole batch.
    """
    if (fast := body("im2col", x)) is not None:
        return fast(x, kernel_size, stride, out_size)
    xp = array_namespace(x)
    return xp.stack(windows(x, kernel_size, stride, out_size), axis=1)


def col2im(
    cols: Any,
    in_shape: Sequence[int],
    kernel_size: Sequence[int],
    stride: Sequence[int],
    out_size: Sequence[int],
) -> Any:
    """Adjoint of :func:`im2col`: scatter-add ``(C, prod(K), N, *out)`` into ``in_shape``,
    a loop over the kernel offsets, each a ``+=`` on one strided slice."""
    if math.prod(kernel_size) == 1 and tuple(in_shape[2:]) == tuple(out_size):
        return cols[:, 0, ...]  # a 1x1 kernel at stride 1: every input is hit exactly once
    if (fast := body("col2im", cols)) is not None:
        return fast(cols, in_shape, kernel_size, stride, out_size)
    xp = array_namespace(cols)
    x = xp.zeros(tuple(in_shape), dtype=cols.dtype, device=device(cols))
    for k, offset in enumerate(kernel_offsets(kernel_size)):
        x = slice_add(x, window_index(offset, stride, out_size), cols[:, k, ...])
    return x


def window_max(
    x: Any, kernel_size: Sequence[int], stride: Sequence[int], out_size: Sequence[int]
) -> tuple[Any, Any]:
    """Max over sliding windows and where it was: ``(Z, argmax)``, each ``(..., *out_size)``.

    ``argmax`` (an integer dtype) is the row-major index of the chosen kernel offset within
    its window: the first maximum, or the first NaN when the window holds one (NaN
    propagates, as in PyTorch). A loop over the kernel offsets keeps a running maximum and
    where it came from.
    """
    if (fast := body("window_max", x)) is not None:
        found = fast(x, kernel_size, stride, out_size)
        if found is not None:  # None: the fast body leaves this input (a NaN) to the loop
            return found
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


def tiles(in_shape, kernel_size, stride, out_size) -> bool:
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
    create = xp.empty if tiles(in_shape, kernel_size, stride, out_size) else xp.zeros
    x = create(tuple(in_shape), dtype=like.dtype, device=device(like))
    put = slice_set if all(s >= k for s, k in zip(stride, kernel_size)) else slice_add
    for k, offset in enumerate(kernel_offsets(kernel_size)):
        x = put(x, window_index(offset, stride, out_size), value(k))
    return x


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
    One masked slice assignment (or add) per kernel offset."""
    if (fast := body("window_max_grad", dLdZ)) is not None:
        found = fast(dLdZ, argmax, in_shape, kernel_size, stride, out_size)
        if found is not None:  # None: the fast body leaves this input (inf, NaN) to the loop
            return found
    xp = array_namespace(dLdZ)
    zero = xp.zeros((), dtype=dLdZ.dtype, device=device(dLdZ))
    return window_scatter(
        lambda k: xp.where(argmax == k, dLdZ, zero),
        dLdZ,
        in_shape,
        kernel_size,
        stride,
        out_size,
    )


def relu(x: Any) -> Any:
    """``max(x, 0)`` elementwise, NaN staying NaN."""
    if (fast := body("relu", x)) is not None and (found := fast(x)) is not None:
        return found
    xp = array_namespace(x)
    return xp.maximum(x, xp.zeros((), dtype=x.dtype, device=device(x)))


def relu_grad(grad: Any, A: Any) -> Any:
    """ReLU's backward from its output ``A = max(Z, 0)``: ``grad * (A != 0)``. ``A`` is 0
    exactly where ``Z <= 0`` (a NaN ``Z`` gives a NaN ``A``, which passes its gradient, as
    in PyTorch)."""
    if (fast := body("relu_grad", grad, A)) is not None and (found := fast(grad, A)) is not None:
        return found
    xp = array_namespace(grad, A)
    return grad * xp.astype(A != 0, grad.dtype)


def matmul(a: Any, b: Any) -> Any:
    """``a @ b`` for matrices (Linear's and the transposed convolution's products)."""
    if (fast := body("matmul", a, b)) is not None and (found := fast(a, b)) is not None:
        return found
    return array_namespace(a, b).matmul(a, b)
