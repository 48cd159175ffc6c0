"""Data sets as NumPy arrays on the host: two embedded ones and three standard downloads.

Every loader returns a :class:`Dataset` with ``X`` float32 and ``y`` int64. Images are
``(N, C, H, W)`` scaled to ``[0, 1]``; Iris is ``(N, 4)`` raw measurements in cm.

- ``digits`` (1,797 8x8 images, 10 classes) and ``iris`` (150 x 4, 3 classes) ship inside
  the package (``_files/``, copies from scikit-learn, see ``_files/README.md``) and are split
  into train and test here, stratified and deterministic.
- ``mnist``, ``fashion-mnist`` (IDX files, 60k/10k) and ``cifar10`` (python pickle batches,
  50k/10k) are looked for, in this order, in

  1. the ``data_dir`` argument,
  2. ``$PORTACONV_DATA`` (several directories may be joined with ``os.pathsep``),
  3. the user cache, ``${XDG_CACHE_HOME:-~/.cache}/portaconv``,
  4. the system directories in :data:`SYSTEM_DIRS` (Debian's ``dataset-fashion-mnist``
     package installs Fashion-MNIST in ``/usr/share/datasets/fashion-mnist``),

  each as the directory itself and as ``<dir>/<dataset name>``. The first directory that
  holds every file wins; a ``data_dir`` that holds only some of them is an error that names
  the missing ones (never a silent fall-back to another copy). Where no directory has the
  files and ``download=True``, they are fetched from the official mirror into
  ``<data_dir>/<dataset name>`` (without ``data_dir``: the user cache), checked against
  their published MD5 sums, and only then put in place. Offline, a
  :class:`DatasetNotFoundError` says where it looked and how to get the files by hand.

Files found locally are validated by their contents (IDX header and byte count, pickle keys
and sizes, label range), not by checksum, so re-compressed or uncompressed copies work. A
corrupt or truncated file is a ``ValueError`` naming the file; nothing is ever cropped.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.resources
import io
import os
import pickle
import shutil
import sys
import tarfile
import tempfile
import urllib.request
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..checks import check_int

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
    "read_cifar_batch",
    "read_idx",
    "standardize",
    "train_val_split",
]


class DatasetNotFoundError(FileNotFoundError):
    """A data set's files are neither on disk nor downloadable; the message says how to fix it."""


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


def standardize(X_train: Any, *others: Any) -> tuple[np.ndarray, ...]:
    """``(X - mean) / std`` for ``X_train`` and each of ``others``, with statistics of train only.

    ``standardize(X_train, X_val, X_test)`` returns the three arrays standardized (float32),
    per feature for ``(N, F)`` and per channel for ``(N, C, H, W)``; see :func:`mean_std`.
    """
    mean, std = mean_std(X_train)
    return tuple(
        ((np.asarray(X, dtype=np.float32) - mean) / std).astype(np.float32)
        for X in (X_train, *others)
    )


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


# ------------------------------------------------------------------------------- IDX reader

# IDX type codes (third byte of the magic number) -> big-endian NumPy dtype.
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_GZIP_MAGIC = b"\x1f\x8b"


