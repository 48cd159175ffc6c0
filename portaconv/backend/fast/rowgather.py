"""NumPy fast path for 2-d convolution, stride 1 or 2: a row gather and K matrix products a pass.

The portable engine (:class:`~.im2row.Im2RowConv`) copies every input value K*K times into one row
per output position. Here only the K horizontal offsets are gathered; the K vertical ones
are row ranges of that matrix, so every pass is K products over it and the copy is K times
smaller. Per batch chunk of n samples, with Hp, Wp the zero-padded input size::

    P    (Hp, n, Wp, C)      the chunk, zero-padded and channels-last
    R    (Hp, n, Wo, K C)    R[h, m, x, (kx, c)] = P[h, m, x + kx, c]: one copy of an
                             as_strided view of P (each row is K C contiguous values of P)
    R_ky = R[ky : ky + Ho] as an (M = Ho n Wo, K C) matrix: a view, no copy

With stride s, output row y reads input row ky + s y and column x the values from s x on:
R's rows are stored by parity class (the rows h = q + s j of class q = h mod s in turn),
R[q, j, m, x, (kx, c)] = P[q + s j, m, s x + kx, c] (still one as_strided copy, P's height
rounded up to a multiple of s with zero rows), so that the rows of kernel row ky are again
a contiguous range, R[ky mod s, ky // s : ky // s + Ho], and the products are the same;
dL/dA interleaves the classes back.

    forward   Z (M, C_out)     = sum_ky R_ky @ W_ky         W_ky[(kx, c), o] = W[o, c, ky, kx]
    dL/dW     dW_ky^T          = dY^T @ R_ky                dY^T: dL/dZ as (C_out, M)
    dL/dA     dR^T rows of ky += W_ky @ dY^T, then each kx adds its shifted slice into dA

The sums over kernel rows are BLAS's own (``gemm``'s ``accumulate``, ``beta = 1``): each
product adds into Z, or into its rows of dR^T, with no scratch block and no pass to add it.
``Z`` reaches NCHW with the bias in one pass. The forward products keep R_ky as BLAS's
left operand, as it is stored: the same product the other way round, ``W_ky^T @ R_ky^T``
into Z^T, runs much slower on OpenBLAS's AVX-512 kernels, and the pass to NCHW, which
then reads Z with a stride of C_out, costs less than that. The chunks (a few MiB of R
each) are split between ``num_threads()`` Python threads with OpenBLAS single-threaded
(``_threads``): the copies, which NumPy runs on one thread, then run on all of them too.
A forward keeps the R of every chunk for backward when they total at most ``keep_bytes``;
otherwise backward gathers them again from the input, which it keeps by reference.

It pays where the gather dominates: the layer uses it for stride 1 or 2 (up to
:data:`MAX_STRIDE`, K > 1, K >= stride) and at least :data:`MIN_CHANNELS` input channels
(with fewer, each product is too narrow and the portable path's K*K gather is cheap).
``benchmarks/engines.py`` compares it with ``im2row`` and the other engines; tested
against PyTorch in ``tests/test_fastpaths.py``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.lib.stride_tricks import as_strided

from ._chunks import PaddedScratch, plan_chunks, run_chunks
from .blas import dot, gemm
from .threads import num_threads

#: Fewest input channels for which the row gather pays: with 1 to 3 channels each product
#: is too narrow and im2row wins; with 4 or 5 and a 3x3 kernel the two are about even; with
#: 4 and 5x5, and from 6 channels on, the row gather wins. (One exception: LeNet's padded
#: 5x5 1 -> 6 without dL/dA is faster on the row gather.)
MIN_CHANNELS = 4

#: Fewest output channels for which the forward's pass to NCHW (a chunk's Z, rows of C_out
#: values, plus the bias) writes Z seen as NHWC, so that NumPy's inner loop runs along
#: those rows; with fewer it runs along Z's rows of W_out values: the longer contiguous run
#: wins (rows of 32 and 64 channels beat rows of W_out values, rows of 16 do not).
NHWC_PASS_MIN_CHANNELS = 32

#: Largest stride the row gather takes (with K >= stride: every row of R is read). Strided
#: layers with many output positions take the NCHW engine first (``nchw.MIN_POSITIONS``);
#: below that, e.g. 3x3 stride 2 128 -> 128 at 14x14 (49 outputs), the row gather is about
#: even with im2row, while NCHW's per-sample products are too narrow and lose.
MAX_STRIDE = 2


def _pitch(length: int, itemsize: int) -> int:
    """Elements from one row of dR^T to the next for rows of ``length`` elements: one cache
    line more where the rows would be a multiple of 4 KiB apart (every row then starts in
    the same cache sets). The padding helps the 5x5 16 -> 32 at 28x28 in chunks of 8 (rows
    28 KiB apart); for the 3x3 32 -> 64 at 14x14 in chunks of 32 (rows 28 KiB apart too) it
    neither helps nor hurts."""
    return length + 64 // itemsize if (length * itemsize) % 4096 == 0 else length


def row_gather_applies(A: Any, nd: int, kernel_size: int, stride: int, channels: int) -> bool:
    """Whether a convolution of ``A`` takes the row-gather engine."""
    return (
        isinstance(A, np.ndarray)
        and A.shape[0] > 0
        and nd == 2
        and stride <= MAX_STRIDE
        and kernel_size > 1
        and kernel_size >= stride
        and channels >= MIN_CHANNELS
    )


class RowGatherConv2d:
    """Forward and backward of a stride-1 or strided ``Conv2d`` on NumPy arrays (any float
    dtype).

    ``forward(A, W, b)`` returns Z (N, C_out, H_out, W_out); ``backward(dZ, need_dA)``
    returns ``(dA or None, dW, db)`` for the last forward. ``workspace`` bounds the
    gathered rows R of the chunks in work at once (each thread's chunk gets an equal
    share); ``keep`` bounds the R that forward may keep for backward.
    """

    def __init__(self, padding: int, workspace: int, keep: int, stride: int = 1) -> None:
        self.padding, self.workspace, self.keep, self.stride = padding, workspace, keep, stride
        self._A: np.ndarray | None = None
        self._kept: dict[int, np.ndarray] = {}

    def _gather(self, buf: PaddedScratch, A: np.ndarray, block: str) -> np.ndarray:
        """R (s, Hq, n, Wo, K C) of the chunk ``A`` (n, C, H, W), in ``buf``'s ``block``."""
        n, C, H, Wd = A.shape
        K, p, st, Hq = self._K, self.padding, self.stride, self._Hq
        Hp, Wp, Wo = H + 2 * p, Wd + 2 * p, self._shapes[8]
        rows = st * Hq  # Hp, rounded up to the stride: the rows past Hp stay zero
        shape = (rows, n, Wp, C)
        P = buf.padded("P", shape) if p or rows > Hp else buf("P", shape)
        P[p : p + H, :, p : p + Wd, :] = A.transpose(2, 0, 3, 1)
        s = P.itemsize
        row = n * Wp * C * s
        windows = as_strided(
            P, (st, Hq, n, Wo, K * C), (row, st * row, Wp * C * s, st * C * s, s), writeable=False
        )
        rows = st * Hq * n * Wo  # of R; dL/dA's products reuse its memory as K C rows this long
        flat = buf(block, (K * C * _pitch(rows, P.itemsize),))
        R = flat[: rows * K * C].reshape(st, Hq, n, Wo, K * C)
        np.copyto(R, windows)
        return R

    @staticmethod
    def _transposed_rows(R: np.ndarray) -> np.ndarray:
        """dR^T (K C, s Hq n Wo): the chunk's R memory, dead once dL/dW has it, taken again
        as the K C rows of dL/dA's products, ``_pitch`` apart (``_gather`` left the room)."""
        s, Hq, n, Wo, KC = R.shape
        rows, item = s * Hq * n * Wo, R.itemsize
        return as_strided(R, (KC, rows), (_pitch(rows, item) * item, item))

    def _rows(self, R: np.ndarray, ky: int) -> np.ndarray:
        """R_ky: the rows ky + s y (y < Ho) of R as an (Ho n Wo, K C) matrix, a view."""
        q, j = ky % self.stride, ky // self.stride
        Ho = self._shapes[7]
        return R[q, j : j + Ho].reshape(-1, R.shape[-1])

    def _run(self, one_chunk: Any) -> list[Any]:
        """``one_chunk(buffers, index, chunk)`` for every chunk, between the threads."""
        return run_chunks(self._chunks, one_chunk, lambda: PaddedScratch(self._A), self._threads)

    def forward(self, A: np.ndarray, W: np.ndarray, b: np.ndarray) -> np.ndarray:
        N, C, H, Wd = A.shape
        Co, _, K, _ = W.shape
        p, st = self.padding, self.stride
        Hp, Wp = H + 2 * p, Wd + 2 * p
        Ho, Wo = (Hp - K) // st + 1, (Wp - K) // st + 1
        KC = K * C
        self._K, self._shapes = K, (N, C, H, Wd, Co, Hp, Wp, Ho, Wo)
        self._Hq = -(-Hp // st)  # rows of each of the s parity classes of R
        self._threads = num_threads()
        per_sample = st * self._Hq * Wo * KC * A.itemsize
        self._chunks = plan_chunks(N, per_sample, self.workspace, self._threads)
        keep = N * per_sample <= self.keep
        # W_ky (K, K C, C_out): [ky, (kx, c), o] = W[o, c, ky, kx]
        self._Wk = np.ascontiguousarray(W.transpose(2, 3, 1, 0)).reshape(K, KC, Co)
        Z = np.empty((N, Co, Ho, Wo), dtype=A.dtype)
        bias = np.reshape(b, (Co, 1, 1))
        self._A = A

        def one_chunk(buf: PaddedScratch, i: int, c: slice) -> np.ndarray | None:
            n = c.stop - c.start
            M = Ho * n * Wo
            R = self._gather(buf, A[c], f"R{i}" if keep else "R")
            ZM = buf("Z", (M, Co))
            for ky in range(K):  # BLAS adds each product after the first into ZM
                gemm(self._rows(R, ky), self._Wk[ky], ZM, accumulate=ky > 0)
            Y = ZM.reshape(Ho, n, Wo, Co)
            if Co >= NHWC_PASS_MIN_CHANNELS:  # NumPy's inner loop along ZM's rows
                np.add(Y.transpose(1, 0, 2, 3), b, out=Z[c].transpose(0, 2, 3, 1))
            else:  # along Z's rows of W_out values
                np.add(Y.transpose(1, 3, 0, 2), bias, out=Z[c])
            return R if keep else None

        kept = self._run(one_chunk)
        self._kept = {i: R for i, R in enumerate(kept) if R is not None}
        return Z

    def _input_gradient(
        self, buf: PaddedScratch, R: np.ndarray, dYT: np.ndarray, Wk: np.ndarray, dA: np.ndarray
    ) -> None:
        """dL/dA of a chunk into ``dA`` (n, C, H, W) for stride s > 1: the products go to the
        rows of R's parity classes (``R``'s memory, dead by now), then each kx adds its
        strided slice into the padded gradient, its rows interleaved back by parity."""
        N, C, H, Wd, Co, Hp, Wp, Ho, Wo = self._shapes
        K, p, st, Hq = self._K, self.padding, self.stride, self._Hq
        n = R.shape[2]
        nW, M = n * Wo, Ho * n * Wo
        dRT = self._transposed_rows(R).reshape(K * C, st, Hq * nW)  # (parity q, row j, m, x)
        for q in range(st):
            if q >= K:  # rows no kernel row reads
                dRT[:, q] = 0
                continue
            gemm(Wk[q], dYT, dRT[:, q, :M])  # ky = q starts its class at row 0
            dRT[:, q, M:] = 0
        for ky in range(st, K):  # BLAS adds each product into its rows of dR^T
            q, j = ky % st, ky // st
            gemm(Wk[ky], dYT, dRT[:, q, j * nW : j * nW + M], accumulate=True)
        dR = dRT.reshape(K, C, st, Hq, n, Wo)
        dX = buf("dX", (C, Hq, st, n, Wp))  # row h = j s + q
        dX[...] = 0
        for kx in range(K):
            dX[..., kx : kx + st * (Wo - 1) + 1 : st] += dR[kx].transpose(0, 2, 1, 3, 4)
        dX = dX.reshape(C, Hq * st, n, Wp)
        np.copyto(dA, dX[:, p : p + H, :, p : p + Wd].transpose(2, 0, 1, 3))

    def backward(
        self, dZ: np.ndarray, need_dA: bool = True
    ) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
        N, C, H, Wd, Co, Hp, Wp, Ho, Wo = self._shapes
        K, p, st = self._K, self.padding, self.stride
        KC = K * C
        dA = np.empty((N, C, H, Wd), dtype=dZ.dtype) if need_dA else None
        Wk = self._Wk  # W_ky (K C, C_out)
        kept, self._kept = self._kept, {}  # used once: a second backward gathers again

        def one_chunk(buf: PaddedScratch, i: int, c: slice) -> tuple[np.ndarray, np.ndarray]:
            n = c.stop - c.start
            M, nW = Ho * n * Wo, n * Wo
            R = kept.pop(i, None)
            if R is None:
                R = self._gather(buf, self._A[c], "R")
            dYT = buf("Z", (Co, Ho, n, Wo))
            np.copyto(dYT, dZ[c].transpose(1, 2, 0, 3))
            dYT = dYT.reshape(Co, M)
            db = np.sum(dYT, axis=1)  # in the chunk's threads, while dY^T is in the cache
            dWT = np.empty((K, Co, KC), dtype=dZ.dtype)
            for ky in range(K):
                dot(dYT, self._rows(R, ky), out=dWT[ky])  # 16 x 30 for LeNet: see dot
            if not need_dA:
                return dWT, db
            if st > 1:
                self._input_gradient(buf, R, dYT, Wk, dA[c])
                return dWT, db
            dRT = self._transposed_rows(R)  # (K C, Hp n Wo)
            gemm(Wk[0], dYT, dRT[:, :M])  # BLAS writes the strided block directly
            dRT[:, M:] = 0
            for ky in range(1, K):  # and adds each later product into its rows
                gemm(Wk[ky], dYT, dRT[:, ky * nW : ky * nW + M], accumulate=True)
            dR = dRT.reshape(K, C, Hp, n, Wo)
            dXT = buf("dX", (C, H, n, Wp))
            dXT[..., :Wo] = dR[0, :, p : p + H]
            dXT[..., Wo:] = 0
            for kx in range(1, K):
                dXT[..., kx : kx + Wo] += dR[kx, :, p : p + H]
            np.copyto(dA[c], dXT[..., p : p + Wd].transpose(2, 0, 1, 3))
            return dWT, db

        parts = self._run(one_chunk)
        dWT, db = parts[0]
        for dWT_chunk, db_chunk in parts[1:]:  # in chunk order: the same sums however run
            dWT += dWT_chunk
            db += db_chunk
        # dWT[ky, o, (kx, c)] -> W's layout (C_out, C, K, K)
        dW = np.ascontiguousarray(dWT.reshape(K, Co, K, C).transpose(1, 3, 0, 2))
        return dA, dW, db
