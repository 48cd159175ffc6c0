"""Backend selection (environment, set_backend, use_backend), where parameters are created,
conversions, seeding and default init bounds, and the portable erf."""

from __future__ import annotations

import importlib.util
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch  # a test dependency

import portaconv
import portaconv.backend._config as _config
import portaconv.backend._random as _random
from portaconv import layers as L
from portaconv.backend import (
    BACKENDS,
    DTYPES,
    BackendUnavailableError,
    get_backend,
    make_backend,
    set_backend,
    to_backend,
    to_numpy,
    use_backend,
)
from portaconv.backend._special import erf_portable

from .helpers import assert_on_backend, on, rounded
from .layer_specs import WITH_INIT_FNS, WITH_PARAMS

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def fresh_config(monkeypatch):
    """No backend chosen yet and no PORTACONV_* variables; both restored afterwards."""
    for var in ("PORTACONV_BACKEND", "PORTACONV_DEVICE", "PORTACONV_DTYPE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(_config, "_active", None)
    return monkeypatch


@pytest.fixture
def keep_active():
    """Restore whatever backend was active before the test (set_backend changes it)."""
    previous = _config._active
    yield
    _config._active = previous


def _valid_names_pattern() -> str:
    return r"valid names are " + r", ".join(BACKENDS)


# ----------------------------------------------------------------- choosing a backend


@pytest.mark.parametrize("name", ["nonsense", "NumPy", "mxnet", ""])
def test_set_backend_unknown_name_lists_valid_names(keep_active, name):
    before = get_backend()
    with pytest.raises(
        ValueError, match=rf"unknown portaconv backend {name!r}; " + _valid_names_pattern()
    ):
        set_backend(name)
    assert get_backend() is before, "a failed set_backend must leave the choice alone"


def test_environment_unknown_name_lists_valid_names(fresh_config):
    fresh_config.setenv("PORTACONV_BACKEND", "tensorflow")
    with pytest.raises(
        ValueError,
        match=r"unknown portaconv backend 'tensorflow'; "
        + _valid_names_pattern()
        + r".*PORTACONV_BACKEND",
    ):
        get_backend()
    assert _config._active is None


def test_environment_unknown_dtype(fresh_config):
    fresh_config.setenv("PORTACONV_DTYPE", "float16")
    with pytest.raises(
        ValueError,
        match=r"unknown portaconv dtype 'float16'; valid dtypes are "
        r"float32, float64",
    ):
        get_backend()


def test_environment_bad_device_for_numpy(fresh_config):
    fresh_config.setenv("PORTACONV_BACKEND", "numpy")
    fresh_config.setenv("PORTACONV_DEVICE", "cuda")
    with pytest.raises(ValueError, match=r"numpy backend runs on 'cpu' only, got device 'cuda'"):
        get_backend()


def test_environment_is_read_once(fresh_config):
    fresh_config.setenv("PORTACONV_BACKEND", " array_api_strict ")
    fresh_config.setenv("PORTACONV_DTYPE", "float64")
    chosen = get_backend()  # array-api-strict is a test dependency
    assert (chosen.name, chosen.dtype_name) == ("array_api_strict", "float64")
    fresh_config.setenv("PORTACONV_BACKEND", "numpy")
    assert get_backend() is chosen


def test_environment_defaults(fresh_config):
    fresh_config.setenv("PORTACONV_BACKEND", "")
    chosen = get_backend()
    assert (chosen.name, chosen.dtype_name, chosen.device) == ("numpy", "float32", "cpu")


@pytest.mark.parametrize("dtype", ["float16", "int32", "double", "f8"])
def test_unknown_dtype(keep_active, dtype):
    before = get_backend()
    with pytest.raises(
        ValueError,
        match=rf"unknown portaconv dtype {dtype!r}; valid dtypes are " + ", ".join(DTYPES),
    ):
        set_backend("numpy", dtype=dtype)
    with pytest.raises(ValueError, match=rf"unknown portaconv dtype {dtype!r}"):
        set_backend(dtype=dtype)
    assert get_backend() is before


def test_use_backend_restores_previous_even_when_block_raises(backend_choice):
    name, dev = backend_choice
    with use_backend("numpy", None, "float32") as outer:
        with pytest.raises(RuntimeError, match="boom"):
            with use_backend(name, dev, "float64") as inner:
                assert get_backend() is inner
                assert (inner.name, inner.dtype_name) == (name, "float64")
                raise RuntimeError("boom")
        assert get_backend() is outer
        with pytest.raises(ValueError, match="unknown portaconv backend"):
            with use_backend("nonsense"):
                pass  # pragma: no cover
        assert get_backend() is outer


def test_use_backend_restores_an_unset_choice(fresh_config):
    with use_backend("numpy", None, "float64"):
        assert _config._active is not None
    assert _config._active is None, "the environment must be read again after the block"


def test_nested_use_backend(backend_choice):
    name, dev = backend_choice
    with use_backend(name, dev, "float32") as a:
        with use_backend(dtype="float64") as b:
            with use_backend("numpy") as c:
                assert (c.name, c.dtype_name) == ("numpy", "float64")
            assert get_backend() is b
        assert get_backend() is a


def test_set_backend_dtype_keeps_library_and_device(keep_active, backend_choice):
    name, dev = backend_choice
    first = set_backend(name, dev, "float32")
    second = set_backend(dtype="float64")
    assert (second.name, second.device, second.dtype_name) == (name, first.device, "float64")
    assert second.xp is first.xp and second.dtype == first.xp.float64
    third = set_backend(name)  # a name alone keeps the dtype
    assert third.dtype_name == "float64"


def test_import_does_not_import_optional_libraries():
    env = {k: v for k, v in os.environ.items() if not k.startswith("PORTACONV_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    code = (
        "import portaconv, portaconv.layers, sys; "
        "bad = [m for m in ('torch', 'cupy') if m in sys.modules]; "
        "assert not bad, bad"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    # choosing an unavailable backend in the environment is an error when it is used, not
    # at import time
    env["PORTACONV_BACKEND"] = "no_such_backend"
    result = subprocess.run(
        [sys.executable, "-c", "import portaconv, portaconv.layers"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr


# The tests of what is missing here are defined where it is missing (CuPy, a GPU for torch),
# and JAX's where JAX is installed (not in tests-oldest), so that no skip stands for a pass.
CUPY_INSTALLED = importlib.util.find_spec("cupy") is not None
JAX_INSTALLED = importlib.util.find_spec("jax") is not None


if not CUPY_INSTALLED:

    def test_cupy_missing_names_the_extra(keep_active):
        before = get_backend()
        missing = r"'cupy'.*not installed.*portaconv\[cupy\]"
        with pytest.raises(BackendUnavailableError, match=missing):
            set_backend("cupy")
        with pytest.raises(BackendUnavailableError, match=r"portaconv\[cupy\]"):
            make_backend("cupy", 0, "float64")
        assert get_backend() is before


@pytest.mark.parametrize(
    "name, module, extra",
    [
        ("torch", "torch", "portaconv[torch]"),
        ("array_api_strict", "array_api_strict", "portaconv[strict]"),
        ("jax", "jax", "portaconv[jax]"),
    ],
)
def test_missing_library_names_the_extra(monkeypatch, name, module, extra):
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` fail
    with pytest.raises(
        BackendUnavailableError, match=rf"{name!r} needs the package {module!r}.*{re.escape(extra)}"
    ):
        make_backend(name)


if not torch.cuda.is_available():  # with a GPU: the next test

    def test_torch_cuda_without_gpu_is_unavailable(keep_active):
        with pytest.raises(BackendUnavailableError, match=r"CUDA"):
            set_backend("torch", "cuda")
        with pytest.raises(BackendUnavailableError, match=r"CUDA"):
            make_backend("torch", "cuda:0", "float64")


def test_torch_cuda_without_index_names_the_device_tensors_land_on(monkeypatch):
    """``"cuda"`` resolves to the current CUDA device, ``cuda:<index>``, the device a tensor
    made on "cuda" reports (torch.device("cuda") != torch.device("cuda:0")), so arrays made
    on the backend's device compare equal to it. Without a GPU, torch's CUDA queries are
    stood in for: two devices, the second current."""
    if not torch.cuda.is_available():
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
        monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
        assert make_backend("torch", "cuda").device == torch.device("cuda", 1)
        assert make_backend("torch", "cuda:0").device == torch.device("cuda", 0)
        return
    backend = make_backend("torch", "cuda")
    assert backend.device == torch.zeros(1, device="cuda").device
    assert backend.device.index == torch.cuda.current_device()


if JAX_INSTALLED:

    def test_jax_devices(keep_active):
        """jax: 'cpu', 'cpu:0' and None name JAX's CPU device here; a platform JAX lacks is
        unavailable (saying which), a device index past the last one or a malformed name is a
        ValueError. Choosing jax switches on 64-bit types, so float64 stays float64."""
        import jax
        cpu = jax.devices("cpu")[0]
        assert make_backend("jax", "cpu").device == cpu == make_backend("jax", "cpu:0").device
        assert make_backend("jax", cpu).device == cpu
        backend = make_backend("jax", None, "float64")
        assert jax.config.jax_enable_x64
        x = to_backend(np.arange(3.0), backend)
        assert x.dtype == backend.xp.float64 and x.device == backend.device
        if not any(d.platform == "gpu" for d in jax.devices()):
            with pytest.raises(BackendUnavailableError, match=r"jax.*'gpu:1'.*no 'gpu' device"):
                make_backend("jax", "gpu:1")
        with pytest.raises(ValueError, match=r"jax device 'cpu:7' does not exist"):
            make_backend("jax", "cpu:7")
        with pytest.raises(ValueError, match=r"jax device 'cpu:x' is not"):
            make_backend("jax", "cpu:x")


# ----------------------------------------------------------- where parameters are made

# Once per layer class with parameters, on its reference row of tests/layer_specs.py.


@pytest.mark.parametrize("spec", WITH_PARAMS, ids=lambda s: s.name)
def test_parameters_live_on_the_active_backend(bk, spec):
    layer = spec.make()
    for p in layer.param_names:
        assert_on_backend(getattr(layer, p), bk, p)
        assert_on_backend(getattr(layer, "dLd" + p), bk, "dLd" + p)
    layer.zero_grad()
    for p, grad in layer.gradients().items():
        assert_on_backend(grad, bk, "dLd" + p)


@pytest.mark.parametrize("spec", WITH_INIT_FNS, ids=lambda s: s.name)
def test_numpy_init_is_converted(bk, rng, spec):
    """NumPy init arrays move to the backend; a floating one keeps its precision (the dtype
    rule), whatever the backend's default."""
    W = rng.standard_normal(spec.params["W"])  # NumPy float64, whatever the backend
    b = rng.standard_normal(spec.params["b"]).astype(np.float32)
    layer = spec.make(weight_init_fn=lambda *s: W, bias_init_fn=lambda *s: b)
    assert_on_backend(layer.W, bk, "W", dtype="float64")
    assert_on_backend(layer.b, bk, "b", dtype="float32")
    np.testing.assert_array_equal(to_numpy(layer.W), W)
    np.testing.assert_array_equal(to_numpy(layer.b), b)
    # the parameter is the layer's own: changing the init fn's array afterwards changes nothing
    original = W.copy()
    W += 1.0
    np.testing.assert_array_equal(to_numpy(layer.W), original)


def test_init_from_another_backend_is_converted(bk):
    other = make_backend("numpy" if bk.name != "numpy" else "array_api_strict", None, "float64")
    W = to_backend(np.ones((3, 2, 3, 3)), other)
    layer = L.Conv2d(2, 3, 3, weight_init_fn=lambda *s: W)
    assert_on_backend(layer.W, bk, "W", dtype="float64")


@pytest.mark.parametrize("spec", WITH_INIT_FNS, ids=lambda s: s.name)
def test_init_fns_called_once_with_the_parameter_shape(bk, spec):
    calls = []

    def weight_init_fn(*shape):
        calls.append(("W", shape))
        return np.zeros(shape)

    def bias_init_fn(*shape):
        calls.append(("b", shape))
        return np.zeros(shape)

    layer = spec.make(weight_init_fn=weight_init_fn, bias_init_fn=bias_init_fn)
    assert sorted(calls) == [("W", spec.params["W"]), ("b", spec.params["b"])]
    layer.forward(on(bk, np.ones(spec.in_shape)))
    assert len(calls) == 2, "forward must not call the init functions again"


# ------------------------------------------------------------------------- conversion


def test_to_backend_to_numpy_round_trip(bk, rng):
    x = rng.standard_normal((2, 3, 4))
    y = to_backend(x, bk)
    assert_on_backend(y, bk, "to_backend")
    back = to_numpy(y)
    assert isinstance(back, np.ndarray)
    assert back.dtype == np.dtype(bk.dtype_name)
    np.testing.assert_array_equal(back, x.astype(bk.dtype_name))
    assert_on_backend(to_backend(y, bk), bk, "to_backend of an array already in place")
    np.testing.assert_array_equal(to_numpy(to_backend(x.tolist(), bk)), back)


@pytest.mark.parametrize("source", ["numpy", "torch", "array_api_strict"])
def test_to_backend_from_another_library(bk, rng, source):
    src = make_backend(source, None, "float64")  # test dependencies, all of them
    x = rng.standard_normal((3, 2))
    y = to_backend(to_backend(x, src), bk)
    assert_on_backend(y, bk, f"from {source}")
    np.testing.assert_array_equal(to_numpy(y).astype(np.float64), rounded(x, bk.dtype_name))


# ------------------------------------------------------------- seeding and init bounds


@pytest.fixture
def keep_rng(monkeypatch):
    """manual_seed replaces the module's generators; put the originals back afterwards."""
    monkeypatch.setattr(_random, "_streams", _random._streams)


@pytest.mark.parametrize("spec", WITH_INIT_FNS, ids=lambda s: s.name)
def test_manual_seed_reproduces_default_init(bk, keep_rng, spec):
    portaconv.manual_seed(1234)
    first = {k: to_numpy(v).copy() for k, v in spec.make().parameters().items()}
    portaconv.manual_seed(1234)
    again = {k: to_numpy(v) for k, v in spec.make().parameters().items()}
    portaconv.manual_seed(4321)
    other = {k: to_numpy(v) for k, v in spec.make().parameters().items()}
    for k in first:
        np.testing.assert_array_equal(first[k], again[k], err_msg=k)
        assert not np.array_equal(first[k], other[k]), f"{k}: another seed gave the same values"


def test_manual_seed_gives_the_same_network_on_every_backend(keep_rng, backend_choice):
    name, dev = backend_choice
    with use_backend("numpy", None, "float64"):
        portaconv.manual_seed(7)
        reference = to_numpy(L.Conv2d(3, 4, 3).W)
    with use_backend(name, dev, "float64"):
        portaconv.manual_seed(7)
        np.testing.assert_array_equal(to_numpy(L.Conv2d(3, 4, 3).W), reference)


@pytest.mark.parametrize("spec", WITH_INIT_FNS, ids=lambda s: s.name)
def test_default_init_bounds_match_pytorch(bk64, keep_rng, spec):
    """PyTorch's default: W and b uniform in (-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in the
    product of W's axes after the first (in_channels * kernel, in_features)."""
    fan_in = math.prod(spec.params["W"][1:])
    bound = 1.0 / math.sqrt(fan_in)
    portaconv.manual_seed(0)
    weights = []
    while sum(W.size for W in weights) < 256:  # enough draws to see the interval filled
        layer = spec.make()
        for p in ("W", "b"):
            values = to_numpy(getattr(layer, p))
            assert np.all(np.abs(values) <= bound), f"{p} exceeds 1/sqrt({fan_in})"
        weights.append(to_numpy(layer.W).ravel())
    W = np.concatenate(weights)
    # and it fills the interval: a too-narrow (or all-zero) init would fail here
    assert W.max() > 0.5 * bound and W.min() < -0.5 * bound
    assert abs(W.mean()) < 0.25 * bound


# ---------------------------------------------------------------------- portable erf

ERF_POINTS = np.concatenate(
    [
        np.linspace(-30.0, 30.0, 12001),
        [
            0.0,
            -0.0,
            0.5,
            -0.5,
            1.0,
            -1.0,
            7.9,
            -7.9,
            8.1,
            -8.1,
            8.0,
            -8.0,
            np.nextafter(1.0, 0.0),
            np.nextafter(8.0, 0.0),
            1e-300,
            -1e-300,
            5e-324,
            1e-8,
            -1e-8,
            26.0,
            -26.0,
        ],
    ]
)


@pytest.mark.parametrize("name", ["numpy", "array_api_strict", "torch"])
def test_erf_portable_matches_math_erf(name):
    backend = make_backend(name, None, "float64")  # test dependencies, all of them
    got = to_numpy(erf_portable(to_backend(ERF_POINTS, backend)))
    expected = np.array([math.erf(x) for x in ERF_POINTS])
    error = np.abs(got - expected)
    ok = (error <= 1e-14 * np.abs(expected)) | (error < 1e-16)
    worst = np.argmax(np.where(ok, 0.0, error))
    assert ok.all(), f"erf({ERF_POINTS[worst]!r}) = {got[worst]!r}, math.erf: {expected[worst]!r}"
    assert got[ERF_POINTS == 0.0].tolist() == [0.0] * int(np.sum(ERF_POINTS == 0.0))
    np.testing.assert_array_equal(np.abs(got[np.abs(ERF_POINTS) >= 6.0]), 1.0)


def test_erf_portable_keeps_float32(bk):
    x = to_backend(np.linspace(-10.0, 10.0, 201), bk)
    y = erf_portable(x)
    assert_on_backend(y, bk, "erf_portable")
    expected = np.array([math.erf(v) for v in to_numpy(x).astype(np.float64)])
    np.testing.assert_allclose(
        to_numpy(y).astype(np.float64),
        expected,
        rtol=0,
        atol=1e-15 if bk.dtype_name == "float64" else 1e-6,
    )
