"""The package's activations: ``forward(Z)`` and a stateless ``backward(Z, dY)``.

``backward`` takes the pre-activation ``Z`` that ``forward`` was given and ``dY`` = dL/d(out)
of the same shape, and returns dL/dZ; nothing is kept between calls, so one instance serves
every layer. Each runs portaconv's activation layer (:mod:`portaconv.layers`), ``ArcTan``
excepted (portaconv has none): ``Linear`` is ``Identity``, ``TanH`` is ``Tanh``, ``SoftMax``
is ``Softmax`` over the last axis (the classes of (N, C)).

One difference from the staff solution: at ``Z == 0`` exactly, ``ReLU``'s slope is 0, as in
PyTorch (the staff solution takes 1 there); everywhere else the two agree.

>>> import numpy as np
>>> from portaconv.compat.cs189.activations import initialize_activation
>>> relu = initialize_activation("relu")
>>> Z = np.array([[-1.0, 2.0]])
>>> relu.forward(Z).tolist(), relu.backward(Z, np.ones((1, 2))).tolist()
([[0.0, 2.0]], [[0.0, 1.0]])
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from ... import layers as _layers
from ...checks import check_array, shape_str
from .utils import unknown_name

__all__ = [
    "Activation",
    "ArcTan",
    "Linear",
    "ReLU",
    "Sigmoid",
    "SoftMax",
    "TanH",
    "initialize_activation",
]


class Activation(ABC):
    """Abstract class defining the common interface for all activation methods:
    ``activation(Z)`` is ``activation.forward(Z)``."""

    def __call__(self, Z: Any) -> Any:
        return self.forward(Z)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    @abstractmethod
    def forward(self, Z: Any) -> Any:
        """f(Z), elementwise (``SoftMax``: along the last axis)."""

    def backward(self, Z: Any, dY: Any) -> Any:
        """dL/dZ from ``Z`` (forward's input) and ``dY`` = dL/df(Z), both of Z's shape."""
        raise NotImplementedError(f"{type(self).__name__} has no backward")


class _PortaconvActivation(Activation):
    """An activation computed by a fresh portaconv layer at each call (so none keeps state)."""

    def _layer(self) -> _layers.Activation:
        raise NotImplementedError

    def forward(self, Z: Any) -> Any:
        return self._layer().forward(Z)

    def backward(self, Z: Any, dY: Any) -> Any:
        layer = self._layer()
        layer.forward(Z)
        return layer.backward(dY)


class Linear(_PortaconvActivation):
    """f(z) = z."""

    def _layer(self) -> _layers.Activation:
        return _layers.Identity()


class Sigmoid(_PortaconvActivation):
    """f(z) = 1 / (1 + exp(-z)); f'(z) = f(z) (1 - f(z))."""

    def _layer(self) -> _layers.Activation:
        return _layers.Sigmoid()


class TanH(_PortaconvActivation):
    """f(z) = tanh(z); f'(z) = 1 - tanh(z)^2."""

    def _layer(self) -> _layers.Activation:
        return _layers.Tanh()


class ReLU(_PortaconvActivation):
    """f(z) = max(z, 0); f'(z) = 1 for z > 0, 0 for z <= 0."""

    def _layer(self) -> _layers.Activation:
        return _layers.ReLU()


class SoftMax(_PortaconvActivation):
    """f(z)_i = exp(z_i) / sum_j exp(z_j) along the last axis; backward is the product of
    dY with the Jacobian diag(f) - f f^T, row by row (no loop)."""

    def _layer(self) -> _layers.Activation:
        return _layers.Softmax(dim=-1)


class ArcTan(Activation):
    """f(z) = arctan(z); f'(z) = 1 / (1 + z^2)."""

    def forward(self, Z: Any) -> Any:
        xp = check_array("ArcTan", Z, "Z", "(any shape)", range(0, 64))
        return xp.atan(Z)

    def backward(self, Z: Any, dY: Any) -> Any:
        check_array("ArcTan", Z, "Z", "(any shape)", range(0, 64))
        check_array("ArcTan", dY, "dY", "(Z's shape)", range(0, 64))
        if tuple(dY.shape) != tuple(Z.shape):
            raise ValueError(
                f"ArcTan: dY must have Z's shape {shape_str(Z.shape)}, got {shape_str(dY.shape)}"
            )
        return dY / (1.0 + Z * Z)


_ACTIVATIONS = {
    "linear": Linear,
    "sigmoid": Sigmoid,
    "tanh": TanH,
    "arctan": ArcTan,
    "relu": ReLU,
    "softmax": SoftMax,
}


def initialize_activation(name: str) -> Activation:
    """The activation called ``name``: "linear", "sigmoid", "tanh", "arctan", "relu" or
    "softmax"."""
    if name not in _ACTIVATIONS:
        raise unknown_name("initialize_activation", "activation", name, _ACTIVATIONS)
    return _ACTIVATIONS[name]()
