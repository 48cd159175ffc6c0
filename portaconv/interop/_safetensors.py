"""A model's parameters and buffers in a safetensors file, under the names of its
``state_dict`` (``"0.W"``, ``"2.body.1.running_M"``)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ..backend import to_numpy
from ..checks import shape_str
from ._deps import require

#: ``__metadata__`` of the files written: who wrote them, and under which names.
METADATA = {"format": "portaconv", "names": "portaconv state_dict"}


def _state(model: Any, who: str) -> dict[str, Any]:
    if not callable(getattr(model, "state_dict", None)):
        raise TypeError(
            f"{who}: model must be a portaconv model or layer (with state_dict), "
            f"got {type(model).__name__}"
        )
    return model.state_dict()


def save_safetensors(model: Any, path: str | os.PathLike) -> None:
    """Write every parameter and buffer of ``model`` to ``path`` as a safetensors file: one
    tensor per ``state_dict`` name, in the model's own dtype (bit for bit), readable by
    ``safetensors.numpy.load_file`` (or ``safetensors.torch.load_file``) without portaconv.

    >>> import tempfile, os
    >>> from portaconv.layers import Linear, ReLU
    >>> from portaconv.models import Sequential
    >>> net = Sequential(Linear(4, 8), ReLU(), Linear(8, 3))
    >>> path = os.path.join(tempfile.mkdtemp(), "net.safetensors")
    >>> save_safetensors(net, path)
    >>> load_safetensors(net, path)
    """
    numpy_io = require("safetensors.numpy", "save_safetensors")
    arrays = {
        name: np.ascontiguousarray(to_numpy(value))
        for name, value in _state(model, "save_safetensors").items()
    }
    numpy_io.save_file(arrays, os.fspath(path), metadata=METADATA)


def load_safetensors(model: Any, path: str | os.PathLike) -> None:
    """Set every parameter and buffer of ``model`` from the safetensors file ``path``.

    The file must hold exactly the model's ``state_dict`` names, each of the model's shape
    and of a floating dtype (a ``ValueError`` naming the file and what differs, before
    anything is changed); values are copied into the model's own dtype and device."""
    numpy_io = require("safetensors.numpy", "load_safetensors")
    expected = _state(model, "load_safetensors")
    try:
        arrays = numpy_io.load_file(os.fspath(path))
    except OSError:
        raise
    except Exception as exc:  # safetensors' own error for a file it cannot read
        raise ValueError(
            f"load_safetensors: {os.fspath(path)} is not a readable safetensors file ({exc})"
        ) from exc
    missing = [name for name in expected if name not in arrays]
    unexpected = [name for name in arrays if name not in expected]
    if missing or unexpected:
        raise ValueError(
            f"load_safetensors: {os.fspath(path)} does not hold this model's tensors: "
            f"missing {missing}, unexpected {unexpected}"
        )
    for name, current in expected.items():
        value = arrays[name]
        if tuple(value.shape) != tuple(current.shape):
            raise ValueError(
                f"load_safetensors: {os.fspath(path)}: tensor {name!r} has shape "
                f"{shape_str(value.shape)}, but the model's has {shape_str(current.shape)}"
            )
        if value.dtype.kind != "f":
            raise ValueError(
                f"load_safetensors: {os.fspath(path)}: tensor {name!r} has dtype "
                f"{value.dtype}, not a floating one"
            )
    model.load_state_dict(arrays)
