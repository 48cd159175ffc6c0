"""Prototype: stride-1 Conv2d forward/backward by a row gather and K GEMMs (transposed output).

Not used by portaconv; measured by ``rowgather_bench.py`` beside this file.

Stride-1 2-d convolution (N, C, H, W) -> (N, Co, Ho, Wo), NumPy float32.

Per batch chunk of n samples:
  P  (Hp, n, Wp, C)   zero-padded channels-last copy of the chunk (borders zeroed once)
  R  (Hp, n, Wo, K*C) R[h, m, x, (kx, c)] = P[h, m, x + kx, c]: every R row is a contiguous
                      run of K*C values of P, so R is one copy of an as_strided view.
  R_ky = R[ky:ky+Ho] viewed as a (M = Ho*n*Wo, K*C) matrix, no copy.
  forward   Z^T (Co, M)  = sum_ky W_ky^T @ R_ky^T       (W_ky[(kx, c), o] = W[o, c, ky, kx])
            -> NCHW with the bias in one pass (runs of Wo)
  backward  dY^T (Co, M) = dZ chunk as (Co, Ho, n, Wo) (one copy, runs of Wo)
            dW_ky^T      = dY^T @ R_ky                   (accumulated over chunks)
            dR^T (K*C, Hp*n*Wo): columns [ky*n*Wo, ky*n*Wo + M) += W_ky @ dY^T
            dX^T (C, H, n, Wp) += dR^T[kx] shifted by kx   (K slice-adds, runs of Wo)
            -> dA NCHW (runs of W)

Buffers (per thread, reused across chunks and calls): P, R (reused for dR^T once dL/dW has
used R), Z (Z^T, then dY^T), T (GEMM temporaries), dX. Use chunk_bytes=2 MiB with threads=2
(peak memory ~= torch's), 4 MiB single-threaded.

Threads: with threads=2 the chunks are split between two Python threads, each with its own
buffers; OpenBLAS is set to 1 thread for the threaded region and restored after. That setting
is process-wide (openblas_set_num_threads_local also acts process-wide in numpy's pthreads
OpenBLAS, measured), so any other thread's BLAS calls run single-threaded meanwhile. The
OpenBLAS library is found through ctypes as the ``libscipy_openblas*`` that NumPy wheels
bundle; where it or its thread-count symbols cannot be found (another BLAS, a source build,
another platform's layout), ``threads > 1`` runs the same chunk groups one after another in
the calling thread instead, with BLAS's own thread count: no Python-thread parallelism, same
chunks and summation order (GEMM rounding may differ in the last bits where BLAS's thread
count changes its blocking). See ``blas_thread_control()``.

Stride 1 only; dL/dW, dL/db, dL/dA verified against torch (float64 reference) in
rowgather_bench.py.
"""

from __future__ import annotations

import ctypes
import glob
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import as_strided

# --- OpenBLAS thread count through ctypes --------------------------------------------------

# Symbol pairs (get, set), tried in order: numpy's bundled scipy-openblas (64-bit ints, then
# 32-bit ints), then a plain OpenBLAS.
_THREAD_SYMBOLS = (
    ("scipy_openblas_get_num_threads64_", "scipy_openblas_set_num_threads64_"),
    ("scipy_openblas_get_num_threads", "scipy_openblas_set_num_threads"),
    ("openblas_get_num_threads", "openblas_set_num_threads"),
)


def _find_openblas() -> tuple[Callable[[], int], Callable[[Any], None]] | None:
    """(get, set) of the OpenBLAS that NumPy uses, or None where it cannot be found."""
    np_dir = os.path.dirname(np.__file__)
    patterns = [
        os.path.join(np_dir, os.pardir, "numpy.libs", "libscipy_openblas*"),  # Linux wheels
        os.path.join(np_dir, ".dylibs", "libscipy_openblas*"),  # macOS wheels
    ]
    for pattern in patterns:
        for path in sorted(glob.glob(pattern)):
            try:
                lib = ctypes.CDLL(path)
            except OSError:
                continue
            for get_name, set_name in _THREAD_SYMBOLS:
                get_fn = getattr(lib, get_name, None)
                set_fn = getattr(lib, set_name, None)
                if get_fn is not None and set_fn is not None:
                    get_fn.restype = ctypes.c_int
                    return get_fn, set_fn
    return None


try:
    _OPENBLAS = _find_openblas()
except Exception:  # never fail on import: threading falls back to sequential chunks
    _OPENBLAS = None


def blas_thread_control() -> bool:
    """Whether OpenBLAS's thread count can be set, so that ``threads > 1`` really runs threads.

    False when numpy's bundled ``libscipy_openblas`` (or its get/set thread-count symbols)
    was not found: ``RowConv2dT(threads=2)`` then runs its two chunk groups sequentially in
    the calling thread (BLAS keeps its own thread count) instead of in two Python threads.
    """
    return _OPENBLAS is not None


