"""One training run from a dataset name to a summary: what ``portaconv train`` does.

:func:`run_experiment` loads the dataset, standardises it with statistics of the training
split, holds out a validation split (:mod:`~portaconv.train.prepare`), builds the model, the
optimizer and the scheduler, fits with a :class:`~portaconv.train.Trainer`, evaluates on the
test split and writes ``summary.json`` beside the checkpoints, metrics and plots
(:mod:`~portaconv.train.rundir`). :func:`evaluate_checkpoint`
(:mod:`~portaconv.train.evaluation`) rebuilds the model from a checkpoint alone and
evaluates it again.
"""

from __future__ import annotations

import dataclasses
import platform
import shlex
import sys
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..backend import get_backend, manual_seed, num_threads
from ..checks import counted
from ..data import AUGMENTATIONS, DataLoader
from ..distributed import Communicator, is_root, on_root, seed_rank, sync_batch_norm, world
from ..layers import CrossEntropyLoss
from ..models import build_model
from ..optim import SGD, Adam, AdamW, CosineAnnealingLR, ExponentialLR, StepLR
from . import plots
from .checkpoint_checks import check_run_meta
from .config import WHO, TrainConfig
from .evaluation import evaluate_checkpoint
from .prepare import choose_backend, fetch, load_split, prepare_data
from .rundir import (
    check_resumable,
    refuse_to_overwrite,
    with_run_settings,
    write_config,
    write_results,
)
from .trainer import Trainer

#: Importable from here as before the run-directory, data and evaluation code moved out.
__all__ = [
    "check_run_meta",
    "choose_backend",
    "evaluate_checkpoint",
    "load_split",
    "make_optimizer",
    "make_scheduler",
    "prepare_data",
    "run_experiment",
    "train_model",
    "with_run_settings",
    "write_config",
]


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
        write_results(Path(config.out), summary, confusion)
    return summary


def _resolve_config(config: TrainConfig, comm: Communicator | None) -> TrainConfig:
    """``config`` with the run's or the recipe's settings filled in and checked, and its
    ``--out`` free for a fresh run (on rank 0 alone, which owns the files)."""
    num_threads()  # checks PORTACONV_NUM_THREADS now, before any file is written
    if config.resume:
        config = with_run_settings(config)
    config = config.resolved()
    if not config.resume:
        refuse_to_overwrite(Path(config.out))
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


def _title(config: TrainConfig) -> str:
    """The plots' title: the run's dataset, model and backend."""
    backend = get_backend()
    where = f"{backend.name} on {backend.device} ({backend.dtype_name})"
    return f"{config.dataset}, {config.model}, {where}"


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
            write_results(Path(fold_config.out), summary, fold_confusion)
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
        "compile_seconds": sum(run["compile_seconds"] for run in runs),
        # the folds' timed images (the steps that compiled left out) over their seconds
        "images_per_second": sum(
            (run["images_per_second"] or 0.0) * run["train_seconds"] for run in runs
        )
        / seconds
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
        f"learning-rate schedule re-planned for {counted(config.epochs, 'epoch')} from lr "
        f"{config.lr:g} (the run had {saved['epochs']} from {saved['lr']:g}); epoch "
        f"{trainer.epoch + 1} trains at lr {trainer.optimizer.lr:.3g}"
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
        on_root(comm, lambda: fetch(config, fold))
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
        on_root(comm, lambda: check_resumable(config, data, fold))
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
        "compile_seconds": trainer.compile_seconds,
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
