"""Data sets, file readers and the DataLoader.

Files are written here byte by byte (IDX headers with ``struct``, CIFAR batches with
``pickle``) from known arrays, so the readers are checked against what was written, not
against themselves. Nothing touches the network: the fetch function is replaced by a fake.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import re
import struct
import tarfile
import urllib.error
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from array_api_compat import array_namespace, device

import portaconv
from portaconv.backend import make_backend, to_numpy
from portaconv.data import (
    DATASETS,
    SYSTEM_DIRS,
    DataLoader,
    Dataset,
    DatasetNotFoundError,
    cache_dir,
    load_cifar10,
    load_dataset,
    load_digits,
    load_fashion_mnist,
    load_iris,
    load_mnist,
    mean_std,
    read_cifar_batch,
    read_idx,
    standardize,
    stratified_folds,
    train_val_split,
)
from portaconv.data import sources as ds_module

from .helpers import assert_on_backend

FILES = Path(ds_module.__file__).parent / "_files"
IDX_NAMES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """No test sees the real cache, $PORTACONV_DATA, system directories or the network."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.delenv("PORTACONV_DATA", raising=False)
    for name in list(SYSTEM_DIRS):
        monkeypatch.setitem(SYSTEM_DIRS, name, ())

    def no_network(url, dest):
        raise AssertionError(f"a test tried to download {url}")

    monkeypatch.setattr(ds_module, "_fetch_url", no_network)


# ------------------------------------------------------------------------- file writers


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file for ``array``: magic 0x0000TTDD, big-endian uint32 sizes, big-endian data."""
    type_code = {np.uint8: 0x08, np.int8: 0x09, np.int16: 0x0B, np.int32: 0x0C}[array.dtype.type]
    header = struct.pack(">BBBB", 0, 0, type_code, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_idx(path: Path, array: np.ndarray, gz: bool) -> Path:
    data = idx_bytes(array)
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def make_idx_set(rng, n_train=7, n_test=4, label_offset=None):
    """Random uint8 images (N, 28, 28) and labels (N,) for the four MNIST files."""
    arrays = {
        "train_images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "test_images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, n_train).astype(np.uint8),
        "test_labels": rng.integers(0, 10, n_test).astype(np.uint8),
    }
    if label_offset is not None:  # a marker telling which directory a load came from
        arrays["train_labels"][:] = label_offset
    return arrays


def write_idx_set(directory: Path, arrays: dict, gz: bool = True) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for key, stem in IDX_NAMES.items():
        write_idx(directory / (stem + (".gz" if gz else "")), arrays[key], gz)
    return directory


def cifar_row_major(images: np.ndarray) -> np.ndarray:
    """CIFAR's layout built plane by plane: each row is all red, then green, then blue."""
    n = len(images)
    planes = [images[:, c, :, :].reshape(n, 1024) for c in range(3)]
    return np.concatenate(planes, axis=1)


def cifar_batch(images: np.ndarray, labels, str_keys: bool = False) -> dict:
    batch = {
        b"batch_label": b"testing batch 1 of 1",
        b"labels": [int(v) for v in labels],
        b"data": cifar_row_major(images),
        b"filenames": [f"img_{i}.png".encode() for i in range(len(images))],
    }
    if str_keys:
        batch = {k.decode(): v for k, v in batch.items()}
    return batch


def write_pickle(path: Path, obj, protocol: int = 2) -> Path:
    path.write_bytes(pickle.dumps(obj, protocol=protocol))
    return path


