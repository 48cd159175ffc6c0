"""What a run computes with and on: the active backend, and the dataset's splits prepared
for training (standardised, with a validation split held out).

Shared by :mod:`~portaconv.train.experiment` (training) and
:mod:`~portaconv.train.evaluation` (scoring a checkpoint again).
"""

from __future__ import annotations

from typing import Any

from ..backend import BackendUnavailableError, get_backend, set_backend
from ..data import Dataset, load_dataset, mean_std, normalize, train_val_split
from .config import WHO, TrainConfig


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


def fetch(config: TrainConfig, fold: tuple[int, int] | None) -> None:
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
