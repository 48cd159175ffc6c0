"""Smoke tests of the benchmark scripts: each runs end to end at tiny sizes (``--quick``),
prints its rows and writes the JSON it promises, and answers a bad argument with exit
status 2. Timings are not asserted (benchmarks are not tests; these run at the same time on
a shared machine), only that every number is there and every time is positive.

Backend-independent: every script runs on NumPy (``PORTACONV_BACKEND=numpy``) whatever
the suite's backend. The quick runs are started together, in one fixture, and each test
waits for its own: the file takes about as long as the slowest script.
"""

from __future__ import annotations

import ast
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
SCRIPTS = sorted(p.name for p in BENCH.glob("*.py"))
TIMEOUT = 240


def script_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PORTACONV_DEVICE"}
    env["PORTACONV_BACKEND"] = "numpy"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env.update(extra)
    return env


def run_script(name: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    """``python benchmarks/<name> <args>`` to its end, its output captured."""
    command = [sys.executable, str(BENCH / name), *args]
    return subprocess.run(
        command, capture_output=True, text=True, timeout=TIMEOUT, env=script_env(**env)
    )


def mpiexec() -> str | None:
    local = Path(sys.executable).parent / "mpiexec"
    return str(local) if local.exists() else shutil.which("mpiexec")


class Launched:
    """A script started in the background; ``result()`` waits for it."""

    def __init__(self, directory: Path, key: str, name: str, *args: str, **env: str) -> None:
        self.stdout_path, self.stderr_path = directory / f"{key}.out", directory / f"{key}.err"
        with self.stdout_path.open("w") as out, self.stderr_path.open("w") as err:
            self.process = subprocess.Popen(
                [sys.executable, str(BENCH / name), *args],
                stdout=out,
                stderr=err,
                text=True,
                env=script_env(**env),
                cwd=directory,
            )

    def result(self) -> tuple[int, str, str]:
        code = self.process.wait(timeout=TIMEOUT)
        return code, self.stdout_path.read_text(), self.stderr_path.read_text()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Every quick run, started at once; the JSON reports go to the same folder."""
    d = tmp_path_factory.mktemp("bench")
    commands = {
        "run": ("run.py", "--quick", "--backend", "numpy", "--json", str(d / "run.json")),
        "engines": ("engines.py", "--quick", "--backend", "numpy", "--json", str(d / "e.json")),
        "train": ("train_bench.py", "--quick", "--models", "lenet", "--json", str(d / "t.json")),
        "baseline": (
            "train_bench.py",
            "--quick",
            "--models",
            "lenet",
            "--baseline",
            str(ROOT),
            "--json",
            str(d / "b.json"),
        ),
        "profile": ("train_bench.py", "--quick", "--profile", "--models", "lenet", "--rounds", "1"),
        "compiled": (
            "compiled_step.py",
            "--quick",
            "--model",
            "mlp",
            "--batch-size",
            "8",
            "--sides",
            "numpy",
            "--json",
            str(d / "c.json"),
        ),
        "iris": ("iris_cv.py", "--quick"),
        "cs189": ("cs189_results.py", "--quick", "--json", str(d / "cs189.json")),
        "gpu": ("gpu_check.py", "--dry-run"),
    }
    if mpiexec():
        commands["mpi"] = ("mpi_scaling.py", "--quick", "--json", str(d / "m.json"))
    launched = {
        key: Launched(d, key, *command, **({"OUT": str(d / "gpu_out")} if key == "gpu" else {}))
        for key, command in commands.items()
    }
    yield d, launched
    for run in launched.values():
        if run.process.poll() is None:
            run.process.kill()


def finished(runs, key: str) -> tuple[str, str]:
    code, out, err = runs[1][key].result()
    assert code == 0, f"{key} failed ({code}):\n{out}\n{err}"
    return out, err


def report(runs, name: str) -> dict:
    return json.loads((runs[0] / name).read_text())


# ----------------------------------------------------------------------------- the rules

ALLOWED_BACKEND_NAMES = {
    "set_backend",
    "use_backend",
    "get_backend",
    "to_backend",
    "to_numpy",
    "num_threads",
    "set_num_threads",
    "fast_paths",
}
PUBLIC_MODULES = {
    "portaconv",
    "portaconv.backend",
    "portaconv.layers",
    "portaconv.models",
    "portaconv.optim",
    "portaconv.train",
    "portaconv.train.config",
    "portaconv.train.experiment",
    "portaconv.data",
    "portaconv.distributed",
    # the CS189 package's API (portaconv.compat.cs189), which cs189_results.py measures
    "portaconv.compat.cs189.datasets",
    "portaconv.compat.cs189.models",
    "portaconv.compat.cs189.utils",
}


def own_private_names() -> set[str]:
    """Private functions, methods and attributes the benchmark scripts define themselves."""
    names = set()
    for script in SCRIPTS:
        for node in ast.walk(ast.parse((BENCH / script).read_text())):
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name.startswith("_"):
                names.add(node.name)
    return names


@pytest.mark.parametrize("script", SCRIPTS)
def test_scripts_use_portaconvs_public_api_only(script):
    """No private portaconv module or name, no ``portaconv.backend`` name outside the
    public set, no private attribute of anything, no ``sys.path`` edit."""
    tree = ast.parse((BENCH / script).read_text())
    own = own_private_names()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("portaconv"):
            assert node.module in PUBLIC_MODULES, (script, node.module)
            if node.module == "portaconv.backend":
                for alias in node.names:
                    assert alias.name in ALLOWED_BACKEND_NAMES, (script, alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("portaconv"):
                    assert alias.name in PUBLIC_MODULES, (script, alias.name)
        elif isinstance(node, ast.Attribute):
            private = node.attr.startswith("_") and not node.attr.startswith("__")
            private = private and node.attr not in own
            assert not private, (script, node.attr, node.lineno)
            value = node.value
            if isinstance(value, ast.Attribute) and value.attr == "backend":
                if isinstance(value.value, ast.Name) and value.value.id == "portaconv":
                    allowed = node.attr in ALLOWED_BACKEND_NAMES or node.attr.startswith("__")
                    assert allowed, (script, node.attr)
        if isinstance(node, ast.Attribute) and node.attr == "path":
            assert not (isinstance(node.value, ast.Name) and node.value.id == "sys"), script


BAD_ARGUMENTS = {
    "run.py": ["--repeats", "0"],
    "engines.py": ["--count-ops", "--backend", "numpy"],
    "train_bench.py": ["--models", "nope"],
    "compiled_step.py": ["--sides", "nope"],
    "mpi_scaling.py": ["--ranks", "1"],
    "iris_cv.py": ["--repeats", "0"],
    "cs189_results.py": ["--mlp-epochs", "0"],
    "gpu_check.py": ["--backends", "nope"],
}


def test_every_script_has_a_bad_argument_case():
    assert set(BAD_ARGUMENTS) == set(SCRIPTS) - {"harness.py"}


@pytest.mark.parametrize("script", sorted(BAD_ARGUMENTS))
def test_a_bad_argument_is_a_usage_error(script):
    done = run_script(script, *BAD_ARGUMENTS[script])
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "usage:" in done.stderr


def test_train_bench_baseline_must_hold_portaconv(tmp_path):
    done = run_script("train_bench.py", "--baseline", str(tmp_path))
    assert done.returncode == 2 and "holds no portaconv" in done.stderr


# ----------------------------------------------------------------------------- the runs


def test_run_quick(runs):
    out, _ = finished(runs, "run")
    assert "pc/torch" in out and "machine:" in out
    data = report(runs, "run.json")
    assert data["machine"]["cpu"] and data["machine"]["backend"] == "numpy"
    cases = data["cases"]
    assert [c["group"] for c in cases] == ["layer"] * 3 + ["network"]
    for case in cases:
        assert case["name"] in out
        assert case["portaconv_s"] > 0 and case["torch_s"] > 0
        assert len(case["ratios"]) == 2 and case["ratio"] > 0
        assert case["max_rel_error"] < 1e-3, case["name"]
    assert data["summary"]["geomean_ratio_layers"] > 0


def test_engines_quick(runs):
    code, out, err = runs[1]["engines"].result()
    assert code == 0, f"engines.py failed:\n{out}\n{err}"
    cases = report(runs, "e.json")["cases"]
    names = [c["name"] for c in cases]
    assert names[-2:] == ["lenet_train_step_N8", "adam_step_mlp"]
    for case in cases:
        variants = case["variants"]
        assert {"torch", "auto", "never"} <= variants.keys(), case["name"]
        if case["name"].startswith("tiny_conv"):
            engines = {
                f"conv={e}" for e in ("reference", "im2row", "nchw", "row_gather", "strided")
            }
            assert engines <= variants.keys()
            assert variants["conv=reference"] is not None  # the portable engine takes anything
        for name, row in variants.items():
            if row is not None and name != "torch":
                assert row["best_s"] > 0 and row["ratio_to_torch"] > 0
                assert row["max_rel_error"] is None or row["max_rel_error"] < 1e-3, name
    assert "/auto" in out


def test_train_bench_quick(runs):
    out, _ = finished(runs, "train")
    assert "lenet  portaconv/torch" in out
    data = report(runs, "t.json")
    assert data["allocator"].startswith(("glibc mallopt", "default"))
    (result,) = data["results"]
    assert len(result["ratios"]) == data["rounds"] == 2
    assert result["min_ratio"] <= result["median_ratio"] <= result["max_ratio"]
    assert all(math.isfinite(v) for v in result["last_loss"].values())
    assert result["page_faults_per_epoch"].keys() == {"portaconv", "torch"}


def test_train_bench_baseline_quick(runs):
    """Two versions (here the same tree twice), each in its worker, in paired rounds."""
    out, _ = finished(runs, "baseline")
    assert "lenet  current/baseline" in out
    (result,) = report(runs, "b.json")["results"]
    assert result["images_per_s"].keys() == {"current", "baseline", "torch"}
    assert len(result["ratios"]) == 2 and all(r > 0 for r in result["ratios"])
    assert result["current_to_torch"] > 0 and result["baseline_to_torch"] > 0
    assert all(math.isfinite(v) for v in result["last_loss"].values())


def test_train_bench_profile_quick(runs):
    out, _ = finished(runs, "profile")
    rows = [line for line in out.splitlines() if "] Conv2d(" in line]
    assert len(rows) == 4  # LeNet's two convolutions, forward and backward
    assert all(float(line.split()[-1]) > 0 for line in rows)
    assert "optimizer step" in out and "whole epoch / steps" in out
    assert "PyTorch, ms per step by aten operation" in out


def test_compiled_step_quick(runs):
    finished(runs, "compiled")
    data = report(runs, "c.json")
    assert [r["side"] for r in data["results"]] == ["pytorch", "numpy"]
    for r in data["results"]:
        assert len(r["step_seconds"]) == data["rounds"] and all(t > 0 for t in r["step_seconds"])
        assert r["compiled"] is False and r["compile_seconds"] is None


def test_iris_cv_quick(runs):
    out, _ = finished(runs, "iris")
    assert "nested (recipe chosen by inner CV)" in out
    assert out.count("chosen") == 3  # the nested line and two grid entries


def test_cs189_results_quick(runs):
    out, _ = finished(runs, "cs189")
    rows = report(runs, "cs189.json")["rows"]
    assert [r["run"] for r in rows] == ["iris ffnn", "fashion-mnist mlp", "fashion-mnist lenet"]
    for row in rows:
        assert 0 <= row["test_accuracy"] <= 1 and row["seconds"] > 0, row
        assert f"| {row['run']} | {row['epochs']} |" in out


def test_mpi_scaling_quick(runs):
    if "mpi" not in runs[1]:
        pytest.skip("no mpiexec here")
    out, _ = finished(runs, "mpi")
    assert "scaling efficiency on 2" in out
    data = report(runs, "m.json")
    assert data["images_per_second"].keys() == {"1", "2"} and data["bytes_per_step"] > 0
    assert data["allreduce_ms"] > 0
    assert all(0 < row["efficiency"] <= 1 for row in data["cost_model"])


def test_gpu_check_dry_run(runs):
    out, _ = finished(runs, "gpu")
    out_dir = runs[0] / "gpu_out"
    log = (out_dir / "gpu_check.log").read_text()
    assert log.strip() == out.strip()
    for backend in ("cupy", "torch", "jax"):
        for step in ("start", "tests", "train", "benchmark"):
            assert f"=== {backend}: {step} (cap " in log, (backend, step)
    assert "PORTACONV_DEVICE=cuda" in log and "tests/test_layers.py" in log
    rows = json.loads((out_dir / "gpu_check.json").read_text())
    assert [r["backend"] for r in rows] == ["cupy", "torch", "jax"]
    assert all(r["status"] == "dry run" for r in rows)
