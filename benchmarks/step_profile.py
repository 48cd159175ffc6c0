"""Where a training step's time goes: every layer's forward and backward, timed inside the
``Trainer.fit`` loop that ``portaconv train`` runs.

    python benchmarks/step_profile.py [--model lenet] [--epochs 5] [--images 4096]
                                      [--batch-size 128] [--variant MODULE.NAME=VALUE ...]
                                      [--json FILE] [--quick] [--torch] [--default-malloc]

The zoo network is built and trained as in ``benchmarks/train_bench.py`` (``build_model`` +
``DataLoader(shuffle)`` + ``Trainer.fit`` with Adam, float32, the NumPy backend unless
``PORTACONV_BACKEND`` says otherwise). Each layer's ``forward``/``backward`` (and the fused
``forward_relu``/``backward_relu`` of a BatchNorm followed by a ReLU, ``forward_relu_pool``/
``backward_relu_pool`` of one followed by a ReLU and a max pooling, whose row then holds
the pooling's time too), the optimizer's step and the whole ``Trainer`` step are wrapped
with a clock, so the table shows milliseconds per step as the training loop sees them,
threads, caches and all; "rest of the step" is the loss, the gradient reset and the
bookkeeping, "outside the step" the data loader.
Each figure is the median over the timed epochs (one warm-up epoch first).

``--torch`` profiles the other side instead: the same network in the plain PyTorch loop
that ``train_bench.py`` times it against (same weights, data, batch, Adam, threads), its
time per step split by aten operation (``torch.profiler``, self CPU time, the operations
taking the most first), so the two tables say where each library spends a step.

``--variant MODULE.NAME=VALUE`` (repeatable) sets a module constant, e.g.
``--variant portaconv.backend._ops.SPLIT_POOL_MIN=131072``, in every other epoch: the
epochs alternate between the defaults and the variant on the same model (which goes first
alternating from round to round), and the table gets a column for each. Times are in ms
and move with the machine's load: compare the columns of one run, not runs.
"""

from __future__ import annotations

import argparse
import ast
import collections
import importlib
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from train_bench import (  # noqa: E402
    LR,
    add_epoch_options,
    blas_text,
    load_images,
    steady_allocator,
)

