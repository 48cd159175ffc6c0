"""The one switch between the reference half and the fast half: :func:`fast_paths`.

``"auto"`` (the default) lets the backend hand an operation to a fast body written for one
library (``portaconv.backend.fast``) where one applies; ``"never"`` runs the portable
reference code alone, on every backend. The environment variable ``PORTACONV_FAST_PATHS``
sets the starting mode; :func:`fast_paths` changes it for a block (like Chainer's
``use_cudnn``). For tests and benchmarks, ``conv=`` names the convolution engine to use
instead of the one the backend would choose (see :data:`CONV_ENGINES`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

MODES = ("auto", "never")

#: The convolution engines ``fast_paths(conv=...)`` can force: ``"reference"`` is the
#: portable im2col and matrix product; the others are fast bodies (``"im2row"``, ``"nchw"``
#: and ``"row_gather"`` on NumPy, ``"strided"`` on PyTorch).
CONV_ENGINES = ("reference", "im2row", "nchw", "row_gather", "strided", "offset_loop")

_mode: str | None = None  # None until first read from the environment
_conv: str | None = None


def _check_mode(mode: object, where: str) -> str:
    if mode not in MODES:
        raise ValueError(f"{where} must be one of {', '.join(MODES)}; got {mode!r}")
    return mode  # type: ignore[return-value]


def fast_paths_mode() -> str:
    """The mode in force: ``"auto"`` or ``"never"``."""
    global _mode
    if _mode is None:
        value = os.environ.get("PORTACONV_FAST_PATHS", "").strip() or "auto"
        _mode = _check_mode(value, "PORTACONV_FAST_PATHS")
    return _mode


def fast_enabled() -> bool:
    """Whether fast bodies may run (mode ``"auto"``)."""
    return fast_paths_mode() == "auto"


def forced_conv_engine() -> str | None:
    """The convolution engine a :func:`fast_paths` block forces, or None."""
    return _conv


@contextlib.contextmanager
def fast_paths(mode: str = "auto", *, conv: str | None = None) -> Iterator[None]:
    """Within the block, run with the fast paths ``"auto"`` or ``"never"``.

    ``conv`` forces one convolution engine (one of :data:`CONV_ENGINES`) for every
    convolution in the block; a layer whose input that engine cannot take raises
    ValueError. ``"reference"`` is allowed with either mode; the others need ``"auto"``.
    """
    global _mode, _conv
    _check_mode(mode, "fast_paths: mode")
    if conv is not None and conv not in CONV_ENGINES:
        raise ValueError(f"fast_paths: conv must be one of {', '.join(CONV_ENGINES)}; got {conv!r}")
    if mode == "never" and conv not in (None, "reference"):
        raise ValueError(f"fast_paths: conv={conv!r} is a fast engine, but mode is 'never'")
    before = fast_paths_mode(), _conv
    _mode, _conv = mode, conv
    try:
        yield
    finally:
        _mode, _conv = before
