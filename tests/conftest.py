"""Backend fixtures: every test that takes ``bk`` runs once per backend and dtype.

With ``PORTACONV_BACKEND`` set (as each nox session does) the tests run on that backend
alone, and a backend that cannot start is an error, never a silent skip. Without it they run
on every backend installed here; the GPU ones (cupy, torch on CUDA) skip, saying why, when
no GPU is visible.

Tests that do the same whatever ``PORTACONV_BACKEND`` says are marked
``backend_independent`` at collection (see :func:`pytest_collection_modifyitems`): the NumPy
sessions run them, the other CPU sessions deselect them (``-m "not backend_independent"``)
instead of running them again.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

import portaconv
from portaconv.backend import COMPILING_BACKENDS, BackendUnavailableError, make_backend

from .layer_specs import REFERENCE

#: Each layer class's reference row of the table (its first).
_REFERENCE_IDS = frozenset(spec.id for spec in REFERENCE)

# The backend fixtures hold a fixed choice, so sharing them across examples is safe.
_shared = dict(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
settings.register_profile("ci", max_examples=25, derandomize=True, **_shared)
settings.register_profile("dev", max_examples=100, **_shared)
# JAX compiles every operation anew for each shape it meets, so each example of a geometry
# sweep costs it a compilation of the whole layer: it draws fewer. The sweeps' code is the
# reference half, which the other backends run with the full count of examples.
settings.register_profile("ci-jax", max_examples=6, derandomize=True, **_shared)
settings.load_profile(
    os.environ.get("HYPOTHESIS_PROFILE")
    or ("ci-jax" if os.environ.get("PORTACONV_BACKEND", "").strip() == "jax" else "ci")
)

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


# ------------------------------------------------------------- what depends on the backend

#: Tests that take none of the backend fixtures yet run on the backend PORTACONV_BACKEND
#: selects (by ``portaconv.get_backend()`` or in a subprocess that inherits the variable), and
#: check something there that no fixture-driven test does; each names the backends on which
#: it would only repeat what another run checks (the NumPy session, or the test named).
ON_THE_SESSIONS_BACKEND: dict[str, frozenset[str]] = {
    # --compile trains compiled steps on torch and JAX and is refused elsewhere; not again on
    # JAX, where test_compiled_step.py compiles the steps (the CLI's --compile is the same
    # code as on torch, a compilation of every operation again on JAX)
    "test_cli.py::test_compile_trains_where_the_backend_compiles": frozenset({"jax"}),
    # zero-size arrays from the initialisers, on the default backend
    "test_optim.py::test_aliases_and_zero_size": frozenset(),
    # mpiexec jobs on the session's backend; the JAX session runs them on NumPy
    # (test_distributed.JOB_BACKEND: each JAX rank would compile every operation anew)
    "test_distributed.py::test_two_ranks_follow_one_process": frozenset({"jax"}),
    "test_distributed.py::test_batch_norm_network": frozenset({"jax"}),
}

#: The fixtures through which a test receives the session's backend.
BACKEND_FIXTURES = frozenset({"bk", "bk64", "backend_choice"})


def _compiles(name, device, dtype, **_):
    # compile=True runs on torch and JAX (portaconv.backend.COMPILING_BACKENDS); one dtype
    # is enough to compare a compiled run with the eager one, and each compiles anew
    return name in COMPILING_BACKENDS and dtype == "float32"


def _has_native_bodies(name, device, dtype, **_):
    # the backends with a fast half (portaconv.backend.fast): NumPy and torch; elsewhere
    # fast_paths("never") runs the same reference code as "auto"
    return name in ("numpy", "torch")


def _reads_wait_for_a_device(name, device, dtype, **_):
    # the read guards of test_device_step are for torch and JAX; NumPy and array-api-strict
    # arrays live in host memory, where reading one waits for nothing
    return name in ("torch", "jax")


def _torch_on_the_cpu(name, device, dtype, **_):
    # benchmarks/engines.py --count-ops counts the aten operations of the torch backend on
    # the CPU
    return name == "torch" and device in (None, "cpu")


def _has_strides(name, device, dtype, **_):
    # a strided view of a JAX array is a new contiguous array (JAX arrays have no strides):
    # there the test would repeat test_forward_backward_match_torch exactly
    return name != "jax"


def _chunks_where_engines_chunk(name, device, dtype, per_chunk=None, keep=True, **_):
    # the chunk budget and the kept matrices are the fast engines' (NumPy's, torch's); on
    # the other backends the reference engine runs the same code for every budget, so one
    # budget is enough there, and none on JAX, where the table's convolution rows are that
    # same code (each further shape a compilation)
    if name == "jax":
        return False
    return name in ("numpy", "torch") or (per_chunk is None and keep)


def _float64_runs_on_numpy(name, device, dtype, **_):
    # the training stack end to end (the CLI, Trainer, resume): its own code is the same in
    # either dtype, whose effect is the layers' (the conformance table checks both dtypes on
    # every backend); so float64 on NumPy, float32 on the other backends
    return name == "numpy" or dtype != "float64"


def _compiles_each_shape_once(name, device, dtype):
    # JAX compiles every operation anew for each shape it meets: a hypothesis sweep over
    # geometries costs it a minute per test, where the layer table's rows cover these
    # layers on JAX (its immutable arrays, its bodies) in a few shapes
    return name != "jax"


def _every_row_where_geometry_picks_the_engine(name, device, dtype, row=None, **_):
    # a check of a class's own code (the output shape a gradient is compared with, the dtype
    # promotion) that runs on every row where the row's geometry chooses among engines (the
    # fast halves of NumPy and torch) and on each class's reference row elsewhere, where
    # every row runs the same reference code; the shapes themselves are Python integers,
    # the same on every backend
    return name in ("numpy", "torch") or row is None or row.id in _REFERENCE_IDS


def _float32_on_jax(name, device, dtype, **_):
    # JAX compiles every operation anew for each shape and dtype: there the conformance
    # table runs in float32 on every row (the other backends run every row in both dtypes,
    # with the same reference code); float64 on JAX against torch is test_handout.py's
    # mixed-dtype check (a float64 computation on each class's reference row, to float64's
    # tolerance), and the finite differences of the reference rows
    return name != "jax" or dtype == "float32"


def _reference_rows_on_jax(name, device, dtype, row=None, **_):
    # finite differences check a layer's backward against its own forward, on the reference
    # half: on JAX each class's reference row (every row is compared with torch autograd in
    # test_forward_backward_match_torch there, and with finite differences on the others)
    return name != "jax" or row is None or row.id in _REFERENCE_IDS


def _not_on_jax(name, device, dtype, **_):
    # what JAX would compile anew to check again code that runs the same on every backend;
    # each entry below says what covers it on JAX
    return name != "jax"


def _geometry_rows_not_on_jax(name, device, dtype, row=None, **_):
    # on JAX: the same Python checks of the gradient's shape, type and library as on every
    # other backend (``Layer._gradient_arg``), each a compilation of the row's forward there;
    # test_backward_rejects_gradient_of_another_dtype still meets them on JAX, once a class
    return name != "jax" and _every_row_where_geometry_picks_the_engine(name, device, dtype, row)


def _one_pair_on_jax(name, device, dtype, layer_dtype=None, **_):
    return name != "jax" or layer_dtype == "float32"


def _float64_on_numpy_not_on_jax(name, device, dtype, **_):
    return name != "jax" and _float64_runs_on_numpy(name, device, dtype)


#: Files whose ``bk`` tests run in float32 only on JAX, which compiles every operation anew
#: for each dtype: their code (models, the training stack, batch norm, the fast paths'
#: plan) is dtype-generic and runs in both dtypes on the other backends; float64 on JAX is
#: checked by the layer table's reference rows, the float64 tests (``bk64``) and the
#: dtype-pair tests of test_errors.py and test_handout.py.
FLOAT32_ON_JAX = frozenset({
    "test_layers.py", "test_models.py", "test_training.py", "test_training_step.py",
    "test_norm_dropout.py", "test_normpool.py", "test_fastpaths.py", "test_device_step.py",
    "test_conv_options.py", "test_native.py", "test_optim.py", "test_compiled_step.py",
    "test_residual.py", "test_predict.py",
})  # fmt: skip


#: Tests that take a backend fixture but check what only some backends (or one dtype) have:
#: on the others they are deselected at collection, so that no skip stands for a pass.
ONLY_WHERE: dict[str, Callable[[str, Any, str | None], bool]] = {
    "test_compiled_step.py::test_compiled_steps_give_the_eager_steps_results_in_one_graph":
        _compiles,
    "test_compiled_step.py::test_a_resumed_compiled_run_gives_the_uninterrupted_weights":
        _compiles,
    "test_native.py::test_portable_bodies_match_torch": _has_native_bodies,
    "test_native.py::test_portable_conv_and_pool_any_geometry_match_torch": _has_native_bodies,
    "test_native.py::test_portable_maxpool_ties_and_nan_match_torch": _has_native_bodies,
    "test_native.py::test_native_paths_switch_chooses_the_engine": _has_native_bodies,
    "test_native.py::test_lenet_step_dispatches_at_most_twice_plain_pytorch": _torch_on_the_cpu,
    "test_device_step.py::test_a_training_step_reads_nothing_from_the_device":
        _reads_wait_for_a_device,
    "test_device_step.py::test_the_read_guards_catch_a_read": _reads_wait_for_a_device,
    "test_layers.py::test_non_contiguous_input": _has_strides,
    "test_normpool.py::test_padded_pools_any_geometry_match_torch": _compiles_each_shape_once,
    "test_normpool.py::test_adaptive_avg_pool_any_size_matches_torch": _compiles_each_shape_once,
    "test_training.py::test_resume_gives_exactly_the_uninterrupted_weights":
        _float64_runs_on_numpy,
    "test_errors.py::test_backward_rejects_gradient": _geometry_rows_not_on_jax,
    # on JAX: one direction of the dtype pair (the comparison is the class's, in Python)
    "test_errors.py::test_backward_rejects_gradient_of_another_dtype": _one_pair_on_jax,
    # on JAX: a few steps lower the loss in test_device_step.py (float32, every optimizer)
    "test_models.py::test_cnn_trains_down": _not_on_jax,
    "test_handout.py::test_mixed_dtypes_promote": _every_row_where_geometry_picks_the_engine,
    "test_layers.py::test_forward_backward_match_torch": _float32_on_jax,
    "test_layers.py::test_finite_differences": _reference_rows_on_jax,
    # on JAX: the conformance table's float64 reference rows are the positive control (the
    # same input shape and dtype)
    "test_errors.py::test_valid_input_is_accepted": _not_on_jax,
    "test_fastpaths.py::test_conv_matches_torch_whole_batch_and_in_chunks":
        _chunks_where_engines_chunk,
    # on JAX: test_training.py's divergence tests (the Trainer stops and keeps the last
    # finite checkpoint); the CLI's message and status 3 on the other backends
    "test_cli.py::test_a_diverging_run_stops_with_status_3": _float64_on_numpy_not_on_jax,
    # on JAX: the IDX reader is NumPy code (test_data.py), the CLI trains on JAX in
    # test_cli_train_evaluate_resume_end_to_end; a synthetic problem solved: every parameter
    # changes and the loss falls on JAX in test_device_step.py; patience and folds count
    # epochs and samples the same on every backend
    **{f"test_training.py::{name}": _float64_on_numpy_not_on_jax for name in (
        # on JAX: the Trainer trains, checkpoints and resumes exactly in
        # test_resume_gives_exactly_the_uninterrupted_weights; the CLI's files and messages
        # are the same code on every backend
        "test_cli_train_evaluate_resume_end_to_end",
        "test_cli_trains_from_idx_files_in_data_dir",
        "test_training_solves_a_synthetic_problem",
        "test_patience_stops_after_that_many_epochs_without_progress",
        "test_cli_cross_validation_tests_every_sample_once",
    )},
    "test_residual.py::test_residual_network_on_the_reference_half_matches_torch":
        _has_native_bodies,
    "test_residual.py::test_compiled_steps_give_the_eager_steps_results": _compiles,
    # on JAX: the NHWC wrappers are array-API calls around portaconv's layers, which the
    # conformance table checks on JAX; this one network would compile each operation anew
    "test_compat_cs189.py::test_network_step_on_the_backend": _not_on_jax,
    "test_residual.py::test_a_resumed_run_gives_the_uninterrupted_weights":
        _float64_runs_on_numpy,
}  # fmt: skip


def _name(item: pytest.Item) -> str:
    return f"{item.path.name}::{getattr(item, 'originalname', item.name)}"


def _backend_of(item: pytest.Item) -> tuple[str, Any, str | None]:
    """(backend, device, dtype) of a test that takes a backend fixture; dtype None where the
    test chooses its own (``backend_choice`` alone)."""
    params = item.callspec.params
    _, name, device = params["backend_choice"]
    fixtures = set(item.fixturenames)
    dtype = params.get("dtype") if "bk" in fixtures else "float64" if "bk64" in fixtures else None
    return name, device, dtype


def applies_here(item: pytest.Item) -> bool:
    """False for a test of :data:`ONLY_WHERE` on a backend or dtype it does not apply to,
    and for the float64 half of the ``bk`` tests of :data:`FLOAT32_ON_JAX` on JAX."""
    params = getattr(getattr(item, "callspec", None), "params", {})
    if "backend_choice" not in params:
        return True
    name, device, dtype = _backend_of(item)
    applies = ONLY_WHERE.get(_name(item))
    if applies is None:
        float64_on_jax = name == "jax" and dtype == "float64" and "bk" in item.fixturenames
        return not (float64_on_jax and item.path.name in FLOAT32_ON_JAX)
    extra = {k: params[k] for k in ("per_chunk", "keep", "layer_dtype") if k in params}
    row = params.get("case", params.get("spec"))
    if row is not None and hasattr(row, "in_shape"):  # a row of the layer table
        extra["row"] = row
    return applies(name, device, dtype, **extra)


def depends_on_backend(item: pytest.Item) -> bool:
    """Whether ``item`` checks something on the session's backend: it takes a backend
    fixture, or it is listed in :data:`ON_THE_SESSIONS_BACKEND` (and does not fall back to
    NumPy on this one). Everything else (the CLI's messages and files, data files, the
    checkpoint format, MPI orchestration on NumPy, NumPy's own fast paths, the error checks
    between two named libraries or devices, ...) picks its libraries itself or needs none."""
    if BACKEND_FIXTURES & set(getattr(item, "fixturenames", ())):
        return True
    on_numpy_all_the_same = ON_THE_SESSIONS_BACKEND.get(_name(item))
    if on_numpy_all_the_same is None:
        return False
    return _ENV_BACKEND not in on_numpy_all_the_same


@pytest.hookimpl(tryfirst=True)  # before -m reads the markers
def pytest_collection_modifyitems(config, items):
    kept, deselected = [], []
    for item in items:
        (kept if applies_here(item) else deselected).append(item)
        if not depends_on_backend(item):
            item.add_marker(pytest.mark.backend_independent)
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = kept
