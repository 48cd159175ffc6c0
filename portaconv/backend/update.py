"""NumPy fast path of Adam's update: every parameter in one pass over cache-sized chunks.

The portable update (``optim/optimizer.py``) makes a dozen whole-array passes per
parameter, each writing a fresh temporary. Here each chunk of ``CHUNK`` elements goes
through the same operations, in the same order and the same dtype (so the same bits), with
one reused temporary that stays in the cache::

    m += (1 - beta1) * (g - m)              (torch's lerp towards g)
    v  = beta2 * v + (1 - beta2) * g * g
    p += -step_size * (m / (sqrt(v) / bias_correction2_sqrt + eps))

The chunks of all parameters are shared between :func:`num_threads` threads when there are
at least ``SPLIT_MIN`` elements (below that, waking a thread costs what it saves); a chunk
is large (``CHUNK``, 512 KiB of float32 per array) because smaller ones make many short
NumPy calls that the threads take turns at.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Sequence
from typing import Any

from ._threads import in_threaded_task, num_threads, run_threaded

# Measured on the development machine (2 cores), zoo mlp's 535k parameters: the portable
# update 0.76 ms; chunks of 2**15 0.67 ms on 1 thread but 0.70 on 2 (each thread's many
# small NumPy calls wait for the GIL), of 2**17 0.64 and 0.51 ms.
CHUNK = 1 << 17
SPLIT_MIN = 1 << 19


def fusable(p: Any, g: Any, *buffers: Any) -> bool:
    """Whether :func:`adam_update` can take this parameter: NumPy arrays of one floating
    dtype and shape, the parameter and its buffers C-contiguous and writable."""
    from array_api_compat import is_numpy_array

    arrays = (p, g, *buffers)
    return all(
        is_numpy_array(a) and a.dtype == p.dtype and a.shape == p.shape for a in arrays
    ) and all(a.flags.c_contiguous and a.flags.writeable for a in (p, *buffers))


def adam_update(
    items: Sequence[tuple[Any, Any, Any, Any, float, float]],
    beta1: float,
    beta2: float,
    eps: float,
) -> None:
    """Adam's step for each ``(p, g, m, v, step_size, bias_correction2_sqrt)`` (arrays
    accepted by :func:`fusable`), in place."""
    import numpy as np

    flat = [
        (p.reshape(-1), np.reshape(g, -1), m.reshape(-1), v.reshape(-1), size, bc2)
        for p, g, m, v, size, bc2 in items
    ]
    work = [(i, start) for i, f in enumerate(flat) for start in range(0, f[0].size, CHUNK)]
    total = sum(f[0].size for f in flat)

    def worker(take: Any) -> None:
        temps: dict[Any, Any] = {}
        for i, start in take():
            p, g, m, v, step_size, bc2 = flat[i]
            stop = min(start + CHUNK, p.size)
            t = temps.get(p.dtype)
            if t is None:
                t = temps[p.dtype] = np.empty(CHUNK, dtype=p.dtype)
            t = t[: stop - start]
            P, G, M, V = p[start:stop], g[start:stop], m[start:stop], v[start:stop]
            np.subtract(G, M, out=t)
            t *= 1 - beta1
            M += t
            np.multiply(G, G, out=t)
            t *= 1 - beta2
            V *= beta2
            V += t
            np.sqrt(V, out=t)
            t /= bc2
            t += eps
            np.divide(M, t, out=t)
            t *= -step_size
            P += t

    threads = num_threads()
    if threads <= 1 or total < SPLIT_MIN or in_threaded_task():
        worker(lambda: work)
        return
    taken, lock = itertools.count(), threading.Lock()

    def shared() -> Any:  # each thread takes the next chunk nobody has taken
        while True:
            with lock:
                k = next(taken)
            if k >= len(work):
                return
            yield work[k]

    run_threaded([lambda: worker(shared)] * min(threads, len(work)))
