"""The optional packages the interop functions need, imported when a function is called."""

from __future__ import annotations

import importlib
from typing import Any

#: The extra of pyproject.toml that installs each package ("interop" installs them all).
_EXTRA = {
    "torch": "torch",
    "safetensors": "safetensors",
    "onnx": "onnx",
    "onnxruntime": "onnx",
    "ndonnx": "onnx",
    "spox": "onnx",
}


class MissingDependencyError(ImportError):
    """An interop function needs a package that is not installed; the message names the
    extra that installs it."""


def require(module: str, who: str) -> Any:
    """Import ``module`` for the function ``who``, or raise :class:`MissingDependencyError`."""
    package = module.split(".")[0]
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"{who} needs the package {package!r}, which is not installed: "
            f"pip install 'portaconv[{_EXTRA[package]}]' (or 'portaconv[interop]' for every "
            "format)"
        ) from exc