def make_cifar_dir(directory: Path, rng, per_batch=2, n_test=3) -> dict:
    """A complete ``cifar-10-batches-py`` directory; returns the images and labels written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = {"train_images": [], "train_labels": []}
    for i in range(1, 6):
        images = rng.integers(0, 256, (per_batch, 3, 32, 32), dtype=np.uint8)
        labels = rng.integers(0, 10, per_batch)
        write_pickle(directory / f"data_batch_{i}", cifar_batch(images, labels))
        written["train_images"].append(images)
        written["train_labels"].append(labels)
    test_images = rng.integers(0, 256, (n_test, 3, 32, 32), dtype=np.uint8)
    test_labels = rng.integers(0, 10, n_test)
    write_pickle(directory / "test_batch", cifar_batch(test_images, test_labels))
    names = [f"class{k}".encode() for k in range(10)]
    write_pickle(directory / "batches.meta", {b"label_names": names, b"num_vis": 3072})
    return {
        "train_images": np.concatenate(written["train_images"]),
        "train_labels": np.concatenate(written["train_labels"]),
        "test_images": test_images,
        "test_labels": test_labels,
        "classes": [n.decode() for n in names],
    }


# ----------------------------------------------------------------------------- read_idx


@pytest.mark.parametrize("gz", [True, False], ids=["gz", "raw"])
def test_read_idx_returns_exactly_what_was_written(tmp_path, rng, gz):
    images = rng.integers(0, 256, (5, 3, 4), dtype=np.uint8)
    labels = rng.integers(0, 10, 5).astype(np.uint8)
    got_images = read_idx(write_idx(tmp_path / "images", images, gz))
    got_labels = read_idx(write_idx(tmp_path / "labels", labels, gz))
    assert got_images.dtype == np.uint8 and got_images.shape == (5, 3, 4)
    np.testing.assert_array_equal(got_images, images)
    np.testing.assert_array_equal(got_labels, labels)
    got_images[0, 0, 0] = 7  # writable: a copy, not a view of the file's buffer


def test_read_idx_headers_are_the_mnist_magic_numbers(tmp_path, rng):
    images = rng.integers(0, 256, (2, 28, 28), dtype=np.uint8)
    path = write_idx(tmp_path / "x", images, gz=False)
    assert path.read_bytes()[:4] == bytes.fromhex("00000803")
    labels = write_idx(tmp_path / "y", np.zeros(2, np.uint8), gz=False)
    assert labels.read_bytes()[:4] == bytes.fromhex("00000801")
    assert read_idx(path).shape == (2, 28, 28)


def test_read_idx_wider_types_are_big_endian(tmp_path):
    values = np.array([[1, -2, 70000], [2**31 - 1, -(2**31), 0]], dtype=np.int32)
    got = read_idx(write_idx(tmp_path / "ints", values, gz=True))
    assert got.dtype == np.int32 and got.dtype.isnative
    np.testing.assert_array_equal(got, values)


def test_read_idx_detects_gzip_by_content_not_name(tmp_path, rng):
    labels = rng.integers(0, 10, 9).astype(np.uint8)
    gz_without_suffix = tmp_path / "labels"
    gz_without_suffix.write_bytes(gzip.compress(idx_bytes(labels)))
    raw_with_suffix = tmp_path / "labels.gz"
    raw_with_suffix.write_bytes(idx_bytes(labels))
    np.testing.assert_array_equal(read_idx(gz_without_suffix), labels)
    np.testing.assert_array_equal(read_idx(raw_with_suffix), labels)


@pytest.mark.parametrize("gz", [True, False], ids=["gz", "raw"])
@pytest.mark.parametrize(
    "corrupt, message",
    [
        (lambda b: b"\x01\x02" + b[2:], "bad magic number 0x01020803"),
        (lambda b: b[:2] + b"\x07" + b[3:], "bad magic number 0x00000703"),
        (lambda b: b[:3] + b"\x00" + b[4:], "bad magic number 0x00000800"),
        (lambda b: b[:-1], "truncated"),
        (lambda b: b[:10], "truncated IDX header"),
        (lambda b: b[:2], "only 2 bytes"),
        (lambda b: b + b"\x00", "trailing bytes"),
    ],
    ids=["magic-prefix", "magic-type", "magic-ndim", "short-data", "short-header", "tiny", "long"],
)
def test_read_idx_rejects_corrupt_files(tmp_path, rng, gz, corrupt, message):
    images = rng.integers(0, 256, (3, 4, 5), dtype=np.uint8)
    data = corrupt(idx_bytes(images))
    path = tmp_path / "broken-idx"
    path.write_bytes(gzip.compress(data) if gz else data)
    with pytest.raises(ValueError, match=re.escape(message)) as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_read_idx_truncation_names_the_sizes(tmp_path, rng):
    images = rng.integers(0, 256, (3, 4, 5), dtype=np.uint8)
    path = tmp_path / "short"
    path.write_bytes(idx_bytes(images)[:-7])
    with pytest.raises(ValueError, match=r"shape \(3, 4, 5\).*76 bytes.*69 bytes"):
        read_idx(path)


def test_read_idx_rejects_a_truncated_gzip_stream(tmp_path, rng):
    images = rng.integers(0, 256, (20, 28, 28), dtype=np.uint8)
    path = tmp_path / "cut.gz"
    path.write_bytes(gzip.compress(idx_bytes(images))[:-100])
    with pytest.raises(ValueError, match="gzip") as info:
        read_idx(path)
    assert str(path) in str(info.value)


# ------------------------------------------------------------------ MNIST-style loading


@pytest.mark.parametrize("gz", [True, False], ids=["gz", "raw"])
def test_load_mnist_reads_the_four_files(tmp_path, rng, gz):
    arrays = make_idx_set(rng)
    directory = write_idx_set(tmp_path / "data", arrays, gz=gz)
    ds = load_mnist(data_dir=directory, download=False)
    assert ds.name == "mnist" and ds.classes == [str(d) for d in range(10)]
    assert ds.input_shape == (1, 28, 28)
    assert ds.X_train.shape == (7, 1, 28, 28) and ds.X_test.shape == (4, 1, 28, 28)
    assert ds.X_train.dtype == np.float32 and ds.y_train.dtype == np.int64
    expected = arrays["train_images"].astype(np.float64)[:, None] / 255.0
    np.testing.assert_allclose(ds.X_train, expected, rtol=1e-7, atol=0)
    np.testing.assert_allclose(ds.X_test, arrays["test_images"][:, None] / 255.0, rtol=1e-7, atol=0)
    np.testing.assert_array_equal(ds.y_train, arrays["train_labels"])
    np.testing.assert_array_equal(ds.y_test, arrays["test_labels"])
    assert "mnist" in repr(ds) and "train=7" in repr(ds)


def test_load_fashion_mnist_has_the_clothing_class_names(tmp_path, rng):
    directory = write_idx_set(tmp_path / "fm", make_idx_set(rng))
    ds = load_fashion_mnist(data_dir=directory, download=False)
    assert ds.name == "fashion-mnist"
    assert ds.classes[0] == "T-shirt/top" and ds.classes[9] == "Ankle boot"
    assert ds.num_classes == 10


def test_idx_pair_label_count_mismatch(tmp_path, rng):
    arrays = make_idx_set(rng)
    arrays["train_labels"] = arrays["train_labels"][:-1]
    directory = write_idx_set(tmp_path / "d", arrays)
    with pytest.raises(ValueError, match="6 labels for the 7 images") as info:
        load_mnist(data_dir=directory, download=False)
    assert "train-labels-idx1-ubyte.gz" in str(info.value)


def test_idx_pair_labels_out_of_range(tmp_path, rng):
    arrays = make_idx_set(rng)
    arrays["test_labels"][2] = 10
    directory = write_idx_set(tmp_path / "d", arrays)
    with pytest.raises(ValueError, match=r"labels out of range: expected 0..9, found \[10\]") as e:
        load_mnist(data_dir=directory, download=False)
    assert "t10k-labels-idx1-ubyte.gz" in str(e.value)


def test_idx_pair_swapped_files_are_named(tmp_path, rng):
    arrays = make_idx_set(rng)
    arrays["train_images"], arrays["train_labels"] = arrays["train_labels"], arrays["train_images"]
    directory = write_idx_set(tmp_path / "d", arrays)
    with pytest.raises(ValueError, match="expected IDX images .magic 0x00000803") as info:
        load_mnist(data_dir=directory, download=False)
    assert "train-images-idx3-ubyte.gz" in str(info.value)


# ----------------------------------------------------------------------------- search order


def labels_of(ds: Dataset) -> int:
    return int(ds.y_train[0])


def test_search_order_data_dir_then_env_then_cache(tmp_path, rng, monkeypatch):
    write_idx_set(tmp_path / "arg", make_idx_set(rng, label_offset=1))
    write_idx_set(tmp_path / "env", make_idx_set(rng, label_offset=2))
    write_idx_set(cache_dir("mnist"), make_idx_set(rng, label_offset=3))
    assert cache_dir("mnist") == tmp_path / "xdg-cache" / "portaconv" / "mnist"
    monkeypatch.setenv("PORTACONV_DATA", str(tmp_path / "env"))
    assert labels_of(load_mnist(data_dir=tmp_path / "arg", download=False)) == 1
    assert labels_of(load_mnist(download=False)) == 2
    monkeypatch.delenv("PORTACONV_DATA")
    assert labels_of(load_mnist(download=False)) == 3


def test_search_accepts_dataset_named_subdirectories(tmp_path, rng, monkeypatch):
    write_idx_set(tmp_path / "root" / "mnist", make_idx_set(rng, label_offset=4))
    write_idx_set(tmp_path / "arg" / "fashion-mnist", make_idx_set(rng, label_offset=5))
    monkeypatch.setenv("PORTACONV_DATA", str(tmp_path / "root"))
    assert labels_of(load_mnist(download=False)) == 4
    assert labels_of(load_fashion_mnist(data_dir=tmp_path / "arg", download=False)) == 5


def test_portaconv_data_may_list_several_directories(tmp_path, rng, monkeypatch):
    (tmp_path / "empty").mkdir()
    write_idx_set(tmp_path / "second", make_idx_set(rng, label_offset=6))
    monkeypatch.setenv(
        "PORTACONV_DATA", os.pathsep.join([str(tmp_path / "empty"), str(tmp_path / "second")])
    )
    assert labels_of(load_mnist(download=False)) == 6


def test_system_directory_is_searched_last(tmp_path, rng, monkeypatch):
    system = write_idx_set(tmp_path / "usr-share", make_idx_set(rng, label_offset=7))
    monkeypatch.setitem(SYSTEM_DIRS, "fashion-mnist", (str(system),))
    assert labels_of(load_fashion_mnist(download=False)) == 7
    write_idx_set(cache_dir("fashion-mnist"), make_idx_set(rng, label_offset=8))
    assert labels_of(load_fashion_mnist(download=False)) == 8
    # The system directory of one data set is not searched for another.
    with pytest.raises(DatasetNotFoundError):
        load_mnist(download=False)


def test_incomplete_search_directory_is_skipped_and_reported(tmp_path, rng, monkeypatch):
    partial = write_idx_set(tmp_path / "partial", make_idx_set(rng, label_offset=1))
    (partial / "t10k-labels-idx1-ubyte.gz").unlink()
    monkeypatch.setenv("PORTACONV_DATA", str(partial))
    with pytest.raises(DatasetNotFoundError, match=r"has only 3 of 4 files.*t10k-labels"):
        load_mnist(download=False)
    write_idx_set(cache_dir("mnist"), make_idx_set(rng, label_offset=9))
    assert labels_of(load_mnist(download=False)) == 9


@pytest.mark.parametrize("where", ["itself", "named-subdirectory"])
def test_data_dir_missing_a_file_is_an_error_naming_it(tmp_path, rng, monkeypatch, where):
    """A complete copy elsewhere (the system's, the cache) is not used instead of the data
    directory the caller named: that directory lacks a file, and the error says which."""
    data_dir = tmp_path / "mine"
    partial = data_dir if where == "itself" else data_dir / "fashion-mnist"
    write_idx_set(partial, make_idx_set(rng, label_offset=1))
    (partial / "t10k-labels-idx1-ubyte.gz").unlink()
    system = write_idx_set(tmp_path / "usr-share", make_idx_set(rng, label_offset=7))
    monkeypatch.setitem(SYSTEM_DIRS, "fashion-mnist", (str(system),))
    write_idx_set(cache_dir("fashion-mnist"), make_idx_set(rng, label_offset=8))
    with pytest.raises(DatasetNotFoundError) as info:
        load_fashion_mnist(data_dir=data_dir, download=False)
    message = str(info.value)
    assert "\n" not in message
    assert f"the data directory {partial} (--data-dir, data_dir=)" in message
    assert "missing there: t10k-labels-idx1-ubyte[.gz]" in message
    assert "train-images" not in message
    # Without the data directory, the cache's copy is found as before.
    assert labels_of(load_fashion_mnist(download=False)) == 8


def test_data_dir_without_the_files_falls_back_and_downloads_into_it(tmp_path, rng, monkeypatch):
    arrays, served, source = mirror_idx_files(rng, ds_module._MNIST)
    monkeypatch.setattr(ds_module, "_MNIST", source)
    monkeypatch.setattr(ds_module, "_fetch_url", FakeMirror(served))
    data_dir = tmp_path / "mine"
    ds = load_mnist(data_dir=data_dir)
    assert sorted(p.name for p in (data_dir / "mnist").iterdir()) == sorted(source.md5)
    assert not cache_dir("mnist").exists()
    np.testing.assert_array_equal(ds.y_test, arrays["test_labels"])
    # A copy elsewhere is still used when the data directory has none of the files.
    write_idx_set(cache_dir("fashion-mnist"), make_idx_set(rng, label_offset=8))
    assert labels_of(load_fashion_mnist(data_dir=data_dir, download=False)) == 8


@pytest.mark.parametrize("loader", [load_mnist, load_fashion_mnist, load_cifar10])
def test_missing_files_without_download_explain_how_to_get_them(tmp_path, monkeypatch, loader):
    monkeypatch.setenv("PORTACONV_DATA", str(tmp_path / "env-dir"))
    with pytest.raises(DatasetNotFoundError) as info:
        loader(data_dir=tmp_path / "arg-dir", download=False)
    assert isinstance(info.value, FileNotFoundError)
    message = str(info.value)
    name = {load_mnist: "mnist", load_fashion_mnist: "fashion-mnist", load_cifar10: "cifar10"}[
        loader
    ]
    for searched in (tmp_path / "arg-dir", tmp_path / "env-dir" / name, cache_dir(name)):
        assert str(searched) in message
    assert "--data-dir DIR" in message and "PORTACONV_DATA=DIR" in message
    assert "downloads are off: --no-download, download=False in Python" in message
    # The ways to get the data: the first is not an alternative ("or ...") to nothing.
    ways = [line for line in message.splitlines() if line.startswith("  - ")]
    assert not ways[0].startswith("  - or ") and all(w.startswith("  - or ") for w in ways[1:])
    assert ways[-1].endswith(f"they go to {tmp_path / 'arg-dir' / name}")  # where --data-dir says
    assert "download=True in Python" in ways[-1] and "without --no-download" in ways[-1]
    if loader is load_fashion_mnist:
        assert "apt-get install dataset-fashion-mnist" in message
        assert "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/" in message
    else:
        assert "apt-get" not in message
    if loader is load_mnist:
        assert "https://ossci-datasets.s3.amazonaws.com/mnist/t10k-labels-idx1-ubyte.gz" in message
    if loader is load_cifar10:
        assert "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz" in message
        assert "tar xzf" in message


REAL_FASHION = Path("/usr/share/datasets/fashion-mnist")


# Defined where Debian's dataset-fashion-mnist package is installed and only there: no
# dependency brings it, and a skip elsewhere would stand for a pass.
if (REAL_FASHION / "train-images-idx3-ubyte.gz").is_file():

    def test_real_fashion_mnist_from_the_debian_package(monkeypatch):
        monkeypatch.setitem(SYSTEM_DIRS, "fashion-mnist", (str(REAL_FASHION),))
        ds = load_fashion_mnist(download=False)
        assert ds.X_train.shape == (60000, 1, 28, 28) and ds.X_test.shape == (10000, 1, 28, 28)
        np.testing.assert_array_equal(np.bincount(ds.y_train), [6000] * 10)
        np.testing.assert_array_equal(np.bincount(ds.y_test), [1000] * 10)
        # The first training labels of Fashion-MNIST: ankle boot, T-shirt, T-shirt, dress, ...
        np.testing.assert_array_equal(ds.y_train[:10], [9, 0, 0, 3, 0, 2, 7, 2, 5, 5])
        assert ds.X_train.min() == 0.0 and ds.X_train.max() == 1.0


# ------------------------------------------------------------------------------- downloads


class FakeMirror:
    """Stands in for ``_fetch_url``: serves bytes by URL and records what was asked for."""

    def __init__(self, files: dict[str, bytes]):
        self.files = files
        self.requested: list[str] = []

    def __call__(self, url: str, dest: Path) -> None:
        self.requested.append(url)
        assert Path(dest).parent.is_dir()
        Path(dest).write_bytes(self.files[url])


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def mirror_idx_files(rng, source, corrupt: str | None = None):
    """The four .gz files for ``source``, and ``source`` with their MD5s as the official ones."""
    arrays = make_idx_set(rng)
    served, sums = {}, {}
    for key, stem in IDX_NAMES.items():
        data = gzip.compress(idx_bytes(arrays[key]))
        sums[stem + ".gz"] = md5(data)
        served[source.base_url + stem + ".gz"] = b"garbage" if corrupt == stem else data
    return arrays, served, replace(source, md5=sums)


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if "part" in p.name or p.name[0] == ".")


def test_download_with_matching_md5(rng, monkeypatch):
    arrays, served, source = mirror_idx_files(rng, ds_module._MNIST)
    monkeypatch.setattr(ds_module, "_MNIST", source)
    mirror = FakeMirror(served)
    monkeypatch.setattr(ds_module, "_fetch_url", mirror)
    ds = load_mnist()
    assert sorted(mirror.requested) == sorted(served)
    assert all(u.startswith("https://ossci-datasets.s3.amazonaws.com/mnist/") for u in served)
    target = cache_dir("mnist")
    assert sorted(p.name for p in target.iterdir()) == sorted(source.md5)
    assert leftovers(target) == []
    np.testing.assert_array_equal(ds.y_test, arrays["test_labels"])
    # Second call: found in the cache, nothing fetched.
    mirror.requested.clear()
    np.testing.assert_array_equal(load_mnist().y_train, arrays["train_labels"])
    assert mirror.requested == []


def test_download_only_fetches_missing_files(rng, monkeypatch):
    arrays, served, source = mirror_idx_files(rng, ds_module._FASHION_MNIST)
    monkeypatch.setattr(ds_module, "_FASHION_MNIST", source)
    target = cache_dir("fashion-mnist")
    target.mkdir(parents=True)
    for url, data in served.items():
        if "t10k" in url:
            (target / url.rsplit("/", 1)[1]).write_bytes(data)
    mirror = FakeMirror(served)
    monkeypatch.setattr(ds_module, "_fetch_url", mirror)
    load_fashion_mnist()
    assert sorted(u.rsplit("/", 1)[1] for u in mirror.requested) == [
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
    ]
    assert all(u.startswith(source.base_url) for u in mirror.requested)


def test_download_with_wrong_md5_saves_nothing(rng, monkeypatch):
    _, served, source = mirror_idx_files(rng, ds_module._MNIST, corrupt="train-labels-idx1-ubyte")
    monkeypatch.setattr(ds_module, "_MNIST", source)
    monkeypatch.setattr(ds_module, "_fetch_url", FakeMirror(served))
    with pytest.raises(ValueError) as info:
        load_mnist()
    message = str(info.value)
    assert "train-labels-idx1-ubyte.gz" in message
    assert source.md5["train-labels-idx1-ubyte.gz"] in message  # expected
    assert md5(b"garbage") in message  # got
    target = cache_dir("mnist")
    assert not (target / "train-labels-idx1-ubyte.gz").exists()
    assert leftovers(target) == []


def test_download_failure_is_dataset_not_found_with_instructions(monkeypatch):
    def offline(url, dest):
        Path(dest).write_bytes(b"partial")
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(ds_module, "_fetch_url", offline)
    with pytest.raises(DatasetNotFoundError, match="download failed") as info:
        load_fashion_mnist()
    assert "apt-get install dataset-fashion-mnist" in str(info.value)
    assert "name resolution" in str(info.value)
    assert leftovers(cache_dir("fashion-mnist")) == []


# ----------------------------------------------------------------------------------- CIFAR


def test_read_cifar_batch_returns_what_was_written(tmp_path, rng):
    images = rng.integers(0, 256, (4, 3, 32, 32), dtype=np.uint8)
    labels = [3, 0, 9, 3]
    path = write_pickle(tmp_path / "data_batch_1", cifar_batch(images, labels))
    got_images, got_labels = read_cifar_batch(path)
    assert got_images.shape == (4, 3, 32, 32) and got_images.dtype == np.uint8
    assert got_labels.dtype == np.int64
    np.testing.assert_array_equal(got_images, images)
    np.testing.assert_array_equal(got_labels, labels)
    # Channel planes: row n of 'data' is red (1024), green (1024), blue (1024).
    data = cifar_batch(images, labels)[b"data"]
    assert got_images[1, 2, 5, 7] == data[1, 2 * 1024 + 5 * 32 + 7]


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_read_cifar_batch_pickle_protocols_and_str_keys(tmp_path, rng, protocol):
    images = rng.integers(0, 256, (2, 3, 32, 32), dtype=np.uint8)
    path = write_pickle(tmp_path / "b", cifar_batch(images, [1, 2], str_keys=True), protocol)
    np.testing.assert_array_equal(read_cifar_batch(path)[0], images)


def test_read_cifar_batch_legacy_numpy_module_names(tmp_path, rng):
    """The original batches were pickled by NumPy 1 (``numpy.core.multiarray``)."""
    images = rng.integers(0, 256, (2, 3, 32, 32), dtype=np.uint8)
    data = pickle.dumps(cifar_batch(images, [4, 5]), protocol=2)
    legacy = data.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")
    assert b"cnumpy.core.multiarray\n_reconstruct\n" in legacy
    path = tmp_path / "legacy"
    path.write_bytes(legacy)
    np.testing.assert_array_equal(read_cifar_batch(path)[0], images)


class _Payload:
    """Unpickling this would call ``open(marker, "w")``, creating a file."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_read_cifar_batch_refuses_to_run_code(tmp_path):
    marker = tmp_path / "pwned"
    path = write_pickle(tmp_path / "evil", {b"data": _Payload(str(marker)), b"labels": []})
    with pytest.raises(ValueError, match=r"refusing to load (_?io|builtins)\.open"):
        read_cifar_batch(path)
    assert not marker.exists()


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda b: b.pop(b"labels"), r"no 'labels' entry \(keys present: \['batch_label', 'data'"),
        (lambda b: b.pop(b"data"), "no 'data' entry"),
        (lambda b: b.update({b"data": b[b"data"][:, :3000]}), r"shape \(N, 3072\).*\(3, 3000\)"),
        (lambda b: b.update({b"data": b[b"data"].astype(np.int16)}), "got int16"),
        (lambda b: b.update({b"labels": b[b"labels"][:2]}), "2 labels for 3 images"),
        (lambda b: b.update({b"labels": [0, 10, 1]}), r"labels out of range.*\[10\]"),
        (lambda b: b.update({b"labels": [0, -1, 1]}), r"labels out of range.*\[-1\]"),
        (lambda b: b.update({b"labels": ["a", "b", "c"]}), "list of ints"),
    ],
    ids=[
        "no-labels",
        "no-data",
        "data-size",
        "data-dtype",
        "count",
        "label-10",
        "label-neg",
        "str",
    ],
)
def test_read_cifar_batch_rejects_corrupt_batches(tmp_path, rng, edit, message):
    batch = cifar_batch(rng.integers(0, 256, (3, 3, 32, 32), dtype=np.uint8), [1, 2, 3])
    edit(batch)
    path = write_pickle(tmp_path / "bad_batch", batch)
    with pytest.raises(ValueError, match=message) as info:
        read_cifar_batch(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    "content, message",
    [
        (lambda full: full[: len(full) // 2], "not a readable CIFAR pickle"),
        (lambda full: pickle.dumps([1, 2, 3]), "should be a dict, got list"),
        (lambda full: b"", "not a readable CIFAR pickle"),
    ],
    ids=["truncated", "list", "empty"],
)
def test_read_cifar_batch_rejects_unreadable_files(tmp_path, rng, content, message):
    full = pickle.dumps(cifar_batch(rng.integers(0, 256, (3, 3, 32, 32), np.uint8), [1, 2, 3]))
    path = tmp_path / "broken"
    path.write_bytes(content(full))
    with pytest.raises(ValueError, match=message) as info:
        read_cifar_batch(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("point_at", ["parent", "batches-dir"])
def test_load_cifar10_from_a_directory(tmp_path, rng, point_at):
    written = make_cifar_dir(tmp_path / "cifar-10-batches-py", rng)
    data_dir = tmp_path if point_at == "parent" else tmp_path / "cifar-10-batches-py"
    ds = load_cifar10(data_dir=data_dir, download=False)
    assert ds.name == "cifar10" and ds.input_shape == (3, 32, 32)
    assert ds.X_train.shape == (10, 3, 32, 32) and ds.X_train.dtype == np.float32
    np.testing.assert_allclose(ds.X_train, written["train_images"] / 255.0, rtol=1e-7, atol=0)
    np.testing.assert_allclose(ds.X_test, written["test_images"] / 255.0, rtol=1e-7, atol=0)
    np.testing.assert_array_equal(ds.y_train, written["train_labels"])
    np.testing.assert_array_equal(ds.y_test, written["test_labels"])
    assert ds.y_train.dtype == np.int64
    assert ds.classes == written["classes"]


def test_load_cifar10_corrupt_batch_is_not_skipped(tmp_path, rng):
    make_cifar_dir(tmp_path / "cifar-10-batches-py", rng)
    bad = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    bad.write_bytes(bad.read_bytes()[:100])
    with pytest.raises(ValueError, match="data_batch_3"):
        load_cifar10(data_dir=tmp_path, download=False)


def cifar_tarball(tmp_path, rng, extra_member: str | None = None) -> tuple[bytes, dict]:
    written = make_cifar_dir(tmp_path / "src" / "cifar-10-batches-py", rng)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(tmp_path / "src" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
        if extra_member:
            info = tarfile.TarInfo(extra_member)
            info.size = 4
            tar.addfile(info, io.BytesIO(b"evil"))
    return buffer.getvalue(), written


def test_load_cifar10_downloads_checks_and_unpacks(tmp_path, rng, monkeypatch):
    archive, written = cifar_tarball(tmp_path, rng)
    source = replace(ds_module._CIFAR10, md5={"cifar-10-python.tar.gz": md5(archive)})
    monkeypatch.setattr(ds_module, "_CIFAR10", source)
    url = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
    mirror = FakeMirror({url: archive})
    monkeypatch.setattr(ds_module, "_fetch_url", mirror)
    ds = load_cifar10()
    assert mirror.requested == [url]
    np.testing.assert_array_equal(ds.y_test, written["test_labels"])
    target = cache_dir("cifar10")
    assert sorted(p.name for p in target.iterdir()) == ["cifar-10-batches-py"]
    mirror.requested.clear()
    load_cifar10()
    assert mirror.requested == []


def test_load_cifar10_bad_md5_saves_nothing(tmp_path, rng, monkeypatch):
    archive, _ = cifar_tarball(tmp_path, rng)
    url = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
    monkeypatch.setattr(ds_module, "_fetch_url", FakeMirror({url: archive}))
    with pytest.raises(ValueError, match="c58f30108f718f92721af3b95e74349a") as info:
        load_cifar10()
    assert md5(archive) in str(info.value)
    assert list(cache_dir("cifar10").iterdir()) == []


def test_load_cifar10_refuses_an_archive_escaping_its_directory(tmp_path, rng, monkeypatch):
    archive, _ = cifar_tarball(tmp_path, rng, extra_member="../escaped.txt")
    source = replace(ds_module._CIFAR10, md5={"cifar-10-python.tar.gz": md5(archive)})
    monkeypatch.setattr(ds_module, "_CIFAR10", source)
    url = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
    monkeypatch.setattr(ds_module, "_fetch_url", FakeMirror({url: archive}))
    with pytest.raises(ValueError, match="escaped.txt"):
        load_cifar10()
    assert not (cache_dir() / "escaped.txt").exists()
    assert list(cache_dir("cifar10").iterdir()) == []


# ------------------------------------------------------------------------- embedded data


def test_embedded_files_match_the_readme_checksums():
    readme = (FILES / "README.md").read_text()
    sums = dict(
        (name, digest) for digest, name in re.findall(r"sha256\s+([0-9a-f]{64})\s+(\S+)", readme)
    )
    assert {"digits.csv.gz", "iris.csv"} <= set(sums)
    for name, digest in sums.items():
        assert hashlib.sha256((FILES / name).read_bytes()).hexdigest() == digest, name


def digits_table() -> np.ndarray:
    with gzip.open(FILES / "digits.csv.gz", "rt") as f:
        return np.loadtxt(f, delimiter=",")


def rows_sorted(X: np.ndarray) -> np.ndarray:
    flat = X.reshape(len(X), -1)
    return flat[np.lexsort(flat.T[::-1])]


def test_digits_shapes_dtypes_and_class_counts():
    table = digits_table()
    counts = np.bincount(table[:, 64].astype(int))
    # scikit-learn's documented per-digit counts of this file.
    np.testing.assert_array_equal(counts, [178, 182, 177, 183, 181, 182, 181, 179, 174, 180])
    ds = load_digits()
    assert ds.name == "digits" and ds.input_shape == (1, 8, 8)
    assert ds.classes == [str(d) for d in range(10)]
    assert len(ds.X_train) + len(ds.X_test) == 1797
    assert ds.X_train.shape[1:] == (1, 8, 8) and ds.X_test.shape[1:] == (1, 8, 8)
    assert ds.X_train.dtype == np.float32 and ds.X_test.dtype == np.float32
    assert ds.y_train.dtype == np.int64 and ds.y_test.dtype == np.int64
    assert 0.0 <= ds.X_train.min() and ds.X_train.max() == 1.0
    np.testing.assert_array_equal(np.bincount(ds.y_train) + np.bincount(ds.y_test), counts)
    # The whole file, in order, with no test split: pixel counts / 16, rows of 8.
    whole = load_digits(test_fraction=0.0)
    assert len(whole.X_test) == 0
    np.testing.assert_array_equal(whole.X_train.reshape(-1, 64), table[:, :64] / 16)
    np.testing.assert_array_equal(whole.X_train[5, 0, 2, :], table[5, 16:24] / 16)
    np.testing.assert_array_equal(whole.y_train, table[:, 64])


@pytest.mark.parametrize("loader, total", [(load_digits, 1797), (load_iris, 150)])
@pytest.mark.parametrize("fraction", [0.2, 0.5])
def test_embedded_split_is_stratified_deterministic_and_a_partition(loader, total, fraction):
    ds = loader(test_fraction=fraction, seed=3)
    whole = loader(test_fraction=0.0)
    for label, count in enumerate(np.bincount(whole.y_train)):
        assert abs(np.sum(ds.y_test == label) - fraction * count) <= 0.5
    # train + test is the data set, each row once (as a multiset of rows with labels).
    joined = np.concatenate(
        [
            np.concatenate([ds.X_train.reshape(len(ds.X_train), -1), ds.y_train[:, None]], 1),
            np.concatenate([ds.X_test.reshape(len(ds.X_test), -1), ds.y_test[:, None]], 1),
        ]
    )
    everything = np.concatenate([whole.X_train.reshape(total, -1), whole.y_train[:, None]], 1)
    np.testing.assert_array_equal(rows_sorted(joined), rows_sorted(everything))
    again = loader(test_fraction=fraction, seed=3)
    np.testing.assert_array_equal(again.X_test, ds.X_test)
    np.testing.assert_array_equal(again.y_train, ds.y_train)
    other = loader(test_fraction=fraction, seed=4)
    assert not np.array_equal(other.X_test, ds.X_test)


def test_iris_shapes_dtypes_and_classes():
    lines = (FILES / "iris.csv").read_text().splitlines()
    table = np.loadtxt(lines[1:], delimiter=",")
    ds = load_iris()
    assert ds.classes == ["setosa", "versicolor", "virginica"]
    assert ds.input_shape == (4,)
    assert ds.X_train.shape == (120, 4) and ds.X_test.shape == (30, 4)
    assert ds.X_train.dtype == np.float32 and ds.y_train.dtype == np.int64
    np.testing.assert_array_equal(np.bincount(ds.y_train), [40, 40, 40])
    np.testing.assert_array_equal(np.bincount(ds.y_test), [10, 10, 10])
    whole = load_iris(test_fraction=0.0)
    np.testing.assert_array_equal(whole.X_train, table[:, :4].astype(np.float32))  # raw cm
    assert whole.X_train[0].tolist() == pytest.approx([5.1, 3.5, 1.4, 0.2])


@pytest.mark.parametrize("fraction", [-0.1, 1.0, 1.5])
def test_split_fraction_is_validated(fraction):
    with pytest.raises(ValueError, match=r"test_fraction must be in \[0, 1\)"):
        load_digits(test_fraction=fraction)
    with pytest.raises(ValueError, match=r"val_fraction must be in \[0, 1\)"):
        train_val_split(np.zeros((4, 1)), np.zeros(4, int), val_fraction=fraction)


@pytest.mark.parametrize("n, classes, k", [(150, 3, 5), (203, 4, 3), (17, 2, 4), (6, 3, 6)])
def test_stratified_folds_partition_each_class_evenly(rng, n, classes, k):
    y = np.sort(rng.integers(0, classes, n))
    folds = stratified_folds(y, k, seed=7)
    assert len(folds) == k
    np.testing.assert_array_equal(np.sort(np.concatenate(folds)), np.arange(n))
    for fold in folds:
        assert np.all(np.diff(fold) > 0)
    counts = np.array([np.bincount(y[fold], minlength=classes) for fold in folds])
    assert np.all(counts.max(0) - counts.min(0) <= 1)  # each class split as evenly as it can be
    sizes = [len(fold) for fold in folds]
    assert max(sizes) - min(sizes) <= 1
    np.testing.assert_array_equal(
        np.concatenate(stratified_folds(y, k, seed=7)), np.concatenate(folds)
    )
    if n > 10:
        assert not np.array_equal(
            np.concatenate(stratified_folds(y, k, seed=8)), np.concatenate(folds)
        )


def test_stratified_folds_validates_k():
    with pytest.raises(ValueError, match="k must be an integer >= 2, got 1"):
        stratified_folds(np.zeros(5), 1)
    with pytest.raises(ValueError, match="k=6 folds need at least 6 samples, got 5"):
        stratified_folds(np.zeros(5), 6)
    with pytest.raises(TypeError, match="k must be an integer"):
        stratified_folds(np.zeros(5), 2.0)


@pytest.mark.parametrize("loader, total", [(load_digits, 1797), (load_iris, 150)])
def test_embedded_folds_test_every_sample_once(loader, total):
    whole = loader(test_fraction=0.0)
    rows = np.concatenate([whole.X_train.reshape(total, -1), whole.y_train[:, None]], 1)
    tested = []
    for i in range(5):
        ds = loader(fold=(i, 5), seed=2)
        assert len(ds.X_train) + len(ds.X_test) == total
        for label, count in enumerate(np.bincount(whole.y_train)):
            assert abs(np.sum(ds.y_test == label) - count / 5) < 1
        train = np.concatenate([ds.X_train.reshape(len(ds.X_train), -1), ds.y_train[:, None]], 1)
        test = np.concatenate([ds.X_test.reshape(len(ds.X_test), -1), ds.y_test[:, None]], 1)
        np.testing.assert_array_equal(rows_sorted(np.concatenate([train, test])), rows_sorted(rows))
        tested.append(test)
    np.testing.assert_array_equal(rows_sorted(np.concatenate(tested)), rows_sorted(rows))


@pytest.mark.parametrize(
    "fold, error, message",
    [
        ((5, 5), ValueError, "fold index must be below k=5, got 5"),
        ((0, 1), ValueError, r"k of fold=\(index, k\) must be an integer >= 2"),
        ((-1, 5), ValueError, r"index of fold=\(index, k\) must be an integer >= 0"),
        (3, TypeError, r"fold must be a pair \(index, k\), got 3"),
    ],
)
def test_embedded_fold_is_validated(fold, error, message):
    with pytest.raises(error, match=f"load_iris: {message}"):
        load_iris(fold=fold)


# ----------------------------------------------------------------- train_val_split, scaling


def test_train_val_split_is_a_deterministic_stratified_partition(rng):
    y = rng.integers(0, 4, 203)
    X = np.arange(203)[:, None] * np.ones((1, 3))  # row i holds i: identifies the sample
    X_train, y_train, X_val, y_val = train_val_split(X, y, val_fraction=0.25, seed=11)
    ids_train, ids_val = X_train[:, 0].astype(int), X_val[:, 0].astype(int)
    assert np.intersect1d(ids_train, ids_val).size == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([ids_train, ids_val])), np.arange(203))
    np.testing.assert_array_equal(y_train, y[ids_train])
    np.testing.assert_array_equal(y_val, y[ids_val])
    for label, count in enumerate(np.bincount(y)):
        assert abs(np.sum(y_val == label) - 0.25 * count) <= 0.5
    assert np.all(np.diff(ids_train) > 0) and np.all(np.diff(ids_val) > 0)  # original order
    again = train_val_split(X, y, val_fraction=0.25, seed=11)
    np.testing.assert_array_equal(again[2], X_val)
    assert not np.array_equal(train_val_split(X, y, 0.25, seed=12)[2], X_val)


def test_train_val_split_keeps_one_of_each_class_in_train():
    X_train, y_train, X_val, y_val = train_val_split(np.arange(3), np.array([0, 1, 1]), 0.5)
    assert sorted(y_train.tolist()) == [0, 1] and y_val.tolist() == [1]


def test_train_val_split_length_mismatch():
    with pytest.raises(ValueError, match="X has 4 rows but y has 3"):
        train_val_split(np.zeros((4, 2)), np.zeros(3), 0.5)


def test_standardize_per_channel_uses_train_statistics(rng):
    X_train = rng.normal(
        [[[[1.0]], [[-5.0]], [[20.0]]]], [[[[2.0]], [[0.5]], [[3.0]]]], (40, 3, 5, 5)
    )
    X_test = rng.normal(0.0, 1.0, (7, 3, 5, 5))
    Z_train, Z_test = standardize(X_train, X_test)
    assert Z_train.dtype == np.float32 and Z_test.dtype == np.float32
    np.testing.assert_allclose(Z_train.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(Z_train.std(axis=(0, 2, 3)), 1, atol=1e-5)
    mean = X_train.mean(axis=(0, 2, 3))[None, :, None, None]
    std = X_train.std(axis=(0, 2, 3))[None, :, None, None]
    np.testing.assert_allclose(Z_test, (X_test - mean) / std, rtol=1e-5, atol=1e-5)


def test_standardize_per_feature_and_constant_features():
    X = np.array([[1.0, 5.0, 2.0], [3.0, 5.0, 4.0], [5.0, 5.0, 9.0]])
    (Z,) = standardize(X)
    np.testing.assert_allclose(Z[:, 0], [-1.224744871, 0, 1.224744871], rtol=1e-6)
    np.testing.assert_array_equal(Z[:, 1], [0, 0, 0])  # constant: centred, no division by 0
    mean, std = mean_std(X)
    assert mean.shape == (1, 3) and std[0, 1] == 1.0
    with pytest.raises(ValueError, match="mean_std needs X of shape"):
        standardize(np.zeros(5))


# -------------------------------------------------------------------------------- registry


def test_registry_and_load_dataset(tmp_path, rng):
    assert set(DATASETS) == {"digits", "iris", "fashion-mnist", "mnist", "cifar10"}
    assert load_dataset("iris").X_train.shape == (120, 4)
    assert len(load_dataset("Digits", test_fraction=0.5).X_test) in range(895, 905)
    directory = write_idx_set(tmp_path / "d", make_idx_set(rng, label_offset=2))
    assert labels_of(load_dataset("fashion_mnist", data_dir=directory, download=False)) == 2
    assert labels_of(load_dataset("mnist", data_dir=directory, download=False)) == 2
    with pytest.raises(DatasetNotFoundError):
        load_dataset("cifar-10", data_dir=directory, download=False)
    with pytest.raises(ValueError, match="unknown data set 'imagenet'; valid names are digits, ir"):
        load_dataset("imagenet")


# ------------------------------------------------------------------------------ DataLoader


def indexed_data(n: int, float_labels: bool = False):
    """X row i is (i, -i); y is i mod 3 (or its float): batches say which rows they hold."""
    X = np.stack([np.arange(n), -np.arange(n)], axis=1).astype(np.float64)
    y = np.arange(n) % 3
    return X, (y.astype(np.float64) if float_labels else y)


def pass_rows(loader) -> list[np.ndarray]:
    return [to_numpy(X_batch)[:, 0].astype(int) for X_batch, _ in loader]


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("n, batch_size", [(10, 4), (12, 4), (5, 5), (3, 64)])
def test_loader_batches_cover_every_row_once_on_the_backend(bk, shuffle, n, batch_size):
    X, y = indexed_data(n)
    loader = DataLoader(X, y, batch_size=batch_size, shuffle=shuffle, seed=5)
    expected_sizes = [batch_size] * (n // batch_size) + ([n % batch_size] if n % batch_size else [])
    assert len(loader) == len(expected_sizes)
    seen = []
    for X_batch, y_batch in loader:
        assert_on_backend(X_batch, bk, "X_batch")
        assert array_namespace(y_batch) is bk.xp
        assert device(y_batch) == bk.device
        assert y_batch.dtype == bk.xp.int64
        rows = to_numpy(X_batch)[:, 0].astype(int)
        np.testing.assert_array_equal(to_numpy(X_batch)[:, 1], -rows)
        np.testing.assert_array_equal(to_numpy(y_batch), rows % 3)
        seen.append(rows)
    assert [len(rows) for rows in seen] == expected_sizes
    np.testing.assert_array_equal(np.sort(np.concatenate(seen)), np.arange(n))
    if not shuffle:
        np.testing.assert_array_equal(np.concatenate(seen), np.arange(n))


def test_loader_drop_last(bk):
    X, y = indexed_data(10)
    loader = DataLoader(X, y, batch_size=4, shuffle=True, drop_last=True)
    assert len(loader) == 2
    rows = pass_rows(loader)
    assert [len(r) for r in rows] == [4, 4]
    assert len(np.unique(np.concatenate(rows))) == 8


def test_loader_float_labels_and_dtype_override(bk):
    X, y = indexed_data(6, float_labels=True)
    X_batch, y_batch = next(iter(DataLoader(X, y, batch_size=4)))
    assert_on_backend(X_batch, bk, "X_batch")
    assert y_batch.dtype == bk.dtype
    for dtype in ("float64", bk.xp.float64, "float32", bk.xp.float32):
        X_batch, y_batch = next(iter(DataLoader(X, y, batch_size=4, dtype=dtype)))
        want = getattr(bk.xp, dtype) if isinstance(dtype, str) else dtype
        assert X_batch.dtype == want and y_batch.dtype == want
        assert array_namespace(X_batch) is bk.xp


def test_loader_uint8_images_become_the_backend_float(bk):
    images = np.arange(2 * 1 * 3 * 3, dtype=np.uint8).reshape(2, 1, 3, 3)
    X_batch, y_batch = next(iter(DataLoader(images, np.array([1, 0], np.uint8), batch_size=2)))
    assert_on_backend(X_batch, bk, "X_batch")
    assert y_batch.dtype == bk.xp.int64
    np.testing.assert_array_equal(to_numpy(X_batch), images)


def test_loader_shuffle_is_a_function_of_seed_and_epoch():
    X, y = indexed_data(50)
    a = DataLoader(X, y, batch_size=7, shuffle=True, seed=3)
    b = DataLoader(X, y, batch_size=7, shuffle=True, seed=3)
    a.set_epoch(4)
    b.set_epoch(4)
    order_a = np.concatenate(pass_rows(a))
    np.testing.assert_array_equal(order_a, np.concatenate(pass_rows(b)))
    # The documented contract: np.random.default_rng([seed, epoch]).permutation(N).
    np.testing.assert_array_equal(order_a, np.random.default_rng([3, 4]).permutation(50))
    np.testing.assert_array_equal(a.order(4), order_a)
    other_seed = DataLoader(X, y, batch_size=7, shuffle=True, seed=4)
    other_seed.set_epoch(4)
    assert not np.array_equal(np.concatenate(pass_rows(other_seed)), order_a)


def test_loader_epochs_differ_and_a_resumed_run_sees_the_same_orders():
    X, y = indexed_data(40)
    first_run = DataLoader(X, y, batch_size=16, shuffle=True, seed=1)
    orders = [np.concatenate(pass_rows(first_run)) for _ in range(3)]  # epochs 0, 1, 2
    assert first_run.epoch == 3
    assert not np.array_equal(orders[0], orders[1])
    assert not np.array_equal(orders[1], orders[2])
    resumed = DataLoader(X, y, batch_size=16, shuffle=True, seed=1)
    resumed.set_epoch(2)
    np.testing.assert_array_equal(np.concatenate(pass_rows(resumed)), orders[2])
    first_run.set_epoch(0)
    np.testing.assert_array_equal(np.concatenate(pass_rows(first_run)), orders[0])


def test_loader_resolves_the_backend_at_iteration_time():
    X, y = indexed_data(5)
    with portaconv.use_backend("numpy"):
        loader = DataLoader(X, y, batch_size=5)
    with portaconv.use_backend("array_api_strict", dtype="float64") as strict:
        X_batch, _ = next(iter(loader))
        assert_on_backend(X_batch, strict, "X_batch")
    pinned = make_backend("array_api_strict", dtype="float32")
    with portaconv.use_backend("numpy"):
        X_batch, y_batch = next(iter(DataLoader(X, y, batch_size=5, backend=pinned)))
    assert_on_backend(X_batch, pinned, "X_batch")
    assert y_batch.dtype == pinned.xp.int64


def test_loader_batches_do_not_alias_the_data():
    X, y = indexed_data(6)
    X = X.astype(np.float32)
    with portaconv.use_backend("numpy", dtype="float32"):
        X_batch, _ = next(iter(DataLoader(X, y, batch_size=3)))
    X_batch[...] = 99
    np.testing.assert_array_equal(X[:, 0], np.arange(6))


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(batch_size=0), ValueError, "batch_size must be positive, got 0"),
        (dict(batch_size=-3), ValueError, "batch_size must be positive"),
        (dict(batch_size=2.5), TypeError, "batch_size must be an int, got float"),
        (dict(batch_size=True), TypeError, "batch_size must be an int, got bool"),
        (dict(seed=-1), ValueError, "seed must be non-negative"),
        (dict(seed="7"), TypeError, "seed must be an int"),
        (dict(batch_size=11, drop_last=True), ValueError, "would yield no batch"),
        (dict(backend="numpy"), TypeError, "backend must be a portaconv Backend"),
        (dict(y=np.zeros(9)), ValueError, "X has 10 samples but y has 9"),
        (dict(X=np.zeros((0, 2)), y=np.zeros(0)), ValueError, "empty"),
        (dict(X=np.float64(3.0)), ValueError, "leading sample axis"),
        (dict(y=np.array(list("abcdefghij"))), TypeError, "y must hold integer class labels"),
        (dict(X=np.array(list("abcdefghij"))), TypeError, "X must be numeric"),
    ],
)
def test_loader_validates_its_arguments(kwargs, error, message):
    X, y = indexed_data(10)
    args = dict(X=X, y=y) | kwargs
    with pytest.raises(error, match="^DataLoader: .*" + re.escape(message)):
        DataLoader(**args)


def test_loader_rejects_unknown_dtype_names_and_negative_epochs():
    X, y = indexed_data(4)
    loader = DataLoader(X, y, dtype="int8")
    with pytest.raises(ValueError, match="DataLoader: dtype must be 'float32', 'float64'"):
        iter(loader)
    with pytest.raises(ValueError, match="DataLoader: epoch must be non-negative"):
        loader.set_epoch(-1)
    assert "batch_size=64" in repr(loader) and "batches=1" in repr(loader)


# ------------------------------------------------------------------------------ augmentation


def _flip_reference(X, rng):
    """One image at a time, the way a reader would write it."""
    flips = rng.random(len(X)) < 0.5
    return np.stack([x[..., ::-1] if f else x for x, f in zip(X, flips)])


def _shift_reference(X, rng, padding=2):
    N, _, H, W = X.shape
    dy = rng.integers(0, 2 * padding + 1, N)
    dx = rng.integers(0, 2 * padding + 1, N)
    out = []
    for n in range(N):
        padded = np.pad(X[n], ((0, 0), (padding, padding), (padding, padding)), mode="edge")
        out.append(padded[:, dy[n] : dy[n] + H, dx[n] : dx[n] + W])
    return np.stack(out)


def test_random_flip_and_shift_match_a_per_image_reference():
    from portaconv.data import flip_and_shift, random_flip, random_shift

    X = np.random.default_rng(0).random((16, 2, 5, 7)).astype(np.float32)
    original = X.copy()
    np.testing.assert_array_equal(
        random_flip(X, np.random.default_rng(1)), _flip_reference(X, np.random.default_rng(1))
    )
    np.testing.assert_array_equal(
        random_shift(X, np.random.default_rng(2)), _shift_reference(X, np.random.default_rng(2))
    )
    rng = np.random.default_rng(3)
    expected = _shift_reference(_flip_reference(X, rng), rng)
    np.testing.assert_array_equal(flip_and_shift(X, np.random.default_rng(3)), expected)
    # the input is left alone, and some images did change
    assert not np.array_equal(random_flip(X, np.random.default_rng(1)), X)
    np.testing.assert_array_equal(X, original)
    with pytest.raises(ValueError, match=r"random_shift: expects a batch of images"):
        random_shift(X[0], np.random.default_rng(0))


def test_loader_augments_reproducibly_per_epoch(bk):
    from portaconv.data import random_flip

    X = np.random.default_rng(0).random((20, 1, 4, 4)).astype(np.float32)
    y = np.arange(20)

    def epoch_batches(epoch):
        loader = DataLoader(X, y, batch_size=8, shuffle=True, seed=5, augment=random_flip)
        loader.set_epoch(epoch)
        return [(to_numpy(a).copy(), to_numpy(b).copy()) for a, b in loader]

    first, again, other = epoch_batches(1), epoch_batches(1), epoch_batches(2)
    for (xa, ya), (xb, yb) in zip(first, again):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    # each image is its original or its mirror image, labels untouched
    for xb, yb in first:
        for image, label in zip(xb, yb):
            assert np.array_equal(image, X[label]) or np.array_equal(image, X[label][..., ::-1])
    flipped = [
        [not np.array_equal(image, X[label]) for image, label in zip(xb, yb)] for xb, yb in first
    ]
    assert any(map(any, flipped)) and not all(map(all, flipped))
    assert any(not np.array_equal(a[0], b[0]) for a, b in zip(first, other))
    with pytest.raises(TypeError, match="DataLoader: augment must be a function"):
        DataLoader(X, y, augment="flip")
