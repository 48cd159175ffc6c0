"""Measure the row-gather Conv2d prototype against portaconv's Conv2d and torch.

    python benchmarks/prototypes/rowgather_bench.py [--cases SUBSTR,...] [--reps N] [--chunk MiB]

For every case (one stride-1 Conv2d forward + backward on float32 data), four variants:

    portaconv   portaconv.layers.Conv2d (the NumPy backend's current path)
    row1        RowConv2dT, 1 thread, chunk 4 MiB        (rowgather_conv.py beside this file)
    row2        RowConv2dT, 2 threads, chunk 2 MiB
    torch       torch.nn.functional.conv2d + torch.autograd.grad (dL/dA, dL/dW, dL/db)

``--chunk MiB`` sets the chunk size of both RowConv2dT variants. Printed per case: torch's
time, then per variant its time, the ratio to torch, tracemalloc's peak (NumPy allocations of
one forward + backward on a fresh layer; torch's own allocator is not traced, so torch has
none) and the max relative errors of Z, dA, dW, db against torch in float64.

Times are the best of ``--reps`` runs after one warm-up run each, the variants interleaved so
background load falls on all of them. Before timing, each case waits (up to 90 s) for a
1-second window with the machine < 8% busy; "(NOT QUIET)" marks a case that got none.
OPENBLAS_NUM_THREADS and OMP_NUM_THREADS default to 2 (the prototype's two threads), set
them in the environment to change that.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import math
import os
import sys
import time
import tracemalloc
from collections.abc import Callable, Sequence
from pathlib import Path

# Before NumPy and torch load their BLAS / OpenMP: two threads, and idle threads that sleep.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "2")
os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from portaconv.layers import Conv2d  # noqa: E402

HERE = Path(__file__).resolve().parent


def _load_prototype():
    """Import rowgather_conv.py from this file's directory, by path."""
    path = HERE / "rowgather_conv.py"
    spec = importlib.util.spec_from_file_location("rowgather_conv", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


rowgather_conv = _load_prototype()

# name: (N, C_in, C_out, K, image size, padding); stride 1.
CASES = {
    "5x5_p2_16-32_28": (64, 16, 32, 5, 28, 2),
    "lenet1_5x5_p2_1-6_28_N128": (128, 1, 6, 5, 28, 2),
    "lenet1_5x5_p0_1-6_28_N128": (128, 1, 6, 5, 28, 0),
    "lenet2_5x5_p0_6-16_14_N128": (128, 6, 16, 5, 14, 0),
    "lenet2_5x5_p0_6-16_12_N128": (128, 6, 16, 5, 12, 0),
    "3x3_p1_32-64_14": (64, 32, 64, 3, 14, 1),
    "3x3_p1_128-128_14": (64, 128, 128, 3, 14, 1),
}

Run = Callable[[], tuple]


def busy(dt: float = 1.0) -> float:
    """Fraction of the machine's CPU time spent busy over ``dt`` s (0 without /proc/stat)."""

    def read() -> tuple[int, int]:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return sum(v) - v[3] - v[4], sum(v)  # busy = all but idle and iowait

    try:
        b0, t0 = read()
        time.sleep(dt)
        b1, t1 = read()
    except OSError:
        return 0.0
    return (b1 - b0) / max(1, t1 - t0)


def wait_quiet(limit: float = 90) -> bool:
    """Wait up to ``limit`` s for a 1-second window with the machine < 8% busy."""
    start = time.time()
    while time.time() - start < limit:
        if busy() < 0.08:
            return True
    return False


def best_times(fns: Sequence[Run], reps: int) -> list[float]:
    """Best of ``reps`` interleaved runs of each function, after one warm-up run each."""
    for f in fns:
        f()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(reps):
        for f, t in zip(fns, times):
            s = time.perf_counter()
            f()
            t.append(time.perf_counter() - s)
    return [min(t) for t in times]


def relerr(a, b) -> float:
    """max |a - b| / max |b|, in float64."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def peak_mib(f: Run) -> float:
    """tracemalloc's peak over one call of f, MiB."""
    gc.collect()
    tracemalloc.start()
    f()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak / 2**20


def layer_runner(make_layer: Callable[[], object], A: np.ndarray, dZ: np.ndarray) -> Run:
    """forward(A) + backward(dZ) on one layer from make_layer(): (Z, dA, dW, db)."""
    layer = make_layer()

    def run():
        Z = layer.forward(A)
        dA = layer.backward(dZ)
        return Z, dA, layer.dLdW, layer.dLdb

    return run


def bench_case(name: str, case: tuple, reps: int, chunk_mib: float | None, rng) -> None:
    N, Ci, Co, K, S, p = case
    Ho = S + 2 * p - K + 1
    bound = 1 / math.sqrt(Ci * K * K)
    W = rng.uniform(-bound, bound, (Co, Ci, K, K)).astype(np.float32)
    b = rng.uniform(-bound, bound, Co).astype(np.float32)
    A = rng.standard_normal((N, Ci, S, S), dtype=np.float32)
    dZ = rng.standard_normal((N, Co, Ho, Ho), dtype=np.float32)

    # float64 reference for the errors
    A64, W64, b64 = (torch.from_numpy(x.astype(np.float64)).requires_grad_(True) for x in (A, W, b))
    Z64 = F.conv2d(A64, W64, b64, padding=p)
    grads64 = torch.autograd.grad(Z64, (A64, W64, b64), torch.from_numpy(dZ.astype(np.float64)))
    ref64 = [Z64.detach().numpy(), *(g.numpy() for g in grads64)]

    At, Wt, bt = (torch.from_numpy(x.copy()).requires_grad_(True) for x in (A, W, b))
    dZt = torch.from_numpy(dZ.copy())

    def run_torch():
        Z = F.conv2d(At, Wt, bt, padding=p)
        return (Z.detach(), *torch.autograd.grad(Z, (At, Wt, bt), dZt))

    def chunk_bytes(default_mib: float) -> int:
        return int((default_mib if chunk_mib is None else chunk_mib) * 2**20)

    makers: dict[str, Callable[[], object]] = {
        "portaconv": lambda: Conv2d(
            Ci, Co, K, 1, p, weight_init_fn=lambda *_: W, bias_init_fn=lambda *_: b
        ),
        "row1": lambda: rowgather_conv.RowConv2dT(W, b, p, chunk_bytes=chunk_bytes(4), threads=1),
        "row2": lambda: rowgather_conv.RowConv2dT(W, b, p, chunk_bytes=chunk_bytes(2), threads=2),
    }
    fns: dict[str, Run] = {k: layer_runner(m, A, dZ) for k, m in makers.items()}
    fns["torch"] = run_torch

    errs = {}
    for k, f in fns.items():
        out = f()
        errs[k] = [relerr(o, r) for o, r in zip(out, ref64)]
    # peak memory of a first call on a fresh layer (its buffers included)
    mem = {k: peak_mib(layer_runner(m, A, dZ)) for k, m in makers.items()}

    names = list(fns)
    quiet = wait_quiet()
    times = dict(zip(names, best_times([fns[k] for k in names], reps)))
    tt = times["torch"]
    flag = "" if quiet else "(NOT QUIET) "
    print(
        f"== {flag}{name} N={N} Ci={Ci} Co={Co} K={K} S={S} p={p}  torch {tt * 1e3:.2f} ms",
        flush=True,
    )
    for k in makers:
        t, e = times[k], errs[k]
        print(
            f"  {k:10s} {t * 1e3:8.2f} ms  ratio {t / tt:5.2f}  mem {mem[k]:6.1f} MiB  "
            f"err Z {e[0]:.1e} dA {e[1]:.1e} dW {e[2]:.1e} db {e[3]:.1e}",
            flush=True,
        )


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", default="", help="comma-separated substrings of case names")
    ap.add_argument("--reps", type=int, default=7, help="timed runs per variant (best kept)")
    ap.add_argument(
        "--chunk",
        type=float,
        default=None,
        help="RowConv2dT chunk size in MiB (default: 4 for 1 thread, 2 for 2 threads)",
    )
    args = ap.parse_args(argv)
    wanted = [c for c in args.cases.split(",") if c]
    selected = {n: c for n, c in CASES.items() if not wanted or any(w in n for w in wanted)}
    if not selected:
        ap.error(f"no case matches {args.cases!r}; cases: {', '.join(CASES)}")
    if not rowgather_conv.blas_thread_control():
        print("note: OpenBLAS thread control not found: row2 runs its chunks sequentially")
    rng = np.random.default_rng(0)
    for name, case in selected.items():
        bench_case(name, case, args.reps, args.chunk, rng)
    return 0


if __name__ == "__main__":
    sys.exit(main())
