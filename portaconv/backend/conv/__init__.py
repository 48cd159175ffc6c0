"""Convolution engines: one object per way of computing a convolution.

Each engine owns its data layout from forward to backward (what it gathers in forward it
keeps for its own backward; no other module guesses a layout), behind one interface::

    engine.forward(A, W, b) -> Z
    engine.backward(dZ, need_dA) -> (dA or None, dW, db)

with PyTorch's shapes: A (N, C_in, *in), W (C_out, C_in, K, ..., K), b (C_out,),
Z (N, C_out, *out). The layer (``portaconv.layers.conv``) validates its input, asks
:func:`conv_engine` for the engine that fits and keeps the bookkeeping of W, b, dLdW, dLdb.

==================  ================================================================
``Im2RowConv``      portable: any library, 1-d and 2-d, any stride and padding
``RowGatherConv2d`` NumPy, 2-d, stride 1 or 2 (``MAX_STRIDE``), K > 1, at least
                    ``MIN_CHANNELS`` input channels: K-fold row gather (rows by parity
                    when strided), K products a pass, threaded chunks
``NCHWConv2d``      NumPy, 2-d, fewer than ``MAX_CHANNELS`` input channels (a grayscale
                    first layer), ``MAX_WINDOW`` values a window at stride 1, or strided
                    or 1x1 with ``MIN_POSITIONS`` outputs; 1-d (as height 1) with few
                    channels or ``MIN_POSITIONS_1D`` outputs: per-sample products
                    straight in NCHW, threaded chunks
``StridedConv``     libraries with strided views and a scatter-add (torch): im2col
                    as one view and one copy, col2im as one scatter-add
``TransposedConv``  NumPy, the handout's transposed convolution (1-d or 2-d) as a
                    strided convolution run backwards on the NCHW engine
==================  ================================================================

:func:`transposed_engine` returns None where no engine applies: the transposed layer then
computes its portable products itself.
"""

from __future__ import annotations

import math
from typing import Any

from .._ops import keep_bytes, workspace_bytes
from .im2row import Im2RowConv
from .nchw import MAX_CHANNELS, MIN_POSITIONS, NCHWConv2d, nchw_applies
from .rowgather import MIN_CHANNELS, RowGatherConv2d, row_gather_applies
from .strided import StridedConv, strided_applies
from .transposed import TransposedConv, transposed_applies


def conv_engine(A: Any, nd: int, kernel_size: int, stride: int, padding: int) -> Any:
    """The engine that computes a convolution of ``A`` (N, C_in, *in) best."""
    out_positions = math.prod([(n + 2 * padding - kernel_size) // stride + 1 for n in A.shape[2:]])
    if nchw_applies(A, nd, kernel_size, stride, out_positions):
        return NCHWConv2d(kernel_size, stride, padding, workspace_bytes(A), keep_bytes(A), nd)
    if row_gather_applies(A, nd, kernel_size, stride, A.shape[1]):
        return RowGatherConv2d(padding, workspace_bytes(A), keep_bytes(A), stride)
    if strided_applies(A):
        return StridedConv(nd, kernel_size, stride, padding, workspace_bytes(A), keep_bytes(A))
    return Im2RowConv(nd, kernel_size, stride, padding, workspace_bytes(A), keep_bytes(A))


def transposed_engine(A: Any, nd: int, kernel_size: int, factor: int) -> Any:
    """The engine for the handout's transposed convolution of ``A``, or None (portable)."""
    if transposed_applies(A):
        return TransposedConv(nd, kernel_size, factor, workspace_bytes(A), keep_bytes(A))
    return None


__all__ = [
    "MAX_CHANNELS",
    "MIN_CHANNELS",
    "MIN_POSITIONS",
    "Im2RowConv",
    "NCHWConv2d",
    "RowGatherConv2d",
    "StridedConv",
    "TransposedConv",
    "conv_engine",
    "nchw_applies",
    "row_gather_applies",
    "strided_applies",
    "transposed_applies",
    "transposed_engine",
]