def _read_bytes(path: Path) -> bytes:
    """The file's bytes, gunzipped when it is gzip (told by its first bytes, not its name)."""
    raw = path.read_bytes()
    if not raw.startswith(_GZIP_MAGIC):
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as exc:
        raise ValueError(f"{path}: corrupt or truncated gzip data ({exc})") from exc


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file (LeCun's MNIST format), gzip-compressed or raw.

    Layout: magic ``0x0000TTDD`` (type code TT, ``0x08`` = uint8; DD dimensions), then DD
    big-endian uint32 sizes, then the data. MNIST images have magic ``0x00000803``
    (``(N, rows, cols)`` uint8), labels ``0x00000801`` (``(N,)`` uint8). Returns a writable
    array in native byte order with exactly the header's shape; a bad magic number or a byte
    count that disagrees with the header raises ``ValueError`` naming the file.
    """
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4:
        raise ValueError(f"{path}: not an IDX file: only {len(data)} bytes, no magic number")
    magic = int.from_bytes(data[:4], "big")
    type_code, ndim = data[2], data[3]
    if data[:2] != b"\x00\x00" or type_code not in _IDX_DTYPES or ndim == 0:
        raise ValueError(
            f"{path}: not an IDX file: bad magic number 0x{magic:08x} (expected 0x0000TTDD with "
            "type TT in 08/09/0b/0c/0d/0e and DD >= 1 dimensions, e.g. 0x00000803 for images)"
        )
    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise ValueError(f"{path}: truncated IDX header: {len(data)} bytes, need {header_size}")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[type_code])
    expected = header_size + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        problem = "truncated" if len(data) < expected else "has trailing bytes"
        raise ValueError(
            f"{path}: IDX file {problem}: header says shape {shape} of {dtype.name}, i.e. "
            f"{expected} bytes, but the file holds {len(data)} bytes"
        )
    values = np.frombuffer(data, dtype=dtype, offset=header_size).reshape(shape)
    return values.astype(dtype.newbyteorder("="))  # a native-order, writable copy


def _read_idx_pair(
    images_path: Path, labels_path: Path, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(N, 1, H, W)`` float32 in [0, 1] and labels ``(N,)`` int64, cross-checked."""
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(
            f"{images_path}: expected IDX images (magic 0x00000803: uint8, 3 dimensions), got "
            f"{images.dtype} of shape {images.shape}"
        )
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise ValueError(
            f"{labels_path}: expected IDX labels (magic 0x00000801: uint8, 1 dimension), got "
            f"{labels.dtype} of shape {labels.shape}"
        )
    if len(images) != len(labels):
        raise ValueError(
            f"{labels_path}: {len(labels)} labels for the {len(images)} images in {images_path}"
        )
    _check_label_range(labels, num_classes, labels_path)
    X = images.astype(np.float32)[:, None, :, :]
    X /= np.float32(255)
    return X, labels.astype(np.int64)


def _check_label_range(labels: np.ndarray, num_classes: int, path: Path) -> None:
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        bad = labels[(labels < 0) | (labels >= num_classes)]
        raise ValueError(
            f"{path}: labels out of range: expected 0..{num_classes - 1}, found {bad[:5].tolist()}"
            f" ({bad.size} bad of {labels.size})"
        )


# ----------------------------------------------------------------------- CIFAR batch reader

CIFAR10_CLASSES = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]

# What a CIFAR pickle may build besides builtin containers: NumPy arrays, their dtypes, and
# (for pickles written by Python 3 with protocol 2) bytes via codecs. Anything else is refused
# rather than executed: unpickling a downloaded file must not run arbitrary code.
_PICKLE_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _PICKLE_ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} (only NumPy arrays)")
        return super().find_class(module, name)


