"""The package's weight initialisers, drawn from NumPy's global generator as the package's.

Seed them the course's way, ``np.random.seed(s)`` before the model's first forward (where
the layers draw their weights), and a run draws what the package would. Each initialiser
is called with a shape and returns a float64 NumPy array; the layer moves it to the
namespace, device and dtype of its input.

Fans, as the package defines them (``_get_fan``): ``fan_in = shape[0]``,
``fan_out = shape[-1]``, so for a ``Conv2D`` kernel (kh, kw, C_in, C_out) they are ``kh``
and ``C_out``. Gains (``_calculate_gain``): 5/3 for "tanh", sqrt(2) for "relu", 1 for the
rest.

===================  =====================================================================
``zeros``, ``ones``  all 0, all 1
``identity``         the identity matrix (square shapes only)
``uniform``          U(-1, 1)
``normal``           N(0, 1)
``constant``         0.5 everywhere
``sparse``           N(0, 0.01) with ceil(0.1 rows) zeros in each column
``xavier_uniform``   U(-a, a), a = sqrt(3) gain sqrt(2 / (fan_in + fan_out))
``xavier_normal``    N(0, gain sqrt(2 / (fan_in + fan_out)))
``he_uniform``       U(-a, a), a = sqrt(3) gain / sqrt(fan) (``mode``: "fan_in" by default)
``he_normal``        N(0, gain / sqrt(fan))
===================  =====================================================================

>>> import numpy as np
>>> from portaconv.compat.cs189.weights import initialize_weights
>>> np.random.seed(0)
>>> W = initialize_weights("xavier_uniform", activation="relu")((4, 5))
>>> W.shape, bool(np.abs(W).max() <= np.sqrt(3) * np.sqrt(2) * np.sqrt(2 / 9))
((4, 5), True)
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from .utils import unknown_name

__all__ = [
    "Constant",
    "HeNormal",
    "HeUniform",
    "Identity",
    "Normal",
    "Ones",
    "Preset",
    "Sparse",
    "Uniform",
    "WeightInitializer",
    "XavierNormal",
    "XavierUniform",
    "Zeros",
    "initialize_weights",
]

_FAN_MODES = ("fan_in", "fan_out", "sum", "separate")


def _calculate_gain(activation: str | None, param: Any = None) -> float:
    """The package's gain for ``activation``: 5/3 (tanh), sqrt(2) (relu), otherwise 1."""
    if activation == "tanh":
        return 5.0 / 3.0
    if activation == "relu":
        return math.sqrt(2.0)
    return 1.0


def _get_fan(shape: tuple[int, ...], mode: str = "sum") -> Any:
    """``shape[0]`` (fan_in), ``shape[-1]`` (fan_out), their sum, or both (``separate``)."""
    fan_in, fan_out = shape[0], shape[-1]
    if mode == "fan_in":
        return fan_in
    if mode == "fan_out":
        return fan_out
    if mode == "sum":
        return fan_in + fan_out
    if mode == "separate":
        return fan_in, fan_out
    raise ValueError(f"_get_fan: mode must be one of {', '.join(_FAN_MODES)}, got {mode!r}")


class WeightInitializer(ABC):
    """``initializer(shape)`` -> a float64 NumPy array of ``shape``."""

    @abstractmethod
    def __call__(self, shape: tuple[int, ...]) -> np.ndarray: ...

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Zeros(WeightInitializer):
    def __call__(self, shape):
        return np.zeros(shape=shape)


class Ones(WeightInitializer):
    def __call__(self, shape):
        return np.ones(shape=shape)


class Identity(WeightInitializer):
    def __call__(self, shape):
        fan_in, fan_out = _get_fan(shape, mode="separate")
        if len(shape) != 2 or fan_in != fan_out:
            raise ValueError(
                f"Identity: the identity initialisation needs a square matrix, got shape {shape}"
            )
        return np.identity(n=fan_in)


class Uniform(WeightInitializer):
    def __init__(self, low: float = -1.0, high: float = 1.0) -> None:
        self.low, self.high = low, high

    def __call__(self, shape):
        return np.random.uniform(self.low, self.high, size=shape)


