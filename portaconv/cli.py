"""The ``portaconv`` command: ``train``, ``evaluate``, ``predict``, ``export`` and ``info``.

portaconv train                          # a CNN on the embedded 8x8 digits, well under a minute
portaconv train --dataset fashion-mnist --epochs 15 --backend torch
portaconv evaluate --checkpoint runs/digits-cnn-.../checkpoint.npz
portaconv predict --checkpoint runs/digits-cnn-.../best.npz digit.png more.npy --top 3
portaconv export --checkpoint runs/digits-cnn-.../best.npz --format onnx --out cnn.onnx
portaconv info                           # backends, devices, versions, the active choice
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import platform
import shlex
import sys
import traceback
import warnings
from collections.abc import Sequence
from typing import Any

from . import __version__
from .backend import BACKENDS, DTYPES, BackendUnavailableError, get_backend, make_backend
from .checks import counted
from .train._json import dumps

#: Exit statuses of the ``portaconv`` command (README, "Exit status").
EXIT_OK, EXIT_BUG, EXIT_USAGE, EXIT_DIVERGED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; returns its exit status.

    A mistake in the command line, a missing or damaged file, or an unusable backend is one
    line on stderr and status 2; a diverged training run is status 3, an interrupted one
    130. Any other exception is a bug in portaconv and keeps its traceback (status 1)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except _UsageError as exc:  # argparse's own: an unknown option, a choice, a type
        print(exc, file=sys.stderr)
        return EXIT_USAGE
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    args.argv = argv
    from .train import TrainingDivergedError

    comm = _world() if args.command == "train" else None
    status = None
    try:
        return args.run(args)
    except (ValueError, OSError, BackendUnavailableError) as exc:
        message = _one_line(exc).removeprefix(f"portaconv {args.command}: ")
        _report(comm, exc, f"portaconv {args.command}: error: {message}")
        status = EXIT_USAGE
    except TrainingDivergedError as exc:
        _report(comm, exc, f"portaconv {args.command}: stopped: {exc}")
        status = EXIT_DIVERGED
    except KeyboardInterrupt:
        print(
            f"\nportaconv {args.command}: interrupted; the last checkpoint is intact "
            "(continue with --resume and the same --out)",
            file=sys.stderr,
        )
        status = EXIT_INTERRUPTED
    except Exception:
        if comm is not None:  # a bug on one rank: say which, then end every rank
            print(f"portaconv {args.command}: rank {comm.rank} failed:", file=sys.stderr)
            traceback.print_exc()
            sys.stderr.flush()
            comm.abort(EXIT_BUG)
        raise
    return status


def _world() -> Any:
    """The MPI ranks of this job (None: one process); an unusable MPI is one line, status 2."""
    from .distributed import world

    try:
        return world()
    except RuntimeError as exc:
        print(f"portaconv train: error: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE) from None


def _report(comm: Any, exc: BaseException, line: str) -> None:
    """Print ``line``; under MPI, a mistake every rank met alike (the settings, a divergence)
    is printed by rank 0 alone, and one this rank met alone ends every rank."""
    from .distributed import CollectiveError
    from .train import TrainingDivergedError

    shared = isinstance(exc, CollectiveError | TrainingDivergedError)
    if comm is None or (shared and comm.is_root):
        print(line, file=sys.stderr)
    elif not shared:
        print(f"{line} (rank {comm.rank} of {comm.size}; ending every rank)", file=sys.stderr)
        sys.stderr.flush()
        comm.abort(EXIT_USAGE)


def _one_line(exc: BaseException) -> str:
    """The exception's message; an OSError without one of portaconv's own says which file."""
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        return f"{exc.strerror}: {exc.filename}"
    return str(exc)


def _recipe(setting: str) -> str:
    """``"the dataset's recipe: digits 10, iris 60, ..."`` for one setting of RECIPES."""
    from .train.config import RECIPES

    values = ", ".join(f"{name} {recipe[setting]}" for name, recipe in RECIPES.items())
    return f"default: the dataset's recipe: {values}"


class _UsageError(Exception):
    """A mistake argparse found in the command line, as its one-line message."""


class _Parser(argparse.ArgumentParser):
    """argparse's parser, but a mistake is one line (``PROG: error: ...``), not the usage
    text and the message: :func:`main` prints it and returns status 2 (its subcommands'
    parsers are of this class too)."""

    def error(self, message: str) -> Any:  # argparse's hook; it must not return
        raise _UsageError(f"{self.prog}: error: {message}")


def _parser() -> argparse.ArgumentParser:
    from .data import AUGMENTATIONS, DATASETS
    from .models.zoo import MODELS
    from .train.config import DEFAULTS, OPTIMIZERS, SCHEDULERS

    parser = _Parser(
        prog="portaconv",
        description="Train and evaluate portaconv networks. Exit status: 0 done, 2 a "
        "mistake in the command line or a missing or damaged file (one line on stderr), "
        "3 training diverged, 130 interrupted; 1 (with a traceback) is a bug.",
    )
    parser.add_argument("--version", action="version", version=f"portaconv {__version__}")
    sub = parser.add_subparsers(dest="command")

    train = sub.add_parser(
        "train",
        help="train a network (default: a CNN on the embedded digits data)",
        description="Train a network; each unset hyper-parameter takes the recipe of the "
        "dataset and model (portaconv.train.config.RECIPES and MODEL_RECIPES). Writes "
        "OUT/config.json first, then after every epoch OUT/checkpoint.npz and "
        "OUT/metrics.jsonl, and at the end the plots and OUT/summary.json.",
    )
    train.add_argument(
        "--dataset",
        choices=sorted(DATASETS),
        help=f"the data set (default: {DEFAULTS['dataset']}; with --resume: the run's)",
    )
    train.add_argument("--model", choices=sorted(MODELS), help=f"the network ({_recipe('model')})")
    train.add_argument(
        "--epochs",
        type=int,
        metavar="N",
        help=f"epochs to train ({_recipe('epochs')}); with --resume, a new total "
        "re-plans the learning-rate schedule",
    )
    train.add_argument(
        "--batch-size",
        type=int,
        metavar="N",
        help=f"images per training step ({_recipe('batch_size')})",
    )
    train.add_argument(
        "--lr",
        type=float,
        help=f"peak learning rate ({_recipe('lr')}); with --resume, a new peak for the "
        "rest of the run",
    )
    train.add_argument(
        "--optimizer", choices=OPTIMIZERS, help=f"the optimizer ({_recipe('optimizer')})"
    )
    train.add_argument(
        "--augment",
        choices=sorted(AUGMENTATIONS),
        help="training-batch augmentation: random left-right flips and/or shifts of up to 2 "
        f"pixels ({_recipe('augment')})",
    )
    train.add_argument(
        "--momentum", type=float, help=f"SGD momentum (default: {DEFAULTS['momentum']})"
    )
    train.add_argument(
        "--weight-decay",
        type=float,
        help=f"L2 weight decay ({_recipe('weight_decay')}; adamw takes 0.01 for 0)",
    )
    train.add_argument(
        "--label-smoothing",
        type=float,
        help=f"cross-entropy label smoothing (default: {DEFAULTS['label_smoothing']})",
    )
    train.add_argument(
        "--scheduler",
        choices=SCHEDULERS,
        help=f"learning-rate schedule over the epochs (default: {DEFAULTS['scheduler']})",
    )
    train.add_argument(
        "--warmup-epochs",
        type=int,
        metavar="N",
        help="epochs of linear warm-up before the cosine schedule "
        f"(default: {DEFAULTS['warmup_epochs']})",
    )
    train.add_argument(
        "--val-fraction",
        type=float,
        help="fraction of each class held out of training for validation "
        f"(default: {DEFAULTS['val_fraction']})",
    )
    train.add_argument(
        "--patience",
        type=int,
        metavar="N",
        help="stop early after N epochs without a better validation accuracy (default: "
        "train every epoch)",
    )
    train.add_argument(
        "--folds",
        type=int,
        metavar="K",
        help="k-fold cross-validation (digits, iris): k runs in OUT/fold-i, each tested on "
        "its own fold, accuracy over every sample; folds drawn with --seed "
        f"({_recipe('folds')})",
    )
    _backend_args(train)
    train.add_argument(
        "--dtype", choices=DTYPES, help="float type (default: PORTACONV_DTYPE or float32)"
    )
    train.add_argument(
        "--seed",
        type=int,
        help="seeds the weights, the validation split, the data order and dropout "
        f"(default: {DEFAULTS['seed']})",
    )
    train.add_argument(
        "--data-dir",
        metavar="DIR",
        help="where the dataset files are looked for first, and where a download goes, "
        "into DIR/<dataset> (default: look in PORTACONV_DATA, ~/.cache/portaconv and the "
        "system's data directories; download into ~/.cache/portaconv/<dataset>)",
    )
    train.add_argument(
        "--no-download",
        dest="download",
        action="store_false",
        help="never download datasets (default: download what is missing)",
    )
    train.add_argument(
        "--out", metavar="DIR", help="run directory (default: runs/<dataset>-<model>-<time>)"
    )
    train.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its checkpoint.npz, with the run's settings; "
        "only --epochs, --lr, --patience and the backend may change (default: a new run)",
    )
    train.add_argument(
        "--subset",
        type=int,
        metavar="N",
        help="use only the first N training and N test images (default: all)",
    )
    train.add_argument(
        "--no-progress",
        dest="progress",
        action="store_false",
        help="no progress bar (default: a bar when stderr is a terminal)",
    )
    train.add_argument(
        "--sync-bn",
        action="store_true",
        help="under mpiexec: batch normalisation over the global batch of every rank "
        "(default: each rank's own share)",
    )
    train.add_argument(
        "--compile",
        action="store_true",
        help="run each training step as one compiled function: torch.compile on "
        "--backend torch, jax.jit on jax (default: eager steps)",
    )
    train.set_defaults(run=_train)

    evaluate = sub.add_parser(
        "evaluate",
        help="evaluate a checkpoint on its test set",
        description="Rebuild the model a checkpoint holds and score it on the test split "
        "it was trained for (the same --subset and fold), as JSON on stdout.",
    )
    evaluate.add_argument(
        "--checkpoint",
        required=True,
        metavar="FILE",
        help="a checkpoint.npz or best.npz of a run (required)",
    )
    evaluate.add_argument(
        "--data-dir",
        metavar="DIR",
        help="where the dataset files are (default: the run's --data-dir)",
    )
    evaluate.add_argument(
        "--subset",
        type=int,
        metavar="N",
        help="only the first N test images (default: the run's --subset, else all)",
    )
    _backend_args(evaluate)
    evaluate.set_defaults(run=_evaluate)

    predict = sub.add_parser(
        "predict",
        help="classify images or .npy arrays with a checkpoint",
        description="Rebuild the model a checkpoint holds and print, for every input, one "
        "line: the file, the input's index in it, and the most probable classes with their "
        "probabilities. An image (PNG, JPEG, ...: Pillow, pip install 'portaconv[images]') "
        "is scaled to [0, 1] and resized to the model's input; a .npy array holds one input "
        "or a batch of the model's exact shape, (N, C, H, W) or (N, H, W, C), in the "
        "dataset's scale ([0, 1], or uint8 pixels). The run's normalisation is applied to "
        "both.",
    )
    predict.add_argument(
        "--checkpoint",
        required=True,
        metavar="CK",
        help="a checkpoint.npz or best.npz of a run (required)",
    )
    predict.add_argument("files", nargs="+", metavar="FILE", help="images or .npy arrays")
    predict.add_argument(
        "--top",
        type=int,
        default=1,
        metavar="K",
        help="print the K most probable classes (default: 1)",
    )
    predict.add_argument(
        "--batch-size",
        type=int,
        default=256,
        metavar="N",
        help="inputs per forward pass (default: 256)",
    )
    _backend_args(predict)
    predict.set_defaults(run=_predict)

    export = sub.add_parser(
        "export",
        help="write a checkpoint's model as ONNX, safetensors or a PyTorch file",
        description="Rebuild the model a checkpoint holds and write it in another tool's "
        "format (portaconv.interop); a summary (with the input normalisation the network "
        "expects) as JSON on stdout.",
    )
    export.add_argument(
        "--checkpoint", required=True, metavar="CK", help="a checkpoint.npz or best.npz (required)"
    )
    export.add_argument(
        "--format",
        required=True,
        choices=("onnx", "safetensors", "torch"),
        help="onnx: the eval forward traced, checked with onnxruntime; safetensors: the "
        "parameters and buffers; torch: a torch.export program (required)",
    )
    export.add_argument("--out", required=True, metavar="FILE", help="the file to write (required)")
    export.set_defaults(run=_export)

    info = sub.add_parser("info", help="backends installed, devices seen, versions")
    info.add_argument("--json", action="store_true", help="print JSON (default: text)")
    info.set_defaults(run=_info)
    return parser


def _backend_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        help="the array library to compute with (default: PORTACONV_BACKEND or numpy)",
    )
    parser.add_argument(
        "--device",
        help="e.g. cuda, cuda:1, cpu (default: PORTACONV_DEVICE or the backend's default)",
    )


def _train(args: argparse.Namespace) -> int:
    from .train.config import TrainConfig
    from .train.experiment import run_experiment

    # every option of `train` is named as the TrainConfig field it sets
    config = TrainConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)})
    with warnings.catch_warnings():
        # A diverging run overflows on its way to NaN; the trainer reports that in one line.
        warnings.filterwarnings("ignore", "(overflow|invalid value) encountered", RuntimeWarning)
        summary = run_experiment(config, command=shlex.join(["portaconv", *args.argv]))
    comm = _world()
    if comm is not None and not comm.is_root:
        return EXIT_OK  # rank 0 reports for every rank
    scored = counted(summary["test_images"], "image")
    if summary["folds"] > 1:
        scored += f", out-of-fold over {summary['folds']} folds"
    stopped = ""
    if summary.get("stopped_early"):
        stopped = f" (stopped early; best validation accuracy at epoch {summary['best_epoch']})"
    compiling = ""
    if summary.get("compile"):  # timed apart: images/s counts the compiled steps alone
        compiling = f" + {summary['compile_seconds']:.1f} s compiling"
    print(
        f"test accuracy {summary['test_accuracy']:.4f} ({scored}) | "
        f"{summary['model']} on {summary['dataset']}, {counted(summary['epochs'], 'epoch')}"
        f"{stopped}, {summary['train_seconds']:.1f} s training{compiling}, "
        f"{_number(summary['images_per_second'])} img/s, {summary['backend']} {summary['device']}"
        + ("" if summary["world_size"] == 1 else f", {summary['world_size']} MPI ranks")
    )
    print(f"results in {summary['out']}")
    return EXIT_OK


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f}"


def _evaluate(args: argparse.Namespace) -> int:
    from .train.experiment import evaluate_checkpoint

    result = evaluate_checkpoint(
        args.checkpoint, args.data_dir, args.backend, args.device, args.subset
    )
    print(dumps(result, indent=2))
    return EXIT_OK


def _predict(args: argparse.Namespace) -> int:
    from .train.prediction import format_row, predict_files

    rows = predict_files(
        args.checkpoint, args.files, args.top, args.backend, args.device, args.batch_size
    )
    for row in rows:
        print(format_row(row))
    return EXIT_OK


def _export(args: argparse.Namespace) -> int:
    from .interop import MissingDependencyError
    from .interop._export import export_checkpoint

    try:
        summary = export_checkpoint(args.checkpoint, args.format, args.out)
    except MissingDependencyError as exc:  # an optional package: a setup mistake, status 2
        raise ValueError(str(exc)) from exc
    print(dumps(summary, indent=2))
    return EXIT_OK


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
    mpi = report["mpi"]
    where = f"{mpi['implementation']}, mpi4py {mpi['mpi4py']}" if mpi["available"] else None
    launch = ""
    if mpi["world_size"] == 1:
        launch = " (launch with mpiexec -n N portaconv train ...)"
        if where and where.startswith("Open MPI") and _is_root():
            launch = (
                " (launch with mpiexec --allow-run-as-root -n N portaconv train ...: "
                "Open MPI refuses root without the flag)"
            )
    print(
        f"MPI: {'available (' + where + ')' if where else mpi['implementation']}; "
        f"world size {mpi['world_size']}{launch}"
    )
    active = report["active"]
    print(
        f"active: {active['backend']} on {active['device']} in {active['dtype']} "
        f"(PORTACONV_BACKEND={os.environ.get('PORTACONV_BACKEND', '') or 'unset'})"
    )
    return 0


def _is_root() -> bool:
    """Whether this process runs as root (POSIX); never on Windows."""
    return hasattr(os, "geteuid") and os.geteuid() == 0


def info_report() -> dict[str, Any]:
    """What ``portaconv info`` prints, as a dict."""
    from .distributed import mpi_info

    versions = {}
    for module in (
        "numpy",
        "array_api_compat",
        "array_api_extra",
        "array_api_strict",
        "torch",
        "cupy",
        "jax",
        "jaxlib",
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
        "mpi": mpi_info(),
        "active": active_report,
    }


if __name__ == "__main__":
    sys.exit(main())
