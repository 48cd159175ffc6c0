"""Native bodies for a library with strided views and a scatter-add: few, large operations.

On a GPU every operation the library dispatches is at least one kernel launch, so the
portable loops over kernel offsets (a slice and an add per offset) would bind a
small network's step to its launches. Where the library has the two routines that make a
loop unnecessary, the portable functions of ``backend._windows`` hand their calls to these
bodies (:data:`BODIES`), behind the same signature:

- ``as_strided``: every window of an array as one view, so im2col (and the max-pool's
  windows) is that view and one copy;
- a scatter-add (``index_add_``, ``scatter_add_``): col2im and the max-pool backward add
  every value at once, at positions listed in an index table made once per geometry and
  device (:func:`index_table`).

Only PyTorch takes them for now (CuPy has ``as_strided`` and ``cupyx.scatter_add`` and
would need two lines each here, but no GPU has been available to test them on). The
portable bodies stay tested on torch too: ``fast_paths("never")`` turns these off.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

from array_api_compat import array_namespace, device, is_torch_array

from .._arrays import astype


def applies(x: Any) -> bool:
    """Whether arrays like ``x`` take the native strided-view and scatter-add bodies: torch
    tensors, not inside ``torch.compile`` (their index tables are built with NumPy and
    cached, which it cannot trace; the portable bodies trace, and the compiler fuses them)."""
    if not is_torch_array(x):
        return False
    import torch

    return not torch.compiler.is_compiling()


def strided_windows(
    x: Any,
    kernel_size: Sequence[int],
    stride: Sequence[int],
    out_size: Sequence[int],
    kernel_axis: int,
    dilation: Sequence[int] | None = None,
) -> Any:
    """Every window of ``x`` (*lead, *in) as one view: ``(*lead[:kernel_axis], *K,
    *lead[kernel_axis:], *out_size)``, holding ``x[*l, *(o * stride + k * dilation)]``
    (no copy)."""
    nd = len(kernel_size)
    dilation = dilation or (1,) * nd
    lead, lead_strides = tuple(x.shape[:-nd]), tuple(x.stride()[:-nd])
    in_strides = tuple(x.stride()[-nd:])
    shape = (*lead[:kernel_axis], *kernel_size, *lead[kernel_axis:], *out_size)
    strides = (
        *lead_strides[:kernel_axis],
        *(t * d for t, d in zip(in_strides, dilation)),
        *lead_strides[kernel_axis:],
        *(t * s for t, s in zip(in_strides, stride)),
    )
    return x.as_strided(shape, strides)  # at x's own storage offset (torch.compile traces this)


def pad(x: Any, padding: Sequence[tuple[int, int]], value: float = 0.0) -> Any:
    """Pad the trailing ``len(padding)`` axes by ``padding[i] = (left, right)`` with ``value``
    (zeros by default), in one operation."""
    import torch.nn.functional as F

    return F.pad(x, tuple(p for pair in reversed(padding) for p in pair), value=value)


def index_add(target: Any, axis: int, index: Any, values: Any) -> Any:
    """``target[..., index[i], ...] += values[..., i, ...]`` along ``axis`` (repeated
    indices add up), in place; returns ``target``."""
    return target.index_add_(axis, index, values)


def take_add(target: Any, index: Any, values: Any) -> Any:
    """``target[..., index[..., i]] += values[..., i]`` along the last axis (``index`` and
    ``values`` have the same shape, ``target`` the same leading axes), in place."""
    return target.scatter_add_(-1, index, values)


def window_argmax(views: Any, axis: int) -> tuple[Any, Any]:
    """(max, index of the first maximum) along ``axis``; a NaN counts as the maximum (the
    first NaN wins), as the portable path decides."""
    import torch

    return torch.max(views, dim=axis)


def take(table: Any, index: Any) -> Any:
    """``table[index]`` for a 1-d ``table`` and an integer ``index`` of any shape."""
    import torch

    return torch.take(table, index)


def index_table(like: Any, kind: str, *geometry: Any) -> Any:
    """An int64 index table (see :func:`_table_values`) on the device of ``like``, made once
    per ``kind``, geometry and device, then reused (never modify it). The last 64 are kept;
    a col2im table holds one int64 per element of one channel of the im2col matrix."""
    return _cached_table(array_namespace(like), device(like), kind, geometry)


@functools.lru_cache(maxsize=64)
def _cached_table(xp: Any, dev: Any, kind: str, geometry: tuple) -> Any:
    import numpy as np

    values = _table_values(np, kind, *geometry)
    return xp.asarray(values, dtype=xp.int64, device=dev)


def _table_values(np: Any, kind: str, *geometry: Any) -> Any:
    """The index tables, as NumPy arrays.

    ``"col2im"``, (batch, in_size, kernel_size, stride, out_size, dilation): for each
    (k, n, *o) in row-major order, the flat position ``n * prod(in) + (o * stride + k *
    dilation)`` in (n, *in). ``"offsets"``, (in_size, kernel_size[, dilation]): the flat
    position of each kernel offset ``k * dilation`` in ``in_size``. ``"window_starts"``,
    (in_size, stride, out_size): the flat position of each window's first element
    ``o * stride``.
    """
    if kind == "col2im":
        batch, in_size, kernel_size, stride, out_size, dilation = geometry
        offsets = _table_values(np, "offsets", in_size, kernel_size, dilation)
        starts = _table_values(np, "window_starts", in_size, stride, out_size)
        per_item = (offsets[:, None] + starts[None, :])[:, None, :]
        images = math.prod(in_size) * np.arange(batch)[None, :, None]
        return (per_item + images).reshape(-1)
    if kind == "offsets":
        in_size, kernel_size, *dilated = geometry
        dilation = (dilated[0] if dilated else None) or (1,) * len(kernel_size)
        grid = np.indices(kernel_size).reshape(len(kernel_size), -1)
        return np.ravel_multi_index(tuple(g * d for g, d in zip(grid, dilation)), in_size)
    if kind == "window_starts":
        in_size, stride, out_size = geometry
        grid = np.indices(out_size).reshape(len(out_size), -1)
        starts = tuple(g * s for g, s in zip(grid, stride))
        return np.ravel_multi_index(starts, in_size)
    raise ValueError(f"index_table: unknown kind {kind!r}")


# ---------------------------------------------------------- bodies of the portable functions


def pad_spatial(x: Any, padding: Sequence[tuple[int, int]], value: float = 0.0) -> Any:
    """``pad_spatial`` (``(left, right)`` per axis) as the library's pad, one operation."""
    return pad(x, padding, value)


