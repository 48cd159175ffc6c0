"""NumPy fast path of Adam's update: every parameter in one pass over cache-sized chunks.

The portable update (``optim/optimizer.py``) makes a dozen whole-array passes per
parameter, each writing a fresh temporary. Here each chunk of ``CHUNK`` elements goes
through the same operations, in the same order and the same dtype (so the same bits), with
one reused temporary that stays in the cache::

    m += (1 - beta1) * (g - m)              (torch's lerp towards g)
    v  = beta2 * v + (1 - beta2) * g * g
    p += -step_size * (m / (sqrt(v) / bias_correction2_sqrt + eps))

The pass runs on the calling thread. Sharing the chunks between portaconv's threads does
not make it faster: the update is bound by memory, and each thread's many short NumPy calls
take turns at the GIL.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from array_api_compat import is_numpy_array

# 512 KiB of float32 per array: the temporaries stay in the cache, the calls are few.
CHUNK = 1 << 17


def fusable(p: Any, g: Any, *buffers: Any) -> bool:
    """Whether :func:`adam_update` can take this parameter: NumPy arrays of one floating
    dtype and shape, the parameter and its buffers C-contiguous and writable."""
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
    temps: dict[Any, Any] = {}
    for p, g, m, v, step_size, bc2 in flat:
        for start in range(0, p.size, CHUNK):
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
