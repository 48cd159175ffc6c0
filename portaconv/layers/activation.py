"""Elementwise activations and softmax: ``forward(Z) -> A``, ``backward(dLdA) -> dLdZ``.

Where a derivative has a kink, the side that takes which slope is PyTorch's (checked against
torch autograd at the kink values), so that gradients agree there too: ReLU and ReLU6 have
slope 0 at 0 (ReLU6 also at 6), Hardswish 0 at -3 and 1 at 3 (its middle formula on the
open interval (-3, 3) only). A NaN input passes its gradient through ReLU, ReLU6 and
Hardswish, as PyTorch's scalar kernels do (its vectorised CPU kernels give ReLU6 and
Hardswish 0 or NaN there, depending on the element's position).
"""

from __future__ import annotations

import math
from typing import Any

from array_api_compat import device

from ..backend._special import erf
from ..backend._windows import relu, relu_grad
from ._base import Layer, spec_of

_SQRT_2 = math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


class Activation(Layer):
    """Base for activations: forward keeps what the derivative needs."""

    def __init__(self) -> None:
        self.Z = None
        self.A = None
        self._spec = None

    def __repr__(self) -> str:
        return f"{self.name}()"

    def forward(self, Z: Any) -> Any:
        xp = self._array_arg(Z, "Z", "(N, ...)", range(0, 64))
        self.Z, self._spec = Z, spec_of(Z)
        self.A = self._apply(xp, Z)
        return self.A

    def backward(self, dLdA: Any) -> Any:
        self._forward_done("A")
        xp = self._gradient_arg(dLdA, "dLdA", tuple(self.A.shape), self._spec)
        return self._chain(xp, dLdA)

    def _apply(self, xp: Any, Z: Any) -> Any:
        raise NotImplementedError

    def _chain(self, xp: Any, dLdA: Any) -> Any:
        """dLdZ from dLdA, elementwise: dLdA * f'(Z)."""
        raise NotImplementedError


class Identity(Activation):
    """A = Z."""

    def _apply(self, xp, Z):
        return Z

    def _chain(self, xp, dLdA):
        return dLdA


