"""The ``portaconv`` command: ``train``, ``evaluate`` and ``info``.

portaconv train                          # a CNN on the embedded 8x8 digits, well under a minute
portaconv train --dataset fashion-mnist --epochs 15 --backend torch
portaconv evaluate --checkpoint runs/digits-cnn-.../checkpoint.npz
portaconv info                           # backends, devices, versions, the active choice
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
from collections.abc import Sequence
from typing import Any

from . import __version__
from .backend import BACKENDS, DTYPES, BackendUnavailableError, get_backend, make_backend


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return args.run(args)
    except (ValueError, TypeError, FileNotFoundError, BackendUnavailableError) as exc:
        print(f"portaconv {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            f"\nportaconv {args.command}: interrupted; the last checkpoint is intact "
            "(continue with --resume and the same --out)",
            file=sys.stderr,
        )
        return 130


def _parser() -> argparse.ArgumentParser:
    from .data import AUGMENTATIONS, DATASETS
    from .models.zoo import MODELS
    from .train.experiment import OPTIMIZERS, SCHEDULERS

    parser = argparse.ArgumentParser(
        prog="portaconv", description="Train and evaluate portaconv networks."
    )
    parser.add_argument("--version", action="version", version=f"portaconv {__version__}")
    sub = parser.add_subparsers(dest="command")

    train = sub.add_parser(
        "train",
        help="train a network (default: a CNN on the embedded digits data)",
        description="Train a network; each unset hyper-parameter takes the dataset's recipe "
        "(portaconv.train.experiment.RECIPES).",
    )
    train.add_argument("--dataset", default="digits", choices=sorted(DATASETS))
    train.add_argument("--model", choices=sorted(MODELS), help="default: the dataset's recipe")
    train.add_argument("--epochs", type=int)
    train.add_argument("--batch-size", type=int)
    train.add_argument("--lr", type=float)
    train.add_argument("--optimizer", choices=OPTIMIZERS)
    train.add_argument(
        "--augment",
        choices=sorted(AUGMENTATIONS),
        help="training-batch augmentation: random left-right flips and/or shifts of up to 2 "
        "pixels (default: the dataset's recipe)",
    )
    train.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (default 0.9)")
    train.add_argument("--weight-decay", type=float, help="default: the dataset's recipe")
    train.add_argument(
        "--label-smoothing", type=float, default=0.0, help="cross-entropy label smoothing"
    )
    train.add_argument("--scheduler", choices=SCHEDULERS, default="cosine")
    train.add_argument("--warmup-epochs", type=int, default=0)
    train.add_argument("--val-fraction", type=float, default=0.1)
    train.add_argument(
        "--folds",
        type=int,
        help="k-fold cross-validation (digits, iris): k runs in OUT/fold-i, each tested on "
        "its own fold, accuracy over every sample; folds drawn with --seed (default: the "
        "dataset's recipe, 5 for iris, else 1)",
    )
    _backend_args(train)
    train.add_argument("--dtype", choices=DTYPES, help="default: PORTACONV_DTYPE or float32")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--data-dir", help="where the dataset files are (or go)")
    train.add_argument("--no-download", action="store_true", help="never download datasets")
    train.add_argument("--out", help="run directory (default runs/<dataset>-<model>-<time>)")
    train.add_argument(
        "--resume", action="store_true", help="continue from OUT/checkpoint.npz (needs --out)"
    )
    train.add_argument("--subset", type=int, help="use only the first N training and N test images")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.set_defaults(run=_train)

    evaluate = sub.add_parser("evaluate", help="evaluate a checkpoint on its test set")
    evaluate.add_argument("--checkpoint", required=True)
    evaluate.add_argument("--data-dir")
    evaluate.add_argument("--subset", type=int, help="only the first N test images")
    _backend_args(evaluate)
    evaluate.set_defaults(run=_evaluate)

    info = sub.add_parser("info", help="backends installed, devices seen, versions")
    info.add_argument("--json", action="store_true", help="print JSON")
    info.set_defaults(run=_info)
    return parser


def _backend_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", choices=BACKENDS, help="default: PORTACONV_BACKEND or numpy")
    parser.add_argument("--device", help="e.g. cuda, cuda:1, cpu (default: PORTACONV_DEVICE)")


def _train(args: argparse.Namespace) -> int:
    from .train.experiment import TrainConfig, run_experiment

    if args.resume and not args.out:
        raise ValueError("--resume needs --out DIR, the run directory to continue")
    config = TrainConfig(
        dataset=args.dataset,
        model=args.model,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        optimizer=args.optimizer,
        augment=args.augment,
        folds=args.folds,
        momentum=args.momentum,
        weight_decay=args.weight_decay,
        label_smoothing=args.label_smoothing,
        scheduler=args.scheduler,
        warmup_epochs=args.warmup_epochs,
        val_fraction=args.val_fraction,
        seed=args.seed,
        backend=args.backend,
        device=args.device,
        dtype=args.dtype,
        data_dir=args.data_dir,
        download=not args.no_download,
        out=args.out,
        resume=args.resume,
        subset=args.subset,
        progress=not args.no_progress,
    )
    summary = run_experiment(config)
    scored = f"{summary['test_images']} images"
    if summary["folds"] > 1:
        scored += f", out-of-fold over {summary['folds']} folds"
    print(
        f"test accuracy {summary['test_accuracy']:.4f} ({scored}) | "
        f"{summary['model']} on {summary['dataset']}, {summary['epochs']} epochs, "
        f"{summary['train_seconds']:.1f} s training, {summary['images_per_second']:.0f} img/s, "
        f"{summary['backend']} {summary['device']}"
    )
    print(f"results in {summary['out']}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from .train.experiment import evaluate_checkpoint

    result = evaluate_checkpoint(
        args.checkpoint, args.data_dir, args.backend, args.device, args.subset
    )
    print(json.dumps(result, indent=2))
    return 0


def _info(args: argparse.Namespace) -> int:
    report = info_report()
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"portaconv {report['portaconv']} on Python {report['python']} ({report['platform']})")
    print("libraries:")
    for name, version in report["versions"].items():
        print(f"  {name:<18} {version or 'not installed'}")
    print("backends:")
    for name, status in report["backends"].items():
        print(f"  {name:<18} {status}")
    print(f"GPUs seen: {', '.join(report['gpus']) or 'none'}")
    active = report["active"]
    print(
        f"active: {active['backend']} on {active['device']} in {active['dtype']} "
        f"(PORTACONV_BACKEND={os.environ.get('PORTACONV_BACKEND', '') or 'unset'})"
    )
    return 0


def info_report() -> dict[str, Any]:
    """What ``portaconv info`` prints, as a dict."""
    versions = {}
    for module in (
        "numpy",
        "array_api_compat",
        "array_api_extra",
        "array_api_strict",
        "torch",
        "cupy",
        "tqdm",
        "matplotlib",
    ):
        try:
            versions[module] = importlib.import_module(module).__version__
        except Exception:
            versions[module] = None
    backends = {}
    for name in BACKENDS:
        try:
            backend = make_backend(name)
            backends[name] = f"available (default device {backend.device})"
        except BackendUnavailableError as exc:
            backends[name] = f"unavailable: {exc}"
    gpus = []
    if versions["torch"]:
        import torch

        if torch.cuda.is_available():
            gpus += [
                f"cuda:{i} {torch.cuda.get_device_name(i)}"
                for i in range(torch.cuda.device_count())
            ]
    if versions["cupy"] and not gpus:
        try:
            import cupy

            for i in range(cupy.cuda.runtime.getDeviceCount()):
                name = cupy.cuda.runtime.getDeviceProperties(i)["name"].decode()
                gpus.append(f"cuda:{i} {name}")
        except Exception:
            pass
    try:
        active = get_backend()
        active_report = {
            "backend": active.name,
            "device": str(active.device),
            "dtype": active.dtype_name,
        }
    except (ValueError, BackendUnavailableError) as exc:
        active_report = {"backend": f"error: {exc}", "device": "-", "dtype": "-"}
    return {
        "portaconv": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
        "backends": backends,
        "gpus": gpus,
        "active": active_report,
    }


if __name__ == "__main__":
    sys.exit(main())
