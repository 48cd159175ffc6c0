"""Training epochs as users run them: portaconv's ``Trainer.fit`` against the same network in
PyTorch, or against another version of portaconv.

    python benchmarks/train_bench.py [--models cnn,lenet,mlp,resnet,mobilenet] [--rounds 7]
                                     [--images 4096] [--batch-size 128] [--threads T]
                                     [--busy N] [--backend numpy] [--baseline PATH] [--profile]
                                     [--json FILE] [--default-malloc] [--quick]

Each zoo network is trained as ``portaconv train`` trains it (``build_model``, a shuffling
``DataLoader``, ``Trainer.fit``, Adam) and, from the same initial weights, in a plain PyTorch
loop (``harness.torch_twin``, ``torch.optim.Adam``) on the same images, batch size and
threads, in one process. One round is one epoch of each side, the side that starts it
rotating; the first round is a warm-up; before each timed epoch the process sleeps
``SETTLE_S`` so that the other library's idle threads have stopped spinning. Reported per
network: the median of the per-round time ratios with its spread (lowest, highest), each
side's images per second and the page faults per epoch (a slowdown from the allocator
shows there). glibc keeps freed memory (``harness.steady_allocator``; ``--default-malloc``
leaves it as it starts).

``--baseline PATH`` compares two versions of portaconv in the same run: PATH is a checkout of
the other version (``git worktree add /tmp/base c734678``; its ``portaconv`` package is
imported from PATH). Each version runs in a worker process of its own (this script with
``--worker``, ``PYTHONPATH`` naming the version), both alive for the whole run and driven in
paired rounds from here: the current version's epoch, the baseline's, and PyTorch's (in the
current version's worker), the order rotating, each timed inside its worker. Reported:
current / baseline with its spread, and each version against PyTorch.

``--profile`` shows where a step's time goes instead: every layer's ``forward``/``backward``
and the optimizer's ``step`` wrapped with a clock inside ``Trainer.fit`` (a fused step of
the execution plan that runs its own passes, BatchNorm + ReLU on NumPy, counts in the layer
whose method it calls, or nowhere), in ms per step (median over ``--rounds`` epochs), and
PyTorch's epoch by aten operation (``torch.profiler``, self CPU time).

``--busy N`` runs N processes spinning on the CPU beside the measurement: how portaconv
(and its torch backend, with ``--backend torch``) behaves on a loaded machine.
Data: the first ``--images`` Fashion-MNIST images where the IDX files are found
(``--data-dir``), else seeded random 28x28 images.
"""

from __future__ import annotations

import argparse
import collections
import importlib.util
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import harness

#: Seconds of pause before each timed epoch: a library's idle worker threads spin for a
#: while after its last parallel call (OpenBLAS's ~0.1 s) and would slow the next epoch.
SETTLE_S = 0.3
HERE = Path(__file__).resolve()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(harness.MODELS), help="zoo networks")
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds (after a warm-up)")
    parser.add_argument("--images", type=int, default=4096, help="images per epoch")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--data-dir", help="where the Fashion-MNIST IDX files are")
    parser.add_argument("--threads", type=int, help="threads for both (default: all)")
    parser.add_argument("--busy", type=int, default=0, help="CPU-spinning processes beside it")
    parser.add_argument("--backend", choices=harness.BACKENDS, default="numpy")
    parser.add_argument(
        "--device", help="portaconv's device (cuda, 0 for cupy, gpu for jax); PyTorch's mirrors it"
    )
    parser.add_argument("--baseline", metavar="PATH", help="a checkout of the other version")
    parser.add_argument("--profile", action="store_true", help="time each layer in the step")
    parser.add_argument("--json", metavar="FILE", help="write every number here")
    parser.add_argument("--default-malloc", action="store_true", help="leave glibc's malloc")
    parser.add_argument("--quick", action="store_true", help="2 rounds of 256 images (smoke)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.settle = 0.0 if args.quick else SETTLE_S  # no pauses in the smoke test
    if args.quick:
        args.rounds, args.images = 2, 256
    args.models = harness.comma_list(parser, "--models", args.models, harness.MODELS)
    harness.at_least(
        parser,
        rounds=(args.rounds, 1),
        batch_size=(args.batch_size, 2),
        images=(args.images, args.batch_size),
        threads=(args.threads, 1),
        busy=(args.busy, 0),
    )
    if args.baseline is not None:
        if args.profile:
            parser.error("--profile times one version: it does not take --baseline")
        if not (Path(args.baseline) / "portaconv" / "__init__.py").is_file():
            parser.error(f"--baseline: {args.baseline} holds no portaconv/__init__.py")
    return args


# ----------------------------------------------------------------------------- one epoch


def make_pair(name: str, X: Any, y: Any, args: argparse.Namespace) -> tuple[Any, Any]:
    """(one portaconv epoch, one PyTorch epoch) as callables, each returning its mean loss
    (read on the host: the device has finished); the first carries the portaconv trainer
    (for ``--profile``). PyTorch runs on the device that mirrors portaconv's."""
    import torch

    import portaconv
    from portaconv.data import DataLoader
    from portaconv.models import build_model
    from portaconv.optim import Adam
    from portaconv.train import Trainer

    batch_size = args.batch_size
    device = harness.make_context(args.backend, args.device).torch_device
    portaconv.manual_seed(0)
    model = build_model(name, X.shape[1:], 10)
    trainer = Trainer(model, Adam(model, lr=harness.LR[name]), progress=False, log=lambda _: None)
    loader = DataLoader(X, y, batch_size=batch_size, shuffle=True, seed=0)

    def portaconv_epoch() -> float:
        return trainer.fit(loader, epochs=trainer.epoch + 1)[-1]["train_loss"]

    net = harness.torch_twin(model).to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr=harness.LR[name])
    X_t, y_t = torch.from_numpy(X).to(device), torch.from_numpy(y).to(device)
    generator = torch.Generator().manual_seed(0)

    def torch_epoch() -> float:
        net.train()
        total, seen = 0.0, 0
        order = torch.randperm(len(X_t), generator=generator).to(device)
        for start in range(0, len(order), batch_size):
            index = order[start : start + batch_size]
            optimizer.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(net(X_t[index]), y_t[index])
            loss.backward()
            optimizer.step()
            total += loss.item() * len(index)
            seen += len(index)
        return total / seen

    portaconv_epoch.trainer = trainer  # type: ignore[attr-defined]
    return portaconv_epoch, torch_epoch


