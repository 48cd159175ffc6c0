"""portaconv: convolutional networks with explicit forward and backward passes, written once
against the Python array API standard so they run on NumPy, CuPy, PyTorch, JAX and
array-api-strict.

The backend is chosen with ``PORTACONV_BACKEND`` (``numpy``, ``cupy``, ``torch``, ``jax``,
``array_api_strict``), ``PORTACONV_DEVICE`` and ``PORTACONV_DTYPE``, or from code with
:func:`set_backend` / :func:`use_backend`.
"""

from .backend import (
    BackendUnavailableError,
    get_backend,
    manual_seed,
    set_backend,
    to_backend,
    to_numpy,
    use_backend,
)

#: The version (pyproject.toml reads it from here; CHANGELOG.md says what each added).
__version__ = "0.2.0"

__all__ = [
    "BackendUnavailableError",
    "__version__",
    "get_backend",
    "manual_seed",
    "set_backend",
    "to_backend",
    "to_numpy",
    "use_backend",
]