def blas_threads(k: int | None = None) -> int | None:
    """Get (k None) or set OpenBLAS's process-wide thread count; returns the previous one.

    Returns None and does nothing where OpenBLAS was not found.
    """
    if _OPENBLAS is None:
        return None
    get_fn, set_fn = _OPENBLAS
    prev = get_fn()
    if k is not None:
        set_fn(ctypes.c_int(k))
    return prev


class single_blas:
    """Run a block with OpenBLAS single-threaded (the caller's threads do the parallelism)."""

    def __enter__(self) -> None:
        self.prev = blas_threads(1)

    def __exit__(self, *exc: object) -> None:
        if self.prev is not None:
            blas_threads(self.prev)


_POOLS: dict[int, ThreadPoolExecutor] = {}


def _pool(workers: int) -> ThreadPoolExecutor:
    """A process-wide thread pool of ``workers`` threads, created on first use."""
    if workers not in _POOLS:
        _POOLS[workers] = ThreadPoolExecutor(workers)
    return _POOLS[workers]


# --- buffers ------------------------------------------------------------------------------


class Buffers:
    """Named float32 work buffers, grown on demand and reused across chunks and calls."""

    def __init__(self) -> None:
        self.blocks: dict[str, np.ndarray] = {}
        self.zeroed: dict[str, tuple[int, ...]] = {}

    def __call__(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        """An uninitialised C-contiguous array of ``shape`` in buffer ``name``."""
        size = int(np.prod(shape))
        block = self.blocks.get(name)
        if block is None or block.size < size:
            block = self.blocks[name] = np.empty(size, np.float32)
            self.zeroed.pop(name, None)
        return block[:size].reshape(shape)

    def padded(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        """A block whose border is zero: zeroed only when its shape changes."""
        a = self(name, shape)
        if self.zeroed.get(name) != tuple(shape):
            a[...] = 0
            self.zeroed[name] = tuple(shape)
        return a


def rows_view(P: np.ndarray, K: int, Wo: int) -> np.ndarray:
    """Read-only (Hp, n, Wo, K*C) view of P (Hp, n, Wp, C).

    ``view[h, m, x, (kx, c)] = P[h, m, x + kx, c]``: each row is K*C contiguous values of P.
    """
    Hp, n, Wp, C = P.shape
    s = P.itemsize
    strides = (n * Wp * C * s, Wp * C * s, C * s, s)
    return as_strided(P, (Hp, n, Wo, K * C), strides, writeable=False)


# --- the layer ----------------------------------------------------------------------------


class RowConv2dT:
    """Stride-1 Conv2d on NumPy float32 with portaconv's layer interface.

    ``W`` (Co, C, K, K) and ``b`` (Co,) float32; ``forward(A)`` -> Z, ``backward(dZ)`` -> dA
    and sets ``dLdW``, ``dLdb``. ``chunk_bytes`` bounds the gathered rows R of one chunk;
    ``threads`` splits the chunks between that many Python threads (see the module
    docstring); ``keep_bytes``: when all of R fits in it, forward keeps it for backward
    instead of gathering again.
    """

    def __init__(
        self,
        W: np.ndarray,
        b: np.ndarray,
        padding: int = 0,
        chunk_bytes: int = 4 * 2**20,
        threads: int = 1,
        keep_bytes: int = 0,
    ) -> None:
        self.W, self.b, self.padding = W, b, padding
        self.chunk_bytes, self.threads, self.keep_bytes = chunk_bytes, threads, keep_bytes
        self.needs_input_grad = True
        self.bufs = [Buffers() for _ in range(max(1, threads))]

    def _gather(self, buf: Buffers, A: np.ndarray, name: str = "R") -> np.ndarray:
        """R (Hp, n, Wo, K*C) of the chunk A (n, C, H, W), in buffer ``name``."""
        n, C, H, Wd = A.shape
        K, p = self.K, self.padding
        Hp, Wp = H + 2 * p, Wd + 2 * p
        Wo = Wp - K + 1
        P = buf.padded("P", (Hp, n, Wp, C))
        P[p : p + H, :, p : p + Wd, :] = A.transpose(2, 0, 3, 1)
        R = buf(name, (Hp, n, Wo, K * C))
        np.copyto(R, rows_view(P, K, Wo))
        return R

    def _chunks(self, N: int, bytes_per_item: int) -> list[slice]:
        """Batch slices of near-equal size, ~chunk_bytes of R each, a multiple of threads."""
        per = max(1, min(N, self.chunk_bytes // bytes_per_item))
        count = -(-N // per)
        if self.threads > 1 and count % self.threads:
            count += self.threads - count % self.threads
        count = min(count, N)
        base, extra = divmod(N, count)
        out, start = [], 0
        for i in range(count):
            stop = start + base + (i < extra)
            out.append(slice(start, stop))
            start = stop
        return out

    def _run(self, fn: Callable[[Buffers, slice], Any], chunks: list[slice]) -> list[Any]:
        """fn(buffers, chunk) for every chunk; results in chunk order per thread group."""
        if self.threads <= 1:
            return [fn(self.bufs[0], c) for c in chunks]
        groups = [chunks[i :: self.threads] for i in range(self.threads)]
        results: list[Any] = []
        if not blas_thread_control():
            # No control of OpenBLAS's threads: run the groups one after another, collected in
            # the same order as the threaded path (same summation order of dL/dW).
            for t, group in enumerate(groups):
                results.extend(fn(self.bufs[t], c) for c in group)
            return results
        with single_blas():
            futures = [
                _pool(self.threads).submit(lambda g=g, t=t: [fn(self.bufs[t], c) for c in g])
                for t, g in enumerate(groups)
            ]
            for f in futures:
                results.extend(f.result())
        return results

    def forward(self, A: np.ndarray) -> np.ndarray:
        N, C, H, Wd = A.shape
        Co, _, K, _ = self.W.shape
        self.K, p = K, self.padding
        Hp, Wp = H + 2 * p, Wd + 2 * p
        Ho, Wo = Hp - K + 1, Wp - K + 1
        self.shapes = (N, C, H, Wd, Co, K, Hp, Wp, Ho, Wo)
        KC = K * C
        WkT = np.ascontiguousarray(self.W.transpose(2, 0, 3, 1)).reshape(K, Co, KC)  # W_ky^T
        self.WkT = WkT
        Z = np.empty((N, Co, Ho, Wo), np.float32)
        chunks = self._chunks(N, Hp * Wo * KC * 4)
        keep = N * Hp * Wo * KC * 4 <= self.keep_bytes
        self.kept: dict[int, np.ndarray] | None = {} if keep else None
        bias = self.b.reshape(Co, 1, 1)

        def one_chunk(buf: Buffers, c: slice) -> None:
            n = c.stop - c.start
            R = self._gather(buf, A[c], f"R{c.start}" if keep else "R")
            M = Ho * n * Wo
            ZT = buf("Z", (Co, M))
            T = buf("T", (Co, M))
            for ky in range(K):
                Rk = R[ky : ky + Ho].reshape(M, KC).T
                if ky == 0:
                    np.matmul(WkT[0], Rk, out=ZT)
                else:
                    np.matmul(WkT[ky], Rk, out=T)
                    ZT += T
            np.add(ZT.reshape(Co, Ho, n, Wo).transpose(2, 0, 1, 3), bias, out=Z[c])
            if keep:
                self.kept[c.start] = R

        self._run(one_chunk, chunks)
        self.A, self.chunks = A, chunks
        return Z

    def backward(self, dZ: np.ndarray) -> np.ndarray | None:
        N, C, H, Wd, Co, K, Hp, Wp, Ho, Wo = self.shapes
        p, KC = self.padding, K * C
        self.dLdb = dZ.sum(axis=(0, 2, 3))
        need_dA = self.needs_input_grad
        dA = np.empty((N, C, H, Wd), np.float32) if need_dA else None
        Wk = [np.ascontiguousarray(w.T) for w in self.WkT]  # W_ky (KC, Co)

        def one_chunk(buf: Buffers, c: slice) -> np.ndarray:
            n = c.stop - c.start
            M, nW = Ho * n * Wo, n * Wo
            R = self.kept.pop(c.start) if self.kept else self._gather(buf, self.A[c])
            dYT = buf("Z", (Co, Ho, n, Wo))
            np.copyto(dYT, dZ[c].transpose(1, 2, 0, 3))
            dYT = dYT.reshape(Co, M)
            dWT = np.empty((K, Co, KC), np.float32)
            for ky in range(K):
                np.matmul(dYT, R[ky : ky + Ho].reshape(M, KC), out=dWT[ky])
            if not need_dA:
                return dWT
            # R is dead once dL/dW has it: its block holds dR (same size)
            dRT = buf("dR" if self.kept else "R", (KC, Hp * nW))
            T = buf("T", (KC, M))
            np.matmul(Wk[0], dYT, out=T)
            dRT[:, :M] = T
            dRT[:, M:] = 0
            for ky in range(1, K):
                np.matmul(Wk[ky], dYT, out=T)
                dRT[:, ky * nW : ky * nW + M] += T
            dR5 = dRT.reshape(K, C, Hp, n, Wo)
            dXT = buf("dX", (C, H, n, Wp))
            dXT[..., :Wo] = dR5[0, :, p : p + H]
            dXT[..., Wo:] = 0
            for kx in range(1, K):
                dXT[..., kx : kx + Wo] += dR5[kx, :, p : p + H]
            np.copyto(dA[c], dXT[..., p : p + Wd].transpose(2, 0, 1, 3))
            return dWT

        dW_parts = self._run(one_chunk, self.chunks)
        dWT = dW_parts[0]
        for d in dW_parts[1:]:
            dWT += d
        # dWT[ky, o, (kx, c)] -> W (Co, C, K, K)
        self.dLdW = np.ascontiguousarray(dWT.reshape(K, Co, K, C).transpose(1, 3, 0, 2))
        return dA