def timed_epoch(epoch: Any) -> dict[str, float]:
    """Seconds, mean loss and page faults of one ``epoch()``."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    start = time.perf_counter()
    loss = epoch()
    seconds = time.perf_counter() - start
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    return {"seconds": seconds, "loss": loss, "faults": faults}


class Side:
    """A side of :func:`harness.paired_rounds` that keeps each epoch's loss and faults."""

    def __init__(self, run: Any) -> None:
        self.run, self.records = run, []

    def __call__(self) -> float:
        record = self.run()
        self.records.append(record)
        return record["seconds"]

    def median(self, key: str, rounds: int) -> float:
        return statistics.median(r[key] for r in self.records[-rounds:])


# ----------------------------------------------------------------------------- workers


def worker_main(args: argparse.Namespace) -> int:
    """Answer the parent's JSON lines on stdin: ``setup`` a model, ``run`` one epoch of a
    side, ``quit``. Whatever a library prints goes to stderr."""
    import portaconv

    X, y, _ = harness.load_images(args.images, args.data_dir)
    reply = sys.stdout
    reply.write(json.dumps({"portaconv": os.path.dirname(portaconv.__file__)}) + "\n")
    reply.flush()
    epochs: dict[str, Any] = {}
    for line in sys.stdin:
        request = json.loads(line)
        with harness.quiet_stdout():
            if request["cmd"] == "setup":
                pc, pt = make_pair(request["model"], X, y, args)
                epochs = {"portaconv": pc, "torch": pt}
                answer: dict[str, Any] = {"ok": True}
            elif request["cmd"] == "run":
                answer = timed_epoch(epochs[request["side"]])
            else:
                return 0
        reply.write(json.dumps(answer) + "\n")
        reply.flush()
    return 0


class Worker:
    """This script with ``--worker`` in a process of its own, importing portaconv from
    ``root`` (first on ``PYTHONPATH``)."""

    def __init__(self, root: str, args: argparse.Namespace) -> None:
        command = [sys.executable, str(HERE), "--worker", "--backend", args.backend]
        command += ["--images", str(args.images), "--batch-size", str(args.batch_size)]
        command += ["--threads", str(args.threads_used)]
        command += ["--data-dir", args.data_dir] if args.data_dir else []
        command += ["--device", args.device] if args.device else []
        command += ["--default-malloc"] if args.default_malloc else []
        path = os.pathsep.join([root, *filter(None, [os.environ.get("PYTHONPATH")])])
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": path},
        )
        self.portaconv = self._read()["portaconv"]
        if not os.path.realpath(self.portaconv).startswith(os.path.realpath(root)):
            self.close()
            raise SystemExit(f"train_bench: a worker for {root} imported {self.portaconv}")

    def _read(self) -> dict[str, Any]:
        line = self.process.stdout.readline()
        if not line:
            raise SystemExit(f"train_bench: the worker for {self.portaconv!r} stopped")
        return json.loads(line)

    def ask(self, **request: Any) -> dict[str, Any]:
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        return self._read()

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                self.process.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
                self.process.stdin.close()
                self.process.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()


