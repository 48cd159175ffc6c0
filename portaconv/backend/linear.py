"""The fully connected layer's products, ``Z = A W^T + b`` and its gradients, on rows.

``A`` (rows, in), ``W`` (out, in), ``b`` (out,), ``Z`` (rows, out)::

    forward    Z  = A @ W^T + b
    backward   dW = dZ^T @ A        db = sum over rows of dZ        dA = dZ @ W

On NumPy the rows are split between :func:`~portaconv.backend.num_threads` Python threads,
OpenBLAS single-threaded meanwhile, as the convolution engines do: on a machine busy with
other work, OpenBLAS's own threads on these small or skinny products were measured 10-100x
slower than one thread each. dW is summed over the chunks in chunk order, so the result is
the same bits on every call. Other libraries: one product each.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from array_api_compat import array_namespace

from ._ops import split_evenly
from .conv._chunks import run_chunks, threads_for

#: Fewest rows per thread worth a thread of their own.
MIN_ROWS_PER_THREAD = 16


def _row_chunks(A: Any) -> tuple[list[slice], int]:
    rows = A.shape[0]
    threads = min(threads_for(A), rows // MIN_ROWS_PER_THREAD)
    if threads <= 1:
        return [slice(0, rows)], 1
    return split_evenly(rows, threads), threads


def affine(A: Any, W: Any, b: Any) -> Any:
    """``A @ W^T + b`` for ``A`` (rows, in)."""
    xp = array_namespace(A)
    chunks, threads = _row_chunks(A)
    W_t = xp.matrix_transpose(W)
    if threads == 1:
        return xp.matmul(A, W_t) + b
    Z = np.empty((A.shape[0], W.shape[0]), dtype=A.dtype)  # threads: NumPy only

    def one_chunk(_: Any, i: int, rows: slice) -> None:
        np.matmul(A[rows], W_t, out=Z[rows])
        Z[rows] += b

    run_chunks(chunks, one_chunk, lambda: None, threads)
    return Z


def affine_grads(dZ: Any, A: Any, W: Any, need_dA: bool = True) -> tuple[Any, Any, Any]:
    """``(dA or None, dW, db)`` of :func:`affine` for the upstream gradient ``dZ`` (rows, out)."""
    xp = array_namespace(dZ)
    chunks, threads = _row_chunks(dZ)
    db = xp.sum(dZ, axis=0)
    if threads == 1:
        dW = xp.matmul(xp.matrix_transpose(dZ), A)
        return (xp.matmul(dZ, W) if need_dA else None), dW, db
    dA = np.empty(A.shape, dtype=dZ.dtype) if need_dA else None  # threads: NumPy only

    def one_chunk(_: Any, i: int, rows: slice) -> Any:
        if dA is not None:
            np.matmul(dZ[rows], W, out=dA[rows])
        return dZ[rows].T @ A[rows]

    parts = run_chunks(chunks, one_chunk, lambda: None, threads)
    dW = parts[0]
    for part in parts[1:]:  # in chunk order: the same sums however the threads ran
        dW += part
    return dA, dW, db
