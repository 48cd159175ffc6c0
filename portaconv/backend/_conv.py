"""The reference convolution: im2col over the whole batch and one matrix product.

With ``d`` spatial axes, ``A`` (N, C_in, *in) seen channels-first and zero-padded, and
L = prod(out) output positions per sample::

    cols   (C_in K^d, N L)     cols[(c, k), (n, o)] = A_pad[n, c, o * stride + offset_k]
    Z      (C_out, N L)        = W_mat @ cols + b          W_mat = W as (C_out, C_in K^d)
    dL/dW  W_mat's shape       = dZ @ cols^T
    dL/db                      = sum of dZ over N and L
    dL/dA                      = col2im(W_mat^T @ dZ), cropped to the input

``im2col`` and ``col2im`` are loops over the kernel offsets (``_windows.py``). Every library
runs this engine under ``fast_paths("never")``, and any library the fast half has no engine
for (JAX, CuPy, array-api-strict) runs it always. :func:`conv_engine` is where the layer
asks for an engine: the fast half's where one applies, else this one.
"""

from __future__ import annotations

import math
from typing import Any

from array_api_compat import array_namespace

from . import fast
from ._windows import col2im, conv_out_size, im2col, pad_spatial, swap_leading_axes


class ReferenceConv:
    """Forward and backward of a ``d``-dimensional convolution on any array library.

    ``forward(A, W, b)`` returns Z (N, C_out, *out); ``backward(dZ, need_dA)`` returns
    ``(dA or None, dW, db)`` for the last forward, whose input and im2col matrix it keeps.
    """

    def __init__(self, nd: int, kernel_size: int, stride: int, padding: int) -> None:
        self.nd, self.K, self.stride, self.padding = nd, kernel_size, stride, padding

    def forward(self, A: Any, W: Any, b: Any) -> Any:
        xp, nd = array_namespace(A, W), self.nd
        N, C_out = A.shape[0], W.shape[0]
        padded = pad_spatial(swap_leading_axes(A), (self.padding,) * nd)  # (C_in, N, *in)
        out = tuple(conv_out_size(n, self.K, self.stride) for n in padded.shape[2:])
        cols = im2col(padded, (self.K,) * nd, (self.stride,) * nd, out)
        self._cols = xp.reshape(cols, (-1, N * math.prod(out)))  # (C_in K^d, N L)
        self._W, self._in_shape, self._padded_shape = W, tuple(A.shape), tuple(padded.shape)
        self._out = out
        Z = xp.matmul(xp.reshape(W, (C_out, -1)), self._cols)  # (C_out, N L)
        Z = Z + xp.reshape(b, (C_out, 1))
        return swap_leading_axes(xp.reshape(Z, (C_out, N, *out)))

    def backward(self, dZ: Any, need_dA: bool = True) -> tuple[Any, Any, Any]:
        xp, nd, W = array_namespace(dZ), self.nd, self._W
        C_out = W.shape[0]
        dZ_mat = xp.reshape(swap_leading_axes(dZ), (C_out, -1))  # (C_out, N L)
        dW = xp.reshape(xp.matmul(dZ_mat, xp.matrix_transpose(self._cols)), W.shape)
        db = xp.sum(dZ_mat, axis=1)
        if not need_dA:
            return None, dW, db
        dcols = xp.matmul(xp.matrix_transpose(xp.reshape(W, (C_out, -1))), dZ_mat)
        C_in, N = self._padded_shape[0], self._padded_shape[1]
        dcols = xp.reshape(dcols, (C_in, self.K**nd, N, *self._out))
        kernel, stride = (self.K,) * nd, (self.stride,) * nd
        dA = col2im(dcols, self._padded_shape, kernel, stride, self._out)
        p = self.padding
        dA = dA[(..., *(slice(p, p + n) for n in self._in_shape[2:]))]
        return swap_leading_axes(dA), dW, db


def conv_engine(A: Any, nd: int, kernel_size: int, stride: int, padding: int) -> Any:
    """The engine that computes a convolution of ``A`` (N, C_in, *in): a fast one where the
    backend has one for ``A`` (and ``fast_paths`` allows it), else :class:`ReferenceConv`."""
    engine = fast.conv_engine(A, nd, kernel_size, stride, padding)
    return engine if engine is not None else ReferenceConv(nd, kernel_size, stride, padding)


def transposed_engine(A: Any, nd: int, kernel_size: int, factor: int) -> Any:
    """A fast engine for the handout's transposed convolution of ``A``, or None: the layer
    then computes its own portable products."""
    return fast.transposed_engine(A, nd, kernel_size, factor)