def current_root() -> str:
    """The folder holding the portaconv this process would import (not importing it)."""
    spec = importlib.util.find_spec("portaconv")
    if spec is None or spec.origin is None:
        raise SystemExit("train_bench: portaconv is not importable")
    return os.path.dirname(os.path.dirname(spec.origin))


# ----------------------------------------------------------------------------- modes


def compare_torch(args: argparse.Namespace, X: Any, y: Any) -> list[dict[str, Any]]:
    results = []
    for name in args.models:
        pc_epoch, torch_epoch = make_pair(name, X, y, args)
        sides = {
            "portaconv": Side(lambda e=pc_epoch: timed_epoch(e)),
            "torch": Side(lambda e=torch_epoch: timed_epoch(e)),
        }
        timing = harness.paired_rounds(sides, args.rounds, settle=args.settle)
        stats = harness.ratio_stats(timing.times["portaconv"], timing.times["torch"])
        result = summary(name, stats, sides, args)
        results.append(result)
        print(
            f"{name:6s} portaconv/torch {stats['median']:.2f}x (spread {stats['min']:.2f}-"
            f"{stats['max']:.2f}, {args.rounds} rounds)  portaconv "
            f"{result['images_per_s']['portaconv']:.0f} img/s, torch "
            f"{result['images_per_s']['torch']:.0f} img/s; page faults per epoch "
            f"{result['page_faults_per_epoch']['portaconv']:,.0f} / "
            f"{result['page_faults_per_epoch']['torch']:,.0f}",
            flush=True,
        )
    return results


def compare_baseline(args: argparse.Namespace) -> list[dict[str, Any]]:
    workers = {"current": Worker(current_root(), args), "baseline": Worker(args.baseline, args)}
    print(f"current: {workers['current'].portaconv}\nbaseline: {workers['baseline'].portaconv}")
    results = []
    try:
        for name in args.models:
            for worker in workers.values():
                worker.ask(cmd="setup", model=name)
            sides = {
                "current": Side(lambda: workers["current"].ask(cmd="run", side="portaconv")),
                "baseline": Side(lambda: workers["baseline"].ask(cmd="run", side="portaconv")),
                "torch": Side(lambda: workers["current"].ask(cmd="run", side="torch")),
            }
            timing = harness.paired_rounds(sides, args.rounds, settle=args.settle)
            t = timing.times
            stats = harness.ratio_stats(t["current"], t["baseline"])
            result = summary(name, stats, sides, args)
            result["current_to_torch"] = harness.ratio_stats(t["current"], t["torch"])["median"]
            result["baseline_to_torch"] = harness.ratio_stats(t["baseline"], t["torch"])["median"]
            results.append(result)
            print(
                f"{name:6s} current/baseline {stats['median']:.2f}x (spread {stats['min']:.2f}-"
                f"{stats['max']:.2f}, {args.rounds} rounds)  current/torch "
                f"{result['current_to_torch']:.2f}x, baseline/torch "
                f"{result['baseline_to_torch']:.2f}x; img/s "
                + ", ".join(f"{k} {v:.0f}" for k, v in result["images_per_s"].items()),
                flush=True,
            )
    finally:
        for worker in workers.values():
            worker.close()
    return results


def summary(name: str, stats: dict, sides: dict[str, Side], args: argparse.Namespace) -> dict:
    return {
        "model": name,
        "median_ratio": stats["median"],
        "min_ratio": stats["min"],
        "max_ratio": stats["max"],
        "ratios": stats["ratios"],
        "images_per_s": {
            k: args.images / s.median("seconds", args.rounds) for k, s in sides.items()
        },
        "page_faults_per_epoch": {k: s.median("faults", args.rounds) for k, s in sides.items()},
        "last_loss": {k: s.records[-1]["loss"] for k, s in sides.items()},
    }


WRAPPED = ("forward", "backward")


