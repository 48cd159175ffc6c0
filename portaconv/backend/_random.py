"""The random stream behind default parameter initialisation.

Initial values are drawn with NumPy on the host, in float64, then moved to the active
backend: a seed gives the same network on every backend and device.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

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


def uniform(shape: Sequence[int], bound: float, backend: Backend | None = None) -> Any:
    """U(-bound, bound) of ``shape`` on ``backend`` (PyTorch's default layer init uses this)."""
    return to_backend(_rng.uniform(-bound, bound, size=tuple(shape)), backend)
