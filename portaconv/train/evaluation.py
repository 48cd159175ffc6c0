"""Scoring a checkpoint again: what ``portaconv evaluate`` does.

:func:`evaluate_checkpoint` rebuilds the model from the checkpoint alone (its metadata
names the model, its input shape and classes, and the input's normalisation) and scores it
on the test split the run was tested on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..backend import get_backend
from ..checks import check_int
from ..data import DataLoader, normalize
from ..models import build_model
from .checkpoint_checks import check_run_data
from .prepare import choose_backend, load_split
from .rundir import checkpoint_errors, run_state
from .trainer import Trainer


def model_of_run(path: str | Path, state: dict[str, Any]) -> Any:
    """The model a run's checkpoint ``state`` (read by ``run_state(path)``, its data checked
    by ``check_run_data``) names, built on the active backend with its weights loaded."""
    spec = state["meta"]["model"]
    model = build_model(spec["name"], spec["input_shape"], spec["classes"])
    try:
        model.load_state_dict(state["model"])
    except (ValueError, TypeError) as exc:  # arrays that do not fit the model it names
        raise ValueError(
            f"checkpoint {path}: its weights are not those of the {spec['name']} its metadata "
            f"names ({exc})"
        ) from exc
    return model


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
    state = run_state(Path(path))
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
    with checkpoint_errors(path):  # before the model's weights are allocated
        check_run_data(meta, X.shape[1:], len(data.classes))
    norm = meta["normalisation"]
    X = normalize(X, norm["mean"], norm["std"])
    spec = meta["model"]
    model = model_of_run(path, state)
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
