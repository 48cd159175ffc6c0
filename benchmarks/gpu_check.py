"""The GPU check: portaconv's conformance tests, a digits training run and the training
benchmark against PyTorch CUDA, on each GPU backend, in one command of under 8 minutes.

    python3 benchmarks/gpu_check.py [--backends cupy,torch,jax] [--test-cap 80]
                                    [--train-cap 35] [--bench-cap 45] [--dry-run]

Run it from the repository's root on a machine with an NVIDIA GPU. For each backend
(``cupy``; ``torch`` with ``PORTACONV_DEVICE=cuda``; ``jax`` with ``PORTACONV_DEVICE=gpu``):

1. whether it starts at all (``portaconv.set_backend`` in a subprocess): a backend that
   cannot is a row saying why, and its other steps are skipped;
2. the layer conformance tests, ``pytest tests/test_layers.py`` with that backend in the
   environment, cut off after ``--test-cap`` seconds (the row then says so);
3. ``python -m portaconv train --dataset digits --epochs 1`` on it (the bundled digits, no
   download), cut off after ``--train-cap`` seconds: its test accuracy and training time;
4. ``benchmarks/train_bench.py --models cnn,lenet`` on it against the same networks in
   PyTorch on CUDA (3 paired rounds of 2,048 images), cut off after ``--bench-cap``:
   portaconv's epoch time / PyTorch's, the median over the rounds.

At the end one summary table: backend, tests passed/failed, accuracy and training time,
benchmark ratios. Everything the steps print goes to a log, ``$OUT/gpu_check.log`` where
``OUT`` is set (else ``gpu_check.log`` in the working directory), with the summary in
``gpu_check.json`` beside it.

The GPU machines lack ``array-api-compat`` and ``array-api-extra``: carry them as wheels in
``.whl/`` (see benchmarks/README.md for the ``pip download`` command); where ``.whl/`` holds
wheels they are installed first into ``/tmp/site`` (``pip install --no-index --target``),
which then leads ``PYTHONPATH`` for every step. ``--dry-run`` prints the plan (every command
with its environment and cap) and an empty summary, running nothing: the smoke test.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import harness

ROOT = Path(__file__).resolve().parents[1]
BACKEND_ENV = {
    "cupy": {"PORTACONV_BACKEND": "cupy"},
    "torch": {"PORTACONV_BACKEND": "torch", "PORTACONV_DEVICE": "cuda"},
    "jax": {"PORTACONV_BACKEND": "jax", "PORTACONV_DEVICE": "gpu"},
}
SITE = "/tmp/site"  # where the carried wheels are installed


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default="cupy,torch,jax", help="comma-separated")
    parser.add_argument("--test-cap", type=int, default=90, help="seconds of tests a backend")
    parser.add_argument("--train-cap", type=int, default=45, help="seconds of training")
    parser.add_argument("--bench-cap", type=int, default=60, help="seconds of benchmark")
    parser.add_argument(
        "--budget", type=int, default=450, help="seconds for everything: later steps get less"
    )
    parser.add_argument("--dry-run", action="store_true", help="print the plan, run nothing")
    args = parser.parse_args(argv)
    args.backends = harness.comma_list(parser, "--backends", args.backends, BACKEND_ENV)
    harness.at_least(
        parser,
        test_cap=(args.test_cap, 1),
        train_cap=(args.train_cap, 1),
        bench_cap=(args.bench_cap, 1),
        budget=(args.budget, 10),
    )
    args.deadline = time.perf_counter() + args.budget
    return args


class Log:
    """Lines to the log file and to stdout."""

    def __init__(self, path: Path, echo: bool = True) -> None:
        self.path, self.echo = path, echo
        self.file = path.open("w")

    def __call__(self, text: str) -> None:
        self.file.write(text + "\n")
        self.file.flush()
        if self.echo:
            print(text, flush=True)


def install_wheels(log: Log, dry_run: bool) -> dict[str, str]:
    """Install the wheels carried in ``.whl/`` into ``SITE``; the environment to add."""
    wheels = sorted(glob.glob(str(ROOT / ".whl" / "*.whl")))
    if not wheels:
        log("wheels: no .whl/ folder: array-api-compat and array-api-extra must be installed")
        return {}
    command = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps"]
    command += ["--no-compile", "--no-cache-dir", "--upgrade", "--target", SITE, *wheels]
    log("wheels: " + " ".join(command))
    if not dry_run:
        done = subprocess.run(command, capture_output=True, text=True)
        log(done.stdout + done.stderr)
        if done.returncode:
            log(f"wheels: pip failed ({done.returncode}); going on without them")
            return {}
    return {"PYTHONPATH": SITE}


#: Set by main: the time by which every step must have ended (``--budget``).
DEADLINE = [float("inf")]


def run_step(
    log: Log, label: str, command: list[str], env: dict[str, str], cap: int, dry_run: bool
) -> tuple[int | None, str, float]:
    """(exit status or None if cut off, output, seconds) of one step, logged; its cap is
    cut to what is left of ``--budget``."""
    cap = int(min(cap, DEADLINE[0] - time.perf_counter()))
    shown = " ".join(f"{k}={v}" for k, v in env.items())
    log(f"\n=== {label} (cap {cap} s): {shown} {' '.join(command)}")
    if dry_run:
        return 0, "", 0.0
    if cap < 5:
        log(f"=== {label}: skipped, the --budget is spent")
        return None, "budget spent", 0.0
    start = time.perf_counter()
    try:
        done = subprocess.run(
            command,
            env={**os.environ, **env},
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=cap,
        )
        code, output = done.returncode, done.stdout + done.stderr
    except subprocess.TimeoutExpired as exc:
        code = None
        output = "".join(
            part.decode(errors="replace") if isinstance(part, bytes) else (part or "")
            for part in (exc.stdout, exc.stderr)
        )
    seconds = time.perf_counter() - start
    log(output.rstrip())
    log(f"=== {label}: {'cut off' if code is None else f'exit {code}'} after {seconds:.0f} s")
    return code, output, seconds


def pytest_counts(output: str) -> str:
    """``"P passed, F failed"`` from pytest's last line (what it says, else '?')."""
    counts = dict(
        (word, int(n))
        for n, word in re.findall(r"(\d+) (passed|failed|errors?|skipped)", output[-2000:])
    )
    if not counts:
        return "?"
    failed = counts.get("failed", 0) + counts.get("error", 0) + counts.get("errors", 0)
    text = f"{counts.get('passed', 0)} passed, {failed} failed"
    return text + (f", {counts['skipped']} skipped" if counts.get("skipped") else "")


