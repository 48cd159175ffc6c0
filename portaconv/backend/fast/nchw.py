"""NumPy fast path for 2-d convolution with few input channels, strided or 1x1, and for 1-d
convolution: batched products in NCHW.

With one input channel (a grayscale network's first layer) every im2row row holds only
K*K values, and the portable engine spends more on laying out its matrix and on turning
``Z`` back into NCHW than on the product. Here the window values of each sample are
gathered channels-first, so each sample's product lands in NCHW as it is. Per batch chunk
of n samples, with Hp, Wp the zero-padded input size and L = Ho Wo::

    P   (n, C, Hp, Wp)        the chunk, zero-padded (a view of the input when unpadded)
    X   (n, C K K + 1, L)     X[m, (c, ky, kx), (y, x)] = P[m, c, y s + ky, x s + kx]:
                              one copy of an as_strided view of P, and a last row of
                              ones; for a 1x1 kernel with stride 1 and no padding, the
                              input itself (no copy, no row of ones)

    forward   Z[m]  (C_out, L)        = [W_mat | b] @ X[m]    W_mat = W as (C_out, C K K)
    dL/dW     [dW_mat | db]^T         = sum_m X[m] @ dZ[m]^T  (per chunk, chunks in order)
    dL/dA     dX[m]                   = W_mat^T @ dZ[m], then each (ky, kx) adds its
                                        strided slice into the padded dA

Strided in 2-d, dL/dA skips the scatter: the padded gradient's positions fall into sh sw parity
planes (rows a + sh i, columns b + sw j), and the kernel offset (ky, kx) adds to plane
(ky mod sh, kx mod sw) at a fixed shift (ky // sh, kx // sw). With dL/dZ laid out as dY
(C_out, n F), each sample's Ho rows Wq (a plane's width) apart and zeros between, every
offset's contribution is one product added by BLAS into its plane (``gemm``'s
``accumulate``), ``W_tap (C, C_out) @ dY`` at that shift, the zeros keeping the rows and
samples apart; then one strided copy per plane interleaves them into dA. (A strided add of
K K blocks of Wo-value rows, NumPy's inner loops that short, costs more than the products it
scatters, in a strided convolution and in the transposed convolution, whose forward this
is; a 1-d convolution's adds run along whole rows, and planes do not pay there.)

A 1-d convolution is a 2-d one of height 1 (kernel 1 x K). Where X has more rows than dZ
(C K K + 1 > C_out), dL/dW is computed transposed, ``X[m] @ dZ[m]^T``, which OpenBLAS runs
faster than ``dZ[m] @ X[m]^T``; where X has fewer rows, as in a 1x1 64 -> 128, the
transposed product does not pay.

The row of ones puts the bias into the forward product and dL/db into the dL/dW one: the
pass that added ``b`` to Z and the one that summed dZ are gone (with few input channels,
as in the zoo ``cnn``'s first layer, such a pass over the outputs is a large part of the
layer's time).

Each is one ``np.matmul`` over the chunk's stack of samples (OpenBLAS per sample); the
chunks are shared between :func:`~portaconv.backend.num_threads` threads as in the other
engines (``_chunks``). A forward keeps X of every chunk for backward when they total at
most ``keep_bytes`` and :data:`MAX_KEEP_BYTES`; otherwise backward gathers them again from
the input, which it keeps by reference.

The layer takes it where :func:`nchw_applies` says (2-d: few input channels, small
windows, strided, 1x1; 1-d with few channels or enough output positions);
``benchmarks/engines.py`` compares it with the other engines; tested against PyTorch in
``tests/test_fastpaths.py``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import as_strided

from ._chunks import PaddedScratch, plan_chunks, run_chunks
from .blas import gemm
from .threads import num_threads

#: Input channels below which a 2-d convolution on NumPy always takes this engine: where
#: the row gather (``MIN_CHANNELS`` of ``rowgather``, the same number) does not pay.
MAX_CHANNELS = 4

#: Most values a window holds (C_in K K) for which a stride-1 2-d convolution (K > 1) takes
#: this engine whatever its channel count: its gather is K K copies of the input, the row
#: gather's K, but each product is as wide as the image, which wins while windows are
#: small (3x3 with 4 to 7 channels, 2x2 with 8 or 16); the two are about even at 72 values
#: (3x3 with 8 channels), and the row gather wins above (5x5 with 4 channels, 100 values).
#: ``benchmarks/engines.py --set thresholds`` compares them around this switch.
MAX_WINDOW = 64

#: Fewest output positions (H_out W_out) per sample for which the per-sample products pay
#: with many input channels (below :data:`MAX_CHANNELS` they always do).
MIN_POSITIONS = 100

#: Fewest output positions per sample for which a 1-d convolution with at least
#: :data:`MAX_CHANNELS` input channels takes this engine (with fewer it always does): it
#: beats the im2row engine from a few tens of positions up, but not with 8 positions and 64
#: channels, where each product is too narrow; with one channel it wins even at 4.
MIN_POSITIONS_1D = 16

#: Most window matrices X (all chunks) forward keeps for backward, below ``keep_bytes``: X
#: holds K*K copies of a few-channel input, and past a few MiB writing it out and reading
#: it back costs more than gathering it again from the input in backward. So inside
#: ``Trainer.fit`` LeNet-5's first layer (9.8 MiB of windows at batch 128) gathers again,
#: while the zoo cnn's (3x3, 3.8 MiB) keeps them: for it, gathering again would cost
#: backward more than keeping costs forward.
MAX_KEEP_BYTES = 4 * 2**20


def nchw_applies(A: Any, nd: int, kernel_size: int, stride: int, out_positions: int) -> bool:
    """Whether a convolution of ``A`` takes the NCHW engine (NumPy): 2-d with fewer than
    :data:`MAX_CHANNELS` input channels (where the row gather does not pay), stride 1 with
    windows of at most :data:`MAX_WINDOW` values, or strided or 1x1 (where the row gather
    does not apply) with at least :data:`MIN_POSITIONS` output positions; 1-d with fewer
    than :data:`MAX_CHANNELS` input channels or at least :data:`MIN_POSITIONS_1D` outputs.

    Against the im2row engine it wins with 1 to 3 channels (LeNet's and the zoo cnn's first
    layers), with stride 2 and 3, and 1x1 at 14x14 and 28x28; but not 1x1 256 -> 64 at 7x7
    (49 positions): each sample's product is then too narrow (``benchmarks/engines.py``).
    """
    if not isinstance(A, np.ndarray) or A.shape[0] == 0:
        return False
    if nd == 1:
        return A.shape[1] < MAX_CHANNELS or out_positions >= MIN_POSITIONS_1D
    if nd != 2:
        return False
    if A.shape[1] < MAX_CHANNELS:
        return True
    if stride == 1 and kernel_size > 1 and A.shape[1] * kernel_size**2 <= MAX_WINDOW:
        return True
    return (stride > 1 or kernel_size == 1) and out_positions >= MIN_POSITIONS


class NCHWConv2d:
    """Forward and backward of a ``Conv2d`` (or, with ``nd=1``, a ``Conv1d``: a 2-d
    convolution of height 1) on NumPy arrays (any float dtype, stride, padding).

    ``forward(A, W, b)`` returns Z (N, C_out, *out); ``backward(dZ, need_dA)`` returns
    ``(dA or None, dW, db)`` for the last forward. ``workspace`` bounds the gathered
    windows X of the chunks in work at once (each thread's chunk gets an equal share);
    ``keep`` bounds the X that forward may keep for backward.
    """

    def __init__(
        self, kernel_size: int, stride: int, padding: int, workspace: int, keep: int, nd: int = 2
    ):
        self.K, self.stride, self.padding, self.nd = kernel_size, stride, padding, nd
        self.workspace, self.keep = workspace, keep
        # (height, width) of the kernel, the stride and the padding
        one = (1, 1, 0) if nd == 1 else (kernel_size, stride, padding)
        self._kernel, self._step, self._pad = zip(one, (kernel_size, stride, padding))
        self._A: np.ndarray | None = None
        self._kept: dict[int, np.ndarray] = {}

    def _gather(self, buf: PaddedScratch, A: np.ndarray, block: str) -> np.ndarray:
        """X (n, C Kh Kw + 1, L) of the chunk ``A`` (n, C, H, W), in ``buf``'s ``block``;
        for a pointwise layer (n, C, L), the input itself."""
        n, C, H, Wd = A.shape
        (Kh, Kw), (sh, sw), (ph, pw) = self._kernel, self._step, self._pad
        Ho, Wo = self._out
        CKK, L = C * Kh * Kw, Ho * Wo
        if self._pointwise:  # X is the input itself (a copy only if it is not contiguous)
            return np.reshape(A, (n, C, H * Wd))
        if ph or pw:
            P = buf.padded("P", (n, C, H + 2 * ph, Wd + 2 * pw))
            P[:, :, ph : ph + H, pw : pw + Wd] = A
        else:
            P = A
        sN, sC, sH, sW = P.strides
        windows = as_strided(
            P, (n, C, Kh, Kw, Ho, Wo), (sN, sC, sH, sW, sh * sH, sw * sW), writeable=False
        )
        X = buf(block, (n, CKK + 1, L))
        np.copyto(X[:, :CKK].reshape(n, C, Kh, Kw, Ho, Wo), windows)
        X[:, CKK] = 1  # the bias's row
        return X

    def _run(self, one_chunk: Any, like: np.ndarray) -> list[Any]:
        """``one_chunk(buffers, index, chunk)`` for every chunk, between the threads."""
        return run_chunks(self._chunks, one_chunk, lambda: PaddedScratch(like), self._threads)

    def _plan(self, shape: tuple[int, ...], W: np.ndarray, b: np.ndarray, itemsize: int) -> int:
        """The geometry, the chunks and [W_mat | b] of a convolution of inputs of ``shape``
        (N, C, H, W); returns the bytes of one sample's window matrix."""
        N, C, H, Wd = shape
        Co = W.shape[0]
        (Kh, Kw), (sh, sw), (ph, pw) = self._kernel, self._step, self._pad
        Ho, Wo = (H + 2 * ph - Kh) // sh + 1, (Wd + 2 * pw - Kw) // sw + 1
        CKK = C * Kh * Kw
        self._in_shape, self._out, self._Co = shape, (Ho, Wo), Co
        self._pointwise = Kh * Kw == 1 and sh * sw == 1 and ph + pw == 0
        self._threads = num_threads()
        per_sample = CKK * Ho * Wo * itemsize
        self._chunks = plan_chunks(N, per_sample, self.workspace, self._threads)
        self._W = np.concatenate([W.reshape(Co, CKK), np.reshape(b, (Co, 1))], axis=1)
        # W_tap (C, C_out) of every kernel offset, for dL/dA by parity planes (2-d, strided)
        taps = W.reshape(Co, C, Kh, Kw).transpose(2, 3, 1, 0)
        self._taps = np.ascontiguousarray(taps) if sh > 1 else None
        return per_sample

    def forward(self, A: np.ndarray, W: np.ndarray, b: np.ndarray) -> np.ndarray:
        if self.nd == 1:  # height 1
            return self._forward(A[:, :, None], W[:, :, None], b)[:, :, 0]
        return self._forward(A, W, b)

    def prepare(self, A: np.ndarray, W: np.ndarray, b: np.ndarray) -> None:
        """What ``forward(A, W, b)`` sets up for :meth:`backward`, without computing Z (for
        a caller that needs only dL/dW and dL/db): backward gathers the windows from A."""
        if self.nd == 1:  # height 1
            A, W = A[:, :, None], W[:, :, None]
        self._plan(A.shape, W, b, A.itemsize)
        self._A, self._kept = A, {}

    def _forward(self, A: np.ndarray, W: np.ndarray, b: np.ndarray) -> np.ndarray:
        per_sample = self._plan(A.shape, W, b, A.itemsize)
        N, (Ho, Wo), Co = A.shape[0], self._out, self._Co
        L, CKK = Ho * Wo, self._W.shape[1] - 1
        keep = N * per_sample <= min(self.keep, MAX_KEEP_BYTES) and not self._pointwise
        Z = np.empty((N, Co, Ho, Wo), dtype=A.dtype)
        bias = np.reshape(b, (Co, 1))
        self._A = A

        def one_chunk(buf: PaddedScratch, i: int, c: slice) -> np.ndarray | None:
            X = self._gather(buf, A[c], f"X{i}" if keep else "X")
            Zc = Z[c].reshape(c.stop - c.start, Co, L)
            if self._pointwise:
                np.matmul(self._W[:, :CKK], X, out=Zc)
                Zc += bias
            else:
                np.matmul(self._W, X, out=Zc)
            return X if keep else None

        kept = self._run(one_chunk, A)
        self._kept = {i: X for i, X in enumerate(kept) if X is not None}
        return Z

    def backward(
        self, dZ: np.ndarray, need_dA: bool = True
    ) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
        if self.nd == 1:  # height 1
            dA, dW, db = self._backward(dZ[:, :, None], need_dA)
            return (None if dA is None else dA[:, :, 0]), dW[:, :, 0], db
        return self._backward(dZ, need_dA)

    def input_gradient(
        self, dZ: np.ndarray, shape: tuple[int, ...], W: np.ndarray, b: np.ndarray
    ) -> np.ndarray:
        """dL/dA alone, plus ``b`` (C,) on every position, for inputs of ``shape`` and
        weights ``W``, with no forward before it (nothing of the input is needed): a
        transposed convolution's forward."""
        if self.nd == 1:  # height 1
            shape = (*shape[:2], 1, shape[2])
            return self._input_gradient_alone(dZ[:, :, None], shape, W[:, :, None], b)[:, :, 0]
        return self._input_gradient_alone(dZ, shape, W, b)

    def _input_gradient_alone(
        self, dZ: np.ndarray, shape: tuple[int, ...], W: np.ndarray, b: np.ndarray
    ) -> np.ndarray:
        self._plan(shape, W, np.zeros(W.shape[0], W.dtype), dZ.itemsize)
        dA = np.empty(shape, dtype=dZ.dtype)
        W_T = np.ascontiguousarray(self._W[:, :-1].T)  # (C Kh Kw, C_out)

        def one_chunk(buf: PaddedScratch, i: int, c: slice) -> None:
            n = c.stop - c.start
            block = buf("X", (n, W_T.shape[0], math.prod(self._out)))
            self._input_gradient(buf, W_T, dZ[c], block, dA[c], b)

        self._run(one_chunk, dZ)
        return dA

    def _input_gradient(
        self,
        buf: PaddedScratch,
        W_T: np.ndarray,
        dZ: np.ndarray,
        block: Any,
        dA: np.ndarray,
        b: np.ndarray | None = None,
    ) -> None:
        """dL/dA of a chunk into ``dA`` (n, C, H, W), plus ``b`` (C,) where given: the
        products go to ``block`` (n, C Kh Kw, L), then each (ky, kx) adds its strided slice
        into the padded gradient, which starts as ``b``."""
        n, C, H, Wd = dA.shape
        (Ho, Wo), Co = self._out, self._Co
        (Kh, Kw), (sh, sw), (ph, pw) = self._kernel, self._step, self._pad
        dZc = np.reshape(dZ, (n, Co, Ho * Wo))  # a copy only when dZ is not contiguous
        if self._pointwise:
            np.matmul(W_T, dZc, out=dA.reshape(n, C, H * Wd))
            if b is not None:
                dA += np.reshape(b, (C, 1, 1))
            return
        if sh > 1:  # 2-d (1-d's strided adds run along whole rows)
            self._input_gradient_by_planes(buf, dZ, dA, b)
            return
        dX = np.matmul(W_T, dZc, out=block).reshape(n, C, Kh, Kw, Ho, Wo)
        dP = buf("dP", (n, C, H + 2 * ph, Wd + 2 * pw))
        dP[...] = 0 if b is None else np.reshape(b, (C, 1, 1))
        for ky in range(Kh):
            for kx in range(Kw):
                dP[:, :, ky : ky + sh * Ho : sh, kx : kx + sw * Wo : sw] += dX[:, :, ky, kx]
        dA[...] = dP[:, :, ph : ph + H, pw : pw + Wd]

    def _input_gradient_by_planes(
        self, buf: PaddedScratch, dZ: np.ndarray, dA: np.ndarray, b: np.ndarray | None
    ) -> None:
        """dL/dA of a chunk, strided: the module docstring's parity planes (products added
        by BLAS into their planes, then the planes interleaved into ``dA``)."""
        n, C, H, Wd = dA.shape
        (Ho, Wo), Co = self._out, self._Co
        (Kh, Kw), (sh, sw), (ph, pw) = self._kernel, self._step, self._pad
        Hq, Wq = -(-(H + 2 * ph) // sh), -(-(Wd + 2 * pw) // sw)  # a plane's size
        # one sample's stretch of a plane: the plane, and every product's reach in it
        F = max(Hq * Wq, (Kh - 1) // sh * Wq + (Kw - 1) // sw + Ho * Wq)
        dY = buf.padded("dY", (Co, n, F))  # dZ^T, its rows Wq apart: zeros between
        dZ = np.reshape(dZ, (n, Co, Ho, Wo))
        dY[:, :, : Ho * Wq].reshape(Co, n, Ho, Wq)[..., :Wo] = dZ.transpose(1, 0, 2, 3)
        Q = buf("Q", (C, sh, sw, n * F))
        Q[...] = 0 if b is None else np.reshape(b, (C, 1, 1, 1))
        dY = dY.reshape(Co, n * F)
        for ky in range(Kh):
            for kx in range(Kw):
                start = ky // sh * Wq + kx // sw
                plane = Q[:, ky % sh, kx % sw, start:]
                gemm(self._taps[ky, kx], dY[:, : plane.shape[1]], plane, accumulate=True)
        for a in range(sh):  # plane (a, b) holds the padded rows a + sh i, columns b + sw j
            y0 = (a - ph) % sh  # the first row of dA in it, and its row in the plane
            for c in range(sw):
                x0 = (c - pw) % sw
                i0, j0 = (y0 + ph) // sh, (x0 + pw) // sw
                ny, nx = len(range(y0, H, sh)), len(range(x0, Wd, sw))
                plane = Q[:, a, c].reshape(C, n, F)[:, :, : Hq * Wq].reshape(C, n, Hq, Wq)
                dA[:, :, y0::sh, x0::sw] = plane[:, :, i0 : i0 + ny, j0 : j0 + nx].transpose(
                    1, 0, 2, 3
                )

    def _backward(
        self, dZ: np.ndarray, need_dA: bool
    ) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
        N, C, H, Wd = self._in_shape
        (Ho, Wo), Co = self._out, self._Co
        (Kh, Kw) = self._kernel
        L = Ho * Wo
        CKK = C * Kh * Kw
        dA = np.empty((N, C, H, Wd), dtype=dZ.dtype) if need_dA else None
        W_T = np.ascontiguousarray(self._W[:, :CKK].T)  # (C Kh Kw, C_out)
        kept, self._kept = self._kept, {}  # used once: a second backward gathers again

        def one_chunk(buf: PaddedScratch, i: int, c: slice) -> tuple[np.ndarray, np.ndarray]:
            n = c.stop - c.start
            X = kept.pop(i, None)
            if X is None:
                X = self._gather(buf, self._A[c], "X")
            dZc = np.reshape(dZ[c], (n, Co, L))  # a copy only when dZ is not contiguous
            # (n, C K K + 1, C_out): the last row, against the row of ones, is dL/db
            if X.shape[1] > Co:  # see the module docstring
                dWbT = np.matmul(X, dZc.transpose(0, 2, 1)).sum(axis=0)
            else:
                dWbT = np.matmul(dZc, X.transpose(0, 2, 1)).sum(axis=0).T
            if self._pointwise:  # no row of ones: dL/db is its own sum
                dW, db = dWbT.T, np.sum(dZc, axis=(0, 2))
            else:
                dW, db = dWbT[:CKK].T, dWbT[CKK]
            if need_dA:  # X is dead: its rows of windows take dL/dX
                self._input_gradient(buf, W_T, dZc, X[:, :CKK], dA[c])
            return dW, db

        parts = self._run(one_chunk, dZ)
        dW, db = parts[0]
        for dW_chunk, db_chunk in parts[1:]:  # in chunk order: the same sums however run
            dW, db = dW + dW_chunk, db + db_chunk
        return dA, np.ascontiguousarray(dW).reshape(Co, C, Kh, Kw), db
