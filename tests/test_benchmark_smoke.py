"""Smoke test of benchmarks/run.py: it runs end to end on the current backend and writes the
JSON report it promises. Timings are not asserted (benchmarks are not tests); only that every
number is there and every time is positive.

The backend is the one ``PORTACONV_BACKEND`` names (numpy when unset), as in the rest of the
suite; a GPU backend without a GPU fails here like everywhere else.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

RUN = Path(__file__).resolve().parents[1] / "benchmarks" / "run.py"


def run_script(name: str, *args: str) -> subprocess.CompletedProcess:
    """``python benchmarks/<name> <args>``, its output captured."""
    command = [sys.executable, str(RUN.parent / name), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


CASE_KEYS = {
    "name",
    "group",
    "portaconv_s",
    "torch_s",
    "ratio",
    "flops",
    "portaconv_gflops",
    "portaconv_pct_sgemm",
    "portaconv_peak_bytes",
    "torch_peak_bytes",
    "max_rel_error",
    "portaconv_runs_s",
    "torch_runs_s",
}


def test_quick_run_writes_complete_json(tmp_path):
    backend = os.environ.get("PORTACONV_BACKEND", "").strip() or "numpy"
    report_path = tmp_path / "bench.json"
    command = [
        sys.executable,
        str(RUN),
        "--quick",
        "--backend",
        backend,
        "--json",
        str(report_path),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"run.py failed:\n{done.stdout}\n{done.stderr}"
    assert "pc/torch" in done.stdout  # the table was printed

    report = json.loads(report_path.read_text())
    assert {"machine", "sgemm", "memory_methods", "cases", "summary"} <= report.keys()

    machine = report["machine"]
    for key in ("platform", "cpu_count", "threads", "torch_version", "numpy_version"):
        assert key in machine, key
    assert machine["backend"] == backend
    assert machine["device_name"]
    assert report["sgemm"]["gflops"] > 0

    cases = report["cases"]
    assert [c["group"] for c in cases] == ["layer", "network"]
    for case in cases:
        assert CASE_KEYS <= case.keys(), case["name"]
        assert case["portaconv_s"] > 0 and case["torch_s"] > 0, case["name"]
        assert math.isclose(case["ratio"], case["portaconv_s"] / case["torch_s"])
        assert case["flops"] > 0 and case["portaconv_gflops"] > 0
        assert case["portaconv_peak_bytes"] >= 0 and case["torch_peak_bytes"] >= 0
        # the two libraries computed the same thing (float32 rounding only)
        assert case["max_rel_error"] < 1e-3, case["name"]

    summary = report["summary"]
    assert summary["geomean_ratio_layers"] > 0
    assert summary["lenet_step_ratio"] > 0


def test_conv_paths_runs_and_times_every_engine():
    """benchmarks/conv_paths.py (NumPy only, whatever the suite's backend) prints a row per
    shape with a positive time for every engine that can compute it (the row gather for
    2-d with K > 1 only: every 2-d shape there has stride 1 or 2) and im2row's own ratio 1."""
    script = RUN.parent / "conv_paths.py"
    done = subprocess.run(
        [sys.executable, str(script), "--rounds", "1"], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, f"conv_paths.py failed:\n{done.stdout}\n{done.stderr}"
    rows = [line for line in done.stdout.splitlines() if "| im2row " in line]
    assert len(rows) >= 15
    for row in rows:
        cells = dict(
            (m.group(1), (float(m.group(2)), float(m.group(3))))
            for m in re.finditer(r"(im2row|row gather|nchw) ([\d.]+) ms ([\d.]+)", row)
        )
        row_gather = "x" in row.split()[1] and " 1x1 " not in row  # 2-d, K > 1
        assert set(cells) == {"im2row", "nchw"} | ({"row gather"} if row_gather else set())
        assert all(t > 0 and r > 0 for t, r in cells.values()), row
        assert cells["im2row"][1] == 1.0, row


def test_numpy_paths_quick_run_writes_every_comparison(tmp_path):
    """benchmarks/numpy_paths.py --quick (NumPy only): every comparison with a positive
    time for each of its variants."""
    report_path = tmp_path / "paths.json"
    done = subprocess.run(
        [sys.executable, str(RUN.parent / "numpy_paths.py"), "--quick", "--json", str(report_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, f"numpy_paths.py failed:\n{done.stdout}\n{done.stderr}"
    results = json.loads(report_path.read_text())["results"]
    assert len(results) == 27
    for layer in ("LeNet 6->16 N=64", "5x5 16->32 28x28 N=32", "3x3 32->64 14x14 N=32"):
        assert results[f"chunks at once, {layer}"].keys() == {
            "alone",
            "two threads",
            "two processes",
        }
    assert results["handoff (run_threaded, ~150 us tasks)"].keys() == {
        "pool",
        "executor",
        "one task alone",
    }
    assert results["accumulated products, 5 kernel rows 32x80x5488"].keys() == {
        "forward matmul + add",
        "forward gemm",
        "dL/dA matmul + add",
        "dL/dA gemm",
    }
    assert results["chunks at once, LeNet 6->16 N=64"].keys() == {
        "alone",
        "two threads",
        "two processes",
    }
    assert results["forward product 32x80x5488"].keys() == {
        "R @ W",
        "W^T @ R^T",
        "R @ W GFLOP/s",
        "W^T @ R^T GFLOP/s",
    }
    dot = [title for title in results if title.startswith("dot: ")]  # one pair a thread
    assert len(dot) == 1, dot
    assert results[dot[0]].keys() == {
        "in turn",
        "threads matmul",
        "threads dot",
    }
    assert results["adam step, zoo mlp (535k params)"].keys() == {"portable", "fused"}
    assert all(us > 0 for variants in results.values() for us in variants.values())


def test_train_bench_quick_run_writes_complete_json(tmp_path):
    """benchmarks/train_bench.py --quick: every zoo network trained on both sides, a ratio
    per round, finite losses from both (each side really trained), the allocator setting
    recorded."""
    backend = os.environ.get("PORTACONV_BACKEND", "").strip() or "numpy"
    report_path = tmp_path / "train.json"
    script = RUN.parent / "train_bench.py"
    result = subprocess.run(
        [sys.executable, str(script), "--quick", "--backend", backend, "--json", str(report_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(report_path.read_text())
    assert report["allocator"].startswith(("glibc mallopt", "default"))
    assert [r["model"] for r in report["results"]] == ["cnn", "lenet", "mlp"]
    for r in report["results"]:
        assert len(r["ratios"]) == report["rounds"] and all(x > 0 for x in r["ratios"])
        assert r["min_ratio"] <= r["median_ratio"] <= r["max_ratio"]
        assert all(math.isfinite(v) for v in r["last_loss"].values())
        assert r["page_faults_per_epoch"].keys() == {"portaconv", "torch"}


def test_step_profile_quick_run_times_every_layer_and_restores_the_variant(tmp_path):
    """benchmarks/step_profile.py --quick with a --variant: a row for each layer call of
    LeNet's step and a column for each setting, every layer time positive, the parts of the
    step no larger than the step; a bad --variant is a usage error."""
    backend = os.environ.get("PORTACONV_BACKEND", "").strip() or "numpy"
    report_path = tmp_path / "profile.json"
    script = RUN.parent / "step_profile.py"
    variant = "portaconv.backend._ops.SPLIT_POOL_MIN=1"
    env = {**os.environ, "PORTACONV_BACKEND": backend}
    result = subprocess.run(
        [sys.executable, str(script), "--quick", "--variant", variant, "--json", str(report_path)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(report_path.read_text())
    assert report["backend"] == backend and report["variant"] == [variant]
    table = report["ms_per_step"]
    assert table.keys() == {"defaults", "variant"}
    layer_rows = [r for r in report["rows"] if "]" in r]
    assert sum("Conv2d" in r for r in layer_rows) == 4  # 2 convolutions, forward and backward
    for column in table.values():
        assert all(column[r] > 0 for r in layer_rows)
        assert sum(column[r] for r in layer_rows) < column["whole step"]
    bad = subprocess.run(
        [sys.executable, str(script), "--quick", "--variant", "portaconv.backend._ops.NOPE=1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and "has no 'NOPE'" in bad.stderr


def test_step_profile_torch_lists_pytorch_operations(tmp_path):
    """benchmarks/step_profile.py --quick --torch: the PyTorch twin's step by aten operation,
    the convolutions among them, every time positive and the listed ones within the step;
    --torch with --variant is a usage error."""
    report_path = tmp_path / "torch_profile.json"
    script = RUN.parent / "step_profile.py"
    command = [sys.executable, str(script), "--quick", "--torch", "--json", str(report_path)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    report = json.loads(report_path.read_text())
    assert report["backend"].startswith("plain PyTorch")
    column = report["ms_per_step"]["self CPU"]
    assert any("convolution" in r for r in report["rows"])
    assert all(column[r] > 0 for r in report["rows"][:-2])
    assert column["epoch / steps"] > 0
    variant = ["--variant", "portaconv.backend._ops.SPLIT_POOL_MIN=1"]
    bad = subprocess.run(
        [sys.executable, str(script), "--quick", "--torch", *variant],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and "does not apply with --torch" in bad.stderr


def test_compiled_step_quick_run_writes_complete_json(tmp_path):
    """benchmarks/compiled_step.py --quick: the backend under test (compiled on torch and
    JAX, with aot_eager on torch: seconds, not inductor's minutes; numpy for the others)
    against plain PyTorch, a time per round each and a compile time where it compiles."""
    backend = os.environ.get("PORTACONV_BACKEND", "").strip() or "numpy"
    side = backend if backend in ("jax", "torch") else "numpy"
    report_path = tmp_path / "compiled.json"
    script = RUN.parent / "compiled_step.py"
    command = [sys.executable, str(script), "--quick", "--model", "mlp", "--batch-size", "8"]
    command += ["--sides", side, "--torch-compiler", "aot_eager", "--json", str(report_path)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    report = json.loads(report_path.read_text())
    assert [r["side"] for r in report["results"]] == ["pytorch", side]
    for r in report["results"]:
        assert len(r["step_seconds"]) == report["rounds"] and all(t > 0 for t in r["step_seconds"])
        assert r["min_ratio"] <= r["median_ratio_to_pytorch"] <= r["max_ratio"]
        assert r["compiled"] == (r["side"] in ("jax", "torch"))
        assert (r["compile_seconds"] is not None) == r["compiled"]
        assert r["compile_seconds"] is None or r["compile_seconds"] > 0


def test_op_count_prints_and_writes_counts(tmp_path):
    """benchmarks/op_count.py (torch backend, whatever the suite's): a row per network, and
    in the JSON both sides' counts, their ratio and the counts by operation."""
    report_path = tmp_path / "ops.json"
    script = RUN.parent / "op_count.py"
    command = [sys.executable, str(script), "--models", "lenet,mlp", "--batch-size", "8"]
    done = subprocess.run(
        [*command, "--top", "3", "--json", str(report_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, f"op_count.py failed:\n{done.stdout}\n{done.stderr}"
    assert "most frequent" in done.stdout
    report = json.loads(report_path.read_text())
    assert [r["model"] for r in report["results"]] == ["lenet", "mlp"]
    for r in report["results"]:
        assert r["portaconv_ops"] == sum(r["portaconv_by_op"].values()) > 0
        assert r["torch_ops"] == sum(r["torch_by_op"].values()) > 0
        assert math.isclose(r["ratio"], r["portaconv_ops"] / r["torch_ops"])
        assert f"{r['model']:6s} | {r['portaconv_ops']:9d} | {r['torch_ops']:7d}" in done.stdout


def test_variant_pairs_times_both_settings():
    """benchmarks/variant_pairs.py (NumPy only) prints a row per selected case with both
    sides' times, their ratio and the difference of their results: the parity planes and
    the strided adds of the NCHW engine's dL/dA compute the same numbers. A variant of a
    name the module does not have is refused with exit status 2."""
    variant = "portaconv.backend.conv.nchw.PARITY_PLANES=False"
    done = run_script("variant_pairs.py", "--variant", variant, "--rounds", "2", "--cases", "s2_p1")
    assert done.returncode == 0, f"variant_pairs.py failed:\n{done.stdout}\n{done.stderr}"
    rows = [line.split() for line in done.stdout.splitlines() if line.startswith("conv2d_3x3_s2")]
    assert len(rows) == 1
    default_ms, variant_ms, ratio = map(float, rows[0][1:4])
    difference = float(rows[0][5])
    assert default_ms > 0 and variant_ms > 0 and ratio > 0
    assert difference < 1e-5
    bad = run_script("variant_pairs.py", "--variant", "portaconv.backend.conv.nchw.NO_SUCH=1")
    assert bad.returncode == 2 and "has no 'NO_SUCH'" in bad.stderr


def test_products_floor_replays_the_engines_products():
    """benchmarks/products_floor.py (NumPy only) prints, per selected case, the three times
    and the ratios; the products it replays are those the engine made: LeNet's 6 -> 16 layer
    on the row gather runs K = 5 products per kernel row and pass (forward, dL/dW, dL/dA)
    for each chunk, in two phases (forward, backward), and the 3x3 stride-2 layer on the
    NCHW engine its per-chunk products."""
    done = run_script("products_floor.py", "--rounds", "1", "--cases", "lenet_conv2|s2_p1_32")
    assert done.returncode == 0, f"products_floor.py failed:\n{done.stdout}\n{done.stderr}"
    rows = {line.split()[0]: line.split()[1:] for line in done.stdout.splitlines()[2:]}
    assert set(rows) == {"conv2d_3x3_s2_p1_32-64_28x28", "lenet_conv2_5x5_p0_6-16_14x14_N128"}
    for name, row in rows.items():
        torch_ms, pc_ms, products_ms = map(float, row[:3])
        count, word, phases = row[3:6]
        assert torch_ms > 0 and pc_ms > 0 and products_ms > 0, name
        assert word == "in" and int(count) > 0 and int(phases) == 2, name
        pc_ratio, products_ratio = map(float, row[6:8])
        assert pc_ratio > 0 and products_ratio > 0, name
    # row gather: per chunk 5 forward products, 5 for dL/dW, 5 for dL/dA
    assert int(rows["lenet_conv2_5x5_p0_6-16_14x14_N128"][3]) % 15 == 0
    bad = run_script("products_floor.py", "--cases", "no_such_case")
    assert bad.returncode == 2 and "no case matches" in bad.stderr
