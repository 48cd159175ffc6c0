"""Strict JSON for every file a run writes: no bare ``NaN`` or ``Infinity``.

``json.dumps`` writes ``NaN``, which is not JSON (RFC 8259) and which ``jq``, browsers and
most other parsers refuse. A run's files hold ``null`` instead: a non-finite number is a
value that does not exist (a loss of a run that diverged, a speed measured over no time).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import numpy as np


def finite_or_none(value: Any) -> Any:
    """``value`` with every non-finite float (NaN, ±inf) replaced by None, NumPy scalars
    turned into Python ones, tuples into lists; nested dicts and lists are copied."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite_or_none(v) for v in value]
    return value


def dumps(value: Any, indent: int | None = None) -> str:
    """Strict JSON text of ``value`` (see :func:`finite_or_none`)."""
    return json.dumps(finite_or_none(value), indent=indent, allow_nan=False)