def check_backend(name: str, args: argparse.Namespace, base_env: dict, log: Log) -> dict:
    env = {**base_env, **BACKEND_ENV[name]}
    row: dict[str, Any] = {"backend": name, "env": BACKEND_ENV[name]}
    probe = "import portaconv; b = portaconv.set_backend(); print('backend', b.name, b.device)"
    code, output, _ = run_step(
        log, f"{name}: start", [sys.executable, "-c", probe], env, 30, args.dry_run
    )
    if code != 0:
        reason = (output.strip().splitlines() or ["cut off"])[-1]
        reason = re.sub(r"^[\w.]+(Error|Exception): ", "", reason)[:90]
        row.update(status=f"unavailable: {reason}", tests="-", train="-", bench="-")
        if code is None:
            row["status"] = "not started: cut off or --budget spent"
        return row
    row["status"] = "dry run" if args.dry_run else "ran"

    tests = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_layers.py"]
    code, output, seconds = run_step(log, f"{name}: tests", tests, env, args.test_cap, args.dry_run)
    row["tests"] = "-" if args.dry_run else pytest_counts(output)
    if code is None:
        row["tests"] += f" (cut off at {args.test_cap} s)"

    out_dir = tempfile.mkdtemp(prefix=f"gpu_check_{name}_")
    train = [sys.executable, "-m", "portaconv", "train", "--dataset", "digits", "--epochs", "1"]
    train += ["--backend", name, "--no-download", "--no-progress", "--out", out_dir]
    code, output, seconds = run_step(
        log, f"{name}: train", train, env, args.train_cap, args.dry_run
    )
    summary_path = Path(out_dir) / "summary.json"
    if args.dry_run:
        row["train"] = "-"
    elif code == 0 and summary_path.is_file():
        summary = json.loads(summary_path.read_text())
        row["accuracy"] = summary.get("test_accuracy")
        row["train_seconds"] = summary.get("train_seconds")
        row["train"] = f"acc {row['accuracy']:.3f}, {row['train_seconds']:.1f} s"
    else:
        row["train"] = "cut off" if code is None else f"failed (exit {code})"
    shutil.rmtree(out_dir, ignore_errors=True)

    report = Path(tempfile.gettempdir()) / f"gpu_check_bench_{name}.json"
    bench = [sys.executable, str(ROOT / "benchmarks" / "train_bench.py"), "--backend", name]
    bench += ["--device", BACKEND_ENV[name].get("PORTACONV_DEVICE", "0")]
    bench += ["--models", "cnn,lenet", "--rounds", "3", "--images", "2048", "--json", str(report)]
    code, output, seconds = run_step(
        log, f"{name}: benchmark", bench, env, args.bench_cap, args.dry_run
    )
    if args.dry_run:
        row["bench"] = "-"
    elif code == 0 and report.is_file():
        results = json.loads(report.read_text())["results"]
        row["bench_ratios"] = {r["model"]: r["median_ratio"] for r in results}
        row["bench"] = ", ".join(f"{m} {v:.2f}x" for m, v in row["bench_ratios"].items())
    else:
        row["bench"] = "cut off" if code is None else f"failed (exit {code})"
    return row


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    DEADLINE[0] = args.deadline
    out = Path(os.environ.get("OUT") or ".")
    out.mkdir(parents=True, exist_ok=True)
    log = Log(out / "gpu_check.log")
    started = time.perf_counter()
    log(f"gpu_check {'(dry run: nothing is run) ' if args.dry_run else ''}in {ROOT}")
    base_env = install_wheels(log, args.dry_run)
    if base_env:
        base_env["PYTHONPATH"] = os.pathsep.join([SITE, str(ROOT)])
    else:
        base_env["PYTHONPATH"] = str(ROOT)
    if os.environ.get("PYTHONPATH"):
        base_env["PYTHONPATH"] += os.pathsep + os.environ["PYTHONPATH"]
    base_env["PYTHONUNBUFFERED"] = "1"
    if not args.dry_run:
        gpu = shutil.which("nvidia-smi")
        if gpu:
            done = subprocess.run([gpu, "-L"], capture_output=True, text=True)
            log(f"GPU: {done.stdout.strip() or done.stderr.strip()}")
        else:
            log("GPU: no nvidia-smi on this machine")
        versions = (
            "import importlib.metadata as m\n"
            "for p in ('torch', 'cupy-cuda13x', 'jax', 'numpy', 'array-api-compat',"
            " 'array-api-extra'):\n"
            "    try: print(p, m.version(p))\n"
            "    except m.PackageNotFoundError: print(p, 'absent')\n"
        )
        run_step(log, "versions", [sys.executable, "-c", versions], base_env, 60, False)
    rows = [check_backend(name, args, base_env, log) for name in args.backends]
    head = ["backend", "status", "tests (test_layers.py)", "digits, 1 epoch", "train_bench"]
    table = [
        [r["backend"], r["status"], r.get("tests", "-"), r.get("train", "-"), r.get("bench", "-")]
        for r in rows
    ]
    widths = [max(len(h), *(len(t[i]) for t in table)) for i, h in enumerate(head)]
    log("\nSummary (train_bench: portaconv's epoch time / PyTorch CUDA's, median of 3 rounds)")
    for cells in [head, ["-" * w for w in widths], *table]:
        log("  ".join(c.ljust(w) for c, w in zip(cells, widths)))
    log(f"total {time.perf_counter() - started:.0f} s; log {log.path}")
    (out / "gpu_check.json").write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