def _sigmoid(xp: Any, Z: Any) -> Any:
    """1 / (1 + exp(-Z)), evaluated without overflow for large ``|Z|``."""
    e = xp.exp(-xp.abs(Z))
    return xp.where(Z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


class Sigmoid(Activation):
    """A = 1 / (1 + exp(-Z)), evaluated without overflow for large ``|Z|``."""

    def _apply(self, xp, Z):
        return _sigmoid(xp, Z)

    def _chain(self, xp, dLdA):
        return dLdA * self.A * (1.0 - self.A)


class Tanh(Activation):
    """A = tanh(Z)."""

    def _apply(self, xp, Z):
        return xp.tanh(Z)

    def _chain(self, xp, dLdA):
        return dLdA * (1.0 - self.A * self.A)


class ReLU(Activation):
    """A = max(Z, 0); the derivative at 0 is taken as 0, and NaN stays NaN, as in PyTorch."""

    def _apply(self, xp, Z):
        # maximum and a multiply by a 0/1 mask are single passes; NumPy's where is much slower.
        return relu(Z)

    def _chain(self, xp, dLdA):
        # A != 0 is not (Z <= 0): a NaN input passes its gradient, as in PyTorch.
        return relu_grad(dLdA, self.A)


class ReLU6(Activation):
    """A = min(max(Z, 0), 6), as ``torch.nn.ReLU6``; the derivative is 1 on the open interval
    (0, 6) and 0 at and beyond the kinks 0 and 6 (a NaN passes its gradient)."""

    def _apply(self, xp, Z):
        return xp.clip(Z, 0.0, 6.0)

    def _chain(self, xp, dLdA):
        Z, zero = self.Z, xp.zeros((), dtype=dLdA.dtype, device=device(dLdA))
        return xp.where((Z <= 0.0) | (Z >= 6.0), zero, dLdA)


class SiLU(Activation):
    """A = Z sigmoid(Z) (swish), as ``torch.nn.SiLU``; dA/dZ = s (1 + Z (1 - s)), s =
    sigmoid(Z)."""

    def _apply(self, xp, Z):
        self._s = _sigmoid(xp, Z)
        return Z * self._s

    def _chain(self, xp, dLdA):
        s = self._s
        return dLdA * (s * (1.0 + self.Z * (1.0 - s)))


class Hardswish(Activation):
    """A = Z min(max(Z + 3, 0), 6) / 6 (MobileNetV3's), as ``torch.nn.Hardswish``.

    dA/dZ is 0 for Z <= -3, Z / 3 + 1/2 for -3 < Z < 3 and 1 for Z >= 3: PyTorch's sides at
    the kinks (a NaN passes its gradient).
    """

    def _apply(self, xp, Z):
        return Z * xp.clip(Z + 3.0, 0.0, 6.0) / 6.0

    def _chain(self, xp, dLdA):
        Z, zero = self.Z, xp.zeros((), dtype=dLdA.dtype, device=device(dLdA))
        # where, not a product with a 0/1 slope: an infinite gradient stays 0 below -3
        middle = xp.where(Z < 3.0, dLdA * (Z / 3.0 + 0.5), dLdA)
        return xp.where(Z <= -3.0, zero, middle)


class LeakyReLU(Activation):
    """A = Z for Z > 0, negative_slope * Z otherwise (PyTorch's default slope 0.01)."""

    def __init__(self, negative_slope: float = 0.01) -> None:
        super().__init__()
        if isinstance(negative_slope, bool) or not isinstance(negative_slope, (int, float)):
            raise TypeError(
                f"LeakyReLU: negative_slope must be a number, got {type(negative_slope).__name__}"
            )
        self.negative_slope = float(negative_slope)

    def __repr__(self) -> str:
        return f"LeakyReLU(negative_slope={self.negative_slope})"

    def _apply(self, xp, Z):
        return xp.where(Z > 0, Z, Z * self.negative_slope)

    def _chain(self, xp, dLdA):
        return xp.where(self.Z > 0, dLdA, dLdA * self.negative_slope)


class GELU(Activation):
    """A = Z * Phi(Z) with Phi the standard normal CDF (``approximate="tanh"``: the tanh form).

    Same results as ``torch.nn.GELU(approximate=...)``.
    """

    def __init__(self, approximate: str = "none") -> None:
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise ValueError(f"GELU: approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    def __repr__(self) -> str:
        return f"GELU(approximate={self.approximate!r})"

    def _apply(self, xp, Z):
        if self.approximate == "tanh":
            self._t = xp.tanh(_SQRT_2_OVER_PI * (Z + 0.044715 * Z * Z * Z))
            return 0.5 * Z * (1.0 + self._t)
        self._cdf = 0.5 * (1.0 + erf(Z / _SQRT_2))
        return Z * self._cdf

    def _chain(self, xp, dLdA):
        Z = self.Z
        if self.approximate == "tanh":
            t = self._t
            inner = _SQRT_2_OVER_PI * (1.0 + 3 * 0.044715 * Z * Z)
            return dLdA * (0.5 * (1.0 + t) + 0.5 * Z * (1.0 - t * t) * inner)
        return dLdA * (self._cdf + Z * xp.exp(-0.5 * Z * Z) * _INV_SQRT_2PI)


class Softmax(Activation):
    """A = exp(Z) / sum(exp(Z)) along ``dim`` (default the last axis: classes of (N, C)).

    Backward uses the Jacobian-vector product ``A * (dLdA - sum(dLdA * A))``, no loop.
    """

    def __init__(self, dim: int = -1) -> None:
        super().__init__()
        if isinstance(dim, bool) or not isinstance(dim, int):
            raise TypeError(f"Softmax: dim must be an integer, got {type(dim).__name__}")
        self.dim = dim

    def __repr__(self) -> str:
        return f"Softmax(dim={self.dim})"

    def _apply(self, xp, Z):
        if not -Z.ndim <= self.dim < max(Z.ndim, 1):
            raise ValueError(
                f"Softmax: dim={self.dim} is out of range for Z with {Z.ndim} dimensions"
            )
        shifted = Z - xp.max(Z, axis=self.dim, keepdims=True)
        e = xp.exp(shifted)
        return e / xp.sum(e, axis=self.dim, keepdims=True)

    def _chain(self, xp, dLdA):
        A = self.A
        return A * (dLdA - xp.sum(dLdA * A, axis=self.dim, keepdims=True))
