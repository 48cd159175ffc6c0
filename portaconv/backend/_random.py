"""The random stream behind default parameter initialisation.

Initial values are drawn with NumPy on the host, in float64, then moved to the active
backend: a seed gives the same network on every backend and device.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from array_api_compat import array_namespace, device

from ._config import Backend
from ._ops import to_backend

_rng = np.random.default_rng()


def manual_seed(seed: int) -> None:
    """Seed the stream used by default initialisers (like ``torch.manual_seed``)."""
    global _rng
    _rng = np.random.default_rng(seed)


def host_rng() -> np.random.Generator:
    """The NumPy generator default initialisers draw from."""
    return _rng


def get_rng_state() -> dict[str, Any]:
    """The host generator's state (a JSON-able dict), to store in a checkpoint."""
    return _rng.bit_generator.state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore a state from :func:`get_rng_state`: the next draws repeat exactly."""
    global _rng
    generator = np.random.default_rng()
    generator.bit_generator.state = state
    _rng = generator


def uniform(shape: Sequence[int], bound: float, backend: Backend | None = None) -> Any:
    """U(-bound, bound) of ``shape`` on ``backend`` (PyTorch's default layer init uses this)."""
    return to_backend(_rng.uniform(-bound, bound, size=tuple(shape)), backend)


def bernoulli_mask(shape: Sequence[int], keep_prob: float, like: Any) -> Any:
    """A keep-mask of ``shape``: 1 with probability ``keep_prob``, else 0 (Dropout's draw).

    Drawn on the host from :func:`host_rng` as ``random(shape) < keep_prob`` (so
    ``keep_prob=1`` keeps everything and ``keep_prob=0`` nothing), then moved to the
    namespace and device of ``like`` and cast to its dtype: a seed gives the same mask on
    every backend and device.
    """
    keep = _rng.random(size=tuple(shape)) < keep_prob
    xp = array_namespace(like)
    return xp.astype(xp.asarray(keep, device=device(like)), like.dtype)
