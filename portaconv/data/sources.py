"""Where the downloadable data sets' files are: the search path, downloads and their MD5s.

``mnist``, ``fashion-mnist`` (IDX files) and ``cifar10`` (python pickle batches) are looked
for, in this order, in

1. the ``data_dir`` argument,
2. ``$PORTACONV_DATA`` (several directories may be joined with ``os.pathsep``),
3. the user cache, ``${XDG_CACHE_HOME:-~/.cache}/portaconv``,
4. the system directories in :data:`SYSTEM_DIRS` (Debian's ``dataset-fashion-mnist``
   package installs Fashion-MNIST in ``/usr/share/datasets/fashion-mnist``),

each as the directory itself and as ``<dir>/<dataset name>``. The first directory that holds
every file wins; a ``data_dir`` that holds only some of them is an error that names the
missing ones (never a silent fall-back to another copy). Where no directory has the files
and ``download=True``, they are fetched from the official mirror into
``<data_dir>/<dataset name>`` (without ``data_dir``: the user cache), checked against their
published MD5 sums, and only then put in place. Offline, a :class:`DatasetNotFoundError`
says where it looked and how to get the files by hand. Reading the files is
:mod:`~portaconv.data.readers`' job.
"""

from __future__ import annotations

import hashlib
import os
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

from .readers import CIFAR10_CLASSES


class DatasetNotFoundError(FileNotFoundError):
    """A data set's files are neither on disk nor downloadable; the message says how to fix it."""


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


def _locate(
    source: _Source,
    data_dir: Any,
    download: bool,
    find: Callable[[Path], tuple[Any, list[str], str | None]],
    fetch: Callable[[Path], Any],
) -> Any:
    """What ``find`` finds of ``source`` in the first directory of the search order that
    holds all of it, else what ``fetch(target)`` downloads; the errors of the module
    docstring otherwise. ``find(directory)`` returns (the result or None, what is missing
    in the caller's words, a note when the directory holds part of the data set)."""
    searched = _search_dirs(source.name, data_dir)
    notes: list[str] = []
    given = [] if data_dir is None else searched[:2]  # data_dir and data_dir/<name>
    partial = None
    for directory in searched:
        if partial is not None and directory not in given:
            raise _given_dir_incomplete(source, *partial)
        found, missing, note = find(directory)
        if found is not None:
            return found
        if note is not None and directory in given:
            partial = partial or (directory, missing)
        elif note is not None:
            notes.append(note)
    if partial is not None:
        raise _given_dir_incomplete(source, *partial)
    target = _download_target(source, data_dir)
    if not download:
        raise _not_found(source, searched, notes, _DOWNLOADS_OFF, target)
    try:
        return fetch(target)
    except OSError as exc:  # offline, HTTP error, timeout, unwritable directory
        raise _not_found(source, searched, notes, f"download failed: {exc}", target) from exc


def locate_idx(name: str, data_dir: Any, download: bool) -> tuple[dict[str, Path], list[str]]:
    """The four IDX files of ``name`` ("mnist" or "fashion-mnist"), by base name, and the
    data set's class names: found in the search order, else downloaded (MD5-checked)."""
    source = {"mnist": _MNIST, "fashion-mnist": _FASHION_MNIST}[name]

    def find(directory: Path) -> tuple[Any, list[str], str | None]:
        found, missing = _find_idx_files(directory)
        if not missing:
            return found, [], None
        note = f"{directory} has only {len(found)} of 4 files; missing {missing}"
        return None, [f"{stem}[.gz]" for stem in missing], note if found else None

    def fetch(target: Path) -> dict[str, Path]:
        for file_name, md5 in source.md5.items():
            if not (target / file_name).is_file():
                _download(source.base_url + file_name, target / file_name, md5)
        files, missing = _find_idx_files(target)
        assert not missing, missing
        return files

    return _locate(source, data_dir, download, find, fetch), list(source.classes)


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


def locate_cifar10(data_dir: Any, download: bool) -> Path:
    """The ``cifar-10-batches-py`` directory: found in the search order, else downloaded
    (MD5-checked) and unpacked."""

    def find(directory: Path) -> tuple[Any, list[str], str | None]:
        batches, missing = _find_cifar_dir(directory)
        some = len(missing) < len(_CIFAR_FILES)
        return batches, missing, f"{directory} is incomplete; missing {missing}" if some else None

    def fetch(target: Path) -> Path:
        _download_cifar10(target)
        return target / _CIFAR_DIR

    return _locate(_CIFAR10, data_dir, download, find, fetch)
