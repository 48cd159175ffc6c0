"""Each layer's forward + backward in portaconv against the same computation in PyTorch.

    python benchmarks/run.py [--backend numpy|torch|cupy|jax|array_api_strict] [--device DEV]
                             [--repeats 9] [--threads T] [--cases REGEX] [--json FILE] [--quick]

Every case (``harness.layer_cases``, plus LeNet-5's training step) runs portaconv's explicit
``forward``/``backward`` on the chosen backend and ``torch.nn.functional`` with autograd on
the mirroring torch device, on the same float32 data, with the same threads, in one process:
``--repeats`` paired rounds after a warm-up (``harness.paired_rounds``), each timed run after
a 20 ms pause and 50 ms of untimed runs of the same side. A 2048 x 2048 SGEMM in the
backend's own library takes turns with them, for the ``%SGEMM`` column. Reported: each
side's best time, ``pc/torch`` (the median of the per-round ratios) with its quartiles,
portaconv's GFLOP/s, peak memory of one step, the largest relative difference between the
two sides' results, and ``wait%`` (how long this process waited for a CPU: other work).

FLOPs: convolution forward = 2 N C_out C_in K^d L_out, forward + backward = 3x that (2x
without dL/dA); a transposed convolution counts its input grid; pooling has no rate.
"""

from __future__ import annotations

import argparse
import gc
import os
import re
import sys
import time
import tracemalloc
from typing import Any

import harness

SETTLE_S = 0.02  # pause before each timed run: no thread of the other library spinning
WARM_S = 0.05  # then untimed runs of the same side: its threads and caches warm
NOISY_WAIT = 0.10  # wait% above which a case is listed as noisy


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--backend",
        choices=harness.BACKENDS,
        default=os.environ.get("PORTACONV_BACKEND", "").strip() or "numpy",
        help="portaconv backend (default: $PORTACONV_BACKEND or numpy)",
    )
    parser.add_argument(
        "--device",
        default=os.environ.get("PORTACONV_DEVICE", "").strip() or None,
        help="device as the backend spells it: cpu, cuda:0 (torch), 0 (cupy)",
    )
    parser.add_argument("--repeats", type=int, default=9, help="timed rounds per case")
    parser.add_argument("--threads", type=int, help="CPU threads for both (default: all)")
    parser.add_argument("--cases", metavar="REGEX", help="only cases whose name matches")
    parser.add_argument("--json", metavar="FILE", help="write every number here")
    parser.add_argument("--quick", action="store_true", help="tiny cases, 2 rounds (smoke test)")
    args = parser.parse_args(argv)
    harness.at_least(parser, repeats=(args.repeats, 1), threads=(args.threads, 1))
    if args.quick:
        args.repeats = 2
    return args


def all_cases(quick: bool) -> list[harness.Case]:
    cases = harness.layer_cases(quick) + harness.network_cases(quick)
    if not quick:
        for N in (16, 32, 64, 128):
            name = f"scale_batch_N{N}_3x3_32-64_14x14"
            cases.append(harness.conv_case(name, 2, N, 32, 64, 3, 14, 1, 1, "scaling"))
        for size in (14, 28, 56):
            name = f"scale_size_{size}x{size}_3x3_32-64_N16"
            cases.append(harness.conv_case(name, 2, 16, 32, 64, 3, size, 1, 1, "scaling"))
    return cases


def sgemm_step(ctx: harness.Context, quick: bool) -> tuple[Any, int]:
    """A square float32 matrix product in the backend's own library: (step, n)."""
    import numpy as np

    n = 256 if quick else (8192 if ctx.on_gpu else 2048)
    a, b = np.random.default_rng(1).standard_normal((2, n, n), dtype=np.float32)
    if ctx.name in ("numpy", "array_api_strict"):
        return (lambda: a @ b), n
    xp = ctx.backend.xp
    a, b = ctx.pc(a), ctx.pc(b)
    return (lambda: xp.matmul(a, b)), n


def peak_bytes(ctx: harness.Context, side: str, step: Any) -> tuple[int | None, str]:
    """Peak memory of one ``step()`` above what was allocated before it, and how measured:
    NumPy's buffers by tracemalloc, torch (either side) on CUDA by the caching allocator's
    peak, CuPy by its pool's growth; torch on a CPU is not measured."""
    gc.collect()
    if ctx.on_gpu and (side == "torch" or ctx.name == "torch"):
        import torch

        ctx.sync()
        torch.cuda.reset_peak_memory_stats(ctx.torch_device)
        before = torch.cuda.memory_allocated(ctx.torch_device)
        step()
        ctx.sync()
        return torch.cuda.max_memory_allocated(ctx.torch_device) - before, "torch.cuda peak"
    if side == "portaconv" and ctx.name == "cupy":
        import cupy

        pool = cupy.get_default_memory_pool()
        ctx.sync()
        pool.free_all_blocks()
        before = pool.total_bytes()
        step()
        ctx.sync()
        return pool.total_bytes() - before, "CuPy pool growth"
    if side == "portaconv" and ctx.name in ("numpy", "array_api_strict"):
        tracemalloc.start()
        try:
            step()
            return tracemalloc.get_traced_memory()[1], "tracemalloc"
        finally:
            tracemalloc.stop()
    return None, "not measured"


