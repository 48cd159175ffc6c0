"""NumPy fast path for batch normalisation with batch statistics (training mode).

The portable layer (``portaconv.layers.normalization``) makes about seven passes over the
activations in forward and as many in backward, each a full-size temporary array. Here the
batch is cut into chunks of a few hundred KiB, shared between :func:`num_threads` threads,
and every pass over a chunk after the first reads it from the cache::

    statistics   per channel, one pass: s1 = sum(Z - K), s2 = sum((Z - K)^2), K a
                 per-channel estimate of the mean (sample 0's) so that a large mean cannot
                 cancel in float32; M = K + s1 / n, V = s2 / n - (s1 / n)^2
    forward      BZ = Z a + c,  a = BW / sqrt(V + eps),  c = Bb - M a
    backward     dLdBb = sum(dBZ), dLdBW = sum(dBZ (Z - M)) / sqrt(V + eps)
                 dLdZ  = a (dBZ - dLdBb / n) - a (Z - M) dLdBW / (n sqrt(V + eps))

With ``relu=True`` the layer is batch normalisation followed by a ReLU, fused: forward
returns ``A = max(BZ, 0)`` from the same pass over each chunk, and backward takes ``dLdA``
and masks it (``dBZ = dLdA`` where ``A`` is not ``<= 0``, else 0, as the ReLU layer's
backward does) in its first pass, one full pass over the activations fewer each way than
the two layers in turn (``benchmarks/run.py``'s ``batchnorm2d_relu`` case).

With a max pooling after the ReLU as well (``forward(..., pool)``, ``backward_pooled``) and
every scale ``a`` positive, the statistics pass is followed by the pooling of Z itself and
the map and ReLU of the pooled values only: ``pool(max(Z a + c, 0)) = max(pool(Z) a + c, 0)``
because the map is nondecreasing. Backward's ReLU mask and channel sums then cover the
pooled values (``dBZ`` is zero off the windows' maxima), the pooling's backward spreads the
masked gradient to full size chunk by chunk and the last pass makes dL/dZ of each chunk
while it is in the cache, so each block reads its activations fewer times than the three
layers in turn (``benchmarks/train_bench.py --profile`` times each layer of a step).

Nothing of the input's size is stored but the input itself (and with the ReLU, the
output) by reference: backward recomputes ``Z - M`` per chunk. Per-chunk sums are added in
chunk order, in float64 (C numbers a chunk), so the results are the same bits on every call.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._chunks import plan_chunks, run_chunks
from .blas import Scratch
from .numpy_ops import window_max_grad_into
from .threads import num_threads

#: Bytes of activations one chunk covers: small enough that a chunk's later passes read it
#: from the cache, large enough that the per-chunk calls and thread hand-offs stay a small
#: part of its work (much smaller chunks made the layer slower than the portable one).
CHUNK_BYTES = 2**20

#: Fewest (sample, channel) rows a chunk covers: the per-channel dot products
#: (:func:`_channel_dots`) are one ``np.matmul`` with a result per row, and NumPy keeps the
#: GIL through a matmul of at most 500 results (see ``blas.dot``), so smaller
#: chunks would run their dot products in turn, one thread at a time. (BatchNorm2d(32) at
#: 28x28 has 10 samples, 320 rows, per 1 MiB chunk: this bound makes its chunks larger.)
MIN_ROWS = 501


def batch_norm_applies(Z: Any) -> bool:
    """Whether training-mode batch normalisation of ``Z`` takes this path: NumPy arrays of
    at least one chunk (smaller ones cost more in thread hand-offs than they save)."""
    return isinstance(Z, np.ndarray) and Z.size * Z.itemsize >= CHUNK_BYTES


class BatchNormTrain:
    """Training-mode batch normalisation of a NumPy ``Z`` (N, C, ...) over every axis but 1."""

    def __init__(self, eps: float, relu: bool = False) -> None:
        self.eps, self.relu = eps, relu
        self.pooled = False  # whether the last forward pooled first (``forward``'s pool)

    def forward(
        self, Z: np.ndarray, BW: np.ndarray, Bb: np.ndarray, pool: Any = None
    ) -> np.ndarray:
        """The layer's output for ``Z``; with a max-pooling layer ``pool`` (and ``relu``),
        ``pool``'s output of it when every channel's scale is positive (:attr:`pooled` says
        whether it was; if not, the caller pools the full output)."""
        self._statistics(Z, BW, Bb)
        self.pooled = pool is not None and self.relu and bool(np.all(self._a > 0))
        if self.pooled:
            return self._pool_first(Z, pool)
        return self._affine()

    def _statistics(self, Z: np.ndarray, BW: np.ndarray, Bb: np.ndarray) -> None:
        """M, V, inv_std and the per-channel map ``BZ = Z a + shift`` of the batch ``Z``."""
        N, C = Z.shape[0], Z.shape[1]
        Z3 = np.ascontiguousarray(Z).reshape(N, C, -1)
        L = Z3.shape[2]
        self.n = n = N * L
        self._threads = num_threads()
        per_sample = C * L * Z.itemsize
        fewest = -(-MIN_ROWS // C)  # samples
        self._chunks = plan_chunks(
            N, per_sample, CHUNK_BYTES * self._threads, self._threads, fewest
        )
        K = Z3[0].mean(axis=1, keepdims=True)  # (C, 1): a shift near each channel's mean
        K_rows = _per_position(K, L)

        def stats(buf: Scratch, i: int, c: slice) -> tuple[np.ndarray, np.ndarray]:
            D = np.subtract(Z3[c], K_rows, out=buf("D", (c.stop - c.start, C, L)))
            return _channel_sums(D), _channel_dots(D, D)

        parts = run_chunks(self._chunks, stats, lambda: Scratch(Z3), self._threads)
        s1 = sum(p[0] for p in parts) / n
        s2 = sum(p[1] for p in parts) / n
        var = np.maximum(s2 - s1 * s1, 0.0)
        mean = K[:, 0].astype(np.float64) + s1
        inv_std = 1.0 / np.sqrt(var + self.eps)
        dtype = Z.dtype
        self.M, self.V = mean.astype(dtype), var.astype(dtype)
        self.inv_std = inv_std.astype(dtype)
        a = (BW.astype(np.float64) * inv_std).astype(dtype)
        shift = (Bb.astype(np.float64) - mean * BW.astype(np.float64) * inv_std).astype(dtype)
        self._Z3, self.shape = Z3, Z.shape
        self._a, self._M3, self._shift = a[:, None], self.M[:, None], shift[:, None]
        self._rows = {  # the same, each channel's value repeated along its L positions
            name: _per_position(v, L) for name, v in (("a", a), ("M", self.M), ("shift", shift))
        }

    def _affine(self) -> np.ndarray:
        """``BZ = Z a + shift`` (and the ReLU of it), chunk by chunk."""
        Z3 = self._Z3
        out = np.empty_like(Z3)

        def affine(buf: Any, i: int, c: slice) -> None:
            np.multiply(Z3[c], self._rows["a"], out=out[c])
            out[c] += self._rows["shift"]
            if self.relu:
                np.maximum(out[c], 0, out=out[c])

        run_chunks(self._chunks, affine, lambda: None, self._threads)
        self._out3 = out if self.relu else None
        return out.reshape(self.shape)

    def _pool_first(self, Z: np.ndarray, pool: Any) -> np.ndarray:
        """``pool(relu(BZ))`` as ``relu(pool(Z) a + shift)``: with every scale ``a > 0`` the
        map is nondecreasing, also as rounded (``fl(fl(a x) + shift)`` never decreases
        with x), so a window's largest ``BZ`` is the ``BZ`` of its largest ``Z``: the same
        values, and the same first maxima for the gradient, except where rounding makes the
        ``BZ`` of two different Z equal (then the larger Z's, not the first). The full-size
        map and ReLU are never computed."""
        P = pool.forward(Z)
        P3 = np.reshape(P, (P.shape[0], P.shape[1], -1))
        out = np.empty_like(P3)
        a, shift = _per_position(self._a, P3.shape[2]), _per_position(self._shift, P3.shape[2])

        def affine(buf: Any, i: int, c: slice) -> None:
            np.multiply(P3[c], a, out=out[c])
            out[c] += shift
            np.maximum(out[c], 0, out=out[c])

        run_chunks(self._chunks, affine, lambda: None, self._threads)  # the batch's chunks
        self._P3, self._out3 = P3, out
        return out.reshape(P.shape)

    def normalised(self) -> np.ndarray:
        """``NZ = (Z - M) / sqrt(V + eps)`` of the last forward (computed on request)."""
        Z3 = self._Z3
        return ((Z3 - self._M3) * self.inv_std[:, None]).reshape(self.shape)

    def backward_pooled(
        self, dLdA: np.ndarray, pool: Any
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Backward after a forward that pooled first: ``dLdA`` is the gradient of the
        pooled ReLU output. The ReLU mask and the sums for dL/dBW and dL/dBb are taken at
        the pooled size (``dBZ`` is zero but at each window's maximum, where Z is the pooled
        value); then, chunk by chunk, the pooling spreads the masked gradient to full size
        (:func:`_pool_backward_into`) and the same pass turns it into dL/dZ while it is in the
        cache."""
        P3, out3 = self._P3, self._out3
        dA3 = np.reshape(dLdA, P3.shape)
        dP = np.empty_like(P3)
        M = _per_position(self._M3, P3.shape[2])

        def sums(buf: Scratch, i: int, c: slice) -> tuple[np.ndarray, np.ndarray]:
            # A = max(., 0) is >= 0 or NaN: A != 0 is the ReLU's not (A <= 0), in one pass
            np.multiply(dA3[c], out3[c] != 0, out=dP[c])
            T = np.subtract(P3[c], M, out=buf("T", P3[c].shape))
            return _channel_sums(dP[c]), _channel_dots(T, dP[c])

        parts = run_chunks(self._chunks, sums, lambda: Scratch(P3), self._threads)
        db, dW = sum(p[0] for p in parts), sum(p[1] for p in parts)
        dP = dP.reshape(dLdA.shape)
        if not np.isfinite(dP).all():  # the pooling's own backward keeps masked-out 0s exact
            dY3 = np.reshape(pool.backward(dP), self._Z3.shape)
            return self._input_gradient(dY3, db, dW)

        a = _per_position(self._a, P3.shape[2]).reshape(dP.shape[1:])  # (C, ...) as dP

        def spread(c: slice, part: np.ndarray) -> None:  # the chunk's a dBZ, into ``part``
            aP = np.multiply(dP[c], a)  # at the pooled size: a quarter of the work
            _pool_backward_into(pool, aP, c, np.reshape(part, (part.shape[0], *self.shape[1:])))

        return self._input_gradient(np.empty_like(self._Z3), db, dW, fill=spread)

    def backward(self, dBZ: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(dLdZ, dLdBW, dLdBb)`` for the upstream gradient ``dBZ`` (the shape of Z; with
        the ReLU, the gradient of its output ``dLdA``)."""
        Z3 = self._Z3
        N, C, L = Z3.shape
        dZ = np.empty_like(Z3)
        dY3 = np.ascontiguousarray(dBZ).reshape(N, C, L)
        if self.relu:  # the first pass writes the masked gradient into dZ, the last reads it
            dY3, out3 = dZ, self._out3
            dA3 = np.reshape(dBZ, (N, C, L))

        def sums(buf: Scratch, i: int, c: slice) -> tuple[np.ndarray, np.ndarray]:
            if self.relu:  # A = max(., 0) is >= 0 or NaN: A != 0 is not (A <= 0), one pass;
                # a NaN passes its gradient, as in the ReLU layer
                np.multiply(dA3[c], out3[c] != 0, out=dY3[c])
            T = np.subtract(Z3[c], self._rows["M"], out=buf("T", (c.stop - c.start, C, L)))
            return _channel_sums(dY3[c]), _channel_dots(T, dY3[c])

        parts = run_chunks(self._chunks, sums, lambda: Scratch(Z3), self._threads)
        db = sum(p[0] for p in parts)
        dW = sum(p[1] for p in parts)
        return self._input_gradient(dY3, db, dW, out=dZ)

    def _input_gradient(
        self,
        dY3: np.ndarray,
        db: np.ndarray,
        dW: np.ndarray,
        out: np.ndarray | None = None,
        fill: Any = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(dLdZ, dLdBW, dLdBb)`` from ``dBZ`` (as (N, C, L)) and its float64 channel
        sums ``db = sum(dBZ)``, ``dW = sum(dBZ (Z - M))``; dL/dZ goes to ``out`` (which may
        be ``dY3`` itself), else into ``dY3``. With ``fill(chunk, part)``, each chunk's
        ``a dBZ`` (scaled already: at the pooled size, a quarter of the work) is first
        written into its part of ``dY3`` by that call, in the chunk's thread."""
        Z3 = self._Z3
        C, L = Z3.shape[1], Z3.shape[2]
        dZ = dY3 if out is None else out
        dW = dW * self.inv_std.astype(np.float64)
        n = self.n
        a = self._a[:, 0].astype(np.float64)
        dtype = Z3.dtype
        a_rows, M_rows = self._rows["a"], self._rows["M"]
        offset = _per_position((-a * db / n).astype(dtype), L)
        slope = _per_position((-a * self.inv_std.astype(np.float64) * dW / n).astype(dtype), L)

        def grad(buf: Scratch, i: int, c: slice) -> None:
            if fill is not None:
                fill(c, dZ[c])  # a dBZ
            else:
                np.multiply(dY3[c], a_rows, out=dZ[c])  # (with the ReLU, dY3 is dZ: in place)
            T = np.subtract(Z3[c], M_rows, out=buf("T", (c.stop - c.start, C, L)))
            np.multiply(T, slope, out=T)
            dZ[c] += T
            dZ[c] += offset

        run_chunks(self._chunks, grad, lambda: Scratch(Z3), self._threads)
        return dZ.reshape(self.shape), dW.astype(dtype), db.astype(dtype)


def _per_position(v: np.ndarray, L: int) -> np.ndarray:
    """Per-channel values ``v`` (C,) or (C, 1) as a (C, L) array, each channel's value along
    its L positions: against it a (n, C, L) chunk is contiguous over C and L together, so
    NumPy runs one inner loop per sample, where against (C, 1) it runs one per row of L
    values; the same numbers in far fewer NumPy inner loops (``benchmarks/run.py``'s
    BatchNorm2d + ReLU case)."""
    v = np.reshape(v, (-1, 1))
    return np.ascontiguousarray(np.broadcast_to(v, (v.shape[0], L)))


def _channel_dots(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-channel sums of ``x * y`` for chunks (n, C, L), as :func:`_channel_sums` does
    it: one dot product per row of L values (BLAS, in the arrays' dtype: one pass, no
    temporary, where a multiply and a sum make two passes and a full-size temporary),
    then the n rows in float64."""
    return np.matmul(x[:, :, None, :], y[:, :, :, None])[:, :, 0, 0].sum(axis=0, dtype=np.float64)


def _channel_sums(x: np.ndarray) -> np.ndarray:
    """Per-channel sums of a chunk (n, C, L): along L first (contiguous, pairwise, in the
    array's dtype), then the n rows, returned in float64 for the sum over chunks."""
    return x.sum(axis=2).sum(axis=0, dtype=np.float64)


def _pool_backward_into(pool: Any, dLdZ: np.ndarray, rows: slice, out: np.ndarray) -> None:
    """The max-pooling layer ``pool``'s backward for the samples ``rows`` of its last
    forward's batch, from their upstream gradient ``dLdZ`` (finite), written into ``out``
    (their part of dL/dA)."""
    kernel, stride, _ = pool._geometry()
    window_max_grad_into(dLdZ, pool._argmax[rows], kernel, stride, out)