def im2col(x: Any, kernel_size, stride, out_size, dilation=None) -> Any:
    """``im2col``: every window as one strided view, then one copy."""
    xp = array_namespace(x)
    view = strided_windows(x, kernel_size, stride, out_size, kernel_axis=1, dilation=dilation)
    return xp.reshape(view, (x.shape[0], math.prod(kernel_size), x.shape[1], *out_size))


def col2im(cols: Any, in_shape, kernel_size, stride, out_size, dilation=None) -> Any:
    """``col2im``: one scatter-add of every column at once, at positions from an index
    table made once per geometry."""
    xp = array_namespace(cols)
    C, N, spatial = in_shape[0], in_shape[1], tuple(in_shape[2:])
    dilation = None if dilation is None else tuple(dilation)
    geometry = (N, spatial, tuple(kernel_size), tuple(stride), tuple(out_size), dilation)
    index = index_table(cols, "col2im", *geometry)
    x = xp.zeros((C, N * math.prod(spatial)), dtype=cols.dtype, device=device(cols))
    x = index_add(x, 1, index, xp.reshape(cols, (C, -1)))
    return xp.reshape(x, tuple(in_shape))


def window_max(x: Any, kernel_size, stride, out_size) -> tuple[Any, Any]:
    """``window_max``: the windows as one strided view, one copy and one reduction that
    gives both (``argmax`` then in int64)."""
    lead = x.ndim - len(kernel_size)
    views = strided_windows(x, kernel_size, stride, out_size, kernel_axis=lead)
    views = array_namespace(x).reshape(views, (*x.shape[:lead], math.prod(kernel_size), *out_size))
    return window_argmax(views, lead)


def window_max_grad(dLdZ, argmax, in_shape, kernel_size, stride, out_size) -> Any:
    """``window_max_grad``: one scatter-add of every element to the flat input position its
    window start and offset name."""
    xp, nd = array_namespace(dLdZ), len(kernel_size)
    lead, spatial = tuple(in_shape[:-nd]), tuple(in_shape[-nd:])
    offsets = index_table(dLdZ, "offsets", spatial, tuple(kernel_size))
    starts = index_table(dLdZ, "window_starts", spatial, tuple(stride), tuple(out_size))
    offset = take(offsets, xp.reshape(astype(argmax, xp.int64), (*lead, -1)))
    dLdA = xp.zeros((*lead, math.prod(spatial)), dtype=dLdZ.dtype, device=device(dLdZ))
    dLdA = take_add(dLdA, offset + starts, xp.reshape(dLdZ, (*lead, -1)))
    return xp.reshape(dLdA, tuple(in_shape))


BODIES = {
    "pad_spatial": pad_spatial,
    "im2col": im2col,
    "col2im": col2im,
    "window_max": window_max,
    "window_max_grad": window_max_grad,
}