def _unpickle(path: Path) -> Any:
    """``pickle.load(f, encoding="bytes")`` restricted to NumPy arrays and builtin containers."""
    try:
        with open(path, "rb") as f:
            return _ArrayUnpickler(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
        problem = f"{type(exc).__name__}: {exc}"
        raise ValueError(f"{path}: not a readable CIFAR pickle ({problem})") from exc


def _key(batch: dict, key: str, path: Path) -> Any:
    for candidate in (key.encode(), key):  # Python 2 pickles give bytes keys
        if candidate in batch:
            return batch[candidate]
    present = sorted(k.decode() if isinstance(k, bytes) else str(k) for k in batch)
    raise ValueError(f"{path}: CIFAR batch has no {key!r} entry (keys present: {present})")


def read_cifar_batch(
    path: str | os.PathLike, num_classes: int = 10
) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR python batch (``data_batch_1`` ... ``test_batch``).

    The pickle is a dict with ``data``: uint8 ``(N, 3072)`` (each row 1024 red, 1024 green,
    1024 blue values of a 32x32 image, row-major) and ``labels``: N ints. Returns images
    ``(N, 3, 32, 32)`` uint8 and labels ``(N,)`` int64. Missing keys, a wrong data size, a
    label count unequal to the image count or labels outside ``0..num_classes-1`` raise
    ``ValueError`` naming the file.
    """
    path = Path(path)
    batch = _unpickle(path)
    if not isinstance(batch, dict):
        raise ValueError(f"{path}: CIFAR batch should be a dict, got {type(batch).__name__}")
    data = np.asarray(_key(batch, "data", path))
    labels = np.asarray(_key(batch, "labels", path))
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise ValueError(
            f"{path}: CIFAR 'data' should be uint8 of shape (N, 3072), got {data.dtype} of "
            f"shape {data.shape}"
        )
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"{path}: CIFAR 'labels' should be a list of ints, got {labels.dtype} of shape "
            f"{labels.shape}"
        )
    if len(labels) != len(data):
        raise ValueError(f"{path}: {len(labels)} labels for {len(data)} images")
    _check_label_range(labels, num_classes, path)
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


# ------------------------------------------------------------------------------ file search

# Directories a system package manager installs data sets into; checked last. A tuple per
# data set so that tests (and unusual systems) can replace it.
SYSTEM_DIRS: dict[str, tuple[str, ...]] = {
    "fashion-mnist": ("/usr/share/datasets/fashion-mnist",),
    "mnist": (),
    "cifar10": (),
}


def cache_dir(name: str | None = None) -> Path:
    """``${XDG_CACHE_HOME:-~/.cache}/portaconv[/name]``: where downloads go (read at call time)."""
    root = os.environ.get("XDG_CACHE_HOME", "").strip() or os.path.join("~", ".cache")
    base = Path(root).expanduser() / "portaconv"
    return base / name if name else base


def _search_dirs(name: str, data_dir: str | os.PathLike | None) -> list[Path]:
    """Candidate directories in search order, each base as itself and as ``<base>/<name>``."""
    bases: list[Path] = []
    if data_dir is not None:
        bases.append(Path(data_dir).expanduser())
    env = os.environ.get("PORTACONV_DATA", "").strip()
    bases += [Path(p).expanduser() for p in env.split(os.pathsep) if p.strip()]
    bases.append(cache_dir())
    candidates: list[Path] = []
    for base in bases:
        candidates += [base, base / name]
    candidates += [Path(p) for p in SYSTEM_DIRS.get(name, ())]
    unique: list[Path] = []
    for candidate in candidates:
        if candidate not in unique:
            unique.append(candidate)
    return unique


def _fetch_url(url: str, dest: Path) -> None:
    """Write the body of ``url`` to ``dest`` (replaced in tests by a fake)."""
    with urllib.request.urlopen(url, timeout=60) as response, open(dest, "wb") as out:
        shutil.copyfileobj(response, out, length=1 << 20)


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _download(url: str, dest: Path, md5: str) -> None:
    """Fetch ``url`` to a temporary file beside ``dest``; rename it to ``dest`` once the MD5
    matches. On any failure the temporary file is removed and ``dest`` is left untouched."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        print(f"portaconv: downloading {url} -> {dest}", file=sys.stderr)
        _fetch_url(url, tmp)
        got = _md5(tmp)
        if got != md5:
            raise ValueError(
                f"download of {url} failed its checksum: {dest.name} has MD5 {got}, expected "
                f"{md5} (a truncated download or a changed mirror); nothing was saved"
            )
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


@dataclass(frozen=True)
class _Source:
    """Where one downloadable data set lives and how to tell a user to get it."""

    name: str
    title: str
    base_url: str
    md5: dict[str, str]  # file name on the mirror -> MD5
    classes: tuple[str, ...]
    apt_package: str | None = None


_IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte")
_IDX_FILES += ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")

_FASHION_MNIST = _Source(
    name="fashion-mnist",
    title="Fashion-MNIST",
    base_url="http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    md5={
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    },
    classes=(
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ),
    apt_package="dataset-fashion-mnist",
)

