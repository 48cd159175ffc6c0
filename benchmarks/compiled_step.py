"""CPU time of one training step, compiled and not: portaconv's step jitted on JAX, compiled
with torch.compile on torch, eager on NumPy, against plain PyTorch; and the compile times.

    python benchmarks/compiled_step.py [--model lenet] [--batch-size 64] [--rounds 7]
                                       [--steps 10] [--sides jax,torch,numpy]
                                       [--torch-compiler inductor] [--json FILE] [--quick]

Each portaconv side is ``Trainer(model, Adam, compile=...)``'s own step (forward, loss,
backward, Adam update) on one fixed batch, the network built from the same seed on each
backend in float32; JAX and torch through ``compile=True`` (``jax.jit``; ``torch.compile``
with ``--torch-compiler``, PORTACONV_TORCH_COMPILER), NumPy eager. Plain PyTorch is the same
network (``harness.torch_twin``, portaconv's initial weights) with autograd and
``torch.optim.Adam``, eager. A side's compile time is the wall time of its first compiled
step (the step before it runs eagerly and creates the optimizer's state); inductor keeps a
cache on disk, so a second run compiles faster: the report says how long it took this time.

One round times ``--steps`` steps of every side, the order of the sides rotating from round
to round, each side's time ending with a read of its last loss (the device has finished);
the first round is a warm-up and is not counted. Reported per side: the median of the
per-round ratios of its time to plain PyTorch's, with their spread (lowest, highest), and
its median time per step.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import time
from typing import Any

import harness

SIDES = ("jax", "torch", "numpy")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="lenet", choices=sorted(harness.LR), help="zoo network")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds (after a warm-up)")
    parser.add_argument("--steps", type=int, default=10, help="steps of each side per round")
    parser.add_argument(
        "--sides",
        default=",".join(SIDES),
        help="portaconv backends to time against plain PyTorch (jax and torch compiled, "
        "numpy eager); those not installed are left out, saying so",
    )
    parser.add_argument(
        "--torch-compiler", default="inductor", help="torch.compile's backend (default inductor)"
    )
    parser.add_argument("--json", metavar="FILE", help="write every number here")
    parser.add_argument("--quick", action="store_true", help="2 rounds of 2 steps (smoke test)")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.steps = 2, 2
    sides = harness.comma_list(parser, "--sides", args.sides, SIDES)
    harness.at_least(
        parser, rounds=(args.rounds, 1), steps=(args.steps, 1), batch_size=(args.batch_size, 2)
    )
    args.sides = sides
    return args


def portaconv_side(backend: str, model_name: str, X: Any, y: Any) -> tuple[Any, float | None]:
    """(one step returning its loss as a Python float, compile seconds or None)."""
    import portaconv
    from portaconv.models import build_model
    from portaconv.optim import Adam
    from portaconv.train import Trainer

    compiled = backend != "numpy"
    with portaconv.use_backend(backend, dtype="float32") as chosen:
        portaconv.manual_seed(0)
        model = build_model(model_name, X.shape[1:], 10)
        lr = harness.LR[model_name]
        trainer = Trainer(model, Adam(model, lr), progress=False, compile=compiled)
        X_b = portaconv.to_backend(X, chosen)
        y_b = chosen.xp.asarray(y, device=chosen.device)
    model.train()

    def eager_step(X: Any, y: Any) -> tuple[Any, None]:  # what Trainer.fit runs per batch
        loss = trainer.criterion.forward(model.forward(X), y)
        trainer.optimizer.zero_grad()
        model.backward(trainer.criterion.backward(), input_grad=False)
        trainer.optimizer.step()
        return loss, None

    step = trainer.compiled_step or eager_step

    def one_step() -> float:
        return float(step(X_b, y_b)[0])

    one_step()  # eager: creates the optimizer's state (and Dropout's stream)
    start = time.perf_counter()
    one_step()  # compiles, where the side compiles
    seconds = time.perf_counter() - start
    return one_step, seconds if compiled else None


def torch_side(model_name: str, X: Any, y: Any) -> Any:
    """Plain PyTorch: the same network and initial weights, autograd, torch.optim.Adam."""
    import torch

    import portaconv
    from portaconv.models import build_model

    with portaconv.use_backend("numpy", dtype="float32"):
        portaconv.manual_seed(0)
        net = harness.torch_twin(build_model(model_name, X.shape[1:], 10))
    optimizer = torch.optim.Adam(net.parameters(), lr=harness.LR[model_name])
    X_t, y_t = torch.from_numpy(X), torch.from_numpy(y)
    net.train()

    def one_step() -> float:
        optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(net(X_t), y_t)
        loss.backward()
        optimizer.step()
        return loss.item()

    return one_step


def available(side: str) -> bool:
    return importlib.util.find_spec(side) is not None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ["PORTACONV_TORCH_COMPILER"] = args.torch_compiler
    import numpy as np

    rng = np.random.default_rng(0)
    X = rng.standard_normal((args.batch_size, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, args.batch_size).astype(np.int64)
    missing = [s for s in args.sides if not available(s)]
    for side in missing:
        print(f"{side}: not installed, left out", flush=True)
    steps: dict[str, Any] = {"pytorch": torch_side(args.model, X, y)}
    compile_seconds: dict[str, float] = {}
    for side in (s for s in args.sides if s not in missing):
        steps[side], seconds = portaconv_side(side, args.model, X, y)
        if seconds is not None:
            compile_seconds[side] = seconds
            print(f"{side}: first compiled step {seconds:.1f} s", flush=True)

    def timed(step: Any) -> float:
        start = time.perf_counter()
        for _ in range(args.steps):
            step()
        return (time.perf_counter() - start) / args.steps

    names = list(steps)
    sides = {name: (lambda step=steps[name]: timed(step)) for name in names}
    times = harness.paired_rounds(sides, args.rounds).times  # a warm-up round first
    results = []
    for name in names:
        ratios = [t / ref for t, ref in zip(times[name], times["pytorch"], strict=True)]
        result = {
            "side": name,
            "compiled": name in compile_seconds,
            "compile_seconds": compile_seconds.get(name),
            "median_step_seconds": statistics.median(times[name]),
            "median_ratio_to_pytorch": statistics.median(ratios),
            "min_ratio": min(ratios),
            "max_ratio": max(ratios),
            "step_seconds": times[name],
        }
        results.append(result)
        kind = "compiled" if result["compiled"] else "eager"
        print(
            f"{name:8s} {kind:8s} {result['median_step_seconds'] * 1e3:8.2f} ms/step  "
            f"/pytorch {result['median_ratio_to_pytorch']:.2f}x (spread "
            f"{result['min_ratio']:.2f}-{result['max_ratio']:.2f}, {args.rounds} rounds)",
            flush=True,
        )
    info = harness.machine_info(
        model=args.model,
        batch_size=args.batch_size,
        rounds=args.rounds,
        steps_per_round=args.steps,
        torch_compiler=args.torch_compiler,
        left_out=missing,
        results=results,
    )
    print(harness.header(info))
    harness.write_json(args.json, info)
    return 0


if __name__ == "__main__":
    sys.exit(main())