WRAPPED = (
    "forward",
    "backward",
    "forward_relu",
    "backward_relu",
    "forward_relu_pool",
    "backward_relu_pool",
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="lenet", choices=sorted(LR), help="zoo network")
    parser.add_argument("--epochs", type=int, default=5, help="timed epochs (per column)")
    add_epoch_options(parser)
    parser.add_argument("--variant", action="append", default=[], metavar="MODULE.NAME=VALUE")
    parser.add_argument("--quick", action="store_true", help="1 epoch of 256 images (smoke)")
    parser.add_argument(
        "--torch", action="store_true", help="profile the PyTorch twin by aten operation instead"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs, args.images = 1, 256
    if args.epochs < 1 or args.images < args.batch_size or args.batch_size < 2:
        parser.error("need --epochs >= 1, --batch-size >= 2 and --images >= --batch-size")
    if args.torch and args.variant:
        parser.error("--variant sets portaconv's constants: it does not apply with --torch")
    args.settings = [parse_variant(parser, text) for text in args.variant]
    return args


def parse_variant(parser: argparse.ArgumentParser, text: str) -> tuple[Any, str, Any]:
    """``"pkg.module.NAME=VALUE"`` -> (module, NAME, VALUE), the constant checked to exist."""
    target, sep, value = text.partition("=")
    module_name, _, name = target.rpartition(".")
    if not sep or not module_name or not name:
        parser.error(f"--variant: expected MODULE.NAME=VALUE, got {text!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        parser.error(f"--variant: cannot import {module_name!r}: {exc}")
    if not hasattr(module, name):
        parser.error(f"--variant: {module_name} has no {name!r}")
    try:
        parsed = ast.literal_eval(value)
    except (ValueError, SyntaxError):
        parser.error(f"--variant: {value!r} is not a Python literal")
    return module, name, parsed


class Clock:
    """Seconds per label, for the epoch running now. A wrapped call made inside another
    layer's wrapped call (``backward_relu`` calling the layer's ``backward``) is part of
    the outer one's time, not counted twice."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = collections.defaultdict(float)
        self.layer_depth = 0

    def wrap(self, obj: Any, method: str, label: str, layer: bool = True) -> None:
        fn = getattr(obj, method)

        def timed(*args: Any, **kwargs: Any) -> Any:
            if layer and self.layer_depth:
                return fn(*args, **kwargs)
            self.layer_depth += layer
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[label] += time.perf_counter() - start
                self.layer_depth -= layer

        setattr(obj, method, timed)


def profile(args: argparse.Namespace) -> dict[str, Any]:
    import portaconv
    from portaconv.backend import get_backend
    from portaconv.data import DataLoader
    from portaconv.models import build_model
    from portaconv.optim import Adam
    from portaconv.train import Trainer

    X, y, source = load_images(args.images, args.data_dir)
    backend = get_backend().name
    portaconv.set_backend(backend, dtype="float32")
    portaconv.manual_seed(0)
    model = build_model(args.model, X.shape[1:], 10)
    optimizer = Adam(model, lr=LR[args.model])
    trainer = Trainer(model, optimizer, progress=False, log=lambda line: None)
    loader = DataLoader(X, y, batch_size=args.batch_size, shuffle=True, seed=0)
    clock = Clock()
    order = []
    for i, layer in enumerate(model.layers):
        for method in WRAPPED:
            if hasattr(layer, method):
                label = f"{method:<13} [{i}] {layer!r}"
                clock.wrap(layer, method, label)
                order.append(label)
    clock.wrap(optimizer, "step", "optimizer step", layer=False)
    clock.wrap(trainer, "_step", "whole step", layer=False)
    columns = ["defaults"] + (["variant"] if args.settings else [])
    defaults = [(module, name, getattr(module, name)) for module, name, _ in args.settings]
    per_column: dict[str, list[dict[str, float]]] = {c: [] for c in columns}
    steps = -(-args.images // args.batch_size)
    trainer.fit(loader, epochs=1)  # warm-up
    for round_ in range(args.epochs):
        for column in columns if round_ % 2 == 0 else columns[::-1]:  # each goes first in turn
            for module, name, value in args.settings if column == "variant" else defaults:
                setattr(module, name, value)
            clock.seconds.clear()
            time.sleep(0.3)  # let idle threads settle, as train_bench does
            start = time.perf_counter()
            trainer.fit(loader, epochs=trainer.epoch + 1)
            wall = time.perf_counter() - start
            ms = {label: 1e3 * s / steps for label, s in clock.seconds.items()}
            layers = sum(ms.get(label, 0.0) for label in order)
            ms["rest of the step"] = ms["whole step"] - layers - ms["optimizer step"]
            ms["outside the step"] = 1e3 * wall / steps - ms["whole step"]
            ms["epoch / steps"] = 1e3 * wall / steps
            per_column[column].append(ms)
    for module, name, value in defaults:
        setattr(module, name, value)
    rows = [label for label in order if any(label in e for e in per_column["defaults"])]
    rows += ["optimizer step", "rest of the step", "whole step", "outside the step"]
    rows.append("epoch / steps")
    table = {
        column: {r: statistics.median(e.get(r, 0.0) for e in per_column[column]) for r in rows}
        for column in columns
    }
    return {
        "model": args.model,
        "backend": backend,
        "data": source,
        "images": args.images,
        "batch_size": args.batch_size,
        "epochs": args.epochs,
        "threads": portaconv.backend.num_threads(),
        "variant": args.variant,
        "rows": rows,
        "ms_per_step": table,
    }


#: Operations listed by ``--torch`` (the rest are summed in one row).
TORCH_TOP = 12


def profile_torch(args: argparse.Namespace) -> dict[str, Any]:
    """ms per step of each aten operation of the PyTorch twin, median over the epochs."""
    import torch
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile
    from train_bench import make_pair

    from portaconv.backend import num_threads

    X, y, source = load_images(args.images, args.data_dir)
    torch.set_num_threads(num_threads())
    _, torch_epoch = make_pair(args.model, X, y, args.batch_size, "numpy")
    steps = -(-args.images // args.batch_size)
    torch_epoch()  # warm-up
    per_epoch = []
    for _ in range(args.epochs):
        time.sleep(0.3)
        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            start = time.perf_counter()
            torch_epoch()
            wall = time.perf_counter() - start
        ms = {e.key: e.self_cpu_time_total / 1e3 / steps for e in prof.key_averages()}
        ms["epoch / steps"] = 1e3 * wall / steps
        per_epoch.append(ms)
    ops = {k for e in per_epoch for k in e if k != "epoch / steps"}
    median = {k: statistics.median(e.get(k, 0.0) for e in per_epoch) for k in ops}
    top = sorted(median, key=median.get, reverse=True)[:TORCH_TOP]
    rows = top + ["other operations", "epoch / steps"]
    table = {k: median[k] for k in top}
    table["other operations"] = sum(v for k, v in median.items() if k not in top)
    table["epoch / steps"] = statistics.median(e["epoch / steps"] for e in per_epoch)
    return {
        "model": args.model,
        "backend": f"plain PyTorch {torch.__version__} (profiled)",
        "data": source,
        "images": args.images,
        "batch_size": args.batch_size,
        "epochs": args.epochs,
        "threads": torch.get_num_threads(),
        "variant": [],
        "rows": rows,
        "ms_per_step": {"self CPU": table},
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    allocator = "default" if args.default_malloc else steady_allocator()
    report = profile_torch(args) if args.torch else profile(args)
    report["allocator"] = allocator
    report["openblas"] = blas_text()
    columns = list(report["ms_per_step"])
    print(
        f"{report['model']} on {report['backend']}, {report['data']}, {report['images']} images, "
        f"batch {report['batch_size']}, threads {report['threads']}; "
        f"ms per step, median of {report['epochs']} epochs; allocator: {allocator}; "
        f"{report['openblas']}"
    )
    if report["variant"]:
        print("variant: " + ", ".join(report["variant"]))
    width = max(len(r) for r in report["rows"])
    print(f"{'':{width}}  " + "  ".join(f"{c:>9}" for c in columns))
    for row in report["rows"]:
        cells = "  ".join(f"{report['ms_per_step'][c][row]:9.3f}" for c in columns)
        print(f"{row:{width}}  {cells}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
