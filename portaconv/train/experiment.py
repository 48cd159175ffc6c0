"""One training run from a dataset name to a summary: what ``portaconv train`` does.

:func:`run_experiment` loads the dataset, standardises it with statistics of the training
split, holds out a validation split, builds the model, the optimizer and the scheduler, fits
with a :class:`~portaconv.train.Trainer`, evaluates on the test split and writes
``summary.json`` beside the checkpoints, metrics and plots. :func:`evaluate_checkpoint`
rebuilds the model from a checkpoint alone and evaluates it again.
"""

from __future__ import annotations

import dataclasses
import math
import platform
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..backend import BackendUnavailableError, get_backend, manual_seed, num_threads, set_backend
from ..checks import check_int
from ..data import (
    AUGMENTATIONS,
    DataLoader,
    Dataset,
    load_dataset,
    mean_std,
    normalize,
    train_val_split,
)
from ..distributed import Communicator, is_root, on_root, seed_rank, sync_batch_norm, world
from ..layers import CrossEntropyLoss
from ..models import build_model
from ..models.zoo import MODELS
from ..optim import SGD, Adam, AdamW, CosineAnnealingLR, ExponentialLR, StepLR
from . import plots
from ._json import dumps
from .checkpoint import load_checkpoint
from .config import (
    RECIPES,
    WHO,
    TrainConfig,
    flag,
)
from .trainer import CHECKPOINT, Trainer, check_training_state


def choose_backend(
    backend: str | None = None, device: str | None = None, dtype: str | None = None
) -> None:
    """Make the named backend, device and dtype the active ones (None: keep the current).

    A device the backend's library cannot parse is a ``ValueError`` in portaconv's words
    (torch raises a ``RuntimeError`` for ``torch.device("bogus")``)."""
    if backend is None and device is None and dtype is None:
        return
    try:
        set_backend(backend, device, dtype)
    except BackendUnavailableError:
        raise  # a RuntimeError too, with its own words
    except RuntimeError as exc:
        if device is None:
            raise
        name = backend or get_backend().name
        raise ValueError(
            f"--device {device!r} is not a device the {name} backend knows (e.g. cpu, cuda, cuda:1)"
        ) from exc


def load_split(
    dataset: str,
    fold: tuple[int, int] | None = None,
    seed: int = 0,
    data_dir: str | None = None,
    download: bool = True,
) -> Dataset:
    """The data set's train/test split, or with ``fold=(i, k)`` its cross-validation split
    ``i`` of ``k`` (folds drawn with ``seed``)."""
    options = {} if fold is None else {"fold": tuple(fold), "seed": seed}
    return load_dataset(dataset, data_dir=data_dir, download=download, **options)


def _fetch(config: TrainConfig, fold: tuple[int, int] | None) -> None:
    """Load the run's data once, downloading what is missing (and keep nothing)."""
    load_split(config.dataset, fold, config.seed, config.data_dir, config.download)


def prepare_data(
    config: TrainConfig, fold: tuple[int, int] | None = None, dataset: Dataset | None = None
) -> dict[str, Any]:
    """Dataset arrays, standardised with statistics of the training split, with a stratified
    validation split held out of the training set; ``fold=(i, k)``: cross-validation split
    ``i`` of ``k``. ``dataset`` (a :class:`~portaconv.data.Dataset`) replaces the named one."""
    data = dataset or load_split(
        config.dataset, fold, config.seed, config.data_dir, config.download
    )
    X_train, y_train, X_test, y_test = data.X_train, data.y_train, data.X_test, data.y_test
    if config.subset:
        X_train, y_train = X_train[: config.subset], y_train[: config.subset]
        X_test, y_test = X_test[: config.subset], y_test[: config.subset]
    val = None
    images = len(y_train)
    if config.val_fraction > 0:
        X_train, y_train, X_val, y_val = train_val_split(
            X_train, y_train, config.val_fraction, config.seed
        )
        val = (X_val, y_val)
    if len(y_train) < 2 or (val is not None and len(val[1]) == 0):
        held = "" if val is None else f" and {len(val[1])} to validate on"
        raise ValueError(
            f"{WHO}: {images} training images are too few: they leave {len(y_train)} to "
            f"train on{held} (--val-fraction {config.val_fraction:g} of each class, and each "
            "class keeps one training image); use a larger --subset"
        )
    mean, std = (a.ravel().tolist() for a in mean_std(X_train))
    return {
        "train": (normalize(X_train, mean, std), y_train),
        "val": None if val is None else (normalize(val[0], mean, std), val[1]),
        "test": (normalize(X_test, mean, std), y_test),
        "mean": mean,
        "std": std,
        "classes": list(data.classes),
        "input_shape": tuple(int(n) for n in X_train.shape[1:]),
    }


