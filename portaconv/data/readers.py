"""The file formats of the downloadable data sets: IDX (MNIST, Fashion-MNIST) and CIFAR's
python pickle batches.

Files are validated by their contents (IDX header and byte count, pickle keys and sizes,
label range), not by checksum, so re-compressed or uncompressed copies work. A corrupt or
truncated file is a ``ValueError`` naming the file; nothing is ever cropped. A CIFAR pickle
may build NumPy arrays and builtin containers only: unpickling a downloaded file never runs
other code.
"""

from __future__ import annotations

import gzip
import os
import pickle
import zlib
from pathlib import Path
from typing import Any

import numpy as np

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


def read_idx_pair(
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
    check_label_range(labels, num_classes, labels_path)
    X = images.astype(np.float32)[:, None, :, :]
    X /= np.float32(255)
    return X, labels.astype(np.int64)


def check_label_range(labels: np.ndarray, num_classes: int, path: Path) -> None:
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


def unpickle(path: Path) -> Any:
    """``pickle.load(f, encoding="bytes")`` restricted to NumPy arrays and builtin containers."""
    try:
        with open(path, "rb") as f:
            return _ArrayUnpickler(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
        problem = f"{type(exc).__name__}: {exc}"
        raise ValueError(f"{path}: not a readable CIFAR pickle ({problem})") from exc


def batch_entry(batch: dict, key: str, path: Path) -> Any:
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
    batch = unpickle(path)
    if not isinstance(batch, dict):
        raise ValueError(f"{path}: CIFAR batch should be a dict, got {type(batch).__name__}")
    data = np.asarray(batch_entry(batch, "data", path))
    labels = np.asarray(batch_entry(batch, "labels", path))
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
    check_label_range(labels, num_classes, path)
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)
