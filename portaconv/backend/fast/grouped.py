"""NumPy engine for grouped and depthwise convolution at stride 1: a loop over the kernel offsets.

The reference engine gathers im2col (every input value copied once per kernel offset) and
makes one product batched over the groups; with few channels a group, those products are
small and the gather dominates. Here each offset is a strided window of the padded input,
used where it lies, with ``G`` groups, ``P = C_in / G`` input and ``M = C_out / G`` output
channels a group, and L = prod(out) positions::

    depthwise (P = 1)   Z[n, g, m]  += W[g, m, k] * window_k(A_pad)[n, g]      (elementwise)
    grouped   (P > 1)   Z[n, g]     += W_k[g] (M, P) @ window_k(A_pad)[n, g] (P, L)

and backward the same loop: dA_pad's window k receives W_k^T dZ, dW's offset k is the sum
over samples and positions of dZ times window k. Grouped products need each window
contiguous: forward and backward copy it into one buffer reused across the offsets, rather
than forward keeping all ``K^d`` copies for backward (as many fresh arrays as offsets, each
the size of the input). :func:`offset_loop_applies` says where the
engine is chosen: stride 1 with one filter a channel (depthwise) or several input channels
a group (grouped), where it is the faster of the two (BENCHMARKS.md).
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np


def offset_loop_applies(A: Any, groups: int, stride: int, in_channels: int, out_channels: int):
    """Whether the offset loop takes a convolution of ``A``: NumPy, more than one group,
    stride 1, and one filter a channel (depthwise) or several input channels a group."""
    if not isinstance(A, np.ndarray) or groups == 1 or stride != 1:
        return False
    return in_channels // groups > 1 or out_channels == groups


class OffsetLoopConv:
    """Forward and backward of a grouped ``nd``-dimensional convolution on NumPy arrays
    (cubic kernel, stride 1, symmetric padding), the engine interface of
    ``backend._conv.ReferenceConv``."""

    def __init__(self, nd: int, kernel_size: int, padding: int, groups: int) -> None:
        self.nd, self.K, self.padding, self.G = nd, kernel_size, padding, groups

    def _windows(self, out: tuple[int, ...]) -> list[tuple[int, tuple[slice, ...]]]:
        offsets = itertools.product(range(self.K), repeat=self.nd)
        return [
            (k, (..., *(slice(o, o + n) for o, n in zip(offset, out))))
            for k, offset in enumerate(offsets)
        ]

    def forward(self, A: np.ndarray, W: np.ndarray, b: np.ndarray) -> np.ndarray:
        N, C_in, *size = A.shape
        C_out, G, p = W.shape[0], self.G, self.padding
        P, M = C_in // G, C_out // G
        out = tuple(n + 2 * p - self.K + 1 for n in size)
        A_pad = np.zeros((N, G, P, *(n + 2 * p for n in size)), dtype=A.dtype)
        A_pad[(..., *(slice(p, p + n) for n in size))] = A.reshape(N, G, P, *size)
        W_k = W.reshape(G, M, P, -1)  # (G, M, P, K^d): offset k last
        Z = np.empty((N, G, M, *out), dtype=A.dtype)
        Z[...] = b.reshape(G, M, *(1,) * self.nd)
        scratch = np.empty(Z.shape, dtype=A.dtype)
        win = np.empty((N, G, P, *out), dtype=A.dtype) if P > 1 else None
        for k, window in self._windows(out):
            if P == 1:  # depthwise: one weight a channel and output
                w = W_k[:, :, 0, k].reshape(G, M, *(1,) * self.nd)
                Z += np.multiply(w, A_pad[window], out=scratch)
            else:  # the strided window copied contiguous, then one product a group
                np.copyto(win, A_pad[window])
                product = scratch.reshape(N, G, M, -1)
                Z += np.matmul(W_k[:, :, :, k], win.reshape(N, G, P, -1), out=product).reshape(
                    Z.shape
                )
        self._A_pad, self._W, self._in_shape, self._out = A_pad, W, tuple(A.shape), out
        return Z.reshape(N, C_out, *out)

    def backward(
        self, dZ: np.ndarray, need_dA: bool = True
    ) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
        A_pad, W, G, out = self._A_pad, self._W, self.G, self._out
        N, _, P = A_pad.shape[:3]
        M, L = W.shape[0] // G, math.prod(out)
        dZ_g = dZ.reshape(N, G, M, *out)
        W_k = W.reshape(G, M, P, -1)
        dW = np.empty((G, M, P, W_k.shape[-1]), dtype=W.dtype)
        dA_pad = np.zeros_like(A_pad) if need_dA else None
        space = "hwd"[: self.nd]  # einsum's letters for the spatial axes
        scratch = np.empty(dZ_g.shape, dtype=dZ.dtype) if P == 1 and M == 1 else None
        if P > 1:  # the window's contiguous copy, and its share of dA_pad
            gathered = np.empty((N, G, P, *out), dtype=A_pad.dtype)
            dwin = np.empty((N, G, P, L), dtype=A_pad.dtype)
        for k, window in self._windows(out):
            win = A_pad[window]
            if P == 1:  # sums over the strided window where it lies: no copy of it
                dW[:, :, 0, k] = np.einsum(f"ngm{space},ng{space}->gm", dZ_g, win[:, :, 0])
                if need_dA:
                    w = W_k[:, :, 0, k].reshape(G, M, *(1,) * self.nd)
                    if M == 1:
                        dA_pad[window] += np.multiply(w, dZ_g, out=scratch)
                    else:
                        dA_pad[window][:, :, 0] += (w * dZ_g).sum(axis=2)
            else:
                np.copyto(gathered, win)
                dZ_l, win_l = dZ_g.reshape(N, G, M, L), gathered.reshape(N, G, P, L)
                dW[:, :, :, k] = np.matmul(dZ_l, win_l.swapaxes(-1, -2)).sum(axis=0)
                if need_dA:
                    np.matmul(W_k[:, :, :, k].swapaxes(-1, -2), dZ_l, out=dwin)
                    dA_pad[window] += dwin.reshape(N, G, P, *out)
        db = dZ.sum(axis=(0, *range(2, dZ.ndim)))
        dW = dW.reshape(W.shape)
        if not need_dA:
            return None, dW, db
        p, size = self.padding, self._in_shape[2:]
        dA = dA_pad[(..., *(slice(p, p + n) for n in size))]
        return dA.reshape(self._in_shape), dW, db  # a view: (G, P) merge into C_in
