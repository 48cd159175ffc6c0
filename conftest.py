"""pytest's settings for the whole checkout; the tests' fixtures are in tests/conftest.py.

``pytest --doctest-modules portaconv`` (nox's ``tests-numpy`` and ``docs`` sessions) imports
every module of the package to run its docstring examples (``>>>``). A module whose examples
need an optional package that is not installed here is left out of that collection, so the
run says what it could check instead of failing on an import; CI installs them all.
"""

from __future__ import annotations

import importlib.util

#: Modules (globs relative to this directory) whose docstring examples need optional packages.
NEEDS_OPTIONAL = {
    "portaconv/interop*": ("torch", "onnx", "onnxruntime", "safetensors"),
}


def _missing(package: str) -> bool:
    return importlib.util.find_spec(package) is None


collect_ignore_glob = [
    glob for glob, packages in NEEDS_OPTIONAL.items() if any(map(_missing, packages))
]
