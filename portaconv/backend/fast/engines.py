"""Which fast convolution engine computes a convolution, by library, channels and geometry.

Each engine owns its data layout from forward to backward (what it gathers in forward it
keeps for its own backward), behind the reference engine's interface::

    engine.forward(A, W, b) -> Z
    engine.backward(dZ, need_dA) -> (dA or None, dW, db)

with PyTorch's shapes: A (N, C_in, *in), W (C_out, C_in, K, ..., K), b (C_out,),
Z (N, C_out, *out).

==================  ================================================================
``"nchw"``          NumPy, 2-d with few input channels (a grayscale first layer), small
                    windows at stride 1, or strided or 1x1 with enough output
                    positions; 1-d (as height 1) with few channels or enough outputs:
                    per-sample products straight in NCHW (``nchw.py``)
``"row_gather"``    NumPy, 2-d, stride 1 or 2, K > 1, enough input channels: K-fold row
                    gather, K products a pass (``rowgather.py``)
``"im2row"``        NumPy, anything else: the im2row gather in the layout whose copies
                    run longest, one product per chunk (``im2row.py``)
``"strided"``       PyTorch: im2col as one strided view and one copy, col2im as one
                    scatter-add (``strided.py``)
``"offset_loop"``   NumPy, groups > 1 at stride 1, depthwise with one filter a channel
                    or several input channels a group: a loop over the kernel offsets
                    on windows of the padded input (``grouped.py``)
==================  ================================================================

Every engine takes one kernel size, stride and padding for all axes (a cubic kernel,
symmetric padding) and dilation 1, and all but the offset loop one group:
:func:`square_geometry` says whether a convolution is one of those; any other (tuple
arguments that differ per axis, ``"same"`` padding split unevenly, dilation, other groups)
is the reference engine's.

The NumPy engines split the batch into cache-sized chunks shared between portaconv's
threads. :func:`transposed_engine` does the same for the handout's transposed convolution
(``transposed.py``), on NumPy.
"""

from __future__ import annotations

import math
from typing import Any

from array_api_compat import is_numpy_array

from .blas import keep_bytes, workspace_bytes
from .grouped import OffsetLoopConv, offset_loop_applies
from .im2row import Im2RowConv
from .nchw import NCHWConv2d, nchw_applies
from .rowgather import RowGatherConv2d, row_gather_applies
from .strided import StridedConv, strided_applies
from .transposed import TransposedConv, transposed_applies


def _applies(name: str, A: Any, nd: int, kernel_size: int, stride: int, positions: int) -> bool:
    if name == "nchw":
        return nchw_applies(A, nd, kernel_size, stride, positions)
    if name == "row_gather":
        return row_gather_applies(A, nd, kernel_size, stride, A.shape[1])
    if name == "strided":
        return strided_applies(A)
    return is_numpy_array(A)  # im2row


def _build(name: str, A: Any, nd: int, kernel_size: int, stride: int, padding: int) -> Any:
    budget = (workspace_bytes(A), keep_bytes(A))
    if name == "nchw":
        return NCHWConv2d(kernel_size, stride, padding, *budget, nd)
    if name == "row_gather":
        return RowGatherConv2d(padding, *budget, stride)
    if name == "strided":
        return StridedConv(nd, kernel_size, stride, padding, *budget)
    return Im2RowConv(nd, kernel_size, stride, padding, *budget)


def _same(values: Any, nd: int) -> int | None:
    """The one int of an int or of a tuple of ``nd`` equal ints, else None."""
    if isinstance(values, int):
        return values
    values = tuple(values)
    return values[0] if len(values) == nd and len(set(values)) == 1 else None


def square_geometry(
    nd: int, kernel_size: Any, stride: Any, padding: Any, dilation: Any = 1, groups: int = 1
) -> tuple[int, int, int] | None:
    """``(K, stride, padding)`` as ints where the fast engines can take the convolution
    (the same kernel size and stride on every axis, the same padding on both sides of every
    axis, no dilation, one group), else None. Arguments as ``ReferenceConv`` takes them:
    ints, or per axis (``padding``: an int or a ``(left, right)`` pair per axis)."""
    if not isinstance(padding, int):
        padding = [p if isinstance(p, int) else _same(p, 2) for p in padding]
        padding = None if None in padding else _same(padding, nd)
    found = (_same(kernel_size, nd), _same(stride, nd), padding)
    if None in found or _same(dilation, nd) != 1 or groups != 1:
        return None
    return found  # type: ignore[return-value]


def conv_engine(
    A: Any,
    nd: int,
    kernel_size: Any,
    stride: Any,
    padding: Any,
    forced: str | None = None,
    dilation: Any = 1,
    groups: int = 1,
    out_channels: int | None = None,
) -> Any:
    """The fast engine for a convolution of ``A`` (N, C_in, *in), or None where none
    applies (the reference engine then runs). ``forced`` names the engine to use; one that
    cannot take ``A`` or this geometry is a ValueError."""
    if groups > 1 and forced in (None, "offset_loop"):
        square = square_geometry(nd, kernel_size, stride, padding, dilation)
        C_out = out_channels if out_channels is not None else A.shape[1]
        if square is not None and offset_loop_applies(A, groups, square[1], A.shape[1], C_out):
            return OffsetLoopConv(nd, square[0], square[2], groups)
    if forced == "offset_loop":
        raise ValueError(
            "fast_paths(conv='offset_loop'): that engine takes NumPy grouped convolutions at "
            "stride 1 with one filter a channel or several input channels a group, got "
            f"groups={groups}, stride={stride}, input of shape {tuple(A.shape)}"
        )
    square = square_geometry(nd, kernel_size, stride, padding, dilation, groups)
    if square is None:
        if forced is not None:
            raise ValueError(
                f"fast_paths(conv={forced!r}): that engine cannot take this convolution "
                f"(kernel_size={kernel_size}, stride={stride}, padding={padding}, "
                f"dilation={dilation}, groups={groups}: it takes one kernel size, stride and "
                "symmetric padding for every axis, dilation 1 and groups 1)"
            )
        return None
    kernel_size, stride, padding = square
    out = [(n + 2 * padding - kernel_size) // stride + 1 for n in A.shape[2:]]
    positions = math.prod(out)
    if forced is not None:
        if not _applies(forced, A, nd, kernel_size, stride, positions):
            raise ValueError(
                f"fast_paths(conv={forced!r}): that engine cannot take this convolution "
                f"({type(A).__module__.split('.')[0]} input of shape {tuple(A.shape)}, "
                f"kernel_size={kernel_size}, stride={stride})"
            )
        return _build(forced, A, nd, kernel_size, stride, padding)
    for name in ("nchw", "row_gather", "strided", "im2row"):
        if _applies(name, A, nd, kernel_size, stride, positions):
            return _build(name, A, nd, kernel_size, stride, padding)
    return None


def transposed_engine(A: Any, nd: int, kernel_size: int, factor: int) -> Any:
    """The engine for the handout's transposed convolution of ``A``, or None (portable)."""
    if transposed_applies(A):
        return TransposedConv(nd, kernel_size, factor, workspace_bytes(A), keep_bytes(A))
    return None
