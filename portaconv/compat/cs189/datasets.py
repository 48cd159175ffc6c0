"""The package's data sets: ``initialize_dataset(name, batch_size)`` -> a ``Dataset`` with
``train``, ``validate`` and ``test`` splits, each a ``Data`` sampled batch by batch.

Where the working directory has the course's files, ``datasets/<name>/<name>_train_data.npy``
(and ``_train_labels``, ``_val_data``, ``_val_labels``, ``_test_data``, ``_test_labels``),
they are loaded as the package loads them. Otherwise portaconv's loaders
(:mod:`portaconv.data`) give "iris" (raw features, not standardized, as the course's),
"mnist", "fashion_mnist" (or "fashion-mnist") and "cifar10": images NHWC in [0, 1], labels
one-hot, and a validation split held out of the training set (stratified, seed 0): 20 % of
Iris, 10,000 images of the others.

Arrays live on the active backend and keep their dtype (the course's files: as saved;
portaconv's loaders: float32). ``Data.sample()`` returns the next ``batch_size`` rows (the
last batch may be short), reshuffling with NumPy's global generator at the start of each
epoch, as the package.

>>> from portaconv.compat.cs189.datasets import initialize_dataset
>>> iris = initialize_dataset("iris", batch_size=25)
>>> iris.out_dim, iris.train.samples_per_epoch, iris.train.data_.shape
(3, 4, (96, 4))
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np
from array_api_compat import array_namespace, device

from ...backend import get_backend, to_backend
from ...data import load_dataset, train_val_split
from .utils import integers_to_one_hot, unknown_name

__all__ = ["Data", "Dataset", "initialize_dataset"]

_PARTS = ("train_data", "train_labels", "val_data", "val_labels", "test_data", "test_labels")
_LOADERS = {
    "iris": "iris",
    "mnist": "mnist",
    "fashion_mnist": "fashion-mnist",
    "fashion-mnist": "fashion-mnist",
    "cifar10": "cifar10",
    "cifar-10": "cifar10",
}


def _on_backend(x: np.ndarray) -> Any:
    """``x`` on the active backend, float32 or float64 as it is (else the backend's dtype)."""
    xp = get_backend().xp
    kept = x.dtype.name if x.dtype.name in ("float32", "float64") else None
    return to_backend(x, dtype=getattr(xp, kept) if kept else None)


def _course_files(name: str) -> dict[str, str] | None:
    paths = {part: os.path.join("datasets", name, f"{name}_{part}.npy") for part in _PARTS}
    return paths if all(os.path.isfile(p) for p in paths.values()) else None


def _from_portaconv(name: str) -> list[np.ndarray]:
    """(train X, train Y, val X, val Y, test X, test Y) from portaconv's loader, NHWC,
    one-hot labels in the images' dtype."""
    data = load_dataset(_LOADERS[name])
    fraction = 0.2 if name == "iris" else 10_000 / len(data.X_train)
    X_train, y_train, X_val, y_val = train_val_split(data.X_train, data.y_train, fraction, seed=0)
    parts = []
    for X, y in ((X_train, y_train), (X_val, y_val), (data.X_test, data.y_test)):
        if X.ndim == 4:  # NCHW -> NHWC, contiguous so that batches are plain slices
            X = np.ascontiguousarray(X.transpose(0, 2, 3, 1))
        one_hot = integers_to_one_hot(y, data.num_classes - 1).astype(X.dtype)
        parts += [X, one_hot]
    return parts


def initialize_dataset(name: str, batch_size: int = 50) -> Dataset:
    """The data set ``name`` (see the module for where it is read from)."""
    files = _course_files(name)
    if files is not None:
        parts = [np.load(files[part]) for part in _PARTS]
    elif name in _LOADERS:
        parts = _from_portaconv(name)
    else:
        raise unknown_name(
            "initialize_dataset",
            f"data set (no datasets/{name}/{name}_train_data.npy and the others here, "
            "nor a portaconv loader)",
            name,
            _LOADERS,
        )
    train_X, train_Y, val_X, val_Y, test_X, test_Y = (_on_backend(p) for p in parts)
    return Dataset(
        training_set=train_X,
        training_labels=train_Y,
        batch_size=batch_size,
        validation_set=val_X,
        validation_labels=val_Y,
        test_set=test_X,
        test_labels=test_Y,
    )


class Data:
    """One split: ``sample()`` gives (X, Y) batches in order, reshuffled every epoch."""

    def __init__(
        self, data: Any, batch_size: int = 50, labels: Any = None, out_dim: int | None = None
    ) -> None:
        if not (isinstance(batch_size, int) and batch_size > 0):
            raise ValueError(f"Data: batch_size must be a positive integer, got {batch_size!r}")
        if labels is not None and labels.shape[0] != data.shape[0]:
            raise ValueError(
                f"Data: data has {data.shape[0]} rows but labels has {labels.shape[0]}"
            )
        self.data_ = data
        self.labels = labels
        self.out_dim = out_dim
        self.iteration = 0
        self.batch_size = batch_size
        self.n_samples = data.shape[0]
        self.samples_per_epoch = math.ceil(self.n_samples / batch_size)

    def __repr__(self) -> str:
        return f"Data(n_samples={self.n_samples}, batch_size={self.batch_size})"

    def shuffle(self) -> None:
        """Reorder the rows (data and labels alike) by NumPy's global generator."""
        order = np.arange(self.n_samples)
        np.random.shuffle(order)
        xp = array_namespace(self.data_)
        order = xp.asarray(order, device=device(self.data_))
        self.data_ = xp.take(self.data_, order, axis=0)
        if self.labels is not None:
            self.labels = xp.take(self.labels, order, axis=0)

    def sample(self) -> Any:
        """The next batch: (X, Y), or X alone without labels."""
        if self.iteration == 0:
            self.shuffle()
        low = self.iteration * self.batch_size
        high = low + self.batch_size
        self.iteration = (self.iteration + 1) % self.samples_per_epoch
        if self.labels is not None:
            return self.data_[low:high, ...], self.labels[low:high, ...]
        return self.data_[low:high, ...]

    def reset(self) -> None:
        self.iteration = 0


class Dataset:
    """``train``, ``validate`` (and ``test``) splits; ``out_dim`` is the labels' width."""

    def __init__(
        self,
        training_set: Any,
        training_labels: Any,
        batch_size: int,
        validation_set: Any = None,
        validation_labels: Any = None,
        test_set: Any = None,
        test_labels: Any = None,
    ) -> None:
        if getattr(training_labels, "ndim", 0) != 2:
            raise ValueError(
                "Dataset: training_labels must be one-hot rows (N, classes), got shape "
                f"{getattr(training_labels, 'shape', None)}"
            )
        self.batch_size = batch_size
        self.n_training = training_set.shape[0]
        self.n_validation = 0 if validation_set is None else validation_set.shape[0]
        self.out_dim = training_labels.shape[1]
        self.train = Data(training_set, batch_size, training_labels, self.out_dim)
        if validation_set is not None:
            self.validate = Data(validation_set, batch_size, validation_labels, self.out_dim)
        if test_set is not None:
            self.test = Data(test_set, batch_size, test_labels, self.out_dim)

    def __repr__(self) -> str:
        return (
            f"Dataset(n_training={self.n_training}, n_validation={self.n_validation}, "
            f"out_dim={self.out_dim}, batch_size={self.batch_size})"
        )
