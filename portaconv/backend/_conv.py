"""The reference convolution: im2col over the whole batch and one (batched) matrix product.

With ``d`` spatial axes, ``A`` (N, C_in, *in) seen channels-first and zero-padded
(``(left, right)`` per axis), ``G`` groups, ``P = prod(K)`` kernel offsets and L = prod(out)
output positions per sample::

    cols   (C_in P, N L)        cols[(c, k), (n, o)] = A_pad[n, c, o * stride + k * dilation]
           as (G, C_in/G P, N L): group g holds the input channels g C_in/G ... (g+1) C_in/G - 1
    W_g    (G, C_out/G, C_in/G P)  = W (C_out, C_in/G, *K) reshaped (a view)
    Z      (G, C_out/G, N L)    = W_g @ cols + b     (one product, broadcast over the groups)
    dL/dW  W_g's shape          = dZ @ cols^T
    dL/db                       = sum of dZ over N and L
    dL/dA                       = col2im(W_g^T @ dZ), cropped to the input

so output channel ``o`` sees the input channels of group ``o // (C_out/G)`` only, as in
PyTorch. ``im2col`` and ``col2im`` are loops over the kernel offsets (``_windows.py``). Every
library runs this engine under ``fast_paths("never")``, and any library the fast half has
no engine for (JAX, CuPy, array-api-strict) runs it always. :func:`conv_engine` is where the
layer asks for an engine: the fast half's where one applies, else this one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from array_api_compat import array_namespace, device

from . import fast
from ._windows import (
    col2im,
    conv_out_size,
    im2col,
    matmul,
    pad_pairs,
    pad_spatial,
    swap_leading_axes,
)


def _per_axis(value: int | Sequence[int], nd: int) -> tuple[int, ...]:
    return (value,) * nd if isinstance(value, int) else tuple(value)


class ReferenceConv:
    """Forward and backward of a ``d``-dimensional convolution on any array library.

    ``kernel_size``, ``stride`` and ``dilation`` are ints or tuples of ``nd`` ints;
    ``padding`` an int or, per axis, an int or a ``(left, right)`` pair. ``forward(A, W, b)``
    (``b`` None: no bias) returns Z (N, C_out, *out); ``backward(dZ, need_dA)`` returns
    ``(dA or None, dW, db or None)`` for the last forward, whose input and im2col matrix it
    keeps.
    """

    def __init__(
        self,
        nd: int,
        kernel_size: int | Sequence[int],
        stride: int | Sequence[int],
        padding: Any,
        dilation: int | Sequence[int] = 1,
        groups: int = 1,
    ) -> None:
        self.nd, self.groups = nd, groups
        self.kernel, self.stride = _per_axis(kernel_size, nd), _per_axis(stride, nd)
        self.dilation = _per_axis(dilation, nd)
        self.padding = pad_pairs(_per_axis(padding, nd) if isinstance(padding, int) else padding)

    def forward(self, A: Any, W: Any, b: Any) -> Any:
        xp, G = array_namespace(A, W), self.groups
        C_out = W.shape[0]
        padded = pad_spatial(swap_leading_axes(A), self.padding)  # (C_in, N, *in_pad)
        out = tuple(
            conv_out_size(n, k, s, 0, d)
            for n, k, s, d in zip(padded.shape[2:], self.kernel, self.stride, self.dilation)
        )
        cols = im2col(padded, self.kernel, self.stride, out, self.dilation)
        # -1 for N L: the batch size may be unknown (None) while a graph is recorded
        self._cols = xp.reshape(cols, (G, cols.shape[0] * cols.shape[1] // G, -1))
        self._W, self._in_shape, self._padded_shape = W, tuple(A.shape), tuple(padded.shape)
        self._out, self._bias = out, b is not None
        Z = matmul(xp.reshape(W, (G, C_out // G, -1)), self._cols)  # (G, C_out/G, N L)
        Z = xp.reshape(Z, (C_out, -1))  # (C_out, N L)
        if b is not None:
            Z = Z + xp.reshape(b, (C_out, 1))
        return swap_leading_axes(xp.reshape(Z, (C_out, -1, *out)))

    def backward(self, dZ: Any, need_dA: bool = True) -> tuple[Any, Any, Any]:
        xp, W, G = array_namespace(dZ), self._W, self.groups
        C_out = W.shape[0]
        dZ_g = xp.reshape(swap_leading_axes(dZ), (G, C_out // G, -1))  # (G, C_out/G, N L)
        dW = xp.reshape(xp.matmul(dZ_g, xp.matrix_transpose(self._cols)), W.shape)
        db = xp.sum(xp.reshape(dZ_g, (C_out, -1)), axis=1) if self._bias else None
        if not need_dA:
            return None, dW, db
        W_g = xp.reshape(W, (G, C_out // G, -1))
        dcols = xp.matmul(xp.matrix_transpose(W_g), dZ_g)  # (G, C_in/G P, N L)
        C_in, N = self._padded_shape[0], self._padded_shape[1]
        dcols = xp.reshape(dcols, (C_in, math.prod(self.kernel), N, *self._out))
        dA = col2im(dcols, self._padded_shape, self.kernel, self.stride, self._out, self.dilation)
        interior = (slice(left, left + n) for (left, _), n in zip(self.padding, self._in_shape[2:]))
        return swap_leading_axes(dA[(..., *interior)]), dW, db


class _ZeroBias:
    """A fast engine run for a layer without a bias: it is given zeros, and its dL/db is
    dropped (the fast engines all fold a bias into their passes)."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine

    def forward(self, A: Any, W: Any, b: Any) -> Any:
        xp = array_namespace(A, W)
        zeros = xp.zeros((W.shape[0],), dtype=W.dtype, device=device(W))
        return self.engine.forward(A, W, zeros)

    def backward(self, dZ: Any, need_dA: bool = True) -> tuple[Any, Any, Any]:
        dA, dW, _ = self.engine.backward(dZ, need_dA)
        return dA, dW, None


def conv_engine(
    A: Any,
    nd: int,
    kernel_size: int | Sequence[int],
    stride: int | Sequence[int],
    padding: Any,
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
    bias: bool = True,
    out_channels: int | None = None,
) -> Any:
    """The engine that computes a convolution of ``A`` (N, C_in, *in): a fast one where the
    backend has one for ``A`` and this geometry (and ``fast_paths`` allows it), else
    :class:`ReferenceConv`. Arguments as :class:`ReferenceConv` takes them; ``bias=False``:
    forward will be given ``b=None``."""
    engine = fast.conv_engine(A, nd, kernel_size, stride, padding, dilation, groups, out_channels)
    if engine is None:
        return ReferenceConv(nd, kernel_size, stride, padding, dilation, groups)
    return engine if bias else _ZeroBias(engine)


def transposed_engine(A: Any, nd: int, kernel_size: int, factor: int) -> Any:
    """A fast engine for the handout's transposed convolution of ``A``, or None: the layer
    then computes its own portable products."""
    return fast.transposed_engine(A, nd, kernel_size, factor)