class Normal(WeightInitializer):
    def __init__(self, mean: float = 0, std: float = 1.0) -> None:
        self.mean, self.std = mean, std

    def __call__(self, shape):
        return np.random.normal(self.mean, self.std, size=shape)


class Constant(WeightInitializer):
    def __init__(self, val: float = 0.5) -> None:
        self.val = val

    def __call__(self, shape):
        return np.full(shape, self.val, dtype=np.float64)


class Preset(WeightInitializer):
    """Returns the matrix it is given."""

    def __call__(self, preset_matrix):
        return preset_matrix


class Sparse(WeightInitializer):
    """N(0, ``std``) with ``ceil(sparsity * rows)`` entries of each column set to zero, the
    rows chosen at random per column (matrices (rows, columns) only)."""

    def __init__(self, sparsity: float = 0.1, std: float = 0.01) -> None:
        self.sparsity, self.std = sparsity, std

    def __call__(self, shape):
        if len(shape) != 2:
            raise ValueError(f"Sparse: the sparse initialisation needs a matrix, got shape {shape}")
        n_rows, n_cols = shape
        n_zeros = int(math.ceil(n_rows * self.sparsity))
        W = np.random.normal(0, self.std, size=shape)
        # A random permutation of the rows for every column at once: the first n_zeros of
        # each column's permutation are zeroed.
        zero_rows = np.argsort(np.random.random_sample(shape), axis=0)[:n_zeros]
        W[zero_rows, np.arange(n_cols)] = 0.0
        return W


class XavierUniform(WeightInitializer):
    def __init__(self, activation: str | None = None) -> None:
        self.activation = activation

    def __call__(self, shape):
        std = _calculate_gain(self.activation) * math.sqrt(2.0 / _get_fan(shape, mode="sum"))
        a = math.sqrt(3.0) * std
        return np.random.uniform(-a, a, size=shape)


class XavierNormal(WeightInitializer):
    def __init__(self, activation: str | None = None) -> None:
        self.activation = activation

    def __call__(self, shape):
        std = _calculate_gain(self.activation) * math.sqrt(2.0 / _get_fan(shape, mode="sum"))
        return np.random.normal(0, std, size=shape)


class HeUniform(WeightInitializer):
    def __init__(self, activation: str | None = None, mode: str = "fan_in") -> None:
        self.activation, self.mode = activation, mode

    def __call__(self, shape):
        std = _calculate_gain(self.activation) / math.sqrt(_get_fan(shape, mode=self.mode))
        a = math.sqrt(3.0) * std
        return np.random.uniform(-a, a, size=shape)


class HeNormal(WeightInitializer):
    def __init__(self, activation: str | None = None, mode: str = "fan_in") -> None:
        self.activation, self.mode = activation, mode

    def __call__(self, shape):
        std = _calculate_gain(self.activation) / math.sqrt(_get_fan(shape, mode=self.mode))
        return np.random.normal(0, std, size=shape)


_SIMPLE = {
    "zeros": Zeros,
    "ones": Ones,
    "identity": Identity,
    "uniform": Uniform,
    "normal": Normal,
    "constant": Constant,
    "sparse": Sparse,
}
_NAMES = (*_SIMPLE, "he_uniform", "he_normal", "xavier_uniform", "xavier_normal")


def initialize_weights(
    name: str, activation: str | None = None, mode: str = "fan_in"
) -> WeightInitializer:
    """The initialiser called ``name`` (see the module's table); ``activation`` sets the
    gain of the Xavier and He ones, ``mode`` the fan of the He ones."""
    if name in _SIMPLE:
        return _SIMPLE[name]()
    if name in ("he_uniform", "he_normal") and mode not in ("fan_in", "fan_out", "sum"):
        raise ValueError(
            f"initialize_weights: mode must be 'fan_in', 'fan_out' or 'sum', got {mode!r}"
        )
    if name == "he_uniform":
        return HeUniform(activation=activation, mode=mode)
    if name == "he_normal":
        return HeNormal(activation=activation, mode=mode)
    if name == "xavier_uniform":
        return XavierUniform(activation=activation)
    if name == "xavier_normal":
        return XavierNormal(activation=activation)
    raise unknown_name("initialize_weights", "weight initialisation", name, _NAMES)
