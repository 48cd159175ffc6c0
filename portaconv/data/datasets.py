"""Data sets as NumPy arrays on the host: the registry, two embedded sets, three downloads,
and the splits and scaling every run uses.

Every loader returns a :class:`Dataset` with ``X`` float32 and ``y`` int64. Images are
``(N, C, H, W)`` scaled to ``[0, 1]``; Iris is ``(N, 4)`` raw measurements in cm.

- ``digits`` (1,797 8x8 images, 10 classes) and ``iris`` (150 x 4, 3 classes) ship inside
  the package (``_files/``, copies from scikit-learn, see ``_files/README.md``) and are split
  into train and test here, stratified and deterministic.
- ``mnist``, ``fashion-mnist`` (IDX files, 60k/10k) and ``cifar10`` (python pickle batches,
  50k/10k) are found or downloaded by :mod:`~portaconv.data.sources` and read by
  :mod:`~portaconv.data.readers`.
"""

from __future__ import annotations

import gzip
import importlib.resources
import io
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..checks import check_int
from . import sources
from .readers import batch_entry, read_cifar_batch, read_idx, read_idx_pair, unpickle
from .sources import SYSTEM_DIRS, DatasetNotFoundError, cache_dir

__all__ = [
    "DATASETS",
    "SYSTEM_DIRS",
    "Dataset",
    "DatasetNotFoundError",
    "cache_dir",
    "load_cifar10",
    "load_dataset",
    "load_digits",
    "load_fashion_mnist",
    "load_iris",
    "load_mnist",
    "mean_std",
    "normalize",
    "read_cifar_batch",
    "read_idx",
    "standardize",
    "train_val_split",
]


@dataclass(repr=False)
class Dataset:
    """A train/test split held as NumPy arrays on the host.

    ``X_*``: float32, ``(N, C, H, W)`` for images or ``(N, F)`` for feature vectors;
    ``y_*``: int64 class indices into ``classes``; ``input_shape`` is ``X_train.shape[1:]``.
    """

    name: str
    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    classes: list[str]
    input_shape: tuple[int, ...]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __repr__(self) -> str:
        return (
            f"Dataset(name={self.name!r}, train={len(self.X_train)}, test={len(self.X_test)}, "
            f"input_shape={self.input_shape}, classes={len(self.classes)})"
        )


# ------------------------------------------------------------------------ splits and scaling


def _check_fraction(fraction: float, what: str) -> float:
    fraction = float(fraction)
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"{what} must be in [0, 1), got {fraction}")
    return fraction