def run_case(
    case: harness.Case, ctx: harness.Context, repeats: int, sgemm: Any, quick: bool = False
) -> dict:
    pair = case.build(ctx)
    sides = {
        "portaconv": harness.timer(pair.portaconv, ctx.sync),
        "torch": harness.timer(pair.torch, ctx.sync),
    }
    if case.flops:
        sides["sgemm"] = harness.timer(sgemm[0], ctx.sync)
    error = harness.max_relative_error(pair.portaconv(), pair.torch()) if pair.compare else None
    pause = {} if quick else {"settle": SETTLE_S, "warm": WARM_S}
    timing = harness.paired_rounds(sides, repeats, **pause)
    pc, pt = timing.times["portaconv"], timing.times["torch"]
    stats = harness.ratio_stats(pc, pt)
    del pair
    memory = {}
    for side in ("portaconv", "torch"):
        step = getattr(case.build(ctx), side)
        step()  # one-time set-up first
        memory[side] = peak_bytes(ctx, side, step)
    gflops = case.flops / min(pc) / 1e9 if case.flops else None
    sgemm_gflops = 2 * sgemm[1] ** 3 / min(timing.times["sgemm"]) / 1e9 if case.flops else None
    return {
        "name": case.name,
        "group": case.group,
        "batch": case.batch,
        "pixels_per_sample": case.pixels,
        "portaconv_s": min(pc),
        "torch_s": min(pt),
        "ratio": stats["median"],
        "ratio_q1": stats["q1"],
        "ratio_q3": stats["q3"],
        "ratios": stats["ratios"],
        "flops": case.flops,
        "portaconv_gflops": gflops,
        "portaconv_pct_sgemm": 100 * gflops / sgemm_gflops if gflops else None,
        "portaconv_peak_bytes": memory["portaconv"][0],
        "torch_peak_bytes": memory["torch"][0],
        "memory_methods": {side: m[1] for side, m in memory.items()},
        "max_rel_error": error,
        "portaconv_runs_s": pc,
        "torch_runs_s": pt,
        "cpu_wait": timing.cpu_wait,
    }


def _cell(value: float | None, spec: str, scale: float = 1.0) -> str:
    return "-" if value is None else format(value * scale, spec)


def print_results(results: list[dict]) -> None:
    head = ["case", "pc ms", "torch ms", "pc/torch", "quartiles", "pc GFLOP/s", "%SGEMM"]
    head += ["pc MiB", "torch MiB", "max rel err", "wait%"]
    titles = {
        "layer": "Single layers: forward + backward",
        "network": "Training step (forward, loss, backward, SGD with momentum)",
        "scaling": "Scaling: Conv2d 3x3 s1 p1 32->64, forward + backward",
    }
    for group, title in titles.items():
        rows = [
            [
                r["name"],
                f"{r['portaconv_s'] * 1e3:.3f}",
                f"{r['torch_s'] * 1e3:.3f}",
                f"{r['ratio']:.2f}",
                f"{r['ratio_q1']:.2f}-{r['ratio_q3']:.2f}",
                _cell(r["portaconv_gflops"], ".1f"),
                _cell(r["portaconv_pct_sgemm"], ".0f"),
                _cell(r["portaconv_peak_bytes"], ".1f", 1 / harness.MIB),
                _cell(r["torch_peak_bytes"], ".1f", 1 / harness.MIB),
                _cell(r["max_rel_error"], ".1e"),
                _cell(r["cpu_wait"], ".0f", 100),
            ]
            for r in results
            if r["group"] == group
        ]
        if rows:
            harness.print_table(title, head, rows)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    ctx = harness.start(args, "run.py")
    if ctx is None:
        return 2
    cases = all_cases(args.quick)
    if args.cases:
        cases = [c for c in cases if re.search(args.cases, c.name)]
        if not cases:
            print(f"benchmarks/run.py: no case matches --cases {args.cases!r}", file=sys.stderr)
            return 2
    info = harness.machine_info(backend=ctx.name, device=str(ctx.backend.device))
    print(harness.header(info))
    print(
        f"portaconv on {ctx.backend!r} against torch on {ctx.torch_device}; {args.repeats} paired "
        f"rounds; pc/torch = median of the per-round ratios (below 1: portaconv faster)"
    )
    started = time.perf_counter()
    sgemm = sgemm_step(ctx, args.quick)
    results = []
    for case in cases:
        results.append(run_case(case, ctx, args.repeats, sgemm, args.quick))
        print(f"  done {case.name}", file=sys.stderr, flush=True)
    print_results(results)
    layers = [r["ratio"] for r in results if r["group"] == "layer"]
    network = [r for r in results if r["group"] == "network"]
    noisy = [r["name"] for r in results if (r["cpu_wait"] or 0) > NOISY_WAIT]
    summary = {
        "geomean_ratio_layers": harness.geometric_mean(layers) if layers else None,
        "max_ratio_layers": max(layers) if layers else None,
        "network_step_ratio": network[0]["ratio"] if network else None,
        "noisy_cases": noisy,
        "elapsed_s": time.perf_counter() - started,
    }
    print()
    if layers:
        print(
            f"geometric mean over {len(layers)} layers: {summary['geomean_ratio_layers']:.2f}, "
            f"worst {summary['max_ratio_layers']:.2f}"
        )
    if network:
        print(f"{network[0]['name']}: {network[0]['ratio']:.2f}")
    if noisy:
        print(f"noisy (wait% > {100 * NOISY_WAIT:.0f}): rerun on a quiet machine: {noisy}")
    harness.write_json(args.json, {"machine": info, "cases": results, "summary": summary})
    return 0


if __name__ == "__main__":
    sys.exit(main())