_MNIST = _Source(
    name="mnist",
    title="MNIST",
    base_url="https://ossci-datasets.s3.amazonaws.com/mnist/",
    md5={
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    },
    classes=tuple(str(d) for d in range(10)),
)

_CIFAR10 = _Source(
    name="cifar10",
    title="CIFAR-10",
    base_url="https://www.cs.toronto.edu/~kriz/",
    md5={"cifar-10-python.tar.gz": "c58f30108f718f92721af3b95e74349a"},
    classes=tuple(CIFAR10_CLASSES),
)
_CIFAR_DIR = "cifar-10-batches-py"
_CIFAR_FILES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch", "batches.meta")


def _not_found(
    source: _Source, searched: list[Path], notes: list[str], reason: str, target: Path
) -> DatasetNotFoundError:
    """The data set is nowhere: where portaconv looked, and each way to get it (``target``:
    where a download goes)."""
    urls = [source.base_url + f for f in source.md5]
    lines = [f"{source.title} not found ({reason}). Looked in:"]
    lines += [f"  {d}" for d in searched]
    lines += [f"  note: {n}" for n in notes]
    ways = []
    if source.apt_package:
        ways.append([f"on Debian/Ubuntu: apt-get install {source.apt_package}"])
    by_hand = ["download these files into a directory DIR:", *(f"  {u}" for u in urls)]
    if source is _CIFAR10:
        by_hand.append("and unpack them there: tar xzf cifar-10-python.tar.gz -C DIR")
    by_hand.append(
        "then pass --data-dir DIR (data_dir=DIR in Python) or set PORTACONV_DATA=DIR; "
        f"files in {cache_dir(source.name)} are found as well"
    )
    ways.append(by_hand)
    ways.append(
        [
            "let portaconv download them: run once with network access, without "
            f"--no-download (download=True in Python); they go to {target}"
        ]
    )
    lines.append("To get it:")
    for i, (first, *rest) in enumerate(ways):
        lines.append(f"  - {'or ' if i else ''}{first}")
        lines += [f"    {line}" for line in rest]
    return DatasetNotFoundError("\n".join(lines))


_DOWNLOADS_OFF = "downloads are off: --no-download, download=False in Python"


def _given_dir_incomplete(
    source: _Source, directory: Path, missing: list[str]
) -> DatasetNotFoundError:
    """The directory the caller named holds only part of the data set: say which files."""
    return DatasetNotFoundError(
        f"{source.title}: the data directory {directory} (--data-dir, data_dir=) holds only "
        f"part of the data set; missing there: {', '.join(missing)}. Add the missing files, "
        "or point --data-dir at a directory that has all of them"
    )


def _download_target(source: _Source, data_dir: Any) -> Path:
    """Where a download goes: ``<data_dir>/<name>`` when a data directory is given, else
    the user cache."""
    if data_dir is None:
        return cache_dir(source.name)
    return Path(data_dir).expanduser() / source.name


def _find_idx_files(directory: Path) -> tuple[dict[str, Path], list[str]]:
    """For each IDX base name the file present in ``directory`` (``.gz`` preferred)."""
    found, missing = {}, []
    for stem in _IDX_FILES:
        for file_name in (stem + ".gz", stem):
            if (directory / file_name).is_file():
                found[stem] = directory / file_name
                break
        else:
            missing.append(stem)
    return found, missing


