"""How the NumPy engines split a batch between threads.

A convolution processes its batch in chunks small enough for the cache. On NumPy the chunks
are shared between :func:`~portaconv.backend.num_threads` Python threads, each calling
OpenBLAS single-threaded (``run_threaded``), so NumPy's copies, which run on one thread,
use every core too, and a busy machine slows a thread, not every product. Other libraries
parallelise inside each operation: one thread, chunks in turn.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from typing import Any

from array_api_compat import is_numpy_array

from .blas import Scratch, batch_chunks, split_evenly
from .threads import num_threads, run_threaded


def threads_for(A: Any) -> int:
    """Threads the engines use for arrays like ``A``: ``num_threads()`` on NumPy, else 1."""
    return num_threads() if is_numpy_array(A) else 1


def plan_chunks(
    batch: int, bytes_per_item: int, workspace: int, threads: int, fewest: int = 1
) -> list[slice]:
    """Chunks of at most ``workspace / threads`` bytes each, their count a multiple of
    ``threads`` (one more chunk each rather than an idle thread), at most one per item;
    but each of at least ``fewest`` items (fewer, larger chunks) where the batch allows."""
    if batch <= 0:
        return [slice(0, 0)]
    count = len(batch_chunks(batch, bytes_per_item, workspace // threads))
    count = min(batch, -(-count // threads) * threads)
    return split_evenly(batch, max(1, min(count, batch // fewest)))


def run_chunks(
    chunks: list[slice],
    one_chunk: Callable[[Any, int, slice], Any],
    make_buffers: Callable[[], Any],
    threads: int,
) -> list[Any]:
    """``one_chunk(buffers, index, chunk)`` for every chunk; the results in chunk order.

    Each thread (with buffers of its own from ``make_buffers``) takes the next chunk nobody
    has taken, so a thread slowed by other work on the machine does fewer. Which thread
    computes a chunk does not change its result, and callers sum per-chunk results in chunk
    order: the same numbers however the chunks fall.
    """
    if threads <= 1 or len(chunks) == 1:  # chunks in turn: no lock, nothing to share
        buffers = make_buffers()
        return [one_chunk(buffers, i, chunk) for i, chunk in enumerate(chunks)]
    results: list[Any] = [None] * len(chunks)
    taken = itertools.count()
    lock = threading.Lock()

    def worker() -> None:
        buffers = make_buffers()
        while True:
            with lock:
                i = next(taken)
            if i >= len(chunks):
                return
            results[i] = one_chunk(buffers, i, chunks[i])

    run_threaded([worker] * max(1, min(threads, len(chunks))))
    return results


class PaddedScratch(Scratch):
    """A thread's reusable blocks (NumPy); ``padded`` ones are zeroed only when their shape
    changes (a chunk loop rewrites their interior only)."""

    def __init__(self, like: Any) -> None:
        super().__init__(like)
        self._zeroed: dict[str, tuple[int, ...]] = {}

    def padded(self, name: str, shape: tuple[int, ...]) -> Any:
        block = self(name, shape)
        if self._zeroed.get(name) != shape:
            block[...] = 0
            self._zeroed[name] = shape
        return block