def make_optimizer(config: TrainConfig, model: Any) -> Any:
    if config.optimizer == "sgd":
        return SGD(model, config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    if config.optimizer == "adamw":
        return AdamW(model, config.lr, weight_decay=config.weight_decay or 1e-2)
    return Adam(model, config.lr, weight_decay=config.weight_decay)


def make_scheduler(config: TrainConfig, optimizer: Any) -> Any:
    if config.scheduler == "cosine":
        return CosineAnnealingLR(
            optimizer, max(1, config.epochs), warmup_epochs=config.warmup_epochs
        )
    if config.scheduler == "step":
        return StepLR(optimizer, step_size=max(1, config.epochs // 3), gamma=0.1)
    if config.scheduler == "exponential":
        return ExponentialLR(optimizer, gamma=0.9)
    return None


def run_experiment(
    config: TrainConfig, log: Any = None, command: str | None = None
) -> dict[str, Any]:
    """Train as ``config`` says; returns the summary that is also written to summary.json.

    With ``folds`` k > 1, trains k models, model i on every fold but fold i, in ``out/fold-i``,
    and scores each on its own held-out fold: the summary's ``test_accuracy`` counts every
    sample once (out-of-fold), ``fold_test_accuracy`` lists the folds'.
    """
    comm = world()
    config = on_root(comm, lambda: _resolve_config(config, comm))
    choose_backend(config.backend, config.device, config.dtype)
    if config.folds > 1 and is_root(comm):
        write_config(config, Path(config.out), None, command)
    if config.folds == 1:
        summary, confusion, _ = _train_and_test(config, None, log, command, comm)
    else:
        summary, confusion = _cross_validate(config, log, command, comm)
    if is_root(comm):
        _write_results(Path(config.out), summary, confusion)
    return summary


def _resolve_config(config: TrainConfig, comm: Communicator | None) -> TrainConfig:
    """``config`` with the run's or the recipe's settings filled in and checked, and its
    ``--out`` free for a fresh run (on rank 0 alone, which owns the files)."""
    num_threads()  # checks PORTACONV_NUM_THREADS now, before any file is written
    if config.resume:
        config = with_run_settings(config)
    config = config.resolved()
    if not config.resume:
        _refuse_to_overwrite(Path(config.out))
    ranks = 1 if comm is None else comm.size
    if ranks > 1 and config.compile:
        raise ValueError(
            f"{WHO}: --compile compiles one process's step; under mpiexec ({ranks} ranks) "
            "train without --compile"
        )
    if ranks > 1 and config.batch_size < 2 * ranks:
        raise ValueError(
            f"{WHO}: --batch-size {config.batch_size} is the global batch; on {ranks} ranks it "
            f"must be at least {2 * ranks} (two images a rank)"
        )
    return config


#: What defines a run and its input pipeline: a resumed run keeps them.
_FIXED = (
    "dataset",
    "model",
    "folds",
    "optimizer",
    "scheduler",
    "batch_size",
    "momentum",
    "weight_decay",
    "label_smoothing",
    "warmup_epochs",
    "augment",
    "val_fraction",
    "seed",
    "subset",
)
#: What a resumed run may change (epochs and lr re-plan the schedule); when not given, it
#: and the backend settings are the run's.
_CHANGEABLE = ("epochs", "lr", "patience", "backend", "device", "dtype", "data_dir")


def _checkpoint_of_run(out: Path) -> Path | None:
    for path in (out / CHECKPOINT, out / "fold-0" / CHECKPOINT):
        if path.exists():
            return path
    return None


def _run_state(path: Path) -> dict[str, Any]:
    """A run's checkpoint, checked to be a training checkpoint with the run's metadata."""
    state = load_checkpoint(path)
    try:
        check_training_state(state)
        check_run_meta(state["meta"])
    except ValueError as exc:
        raise ValueError(f"checkpoint {path}: {exc}") from exc
    return state


def with_run_settings(config: TrainConfig) -> TrainConfig:
    """For ``--resume``: ``config`` with each setting it leaves unset taken from the run in
    ``config.out`` (not from the recipe); a setting that defines the run (:data:`_FIXED`)
    and differs from the run's is a ``ValueError`` that lists every difference."""
    if config.out is None:
        raise ValueError(f"{WHO}: --resume needs --out DIR, the run directory to continue")
    path = _checkpoint_of_run(Path(config.out))
    if path is None:
        return config  # nothing to continue: a fresh run, the trainer says so
    saved = _run_state(path)["meta"]["config"]
    _refuse_changes(config, saved, Path(config.out), [])
    unset = {
        name: saved[name]
        for name in (*_FIXED, *_CHANGEABLE)
        if getattr(config, name) is None and name in saved
    }
    return dataclasses.replace(config, **unset)


def _refuse_changes(config: TrainConfig, saved: dict[str, Any], out: Path, more: list[str]) -> None:
    differences = [
        f"{flag(name)} {getattr(config, name)} (the run's: {saved[name]})"
        for name in _FIXED
        if getattr(config, name) is not None
        and name in saved
        and getattr(config, name) != saved[name]
    ]
    differences += more
    if differences:
        raise ValueError(
            f"{WHO}: --resume: the run in {out} is {saved['dataset']}/{saved['model']}; it "
            f"cannot continue with {'; '.join(differences)}. Leave these options out to "
            "continue it, or give another --out for a new run"
        )


def _check_resumable(
    config: TrainConfig, data: dict[str, Any], fold: tuple[int, int] | None
) -> None:
    """Before a resumed run (one directory, one fold) starts: its checkpoint was trained as
    ``config`` says, on the same images (the normalisation statistics agree), for no more
    than ``config.epochs`` epochs."""
    out = Path(config.out)
    if not (out / CHECKPOINT).exists():
        return
    state = _run_state(out / CHECKPOINT)
    meta = state["meta"]
    more = []
    if meta["fold"] != (None if fold is None else list(fold)):
        more.append(f"fold {fold} (the run's: {meta['fold']})")
    norm = meta["normalisation"]
    same_images = (
        len(norm["mean"]) == len(data["mean"])
        and np.allclose(norm["mean"], data["mean"], rtol=1e-6, atol=0)
        and np.allclose(norm["std"], data["std"], rtol=1e-6, atol=0)
    )
    if not same_images:
        more.append(
            "training images whose per-channel mean and standard deviation differ from the "
            f"run's ({_rounded(data['mean'])}, {_rounded(data['std'])} against "
            f"{_rounded(norm['mean'])}, {_rounded(norm['std'])}: other data files?)"
        )
    _refuse_changes(config, meta["config"], out, more)
    if state["epoch"] > config.epochs:
        raise ValueError(
            f"{WHO}: --resume --epochs {config.epochs}: {out} has trained "
            f"{state['epoch']} epochs already; give --epochs {state['epoch']} or more"
        )


def _rounded(values: list[float]) -> str:
    return "[" + ", ".join(f"{v:.4g}" for v in values) + "]"


def _refuse_to_overwrite(out: Path) -> None:
    """A fresh run never replaces another run's checkpoints."""
    for checkpoint in [out / CHECKPOINT, *sorted(out.glob(f"fold-*/{CHECKPOINT}"))]:
        if checkpoint.exists():
            raise ValueError(
                f"{WHO}: --out {out} already holds a run ({checkpoint}); continue it with "
                "--resume, or choose another --out"
            )


def write_config(
    config: TrainConfig, out: Path, fold: tuple[int, int] | None, command: str | None
) -> Path:
    """``out/config.json``, written when a run starts (again when it is resumed): every
    setting after the recipe was applied, the backend, device and dtype in use, the fold,
    the command line and the versions."""
    backend = get_backend()
    record = {
        **dataclasses.asdict(config),
        "backend": backend.name,
        "device": str(backend.device),
        "dtype": backend.dtype_name,
        "fold": None if fold is None else list(fold),
        "command": command or shlex.join(["portaconv", *sys.argv[1:]]),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "portaconv": __version__,
        "python": platform.python_version(),
    }
    out.mkdir(parents=True, exist_ok=True)
    path = out / "config.json"
    path.write_text(dumps(record, indent=2) + "\n")
    return path


def _title(config: TrainConfig) -> str:
    """The plots' title: the run's dataset, model and backend."""
    backend = get_backend()
    where = f"{backend.name} on {backend.device} ({backend.dtype_name})"
    return f"{config.dataset}, {config.model}, {where}"


def _write_results(out: Path, summary: dict[str, Any], confusion: np.ndarray) -> None:
    (out / "summary.json").write_text(dumps(summary, indent=2) + "\n")
    (out / "confusion_matrix.json").write_text(dumps(confusion.tolist()) + "\n")


def _cross_validate(
    config: TrainConfig, log: Any, command: str | None, comm: Communicator | None = None
) -> tuple[dict[str, Any], np.ndarray]:
    """k runs, run i in ``out/fold-i`` tested on fold i; one summary over every sample."""
    k = config.folds
    runs, confusion = [], 0
    for i in range(k):
        fold_config = dataclasses.replace(config, out=str(Path(config.out) / f"fold-{i}"))
        summary, fold_confusion, classes = _train_and_test(fold_config, (i, k), log, command, comm)
        if is_root(comm):
            _write_results(Path(fold_config.out), summary, fold_confusion)
        runs.append(summary)
        confusion = confusion + fold_confusion
    count = int(confusion.sum())
    seconds = sum(run["train_seconds"] for run in runs)
    summary = {
        **runs[0],
        "fold": None,
        "train_images": round(sum(run["train_images"] for run in runs) / k),  # per fold
        "test_images": count,
        "test_accuracy": float(np.trace(confusion)) / count,
        "test_loss": sum(run["test_loss"] * run["test_images"] for run in runs) / count,
        "fold_test_accuracy": [run["test_accuracy"] for run in runs],
        "fold_test_images": [run["test_images"] for run in runs],
        "val_accuracy": None,
        "best_val_accuracy": None,
        "best_epoch": None,
        "epochs": max(run["epochs"] for run in runs),
        "fold_epochs": [run["epochs"] for run in runs],
        "stopped_early": any(run["stopped_early"] for run in runs),
        "train_seconds": seconds,
        "images_per_second": sum(run["train_images"] * run["epochs"] for run in runs) / seconds
        if seconds
        else None,
        "seconds_per_epoch": seconds / sum(run["epochs"] for run in runs),
        "out": config.out,
    }
    title = _title(config) + f", {k}-fold cross-validation"
    if is_root(comm):
        plots.plot_confusion(confusion, classes, Path(config.out) / "confusion_matrix.png", title)
    return summary, confusion


def train_model(
    config: TrainConfig,
    data: dict[str, Any],
    out: Path | None = None,
    meta: dict[str, Any] | None = None,
    log: Any = None,
    comm: Communicator | None = None,
) -> Trainer:
    """Build the model, optimizer and scheduler ``config`` names and fit them on
    ``data["train"]`` (from :func:`prepare_data`), validating on ``data["val"]``; with ``out``,
    checkpoints, metrics and ``meta`` go there. Returns the trainer (``trainer.model``).

    With ``comm``, this rank trains on its share of every global batch of ``batch_size``
    (see :mod:`portaconv.distributed`) and validates on its share of the validation rows."""
    backend = get_backend()
    rank, ranks = (0, 1) if comm is None else (comm.rank, comm.size)
    manual_seed(config.seed)
    model = build_model(config.model, data["input_shape"], len(data["classes"]))
    if config.sync_bn:
        sync_batch_norm(model, comm)
    optimizer = make_optimizer(config, model)
    trainer = Trainer(
        model,
        optimizer,
        criterion=CrossEntropyLoss(label_smoothing=config.label_smoothing),
        scheduler=make_scheduler(config, optimizer),
        out_dir=out,
        progress=config.progress,
        meta=meta,
        log=log,
        patience=config.patience,
        comm=comm,
        compile=config.compile,
    )
    # A last batch of one sample cannot be batch-normalised in training mode, nor one that
    # leaves a rank fewer than two: it is dropped then.
    lonely = 0 < len(data["train"][1]) % config.batch_size < max(2, 2 * ranks)
    loader = DataLoader(
        *data["train"],
        batch_size=config.batch_size,
        shuffle=True,
        seed=config.seed,
        drop_last=lonely,
        augment=AUGMENTATIONS[config.augment],
        rank=rank,
        world_size=ranks,
    )
    val_loader = None
    if data["val"] is not None:
        val_loader = _shard_loader(*data["val"], config.batch_size, comm)
    trainer.log(
        f"training {config.model} on {config.dataset} ({len(data['train'][1])} train, "
        f"{0 if data['val'] is None else len(data['val'][1])} validation images) with "
        f"{backend.name} on {backend.device} in {backend.dtype_name}"
        + ("" if ranks == 1 else f", {ranks} MPI ranks")
        + (", synchronised batch norm" if config.sync_bn and ranks > 1 else "")
        + (", compiled steps" if config.compile else "")
        + ("" if out is None else f" -> {out}")
    )
    state = trainer.resume() if config.resume else None
    if state is not None:
        _replan_schedule(trainer, config, state["meta"]["config"])
    seed_rank(comm, config.seed, trainer.epoch)  # Dropout's masks differ between ranks
    trainer.fit(loader, val_loader, epochs=config.epochs)
    return trainer


def _shard_loader(X: np.ndarray, y: np.ndarray, batch_size: int, comm: Communicator | None) -> Any:
    """An evaluation loader over this rank's consecutive share of the rows (None: none)."""
    if comm is not None:
        base, extra = divmod(len(y), comm.size)
        start = comm.rank * base + min(comm.rank, extra)
        rows = slice(start, start + base + (comm.rank < extra))
        X, y = X[rows], y[rows]
    return DataLoader(X, y, batch_size=max(256, batch_size)) if len(y) else None


def _replan_schedule(trainer: Trainer, config: TrainConfig, saved: dict[str, Any]) -> None:
    """After a resume: with another number of epochs or another peak learning rate than the
    run had, the schedule is planned anew for them and continues at the checkpoint's epoch
    (a cosine schedule planned for 10 epochs would otherwise wrap around at 0 past them)."""
    if (config.epochs, config.lr) == (saved["epochs"], saved["lr"]):
        return  # the same plan: the run continues exactly as if never stopped
    trainer.optimizer.lr = config.lr
    scheduler = make_scheduler(config, trainer.optimizer)
    if scheduler is not None:
        plan = scheduler.state_dict()
        scheduler.load_state_dict({**plan, "last_epoch": trainer.epoch})  # sets optimizer.lr
    trainer.scheduler = scheduler
    trainer.log(
        f"learning-rate schedule re-planned for {config.epochs} epochs from lr {config.lr:g} "
        f"(the run had {saved['epochs']} from {saved['lr']:g}); epoch {trainer.epoch + 1} "
        f"trains at lr {trainer.optimizer.lr:.3g}"
    )


def _train_and_test(
    config: TrainConfig,
    fold: tuple[int, int] | None,
    log: Any,
    command: str | None = None,
    comm: Communicator | None = None,
) -> tuple[dict[str, Any], np.ndarray, list[str]]:
    """One run of a resolved config: fit on the training split (or on every fold but
    ``fold=(i, k)``'s), score on the test split (fold ``i``). Returns the summary, the test
    confusion matrix and the class names."""
    backend = get_backend()
    if comm is not None:  # rank 0 downloads what is missing before the others look for it
        on_root(comm, lambda: _fetch(config, fold))
    data = prepare_data(config, fold)
    num_classes = len(data["classes"])
    meta = {
        "config": dataclasses.asdict(config),
        "model": {"name": config.model, "input_shape": data["input_shape"], "classes": num_classes},
        "normalisation": {"mean": data["mean"], "std": data["std"]},
        "classes": data["classes"],
        "fold": None if fold is None else list(fold),
    }
    out = Path(config.out)
    if config.resume:
        on_root(comm, lambda: _check_resumable(config, data, fold))
    if is_root(comm):
        write_config(config, out, fold, command)
    trainer = train_model(config, data, out, meta, log, comm)
    test = trainer.evaluate(_shard_loader(*data["test"], config.batch_size, comm), num_classes)
    title = _title(config) + ("" if fold is None else f", fold {fold[0] + 1} of {fold[1]}")
    trainer.write_plots(test["confusion"], data["classes"], title)
    summary = {
        "dataset": config.dataset,
        "model": config.model,
        "backend": backend.name,
        "device": str(backend.device),
        "dtype": backend.dtype_name,
        "epochs": trainer.epoch,
        "batch_size": config.batch_size,
        "optimizer": config.optimizer,
        "lr": config.lr,
        "seed": config.seed,
        "world_size": 1 if comm is None else comm.size,
        "sync_bn": config.sync_bn,
        "compile": config.compile,
        "folds": config.folds,
        "fold": meta["fold"],
        "train_images": len(data["train"][1]),
        "test_images": test["count"],
        "test_accuracy": test["accuracy"],
        "test_loss": test["loss"],
        "val_accuracy": trainer.history[-1].get("val_accuracy") if trainer.history else None,
        "best_val_accuracy": trainer.best_val_accuracy,
        "best_epoch": trainer.best_epoch,
        "patience": config.patience,
        "stopped_early": trainer.stopped_early,
        "train_seconds": trainer.train_seconds,
        "images_per_second": trainer.train_images / trainer.train_seconds
        if trainer.train_seconds
        else None,
        "seconds_per_epoch": trainer.train_seconds / trainer.epoch if trainer.epoch else None,
        "parameters": int(sum(int(np.prod(p.shape)) for p in trainer.model.parameters().values())),
        "portaconv": __version__,
        "python": platform.python_version(),
        "command": command or shlex.join(["portaconv", *sys.argv[1:]]),
        "out": str(out),
    }
    return summary, test["confusion"], data["classes"]


def _is_count(value: Any, minimum: int = 1) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _is_numbers(values: Any) -> bool:
    """A non-empty list of finite numbers."""

    def finite(v: Any) -> bool:
        return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)

    return isinstance(values, list) and len(values) > 0 and all(map(finite, values))


#: What :func:`check_run_meta` asks of a checkpoint's metadata: (entry, what it must be, test).
_META_ENTRIES: list[tuple[str, str, Callable[[Any], bool]]] = [
    ("config", "the run's settings", lambda v: isinstance(v, dict)),
    ("config.dataset", f"one of {sorted(RECIPES)}", lambda v: v in RECIPES),
    ("config.seed", "a non-negative integer", lambda v: _is_count(v, 0)),
    ("config.subset", "null or a positive integer", lambda v: v is None or _is_count(v)),
    ("model", "the model's description", lambda v: isinstance(v, dict)),
    ("model.name", f"one of {sorted(MODELS)}", lambda v: v in MODELS),
    (
        "model.input_shape",
        "a list of positive integers",
        lambda v: isinstance(v, list) and all(map(_is_count, v)),
    ),
    ("model.classes", "an integer of at least 2", lambda v: _is_count(v, 2)),
    ("normalisation", "the input's mean and std", lambda v: isinstance(v, dict)),
    ("normalisation.mean", "a list of numbers", _is_numbers),
    ("normalisation.std", "a list of positive numbers", lambda v: _is_numbers(v) and min(v) > 0),
    (
        "fold",
        "null or [index, k]",
        lambda v: (
            v is None or isinstance(v, list) and len(v) == 2 and all(map(_is_count, v, (0, 2)))
        ),
    ),
]


def check_run_meta(meta: dict[str, Any]) -> None:
    """``ValueError`` unless a checkpoint's ``meta`` describes a run as :func:`run_experiment`
    writes it (the settings, the model, the input normalisation), naming the first entry
    that is missing or malformed."""
    for entry, what, ok in _META_ENTRIES:
        value = meta
        for key in entry.split("."):
            if not isinstance(value, dict) or key not in value:
                raise ValueError(f"its metadata lacks {entry} ({what})")
            value = value[key]
        if not ok(value):
            raise ValueError(f"its metadata's {entry} is {value!r:.60}, expected {what}")
    norm = meta["normalisation"]
    if len(norm["mean"]) != len(norm["std"]):
        raise ValueError(
            f"its metadata's normalisation has {len(norm['mean'])} means but "
            f"{len(norm['std'])} standard deviations"
        )


def evaluate_checkpoint(
    path: str | Path,
    data_dir: str | None = None,
    backend: str | None = None,
    device: str | None = None,
    subset: int | None = None,
) -> dict[str, Any]:
    """Rebuild the model a checkpoint was trained as, load its weights, evaluate on the test
    split of its dataset (standardised with the statistics stored in the checkpoint); a
    cross-validation fold's checkpoint is evaluated on its own held-out fold, and one of a
    run on a ``subset`` on that subset's test images (unless ``subset`` says otherwise)."""
    if subset is not None:
        check_int("portaconv evaluate", "--subset", subset)
    state = _run_state(Path(path))
    meta = state["meta"]
    choose_backend(backend, device)
    config = meta["config"]
    data_dir = data_dir or config.get("data_dir")
    if subset is None:
        subset = config["subset"]  # test on what the run tested on
    data = load_split(config["dataset"], meta.get("fold"), config.get("seed", 0), data_dir)
    X, y = data.X_test, data.y_test
    if subset:
        X, y = X[:subset], y[:subset]
    norm = meta["normalisation"]
    X = normalize(X, norm["mean"], norm["std"])
    spec = meta["model"]
    model = build_model(spec["name"], spec["input_shape"], spec["classes"])
    try:
        model.load_state_dict(state["model"])
    except (ValueError, TypeError) as exc:  # arrays that do not fit the model it names
        raise ValueError(
            f"checkpoint {path}: its weights are not those of the {spec['name']} its metadata "
            f"names ({exc})"
        ) from exc
    result = Trainer(model, progress=False).evaluate(
        DataLoader(X, y, batch_size=256), spec["classes"]
    )
    return {
        "checkpoint": str(path),
        "dataset": config["dataset"],
        "model": spec["name"],
        "fold": meta.get("fold"),
        "epoch": state["epoch"],
        "subset": subset,
        "backend": get_backend().name,
        "test_images": result["count"],
        "test_accuracy": result["accuracy"],
        "test_loss": result["loss"],
    }
