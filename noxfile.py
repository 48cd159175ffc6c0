"""One session per backend: ``nox`` runs lint and the CPU ones; the GPU ones are asked for
by name (``nox -s tests-cupy``, ``nox -s tests-torch_cuda``) on a machine with a GPU, and the
documentation site by ``nox -s docs``.

Each tests session runs the suite with ``PORTACONV_BACKEND`` (and ``PORTACONV_DEVICE``) set,
exactly as a user would select the backend. The tests that do the same whatever the backend
(marked ``backend_independent`` by tests/conftest.py: the CLI's messages and files, data files,
checkpoints, MPI orchestration, NumPy's fast paths, ...) run in the NumPy sessions (tests-numpy,
tests-oldest) and the GPU ones; the other CPU sessions deselect them.

The CPU backend sessions (numpy, array_api_strict, torch, jax, and array_api_strict on its
second device, which checks that every array portaconv creates names its device) share one
environment, ``.nox/shared-cpu`` with the ``test``, ``jax`` and ``interop`` extras: they need
the same packages, and torch alone is about 1 GB installed, which each session used to
install again. ``tests-oldest`` has its own (other versions).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import nox

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: nox brings tomli
    import tomli as tomllib

# array-api-strict runs on its second device only: the same code as on its default device,
# where in addition every array portaconv creates must name its device (an array created
# without one lands on the default device and meets the others there); ``nox -s
# tests-array_api_strict`` runs the default device.
nox.options.sessions = [
    "lint",
    "tests-numpy",
    "tests-torch",
    "tests-jax",
    "tests-array_api_strict-device1",
    "tests-oldest",
]
nox.options.default_venv_backend = "venv"
nox.options.error_on_missing_interpreters = True


SHARED_VENV = os.path.join(".nox", "shared-cpu")

#: Packages are installed without byte-compiling them (pip's ``--no-compile``): torch and JAX
#: hold thousands of modules the tests never import, and compiling them all took most of an
#: install's time. The tests then write the bytecode of what they import, once (even where
#: PYTHONDONTWRITEBYTECODE is set, which would have every process compile torch anew).
NO_COMPILE = "--no-compile"
LAZY_BYTECODE = {"PYTHONDONTWRITEBYTECODE": ""}
JAX_CACHE = os.path.join(".nox", "jax-cache")  # compiled XLA programs, keyed by JAX itself


def _run_tests(
    session: nox.Session,
    backend: str,
    device: str | None = None,
    python: str = "python",
    workers: str | None = None,
    backend_dependent_only: bool = False,
) -> None:
    env = {"PORTACONV_BACKEND": backend}
    if device:
        env["PORTACONV_DEVICE"] = device
    if backend == "jax":  # compile the tests' many small programs quickly, not optimally
        env["XLA_FLAGS"] = (
            "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
        )
        # ... and once: JAX's persistent compilation cache, every program kept however
        # quick to compile, lets the second pytest worker and the suite's subprocesses (the
        # CLI, the benchmarks' smoke tests, MPI ranks) load what another process compiled.
        # pytest's time for this session's suite on the 2-core machine, the cache starting
        # empty as in CI: 570 s without these three variables, 426 s with them (382 s in
        # the CI run of df9d0e3).
        env["JAX_COMPILATION_CACHE_DIR"] = os.path.abspath(JAX_CACHE)
        env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
        env["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
    parallel = ["-n", workers] if workers else []
    select = ["-m", "not backend_independent"] if backend_dependent_only else []
    env.update(LAZY_BYTECODE)
    session.run(python, "-m", "pytest", *parallel, *select, *session.posargs, env=env)


def _shared_python(session: nox.Session) -> str:
    """The shared CPU environment's python, created on first use; portaconv and its test
    extras are (re)installed into it each time (pip skips what is already there)."""
    bin_dir = "Scripts" if sys.platform == "win32" else "bin"
    python = os.path.abspath(os.path.join(SHARED_VENV, bin_dir, "python"))
    if not os.path.exists(python):
        session.run(sys.executable, "-m", "venv", SHARED_VENV, external=True)
    # interop: the optional formats' packages (safetensors, ONNX), outside `test` because
    # tests-oldest's NumPy 1.26 cannot take ndonnx
    session.run(
        python, "-m", "pip", "install", "-q", NO_COMPILE, ".[test,jax,interop]", external=True
    )
    return python


#: Every docstring example (``>>>``) in portaconv, run by pytest on NumPy: in tests-numpy (the
#: default run) and in the docs session.
DOCTESTS = ["-m", "pytest", "-p", "no:cacheprovider", "--doctest-modules", "portaconv"]


def _cpu_session(backend: str, device: str | None = None, workers: str | None = "auto"):
    def run(session: nox.Session) -> None:
        python = _shared_python(session)
        _run_tests(
            session,
            backend,
            device,
            python=python,
            workers=workers,
            backend_dependent_only=backend != "numpy",
        )
        if backend == "numpy" and not session.posargs:  # a chosen subset of tests runs alone
            session.run(python, *DOCTESTS, env={"PORTACONV_BACKEND": "numpy", **LAZY_BYTECODE})

    run.__doc__ = f"The suite on {backend}" + (f" ({device})" if device else "") + "."
    if backend == "numpy":
        run.__doc__ = run.__doc__[:-1] + ", then the docstring examples."
    return run


def _require_gpu(session: nox.Session) -> None:
    """Stop with a clear word, before installing anything, when no NVIDIA GPU is visible."""
    smi = shutil.which("nvidia-smi")
    listed = smi and subprocess.run([smi, "-L"], capture_output=True, text=True).stdout.strip()
    if not listed:
        session.skip(
            f"{session.name} needs an NVIDIA GPU and none is visible here (nvidia-smi -L "
            "lists no device); run it on a machine with a GPU"
        )
    session.log(f"GPU: {listed}")


tests_numpy = nox.session(name="tests-numpy", venv_backend="none")(_cpu_session("numpy"))
tests_array_api_strict = nox.session(name="tests-array_api_strict", venv_backend="none")(
    _cpu_session("array_api_strict")
)
tests_torch = nox.session(name="tests-torch", venv_backend="none")(_cpu_session("torch", "cpu"))
# JAX compiles every operation anew for each shape it meets (tens of ms each, single-threaded):
# its suite costs several times torch's CPU. Every CPU session runs on one pytest-xdist worker
# per core.
tests_jax = nox.session(name="tests-jax", venv_backend="none")(_cpu_session("jax", "cpu"))
tests_array_api_strict_device1 = nox.session(
    name="tests-array_api_strict-device1", venv_backend="none"
)(_cpu_session("array_api_strict", "device1"))


def oldest_allowed() -> list[str]:
    """pyproject.toml's dependencies and test extras pinned to their floors: ``numpy>=1.26``
    becomes ``numpy==1.26``; exact pins stay as they are."""
    with open("pyproject.toml", "rb") as f:
        project = tomllib.load(f)["project"]
    pins = []
    for requirement in [*project["dependencies"], *project["optional-dependencies"]["test"]]:
        floor = re.fullmatch(r"([A-Za-z0-9_.-]+)\s*(?:>=|==)\s*([^\s,;]+)", requirement)
        if floor is None:
            raise ValueError(f"tests-oldest: {requirement!r} has no single floor (name>=version)")
        pins.append(f"{floor[1]}=={floor[2]}")
    return pins


#: The backend-independent tests that tests-oldest runs too: the data files' readers, which
#: lean on NumPy's own API (the rest, the CLI's messages, checkpoints, MPI orchestration and
#: the benchmarks' smoke runs, use the same NumPy calls as the conformance tests).
OLDEST_ALSO = ["tests/test_data.py"]


@nox.session(name="tests-oldest")
def tests_oldest(session: nox.Session) -> None:
    """The NumPy-dependent suite (conformance, the fast paths, the data readers) on NumPy with
    the oldest versions pyproject.toml allows."""
    pins = oldest_allowed()
    session.install(NO_COMPILE, *pins)
    session.install(NO_COMPILE, "--no-deps", ".")
    session.run("python", "-m", "pip", "check")
    session.log("oldest allowed: " + " ".join(pins))
    env = {"PORTACONV_BACKEND": "numpy", **LAZY_BYTECODE}
    # the interop extra (ndonnx needs NumPy 2) is not installed here; its tests are
    # backend-independent and run in tests-numpy, but their module imports it
    select = ["-m", "not backend_independent", "--ignore=tests/test_interop.py"]
    session.run("pytest", "-n", "auto", *select, *session.posargs, env=env)
    session.run("pytest", "-n", "auto", *OLDEST_ALSO, *session.posargs, env=env)


@nox.session(name="tests-cupy")
def tests_cupy(session: nox.Session) -> None:
    _require_gpu(session)
    session.install(".[test]", "cupy-cuda12x")
    _run_tests(session, "cupy")


@nox.session(name="tests-torch_cuda")
def tests_torch_cuda(session: nox.Session) -> None:
    _require_gpu(session)
    session.install(".[test]")
    _run_tests(session, "torch", "cuda")


@nox.session
def docs(session: nox.Session) -> None:
    """The documentation site (docs/ into docs/_build/html) with warnings as errors and every
    reference checked, then every docstring example on NumPy. Not in the default run (the
    examples are: tests-numpy runs them)."""
    session.install(NO_COMPILE, ".[docs,test]")
    out = os.path.join("docs", "_build", "html")
    session.run("python", "-m", "sphinx", "-W", "--keep-going", "-n", "-b", "html", "docs", out)
    session.run("python", *DOCTESTS, env={"PORTACONV_BACKEND": "numpy", **LAZY_BYTECODE})
    session.log(f"the site: {os.path.abspath(os.path.join(out, 'index.html'))}")


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff>=0.6")
    session.run(
        "ruff",
        "check",
        "portaconv",
        "tests",
        "noxfile.py",
        "conftest.py",
        "examples",
        "benchmarks",
        "docs",
    )
