"""A run's directory: the files it writes besides the trainer's, and what ``--resume`` reads
back from it.

``config.json`` (:func:`write_config`) and ``summary.json`` with ``confusion_matrix.json``
(:func:`write_results`); for ``--resume``, the run's settings (:func:`with_run_settings`)
and the check that its checkpoint fits the run being continued (:func:`check_resumable`).
A fresh run never replaces another's checkpoints (:func:`refuse_to_overwrite`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import platform
import shlex
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..backend import get_backend
from ..checks import counted
from ._json import dumps
from .checkpoint import load_checkpoint
from .checkpoint_checks import check_run_data, check_run_meta, check_training_state
from .config import WHO, TrainConfig, flag
from .trainer import CHECKPOINT

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


def run_state(path: Path) -> dict[str, Any]:
    """A run's checkpoint, checked to be a training checkpoint with the run's metadata."""
    state = load_checkpoint(path)
    with checkpoint_errors(path):
        check_training_state(state)
        check_run_meta(state["meta"])
    return state


@contextlib.contextmanager
def checkpoint_errors(path: Path) -> Iterator[None]:
    """A ``ValueError`` raised inside (a check of the checkpoint's entries) names ``path``."""
    try:
        yield
    except ValueError as exc:
        raise ValueError(f"checkpoint {path}: {exc}") from exc


def with_run_settings(config: TrainConfig) -> TrainConfig:
    """For ``--resume``: ``config`` with each setting it leaves unset taken from the run in
    ``config.out`` (not from the recipe); a setting that defines the run (:data:`_FIXED`)
    and differs from the run's is a ``ValueError`` that lists every difference."""
    if config.out is None:
        raise ValueError(f"{WHO}: --resume needs --out DIR, the run directory to continue")
    path = _checkpoint_of_run(Path(config.out))
    if path is None:
        return config  # nothing to continue: a fresh run, the trainer says so
    saved = run_state(path)["meta"]["config"]
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


def check_resumable(
    config: TrainConfig, data: dict[str, Any], fold: tuple[int, int] | None
) -> None:
    """Before a resumed run (one directory, one fold) starts: its checkpoint was trained as
    ``config`` says, on the same images (the normalisation statistics agree), for no more
    than ``config.epochs`` epochs."""
    out = Path(config.out)
    if not (out / CHECKPOINT).exists():
        return
    state = run_state(out / CHECKPOINT)
    meta = state["meta"]
    with checkpoint_errors(out / CHECKPOINT):
        check_run_data(meta, data["input_shape"], len(data["classes"]))
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
            f"{counted(state['epoch'], 'epoch')} already; give --epochs {state['epoch']} or more"
        )


def _rounded(values: list[float]) -> str:
    return "[" + ", ".join(f"{v:.4g}" for v in values) + "]"


def refuse_to_overwrite(out: Path) -> None:
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


def write_results(out: Path, summary: dict[str, Any], confusion: np.ndarray) -> None:
    """``out/summary.json`` and ``out/confusion_matrix.json``, when a run has been tested."""
    (out / "summary.json").write_text(dumps(summary, indent=2) + "\n")
    (out / "confusion_matrix.json").write_text(dumps(confusion.tolist()) + "\n")
