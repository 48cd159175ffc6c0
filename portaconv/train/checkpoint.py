"""Checkpoints: one ``.npz`` file per save, written atomically.

A checkpoint is a nested dict (model state, optimizer state, scheduler state, epoch, RNG
state, run metadata). Its arrays are stored as NumPy arrays under their path in the dict
(``"model/0.W"``); everything else is JSON in one entry, ``__meta__``. No pickle is involved,
so loading a checkpoint never runs code.

The file is written to a temporary name in the same directory, flushed to disk, then
renamed over the old one (``os.replace``, atomic on POSIX and Windows): a run killed while
saving leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
import os
import re
import struct
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import array_api_compat
import numpy as np

from ..backend import to_numpy
from ._json import dumps

_META = "__meta__"
_ARRAY = "__array__"


def save_checkpoint(path: str | os.PathLike, state: Mapping[str, Any]) -> Path:
    """Write ``state`` to ``path`` atomically; arrays of any backend are copied to the host."""
    path = Path(path)
    arrays: dict[str, np.ndarray] = {}
    meta = _split(state, "", arrays)
    payload = dumps(meta).encode()  # strict JSON: a NaN in the history is stored as null
    arrays[_META] = np.frombuffer(payload, dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


# What reading a damaged zip can raise besides BadZipFile: an unknown compression method or
# zip version (NotImplementedError), an "encrypted" flag (RuntimeError), a member named in
# the central directory but absent (KeyError), bad sizes (OverflowError, struct.error).
_DAMAGED = (
    OSError,
    ValueError,
    EOFError,
    KeyError,
    NotImplementedError,
    OverflowError,
    RuntimeError,
    struct.error,
    zipfile.BadZipFile,
    zlib.error,
)
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a local file header; an empty archive


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`; arrays come back as NumPy.

    A missing file is a ``FileNotFoundError``; a directory, a file that is not a
    portaconv checkpoint, or a damaged one is a ``ValueError`` that names the file."""
    path = Path(path)
    if path.is_dir():
        inside = sorted(p.name for p in path.glob("*.npz"))
        hint = f" holding {', '.join(inside)}: pass one of them" if inside else ""
        raise ValueError(f"checkpoint {path} is a directory, not a checkpoint file{hint}")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic not in _ZIP_MAGIC:
        # Never let np.load go on to guess a .npy or a pickle: say what the file is not.
        raise ValueError(
            f"checkpoint {path} is not a portaconv checkpoint: not an .npz (zip) file "
            f"(it starts with {magic!r})"
        )
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except _DAMAGED as exc:
        raise ValueError(
            f"checkpoint {path} is damaged or not a portaconv checkpoint: {exc}"
        ) from exc
    if _META not in arrays:
        raise ValueError(f"checkpoint {path} has no {_META} entry; was it written by portaconv?")
    try:
        meta = json.loads(arrays.pop(_META).tobytes().decode())
    except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError included
        raise ValueError(f"checkpoint {path}: its {_META} entry is not JSON ({exc})") from exc
    if not isinstance(meta, dict):
        raise ValueError(f"checkpoint {path}: its {_META} entry is not a JSON object")
    return _join(meta, arrays, path)


_TEMPORARY = re.compile(r"\.(?P<name>.+)\.(?P<pid>\d+)\.tmp")


def remove_stale_temporaries(directory: str | os.PathLike) -> list[Path]:
    """Delete the temporary files (``.NAME.PID.tmp``) that :func:`save_checkpoint` calls in
    ``directory`` left when their process was killed mid-write; returns what was removed.

    A file whose process still runs (another run writing into the same directory) is kept;
    one of this process is not being written now (saves do not overlap a trainer's start).
    Where a process cannot be looked up without side effects (Windows), only this
    process's files are removed."""
    removed = []
    for path in Path(directory).glob(".*.tmp"):
        found = _TEMPORARY.fullmatch(path.name)
        if found is None or not path.is_file():
            continue
        pid = int(found["pid"])
        if pid != os.getpid() and _may_be_running(pid):
            continue
        path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def _may_be_running(pid: int) -> bool:
    if os.name != "posix":
        return True  # os.kill(pid, 0) would terminate the process on Windows
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it runs, as another user
        return True
    return True


def _split(value: Any, prefix: str, arrays: dict[str, np.ndarray]) -> Any:
    """Replace every array in a nested structure by a reference to its entry in ``arrays``."""
    if isinstance(value, Mapping):
        return {str(k): _split(v, f"{prefix}{k}/", arrays) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_split(v, f"{prefix}{i}/", arrays) for i, v in enumerate(value)]
    if isinstance(value, np.ndarray) or (
        array_api_compat.is_array_api_obj(value) and not isinstance(value, (int, float, bool))
    ):
        key = prefix.rstrip("/")
        arrays[key] = np.asarray(to_numpy(value))
        return {_ARRAY: key}
    if isinstance(value, np.generic):
        return value.item()
    return value


def _join(value: Any, arrays: dict[str, np.ndarray], path: Path) -> Any:
    if isinstance(value, dict):
        if set(value) == {_ARRAY}:
            key = value[_ARRAY]
            if not isinstance(key, str) or key not in arrays:
                raise ValueError(
                    f"checkpoint {path} is damaged: it lacks the array {key!r} its "
                    f"{_META} entry names"
                )
            return arrays[key]
        return {k: _join(v, arrays, path) for k, v in value.items()}
    if isinstance(value, list):
        return [_join(v, arrays, path) for v in value]
    return value


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
