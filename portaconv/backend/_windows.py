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
from ._graph import graph_matmul, is_graph_array
from .fast import body


def conv_out_size(
    in_size: int, kernel_size: int, stride: int = 1, padding: int = 0, dilation: int = 1
) -> int:
    """Output length of a valid sliding window: floor((in + 2p - d (k - 1) - 1) / s) + 1
    (PyTorch's; a window of ``k`` taps ``d`` apart spans ``d (k - 1) + 1``)."""
    return (in_size + 2 * padding - dilation * (kernel_size - 1) - 1) // stride + 1


def swap_leading_axes(x: Any) -> Any:
    """``(N, C, ...)`` <-> ``(C, N, ...)``, as a view where the library allows."""
    xp = array_namespace(x)
    return xp.permute_dims(x, (1, 0, *range(2, x.ndim)))


def pad_pairs(padding: Sequence[int | Sequence[int]]) -> tuple[tuple[int, int], ...]:
    """Per-axis padding as ``(left, right)`` pairs: an int ``p`` is ``(p, p)``."""
    return tuple(
        (int(p[0]), int(p[1])) if isinstance(p, (tuple, list)) else (int(p), int(p))
        for p in padding
    )


def pad_spatial(x: Any, padding: Sequence[int | Sequence[int]], value: float = 0.0) -> Any:
    """Pad the trailing ``len(padding)`` axes of ``x`` with ``value`` (zeros; max pooling pads
    with -inf): ``padding[i]`` is an int (that many on each side) or a ``(left, right)``
    pair. A filled array and one slice assignment (``xpx.pad``'s result, with less fixed
    cost)."""
    pairs = pad_pairs(padding)
    if not any(left or right for left, right in pairs):
        return x
    if (fast := body("pad_spatial", x)) is not None:
        return fast(x, pairs, value)
    xp = array_namespace(x)
    lead = x.ndim - len(pairs)
    if None in x.shape:  # a size unknown while a lazy library records a graph (ONNX export)
        return _pad_by_concat(x, pairs, value)
    spatial = x.shape[lead:]
    shape = (*x.shape[:lead], *(n + left + right for n, (left, right) in zip(spatial, pairs)))
    padded = xp.full(shape, value, dtype=x.dtype, device=device(x))
    interior = (...,) + tuple(slice(left, left + n) for n, (left, _) in zip(spatial, pairs))
    return slice_set(padded, interior, x)


def _pad_by_concat(x: Any, pairs: Sequence[tuple[int, int]], value: float) -> Any:
    """:func:`pad_spatial` for an array with a size of None (the array API's "unknown",
    e.g. the batch axis of a graph being recorded): no array of the padded shape can be
    created, so each spatial axis is extended in turn by concatenating bands of ``value``,
    each a ``full_like`` of a one-wide slice of the array itself (which knows its sizes)."""
    xp = array_namespace(x)
    lead = x.ndim - len(pairs)
    shape = [*x.shape[:lead]] + [
        None if n is None else n + left + right for n, (left, right) in zip(x.shape[lead:], pairs)
    ]
    for axis, (left, right) in enumerate(pairs, start=lead):
        if not left and not right:
            continue
        edge = xp.full_like(x[(slice(None),) * axis + (slice(0, 1), ...)], value)
        x = xp.concat([edge] * left + [x] + [edge] * right, axis=axis)
    if shape.count(None) == 1:  # a library that lost the known sizes on the way gets them back
        x = xp.reshape(x, tuple(-1 if n is None else n for n in shape))
    return x


def window_index(
    offset: Sequence[int],
    stride: Sequence[int],
    out_size: Sequence[int],
    dilation: Sequence[int] | None = None,
) -> tuple:
    """The strided slices that pick, for each output position, the element at kernel
    ``offset``: position ``o * stride + offset * dilation`` (dilation 1 by default)."""
    dilation = dilation or (1,) * len(offset)
    starts = [k * d for k, d in zip(offset, dilation)]
    return (...,) + tuple(
        slice(t, t + s * (n - 1) + 1, s) for t, s, n in zip(starts, stride, out_size)
    )


def kernel_offsets(kernel_size: Sequence[int]) -> list[tuple[int, ...]]:
    """All kernel offsets in row-major order: (0, 0), (0, 1), ..., (K-1, K-1)."""
    return list(itertools.product(*(range(k) for k in kernel_size)))


def windows(
    x: Any,
    kernel_size: Sequence[int],
    stride: Sequence[int],
    out_size: Sequence[int],
    dilation: Sequence[int] | None = None,
) -> list[Any]:
    """The strided views ``x[..., i d::s, j d::s]`` (cropped to ``out_size``), one per
    kernel offset ``(i, j)``."""
    return [x[window_index(o, stride, out_size, dilation)] for o in kernel_offsets(kernel_size)]


def _dilation_arg(dilation: Sequence[int] | None) -> tuple[int, ...] | None:
    """None for no dilation (what the fast bodies are called without), else the tuple."""
    return None if dilation is None or all(d == 1 for d in dilation) else tuple(dilation)


def im2col(
    x: Any,
    kernel_size: Sequence[int],
    stride: Sequence[int],
    out_size: Sequence[int],
    dilation: Sequence[int] | None = None,
) -> Any:
    """Gather sliding windows: ``(C, N, *in)`` -> ``(C, prod(K), N, *out_size)``.

    ``cols[c, k, n, *o] = x[c, n, *(o * stride + offset_k * dilation)]`` with offsets in
    row-major order: one copy, made as a loop over the kernel offsets (Chainer's
    ``im2col_cpu``). Channels lead so that ``reshape(cols, (C * prod(K), N * prod(out)))``
    is a view and a convolution is a single matrix product over the whole batch.
    """
    dilation = _dilation_arg(dilation)
    if (fast := body("im2col", x)) is not None:
        return fast(x, kernel_size, stride, out_size, dilation)
    xp = array_namespace(x)
    return xp.stack(windows(x, kernel_size, stride, out_size, dilation), axis=1)


def col2im(
    cols: Any,
    in_shape: Sequence[int],
    kernel_size: Sequence[int],
    stride: Sequence[int],
    out_size: Sequence[int],
    dilation: Sequence[int] | None = None,
) -> Any:
    """Adjoint of :func:`im2col`: scatter-add ``(C, prod(K), N, *out)`` into ``in_shape``,
    a loop over the kernel offsets, each a ``+=`` on one strided slice."""
    dilation = _dilation_arg(dilation)
    if math.prod(kernel_size) == 1 and tuple(in_shape[2:]) == tuple(out_size):
        return cols[:, 0, ...]  # a 1x1 kernel at stride 1: every input is hit exactly once
    if (fast := body("col2im", cols)) is not None:
        return fast(cols, in_shape, kernel_size, stride, out_size, dilation)
    xp = array_namespace(cols)
    x = xp.zeros(tuple(in_shape), dtype=cols.dtype, device=device(cols))
    for k, offset in enumerate(kernel_offsets(kernel_size)):
        x = slice_add(x, window_index(offset, stride, out_size, dilation), cols[:, k, ...])
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
    argmax = xp.zeros_like(Z, dtype=xp.int32)  # Z's shape, whether or not every size is known
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
    """``a @ b`` for matrices, or stacks of them (the products of Linear, the convolutions'
    forward and the transposed convolution's)."""
    if is_graph_array(a) or is_graph_array(b):
        return graph_matmul(a, b)
    if (fast := body("matmul", a, b)) is not None and (found := fast(a, b)) is not None:
        return found
    return array_namespace(a, b).matmul(a, b)
