"""Operations per training step: the zoo's networks on portaconv's torch backend against the
same networks in plain PyTorch, counted rather than timed.

    python benchmarks/op_count.py [--models cnn,lenet,mlp] [--batch-size 64] [--top 10]
                                  [--json FILE]

On a GPU every dispatched aten operation is at least one kernel launch (5-20 us each), so a
small network's step is bound by how many it makes. One step is what ``Trainer.fit`` does
per batch: forward, ``CrossEntropyLoss``, ``zero_grad``, backward and ``SGD`` with momentum
0.9, through portaconv's own ``Sequential``, loss and optimizer on the torch backend (CPU,
float32). PyTorch's side is the same network (``train_bench.torch_twin``, from portaconv's
weights) with ``torch.nn.functional.cross_entropy``, ``zero_grad(set_to_none=True)``,
autograd and ``torch.optim.SGD``. Both are counted with
``torch.utils._python_dispatch.TorchDispatchMode`` on their third step (the momentum
buffers exist by then: the steady state). A count does not depend on the machine's load, so
it is deterministic for a given torch version, model and batch size.

``--top N`` also lists portaconv's N most frequent operations per network.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from train_bench import MODELS, torch_twin  # noqa: E402

LR, MOMENTUM, WARM_STEPS = 0.01, 0.9, 2


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated zoo names")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--top", type=int, default=0, help="list the N most frequent ops")
    parser.add_argument("--json", metavar="FILE", help="write every number here")
    args = parser.parse_args(argv)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        parser.error(f"--models: unknown {unknown}; choose from {', '.join(MODELS)}")
    if args.batch_size < 2:
        parser.error("--batch-size must be at least 2")
    args.models = models
    return args


def count_ops(step: Any) -> collections.Counter:
    """The aten operations ``step()`` dispatches, by name (autograd's backward included)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Counter(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.ops: collections.Counter = collections.Counter()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops[str(func.overloadpacket.__name__)] += 1
            return func(*args, **(kwargs or {}))

    with Counter() as counter:
        step()
    return counter.ops


def make_steps(name: str, batch_size: int) -> tuple[Any, Any]:
    """(one portaconv step, one plain PyTorch step) for zoo network ``name`` on a fixed
    batch of random 28x28 images (the count does not depend on the pixels)."""
    import torch

    import portaconv
    from portaconv.layers import CrossEntropyLoss
    from portaconv.models import build_model
    from portaconv.optim import SGD

    portaconv.set_backend("torch", dtype="float32")
    portaconv.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    X = torch.rand((batch_size, 1, 28, 28), generator=generator)
    y = torch.randint(0, 10, (batch_size,), generator=generator)

    model = build_model(name, tuple(X.shape[1:]), 10)
    model.train()
    criterion = CrossEntropyLoss()
    optimizer = SGD(model, lr=LR, momentum=MOMENTUM)

    def portaconv_step() -> None:  # Trainer.fit's step
        Z = model.forward(X)
        criterion.forward(Z, y)
        optimizer.zero_grad()
        model.backward(criterion.backward(), input_grad=False)
        optimizer.step()

    net = torch_twin(model)
    net.train()
    torch_optimizer = torch.optim.SGD(net.parameters(), lr=LR, momentum=MOMENTUM)

    def torch_step() -> None:
        torch_optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(net(X), y)
        loss.backward()
        torch_optimizer.step()

    return portaconv_step, torch_step


def step_counts(name: str, batch_size: int) -> tuple[collections.Counter, collections.Counter]:
    """(portaconv's, PyTorch's) operations in one steady-state step of zoo network ``name``."""
    portaconv_step, torch_step = make_steps(name, batch_size)
    for _ in range(WARM_STEPS):
        portaconv_step()
        torch_step()
    return count_ops(portaconv_step), count_ops(torch_step)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    results = []
    print(f"aten operations per training step, batch {args.batch_size}, torch {torch.__version__}")
    print(f"{'model':6s} | {'portaconv':>9s} | {'PyTorch':>7s} | ratio")
    for name in args.models:
        ours, theirs = step_counts(name, args.batch_size)
        total, reference = sum(ours.values()), sum(theirs.values())
        results.append(
            {
                "model": name,
                "portaconv_ops": total,
                "torch_ops": reference,
                "ratio": total / reference,
                "portaconv_by_op": dict(ours.most_common()),
                "torch_by_op": dict(theirs.most_common()),
            }
        )
        print(f"{name:6s} | {total:9d} | {reference:7d} | {total / reference:.2f}x", flush=True)
        if args.top:
            listed = ", ".join(f"{op} {count}" for op, count in ours.most_common(args.top))
            print(f"         portaconv's most frequent: {listed}")
    if args.json:
        info = {
            "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
            "batch_size": args.batch_size,
            "torch_version": torch.__version__,
            "optimizer": f"SGD(lr={LR}, momentum={MOMENTUM})",
            "results": results,
        }
        with open(args.json, "w") as f:
            json.dump(info, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
