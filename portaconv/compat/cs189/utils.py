"""The package's ``utils``: ``AttrDict``, one-hot labels, scaling, and the gradient check.

``AttrDict`` is the dict whose keys are also attributes that ``train_ffnn.py`` and
``train_conv.py`` describe layers with. ``center``, ``normalize`` and ``standardize`` scale
along ``axis`` (the examples by default) and return a new array (the package's versions
also change ``X`` in place). ``check_gradients`` is the package's finite-difference check.

>>> from portaconv.compat.cs189.utils import AttrDict, integers_to_one_hot
>>> args = AttrDict({"name": "fully_connected", "n_out": 5})
>>> args.n_out, args["name"]
(5, 'fully_connected')
>>> integers_to_one_hot([0, 2, 1]).tolist()
[[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]]
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from array_api_compat import array_namespace

from ...backend import to_numpy

__all__ = [
    "AttrDict",
    "center",
    "check_gradients",
    "integers_to_one_hot",
    "normalize",
    "standardize",
]


class UnknownNameError(ValueError, NotImplementedError):
    """A name the package's factories do not know (``initialize_layer("dense")``).

    A ValueError in portaconv's terms, and the NotImplementedError the package raises, so
    course code that catches either keeps working."""


def unknown_name(factory: str, kind: str, name: Any, valid: Any) -> UnknownNameError:
    """The error a factory raises for a name it does not know, listing the valid ones."""
    names = ", ".join(repr(v) for v in valid)
    return UnknownNameError(f"{factory}: unknown {kind} {name!r}; valid names are {names}")


class AttrDict(dict):
    """A dict whose keys are also attributes: ``args.n_out`` is ``args["n_out"]``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.__dict__ = self


def integers_to_one_hot(integer_vector: Any, max_val: int | None = None) -> np.ndarray:
    """Class indices (N,) -> one-hot rows (N, max_val + 1), float64 NumPy as the package.

    ``max_val`` defaults to the largest index present."""
    labels = np.asarray(to_numpy(integer_vector)).reshape(-1)
    if labels.size and (labels.min() < 0 or not np.all(labels == np.round(labels))):
        raise ValueError(
            "integers_to_one_hot: labels must be integers >= 0, got values from "
            f"{labels.min()} to {labels.max()}"
        )
    labels = labels.astype(np.int64)
    top = int(labels.max()) if max_val is None and labels.size else max_val
    if top is None or (labels.size and top < labels.max()):
        raise ValueError(
            f"integers_to_one_hot: max_val={max_val} is below the largest label {labels.max()}"
        )
    one_hot = np.zeros((labels.shape[0], top + 1))
    one_hot[np.arange(labels.shape[0]), labels] = 1.0
    return one_hot


def center(X: Any, axis: int = 0) -> Any:
    """``X`` minus its mean along ``axis``."""
    xp = array_namespace(X)
    return X - xp.mean(X, axis=axis, keepdims=True)


def normalize(X: Any, axis: int = 0, max_val: float | None = None) -> Any:
    """``X`` shifted to a minimum of 0 along ``axis``, then divided by its maximum there (or
    by ``max_val``)."""
    xp = array_namespace(X)
    X = X - xp.min(X, axis=axis, keepdims=True)
    return X / (xp.max(X, axis=axis, keepdims=True) if max_val is None else max_val)


def standardize(X: Any, axis: int = 0) -> Any:
    """``(X - mean) / (std + 1e-10)`` along ``axis``, as the package."""
    xp = array_namespace(X)
    mean = xp.mean(X, axis=axis, keepdims=True)
    std = xp.std(X, axis=axis, keepdims=True)
    return (X - mean) / (std + 1e-10)


def check_gradients(
    fn: Callable[[Any], Any], grad: Any, x: Any, dLdf: Any, h: float = 1e-6
) -> float:
    """Relative difference ``|numgrad - grad| / |numgrad + grad|`` between ``grad`` and the
    two-sided finite difference of ``sum(fn(x) * dLdf)`` at ``x``, coordinate by coordinate.

    ``x`` is a float NumPy array that ``fn`` reads (a layer's ``parameters["W"]`` with
    ``layer.forward_with_param("W", X)``, or the input with ``layer.forward``); each
    coordinate is moved by ``+h`` and ``-h`` in place and restored. A debugging tool: two
    calls of ``fn`` per coordinate.
    """
    if not isinstance(x, np.ndarray) or x.dtype not in (np.float32, np.float64):
        raise TypeError(
            "check_gradients: x must be a float32 or float64 NumPy array, got "
            f"{type(x).__name__} of dtype {getattr(x, 'dtype', None)}"
        )
    upstream = to_numpy(dLdf)
    numgrad = np.zeros_like(x)
    # One coordinate at a time: each needs its own two evaluations of an arbitrary fn.
    for index in np.ndindex(*x.shape):
        old = x[index]
        x[index] = old + h
        plus = np.array(to_numpy(fn(x)), copy=True)
        x[index] = old - h
        minus = np.array(to_numpy(fn(x)), copy=True)
        x[index] = old
        numgrad[index] = np.sum((plus - minus) * upstream) / (2 * h)
    grad = to_numpy(grad)
    return float(np.linalg.norm(numgrad - grad) / np.linalg.norm(numgrad + grad))