def _stratified_split(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Index arrays (kept, held out): about ``fraction`` of each class held out, at random.

    Each class keeps at least one example. Both index arrays are sorted, so the split keeps
    the original order; which examples are held out depends only on ``y`` and ``seed``.
    """
    rng = np.random.default_rng(seed)
    held_out = []
    for label in np.unique(y):
        members = np.flatnonzero(y == label)
        count = min(int(np.floor(len(members) * fraction + 0.5)), len(members) - 1)
        held_out.append(rng.permutation(members)[:count])
    held = np.sort(np.concatenate(held_out)) if held_out else np.zeros(0, dtype=np.intp)
    mask = np.ones(len(y), dtype=bool)
    mask[held] = False
    return np.flatnonzero(mask), held


def train_val_split(
    X: Any, y: Any, val_fraction: float = 0.1, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Split off a validation set: returns ``(X_train, y_train, X_val, y_val)``.

    About ``val_fraction`` of each class (rounded, at least one example per class stays in
    train) goes to validation, drawn with ``np.random.default_rng(seed)``: the same inputs
    and seed always give the same split. Both parts keep the original order.
    """
    X = np.asarray(X)
    y = np.asarray(y)
    if len(X) != len(y):
        raise ValueError(f"train_val_split: X has {len(X)} rows but y has {len(y)}")
    keep, held = _stratified_split(y, _check_fraction(val_fraction, "val_fraction"), seed)
    return X[keep], y[keep], X[held], y[held]


def mean_std(X_train: Any) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature (``(N, F)``) or per-channel (``(N, C, ...)``) mean and standard deviation.

    Reduced over every axis but axis 1 and returned with ``keepdims`` so they broadcast
    against ``X``; a constant feature gets std 1 (it is centred, not blown up).
    """
    X_train = np.asarray(X_train)
    if X_train.ndim < 2:
        raise ValueError(f"mean_std needs X of shape (N, F) or (N, C, ...), got {X_train.shape}")
    axes = (0, *range(2, X_train.ndim))
    mean = X_train.mean(axis=axes, keepdims=True, dtype=np.float64)
    std = X_train.std(axis=axes, keepdims=True, dtype=np.float64)
    std = np.where(std > 0, std, 1.0)
    return mean.astype(np.float32), std.astype(np.float32)


def normalize(X: Any, mean: Sequence[float] | Any, std: Sequence[float] | Any) -> np.ndarray:
    """``(X - mean) / std`` per feature or channel (axis 1), in float32.

    ``mean`` and ``std`` hold one value per feature/channel, as :func:`mean_std` returns them
    or as a checkpoint keeps them (lists).
    """
    X = np.asarray(X, dtype=np.float32)
    shape = (1, -1) + (1,) * (X.ndim - 2)
    m = np.asarray(mean, dtype=np.float32).reshape(shape)
    s = np.asarray(std, dtype=np.float32).reshape(shape)
    return ((X - m) / s).astype(np.float32)


def standardize(X_train: Any, *others: Any) -> tuple[np.ndarray, ...]:
    """``(X - mean) / std`` for ``X_train`` and each of ``others``, with statistics of train only.

    ``standardize(X_train, X_val, X_test)`` returns the three arrays standardized (float32),
    per feature for ``(N, F)`` and per channel for ``(N, C, H, W)``; see :func:`mean_std`.
    """
    mean, std = mean_std(X_train)
    return tuple(normalize(X, mean, std) for X in (X_train, *others))


# ------------------------------------------------------------------------ embedded data sets


def _embedded(name: str) -> bytes:
    return importlib.resources.files(__package__).joinpath("_files").joinpath(name).read_bytes()


def stratified_folds(y: Any, k: int, seed: int = 0) -> list[np.ndarray]:
    """Partition the indices of ``y`` into ``k`` folds for cross-validation.

    Each class is shuffled with ``np.random.default_rng(seed)`` and dealt to the folds in
    turn, so every fold holds about ``1/k`` of each class (class counts differ by at most
    one between folds). Returns ``k`` sorted, disjoint index arrays covering ``range(len(y))``.
    """
    y = np.asarray(y)
    k = check_int("stratified_folds", "k", k, minimum=2)
    if k > len(y):
        raise ValueError(f"stratified_folds: k={k} folds need at least {k} samples, got {len(y)}")
    rng = np.random.default_rng(seed)
    fold_of = np.empty(len(y), dtype=np.intp)
    start = 0  # the next class's first member goes to the fold after the last one dealt
    for label in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == label))
        fold_of[members] = (start + np.arange(len(members))) % k
        start = (start + len(members)) % k
    return [np.flatnonzero(fold_of == i) for i in range(k)]


def _split_dataset(
    name: str,
    X: np.ndarray,
    y: np.ndarray,
    classes: list[str],
    test_fraction: float,
    seed: int,
    fold: tuple[int, int] | None = None,
) -> Dataset:
    if fold is None:
        train, test = _stratified_split(y, _check_fraction(test_fraction, "test_fraction"), seed)
    else:
        index, k = _check_fold(name, fold)
        test = stratified_folds(y, k, seed)[index]
        train = np.setdiff1d(np.arange(len(y)), test)
    return Dataset(
        name=name,
        X_train=X[train],
        y_train=y[train],
        X_test=X[test],
        y_test=y[test],
        classes=classes,
        input_shape=tuple(X.shape[1:]),
    )


def _check_fold(name: str, fold: Any) -> tuple[int, int]:
    """``fold=(i, k)``: fold ``i`` of ``k`` is the test split."""
    if not isinstance(fold, tuple | list) or len(fold) != 2:
        raise TypeError(f"load_{name}: fold must be a pair (index, k), got {fold!r}")
    k = check_int(f"load_{name}", "k of fold=(index, k)", fold[1], minimum=2)
    index = check_int(f"load_{name}", "index of fold=(index, k)", fold[0], minimum=0)
    if index >= k:
        raise ValueError(f"load_{name}: fold index must be below k={k}, got {index}")
    return index, k


def load_digits(
    test_fraction: float = 0.2, seed: int = 0, fold: tuple[int, int] | None = None
) -> Dataset:
    """The 8x8 handwritten digits (1,797 images, 10 classes), embedded in the package.

    ``X``: ``(N, 1, 8, 8)`` float32 in ``[0, 1]`` (pixel counts 0..16 divided by 16). The
    split is stratified and fixed by ``seed``: about ``test_fraction`` of each digit is test,
    or, given ``fold=(i, k)``, fold ``i`` of :func:`stratified_folds` ``(y, k, seed)``.
    """
    text = gzip.decompress(_embedded("digits.csv.gz")).decode("ascii")
    table = np.loadtxt(io.StringIO(text), delimiter=",", dtype=np.float64)
    if table.shape != (1797, 65):
        raise ValueError(f"embedded digits.csv.gz has shape {table.shape}, expected (1797, 65)")
    X = (table[:, :64] / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    y = table[:, 64].astype(np.int64)
    return _split_dataset("digits", X, y, [str(d) for d in range(10)], test_fraction, seed, fold)


def load_iris(
    test_fraction: float = 0.2, seed: int = 0, fold: tuple[int, int] | None = None
) -> Dataset:
    """Fisher's Iris (150 x 4 features in cm, 3 classes), embedded in the package.

    ``X``: ``(N, 4)`` float32, raw (sepal length, sepal width, petal length, petal width);
    standardize with :func:`standardize`. The split is stratified and fixed by ``seed``;
    ``fold=(i, k)`` makes fold ``i`` of :func:`stratified_folds` ``(y, k, seed)`` the test
    split instead (k-fold cross-validation: each flower is tested once over the k folds).
    """
    lines = _embedded("iris.csv").decode("ascii").splitlines()
    header = lines[0].split(",")
    n_samples, n_features, classes = int(header[0]), int(header[1]), header[2:]
    table = np.loadtxt(lines[1:], delimiter=",", dtype=np.float64, ndmin=2)
    if table.shape != (n_samples, n_features + 1):
        raise ValueError(f"embedded iris.csv has shape {table.shape}, header says {header[:2]}")
    X = table[:, :n_features].astype(np.float32)
    y = table[:, n_features].astype(np.int64)
    return _split_dataset("iris", X, y, classes, test_fraction, seed, fold)


# ----------------------------------------------------------------- the downloadable sets


def _idx_dataset(name: str, data_dir: Any, download: bool) -> Dataset:
    files, classes = sources.locate_idx(name, data_dir, download)
    X_train, y_train = read_idx_pair(
        files["train-images-idx3-ubyte"], files["train-labels-idx1-ubyte"], len(classes)
    )
    X_test, y_test = read_idx_pair(
        files["t10k-images-idx3-ubyte"], files["t10k-labels-idx1-ubyte"], len(classes)
    )
    return Dataset(
        name=name,
        X_train=X_train,
        y_train=y_train,
        X_test=X_test,
        y_test=y_test,
        classes=classes,
        input_shape=tuple(X_train.shape[1:]),
    )


def load_fashion_mnist(data_dir: str | os.PathLike | None = None, download: bool = True) -> Dataset:
    """Fashion-MNIST (Zalando): 60,000 train + 10,000 test 28x28 grey images, 10 classes.

    ``X``: ``(N, 1, 28, 28)`` float32 in ``[0, 1]``. Reads the four IDX files
    (``train-images-idx3-ubyte[.gz]`` and so on) from the first directory in the search
    order (:mod:`~portaconv.data.sources`) that has them all; Debian's
    ``dataset-fashion-mnist`` package is found without configuration. Raises
    :class:`DatasetNotFoundError` when absent and ``download`` is False or fails.
    """
    return _idx_dataset("fashion-mnist", data_dir, download)


def load_mnist(data_dir: str | os.PathLike | None = None, download: bool = True) -> Dataset:
    """MNIST handwritten digits: 60,000 train + 10,000 test 28x28 grey images, 10 classes.

    ``X``: ``(N, 1, 28, 28)`` float32 in ``[0, 1]``; files and search as for
    :func:`load_fashion_mnist`, downloaded from PyTorch's mirror of LeCun's files.
    """
    return _idx_dataset("mnist", data_dir, download)


def load_cifar10(data_dir: str | os.PathLike | None = None, download: bool = True) -> Dataset:
    """CIFAR-10: 50,000 train + 10,000 test 32x32 colour images, 10 classes.

    ``X``: ``(N, 3, 32, 32)`` float32 in ``[0, 1]``. Reads the python batches
    (``cifar-10-batches-py/data_batch_1..5``, ``test_batch``, ``batches.meta``) found in a
    search directory or its ``cifar-10-batches-py`` subdirectory; downloads and unpacks
    ``cifar-10-python.tar.gz`` (163 MB) into the user cache when absent.
    """
    batches = sources.locate_cifar10(data_dir, download)
    train = [read_cifar_batch(batches / f"data_batch_{i}") for i in range(1, 6)]
    images_test, y_test = read_cifar_batch(batches / "test_batch")
    meta = unpickle(batches / "batches.meta")
    if not isinstance(meta, dict):
        raise ValueError(f"{batches / 'batches.meta'}: should be a dict, got {type(meta)}")
    names = batch_entry(meta, "label_names", batches / "batches.meta")
    classes = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    if len(classes) != 10:
        raise ValueError(f"{batches / 'batches.meta'}: {len(classes)} label names, expected 10")

    def scaled(images: np.ndarray) -> np.ndarray:
        X = images.astype(np.float32)
        X /= np.float32(255)
        return X

    return Dataset(
        name="cifar10",
        X_train=scaled(np.concatenate([images for images, _ in train])),
        y_train=np.concatenate([labels for _, labels in train]),
        X_test=scaled(images_test),
        y_test=y_test,
        classes=classes,
        input_shape=(3, 32, 32),
    )


# ---------------------------------------------------------------------------------- registry

DATASETS: dict[str, Callable[..., Dataset]] = {
    "digits": load_digits,
    "iris": load_iris,
    "fashion-mnist": load_fashion_mnist,
    "mnist": load_mnist,
    "cifar10": load_cifar10,
}
_EMBEDDED = ("digits", "iris")
_ALIASES = {"fashion_mnist": "fashion-mnist", "fashionmnist": "fashion-mnist"}
_ALIASES["cifar-10"] = "cifar10"


def load_dataset(
    name: str,
    data_dir: str | os.PathLike | None = None,
    download: bool = True,
    **options: Any,
) -> Dataset:
    """Load a data set by name (a key of :data:`DATASETS`).

    ``data_dir`` and ``download`` apply to the downloadable sets and are ignored by the
    embedded ``digits`` and ``iris``; ``options`` go to the loader (``test_fraction=``,
    ``seed=`` for the embedded ones).
    """
    key = str(name).strip().lower()
    key = _ALIASES.get(key, key)
    if key not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; valid names are {', '.join(DATASETS)}")
    if key in _EMBEDDED:
        return DATASETS[key](**options)
    return DATASETS[key](data_dir=data_dir, download=download, **options)
