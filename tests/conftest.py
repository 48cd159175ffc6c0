"""Backend fixtures: every test that takes ``bk`` runs once per backend and dtype.

With ``PORTACONV_BACKEND`` set (as each nox session does) the tests run on that backend
alone, and a backend that cannot start is an error, never a silent skip. Without it they run
on every backend installed here; the GPU ones (cupy, torch on CUDA) skip, saying why, when
no GPU is visible.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

import portaconv
from portaconv.backend import BackendUnavailableError, make_backend

# The backend fixtures hold a fixed choice, so sharing them across examples is safe.
_shared = dict(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
settings.register_profile("ci", max_examples=25, derandomize=True, **_shared)
settings.register_profile("dev", max_examples=100, **_shared)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

_ENV_BACKEND = os.environ.get("PORTACONV_BACKEND", "").strip()
_ENV_DEVICE = os.environ.get("PORTACONV_DEVICE", "").strip() or None

# (id, backend name, device); the GPU ones are skipped with a reason when absent.
_ALL = [
    ("numpy", "numpy", None),
    ("array_api_strict", "array_api_strict", None),
    ("torch", "torch", "cpu"),
    ("jax", "jax", "cpu"),
    ("cupy", "cupy", None),
    ("torch_cuda", "torch", "cuda"),
]


def _selected():
    if _ENV_BACKEND:
        return [
            (
                f"{_ENV_BACKEND}" + (f"-{_ENV_DEVICE}" if _ENV_DEVICE else ""),
                _ENV_BACKEND,
                _ENV_DEVICE,
            )
        ]
    return _ALL


@pytest.fixture(scope="session", params=_selected(), ids=lambda p: p[0])
def backend_choice(request):
    """(name, device) of one backend, checked to be usable."""
    _, name, dev = request.param
    try:
        make_backend(name, dev)
    except BackendUnavailableError as exc:
        if _ENV_BACKEND:
            pytest.exit(f"PORTACONV_BACKEND={_ENV_BACKEND} was asked for but cannot run: {exc}", 3)
        pytest.skip(f"backend {request.param[0]} unavailable here: {exc}")
    return name, dev


@pytest.fixture(params=["float64", "float32"])
def dtype(request):
    return request.param


@pytest.fixture
def bk(backend_choice, dtype):
    """The active backend for one test (restored afterwards)."""
    name, dev = backend_choice
    with portaconv.use_backend(name, dev, dtype) as backend:
        yield backend


@pytest.fixture
def bk64(backend_choice):
    """The backend in float64 only: for finite-difference checks and exact identities."""
    name, dev = backend_choice
    with portaconv.use_backend(name, dev, "float64") as backend:
        yield backend


@pytest.fixture
def rng(request):
    """A NumPy generator seeded by the test's name, so every run draws the same data."""
    import zlib

    import numpy as np

    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))