def _load_idx_dataset(source: _Source, data_dir: Any, download: bool) -> Dataset:
    searched = _search_dirs(source.name, data_dir)
    notes: list[str] = []
    given = [] if data_dir is None else searched[:2]  # data_dir and data_dir/<name>
    files, partial = None, None
    for directory in searched:
        if partial is not None and directory not in given:
            raise _given_dir_incomplete(source, *partial)
        found, missing = _find_idx_files(directory)
        if not missing:
            files = found
            break
        if found and directory in given:
            partial = partial or (directory, [f"{stem}[.gz]" for stem in missing])
        elif found:
            notes.append(f"{directory} has only {len(found)} of 4 files; missing {missing}")
    if files is None and partial is not None:
        raise _given_dir_incomplete(source, *partial)
    target = _download_target(source, data_dir)
    if files is None:
        if not download:
            raise _not_found(source, searched, notes, _DOWNLOADS_OFF, target)
        try:
            for file_name, md5 in source.md5.items():
                if not (target / file_name).is_file():
                    _download(source.base_url + file_name, target / file_name, md5)
        except OSError as exc:  # offline, HTTP error, timeout, unwritable directory
            raise _not_found(source, searched, notes, f"download failed: {exc}", target) from exc
        files, missing = _find_idx_files(target)
        assert not missing, missing
    X_train, y_train = _read_idx_pair(
        files["train-images-idx3-ubyte"], files["train-labels-idx1-ubyte"], len(source.classes)
    )
    X_test, y_test = _read_idx_pair(
        files["t10k-images-idx3-ubyte"], files["t10k-labels-idx1-ubyte"], len(source.classes)
    )
    return Dataset(
        name=source.name,
        X_train=X_train,
        y_train=y_train,
        X_test=X_test,
        y_test=y_test,
        classes=list(source.classes),
        input_shape=tuple(X_train.shape[1:]),
    )


def load_fashion_mnist(data_dir: str | os.PathLike | None = None, download: bool = True) -> Dataset:
    """Fashion-MNIST (Zalando): 60,000 train + 10,000 test 28x28 grey images, 10 classes.

    ``X``: ``(N, 1, 28, 28)`` float32 in ``[0, 1]``. Reads the four IDX files
    (``train-images-idx3-ubyte[.gz]`` and so on) from the first directory in the search
    order (module docstring) that has them all; Debian's ``dataset-fashion-mnist`` package
    is found without configuration. Raises :class:`DatasetNotFoundError` when absent and
    ``download`` is False or fails.
    """
    return _load_idx_dataset(_FASHION_MNIST, data_dir, download)


def load_mnist(data_dir: str | os.PathLike | None = None, download: bool = True) -> Dataset:
    """MNIST handwritten digits: 60,000 train + 10,000 test 28x28 grey images, 10 classes.

    ``X``: ``(N, 1, 28, 28)`` float32 in ``[0, 1]``; files and search as for
    :func:`load_fashion_mnist`, downloaded from PyTorch's mirror of LeCun's files.
    """
    return _load_idx_dataset(_MNIST, data_dir, download)


def _find_cifar_dir(directory: Path) -> tuple[Path | None, list[str]]:
    """The batches directory at or under ``directory`` (``cifar-10-batches-py``), if complete."""
    best_missing = list(_CIFAR_FILES)
    for candidate in (directory / _CIFAR_DIR, directory):
        missing = [f for f in _CIFAR_FILES if not (candidate / f).is_file()]
        if not missing:
            return candidate, []
        if len(missing) < len(best_missing):
            best_missing = missing
    return None, best_missing


def _safe_extract(archive: Path, destination: Path) -> None:
    """Unpack a tar.gz refusing absolute paths, ``..``, links out and special files."""
    try:
        with tarfile.open(archive, "r:gz") as tar:
            if hasattr(tarfile, "data_filter"):  # 3.12+, and 3.10.12+ / 3.11.4+ backports
                tar.extractall(destination, filter="data")
                return
            root = destination.resolve()
            for member in tar.getmembers():
                target = (destination / member.name).resolve()
                if not (member.isfile() or member.isdir()) or not target.is_relative_to(root):
                    raise ValueError(
                        f"{archive}: refusing to extract unsafe member {member.name!r}"
                    )
            tar.extractall(destination)  # every member checked above
    except (tarfile.TarError, EOFError, zlib.error) as exc:
        raise ValueError(f"{archive}: corrupt or unsafe archive ({exc})") from exc


