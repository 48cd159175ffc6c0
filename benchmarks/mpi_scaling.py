"""Data-parallel scaling on this machine: the zoo ``cnn`` trained on 1 and on N MPI ranks.

    python benchmarks/mpi_scaling.py                  # 1 against 2 ranks, 5 paired rounds
    python benchmarks/mpi_scaling.py --ranks 2 --rounds 7 --steps 20 --json out.json

Each round launches ``mpiexec -n 1`` and ``mpiexec -n N`` one after the other (the order
alternates between rounds), each rank with one thread, on the same synthetic 28x28 data:
``Trainer.fit`` with Adam, global batch 128, as ``portaconv train`` runs it. Reported per
rank count: images/s of the timed epoch (after a warm-up epoch), the median over rounds and
its spread; the scaling efficiency ``(images/s on N) / (N x images/s on 1)``; the bytes
all-reduced per step and the measured time of that all-reduce; and a cost model from those
figures (see ``cost_model``), whose assumptions are printed with it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import harness

HERE = Path(__file__).resolve()
MPI_ENV = {
    "OMPI_ALLOW_RUN_AS_ROOT": "1",
    "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
    "PORTACONV_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
}


def worker(steps: int, batch: int, model_name: str) -> None:
    """One rank's part (run under mpiexec): warm-up epoch, timed epoch, all-reduce timing."""
    import numpy as np

    from portaconv import manual_seed
    from portaconv.backend import to_numpy
    from portaconv.data import DataLoader
    from portaconv.distributed import world
    from portaconv.models import build_model
    from portaconv.optim import Adam
    from portaconv.train import Trainer

    comm = world()
    rank, size = (0, 1) if comm is None else (comm.rank, comm.size)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((steps * batch, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, steps * batch)
    manual_seed(0)
    model = build_model(model_name, (1, 28, 28), 10)
    trainer = Trainer(model, Adam(model, 1e-3), progress=False, comm=comm, log=lambda _: None)
    loader = DataLoader(X, y, batch_size=batch, shuffle=True, rank=rank, world_size=size)
    trainer.fit(loader, epochs=2)  # epoch 1 warms up
    record = trainer.history[-1]
    gradients = model.gradients()
    bytes_per_step = sum(to_numpy(g).nbytes for g in gradients.values())
    allreduce_s = None
    if comm is not None:
        repeats = 20
        comm.barrier()
        start = time.perf_counter()
        for _ in range(repeats):
            comm.allreduce_gradients(model, batch // size)
        allreduce_s = comm.allreduce_max((time.perf_counter() - start) / repeats)
    if rank == 0:
        print(
            json.dumps(
                {
                    "ranks": size,
                    "images_per_second": record["images_per_second"],
                    "step_seconds": record["seconds"] / steps,
                    "bytes_per_step": bytes_per_step,
                    "allreduce_seconds": allreduce_s,
                }
            )
        )


def launch(ranks: int, steps: int, batch: int, model: str) -> dict:
    mpiexec = Path(sys.executable).parent / "mpiexec"
    command = [str(mpiexec if mpiexec.exists() else "mpiexec"), "--oversubscribe"]
    command += ["-n", str(ranks), sys.executable, str(HERE), "--worker"]
    command += ["--steps", str(steps), "--batch", str(batch), "--model", model]
    env = {**os.environ, **MPI_ENV}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    if result.returncode != 0:
        raise SystemExit(f"mpi_scaling: {' '.join(command)} failed:\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def cost_model(step_s: float, bytes_per_step: int) -> list[dict]:
    """Ring all-reduce time ``2 (N-1)/N x bytes / bandwidth + 2 (N-1) x latency`` against
    the compute time of one step, for data parallelism with the global batch fixed (each of
    N workers computes 1/N of it). Assumptions, stated, not measured here: the per-worker
    compute time shrinks as 1/N (no fixed per-step overhead), the all-reduce does not
    overlap with compute (portaconv reduces after backward), and the bandwidths and
    latencies below (nominal figures of the links)."""
    links = [
        ("8 GPUs, NVLink (~300 GB/s per GPU in a ring, ~5 us/hop)", 8, 300e9, 5e-6),
        ("8 nodes, 100 Gb/s Ethernet (~10 GB/s, ~20 us/hop)", 8, 10e9, 20e-6),
        ("32 nodes, 100 Gb/s Ethernet", 32, 10e9, 20e-6),
        ("8 nodes, 10 Gb/s Ethernet (~1 GB/s, ~50 us/hop)", 8, 1e9, 50e-6),
    ]
    rows = []
    for name, n, bandwidth, latency in links:
        comm_s = 2 * (n - 1) / n * bytes_per_step / bandwidth + 2 * (n - 1) * latency
        for speedup in (1, 100):  # the worker as fast as this CPU, or 100x faster (a GPU)
            compute_s = step_s / speedup / n
            rows.append(
                {
                    "setting": name,
                    "ranks": n,
                    "worker_speed": f"{speedup}x this CPU core",
                    "compute_ms": 1e3 * compute_s,
                    "allreduce_ms": 1e3 * comm_s,
                    "efficiency": compute_s / (compute_s + comm_s),
                }
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20, help="training steps per epoch")
    parser.add_argument("--batch", type=int, default=128, help="the global batch")
    parser.add_argument("--model", default="cnn")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--quick", action="store_true", help="1 round of 2 steps (smoke test)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.steps, args.batch = 1, 2, 16
    harness.at_least(parser, ranks=(args.ranks, 2), rounds=(args.rounds, 1), steps=(args.steps, 1))
    if args.model not in harness.MODELS:
        parser.error(f"--model: choose from {', '.join(harness.MODELS)}")
    if args.batch % args.ranks:
        parser.error(f"--batch {args.batch} does not split evenly over {args.ranks} ranks")
    if args.worker:
        worker(args.steps, args.batch, args.model)
        return
    runs: dict[int, list[dict]] = {1: [], args.ranks: []}
    for i in range(args.rounds):
        order = (1, args.ranks) if i % 2 == 0 else (args.ranks, 1)
        for ranks in order:
            runs[ranks].append(launch(ranks, args.steps, args.batch, args.model))
    speed = {r: [run["images_per_second"] for run in runs[r]] for r in runs}
    ratios = [b / (args.ranks * a) for a, b in zip(speed[1], speed[args.ranks], strict=True)]
    one = runs[1][0]
    many = runs[args.ranks]
    allreduce = statistics.median(run["allreduce_seconds"] for run in many)
    step_one = statistics.median(run["step_seconds"] for run in runs[1])
    result = {
        "model": args.model,
        "global_batch": args.batch,
        "ranks": args.ranks,
        "rounds": args.rounds,
        "images_per_second": {
            str(r): {"median": statistics.median(v), "min": min(v), "max": max(v)}
            for r, v in speed.items()
        },
        "efficiency": {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)},
        "bytes_per_step": one["bytes_per_step"],
        "allreduce_ms": 1e3 * allreduce,
        "allreduce_GB_per_s": one["bytes_per_step"] / allreduce / 1e9,
        "step_ms_one_rank": 1e3 * step_one,
        "cost_model": cost_model(step_one, one["bytes_per_step"]),
    }
    ips = result["images_per_second"]
    print(harness.header(harness.machine_info()))
    print(f"zoo {args.model}, global batch {args.batch}, one thread a rank, {args.rounds} rounds")
    for r in speed:
        s = ips[str(r)]
        print(f"  {r} rank(s): {s['median']:.0f} img/s (range {s['min']:.0f}-{s['max']:.0f})")
    e = result["efficiency"]
    print(
        f"  scaling efficiency on {args.ranks}: {e['median']:.2f} ({e['min']:.2f}-{e['max']:.2f})"
    )
    print(
        f"  all-reduced per step: {result['bytes_per_step'] / 1e6:.2f} MB in "
        f"{result['allreduce_ms']:.2f} ms ({result['allreduce_GB_per_s']:.2f} GB/s, "
        f"{args.ranks} ranks, shared memory); one rank's step: {result['step_ms_one_rank']:.1f} ms"
    )
    print("cost model (ring all-reduce, assumptions in cost_model's docstring):")
    for row in result["cost_model"]:
        print(
            f"  {row['setting']}, worker {row['worker_speed']}: compute "
            f"{row['compute_ms']:.2f} ms, all-reduce {row['allreduce_ms']:.2f} ms, "
            f"efficiency {row['efficiency']:.2f}"
        )
    harness.write_json(args.json, {"machine": harness.machine_info(), **result})


if __name__ == "__main__":
    main()