class Clock:
    """Seconds per label; a wrapped layer call made inside another (a block's ``forward``
    calling its layers') counts in the outer one only."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = collections.defaultdict(float)
        self.depth = 0

    def wrap(self, obj: Any, method: str, label: str, layer: bool = True) -> None:
        fn = getattr(obj, method)

        def timed(*args: Any, **kwargs: Any) -> Any:
            if layer and self.depth:
                return fn(*args, **kwargs)
            self.depth += layer
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[label] += time.perf_counter() - start
                self.depth -= layer

        setattr(obj, method, timed)


def profile(args: argparse.Namespace, X: Any, y: Any) -> list[dict[str, Any]]:
    """ms per step of each layer call and of the optimizer inside ``Trainer.fit`` (a call
    made inside another wrapped call of a layer counts in the outer one), and of PyTorch's
    aten operations."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    steps = -(-args.images // args.batch_size)
    results = []
    for name in args.models:
        pc_epoch, torch_epoch = make_pair(name, X, y, args)
        trainer = pc_epoch.trainer
        clock = Clock()
        labels = []
        for i, layer in enumerate(trainer.model):
            # a block (Residual) on one line, by its class: its repr spans lines
            shown = repr(layer) if "\n" not in repr(layer) else type(layer).__name__
            for method in WRAPPED:
                if callable(getattr(layer, method, None)):
                    labels.append(f"{method:<18} [{i}] {shown}")
                    clock.wrap(layer, method, labels[-1])
        clock.wrap(trainer.optimizer, "step", "optimizer step", layer=False)
        pc_epoch(), torch_epoch()  # warm-up
        pc_rows: list[dict[str, float]] = []
        torch_rows: list[dict[str, float]] = []
        for _ in range(args.rounds):
            clock.seconds.clear()
            time.sleep(args.settle)
            wall = timed_epoch(pc_epoch)["seconds"]
            row = {label: 1e3 * s / steps for label, s in clock.seconds.items()}
            row["rest (loss, loader, bookkeeping)"] = 1e3 * wall / steps - sum(row.values())
            row["whole epoch / steps"] = 1e3 * wall / steps
            pc_rows.append(row)
            time.sleep(args.settle)
            with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
                wall = timed_epoch(torch_epoch)["seconds"]
            row = {e.key: e.self_cpu_time_total / 1e3 / steps for e in prof.key_averages()}
            row["whole epoch / steps"] = 1e3 * wall / steps
            torch_rows.append(row)
        tables = {}
        for side, rows in (("portaconv", pc_rows), ("torch", torch_rows)):
            keys = {k for r in rows for k in r}
            tables[side] = {k: statistics.median(r.get(k, 0.0) for r in rows) for k in keys}
        top = sorted(
            (k for k in tables["torch"] if k != "whole epoch / steps"),
            key=tables["torch"].get,
            reverse=True,
        )[:12]
        pc_order = [k for k in labels if k in tables["portaconv"]] + ["optimizer step"]
        pc_order += ["rest (loss, loader, bookkeeping)", "whole epoch / steps"]
        harness.print_table(
            f"{name}: portaconv, ms per step (median of {args.rounds} epochs)",
            ["call", "ms"],
            [[k, f"{tables['portaconv'].get(k, 0.0):.3f}"] for k in pc_order],
        )
        harness.print_table(
            f"{name}: PyTorch, ms per step by aten operation (self CPU)",
            ["operation", "ms"],
            [[k, f"{tables['torch'][k]:.3f}"] for k in [*top, "whole epoch / steps"]],
        )
        results.append(
            {"model": name, "portaconv_ms": tables["portaconv"], "torch_ms": tables["torch"]}
        )
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.threads_used = harness.set_threads(args.threads, blas_idle_sleep=False)
    allocator = "default" if args.default_malloc else harness.steady_allocator()
    if args.worker:
        return worker_main(args)
    if args.baseline is None:
        harness.set_torch_threads(args.threads_used)
        X, y, source = harness.load_images(args.images, args.data_dir)
    else:
        source = "as harness.load_images, in each worker"
    busy = harness.start_busy(args.busy)
    try:
        if args.baseline is not None:
            results = compare_baseline(args)
        elif args.profile:
            results = profile(args, X, y)
        else:
            results = compare_torch(args, X, y)
    finally:
        harness.stop_busy(busy)
    info = harness.machine_info(
        data=source,
        images=args.images,
        batch_size=args.batch_size,
        rounds=args.rounds,
        busy_processes=args.busy,
        backend=args.backend,
        device=args.device,
        baseline=args.baseline,
        allocator=allocator,
    )
    print(
        f"data: {source}, {args.images} images, batch {args.batch_size}; busy: {args.busy}; "
        f"allocator: {allocator}"
    )
    print(harness.header(info))
    harness.write_json(args.json, {**info, "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