def _download_cifar10(target: Path) -> None:
    """Download and unpack CIFAR-10 into ``target`` (giving ``target/cifar-10-batches-py``)."""
    ((archive_name, md5),) = _CIFAR10.md5.items()
    target.mkdir(parents=True, exist_ok=True)
    archive = target / archive_name
    _download(_CIFAR10.base_url + archive_name, archive, md5)
    unpack = Path(tempfile.mkdtemp(dir=target, prefix=".extract-"))
    try:
        _safe_extract(archive, unpack)
        if not (unpack / _CIFAR_DIR).is_dir():
            raise ValueError(f"{archive}: has no {_CIFAR_DIR}/ directory")
        if (target / _CIFAR_DIR).exists():
            shutil.rmtree(target / _CIFAR_DIR)  # an incomplete earlier copy
        os.replace(unpack / _CIFAR_DIR, target / _CIFAR_DIR)
    finally:
        shutil.rmtree(unpack, ignore_errors=True)
        archive.unlink(missing_ok=True)


def load_cifar10(data_dir: str | os.PathLike | None = None, download: bool = True) -> Dataset:
    """CIFAR-10: 50,000 train + 10,000 test 32x32 colour images, 10 classes.

    ``X``: ``(N, 3, 32, 32)`` float32 in ``[0, 1]``. Reads the python batches
    (``cifar-10-batches-py/data_batch_1..5``, ``test_batch``, ``batches.meta``) found in a
    search directory or its ``cifar-10-batches-py`` subdirectory; downloads and unpacks
    ``cifar-10-python.tar.gz`` (163 MB) into the user cache when absent.
    """
    searched = _search_dirs(_CIFAR10.name, data_dir)
    notes: list[str] = []
    given = [] if data_dir is None else searched[:2]  # data_dir and data_dir/cifar10
    batches, partial = None, None
    for directory in searched:
        if partial is not None and directory not in given:
            raise _given_dir_incomplete(_CIFAR10, *partial)
        batches, missing = _find_cifar_dir(directory)
        if batches is not None:
            break
        if len(missing) < len(_CIFAR_FILES) and directory in given:
            partial = partial or (directory, missing)
        elif len(missing) < len(_CIFAR_FILES):
            notes.append(f"{directory} is incomplete; missing {missing}")
    if batches is None and partial is not None:
        raise _given_dir_incomplete(_CIFAR10, *partial)
    target = _download_target(_CIFAR10, data_dir)
    if batches is None:
        if not download:
            raise _not_found(_CIFAR10, searched, notes, _DOWNLOADS_OFF, target)
        try:
            _download_cifar10(target)
        except OSError as exc:
            raise _not_found(_CIFAR10, searched, notes, f"download failed: {exc}", target) from exc
        batches = target / _CIFAR_DIR

    train = [read_cifar_batch(batches / f"data_batch_{i}") for i in range(1, 6)]
    images_test, y_test = read_cifar_batch(batches / "test_batch")
    meta = _unpickle(batches / "batches.meta")
    if not isinstance(meta, dict):
        raise ValueError(f"{batches / 'batches.meta'}: should be a dict, got {type(meta)}")
    names = _key(meta, "label_names", batches / "batches.meta")
    classes = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    if len(classes) != 10:
        raise ValueError(f"{batches / 'batches.meta'}: {len(classes)} label names, expected 10")

    def scaled(images: np.ndarray) -> np.ndarray:
        X = images.astype(np.float32)
        X /= np.float32(255)
        return X

    return Dataset(
        name=_CIFAR10.name,
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
