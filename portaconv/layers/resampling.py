"""Upsampling by zero insertion and downsampling by dropping, in 1-d and 2-d (the handout's).

``Upsample`` with factor k puts k - 1 zeros between neighbours: ``out = k (in - 1) + 1``.
``Downsample`` keeps every k-th element starting at the first: ``out = ceil(in / k)``; its
backward restores the exact input width, odd or even. Each is the other's adjoint.
"""

from __future__ import annotations

from typing import Any

from array_api_compat import array_namespace, device

from ..backend._arrays import slice_set
from ..checks import shape_str
from ._base import Layer, spec_of

_LAYOUT = {1: "(N, C, W_in)", 2: "(N, C, H_in, W_in)"}


def _every(k: int, nd: int) -> tuple:
    return (..., *(slice(None, None, k),) * nd)


def _spread(x: Any, shape: tuple[int, ...], k: int, nd: int) -> Any:
    """Zeros of ``shape`` with ``x`` written at every k-th position of the last nd axes."""
    xp = array_namespace(x)
    out = xp.zeros(shape, dtype=x.dtype, device=device(x))
    return slice_set(out, _every(k, nd), x)


class _Resample(Layer):
    _nd = 0
    _factor_name = ""

    def __init__(self, factor: int) -> None:
        self.factor = self._int_arg(self._factor_name, factor)
        setattr(self, self._factor_name, self.factor)
        self._spec = None
        self._in_shape: tuple[int, ...] | None = None
        self._out_shape: tuple[int, ...] | None = None

    def __repr__(self) -> str:
        return f"{self.name}({self._factor_name}={self.factor})"


class _Upsample(_Resample):
    _factor_name = "upsampling_factor"

    def forward(self, A: Any) -> Any:
        """``A`` (N, C, *in) -> ``Z`` (N, C, *(k (in - 1) + 1)), zeros between the samples."""
        self._array_arg(A, "A", _LAYOUT[self._nd], self._nd + 2)
        if any(n < 1 for n in A.shape[2:]):
            raise ValueError(
                f"{self.name}: every spatial size of A must be >= 1, got shape {shape_str(A.shape)}"
            )
        self._spec = spec_of(A)
        k, nd = self.factor, self._nd
        out = (*A.shape[:2], *(k * (n - 1) + 1 for n in A.shape[2:]))
        self._in_shape, self._out_shape = tuple(A.shape), out
        return _spread(A, out, k, nd)

    def backward(self, dLdZ: Any) -> Any:
        """Keep the gradient at the original samples; the inserted zeros had no influence."""
        self._forward_done("_in_shape")
        self._gradient_arg(dLdZ, "dLdZ", self._out_shape, self._spec)
        return dLdZ[_every(self.factor, self._nd)]


class _Downsample(_Resample):
    _factor_name = "downsampling_factor"

    def forward(self, A: Any) -> Any:
        """``A`` (N, C, *in) -> ``Z`` (N, C, *ceil(in / k)): every k-th sample."""
        self._array_arg(A, "A", _LAYOUT[self._nd], self._nd + 2)
        self._spec = spec_of(A)
        Z = A[_every(self.factor, self._nd)]
        self._in_shape, self._out_shape = tuple(A.shape), tuple(Z.shape)
        return Z

    def backward(self, dLdZ: Any) -> Any:
        """Gradient back at the kept samples, zero at the dropped ones, input width exactly."""
        self._forward_done("_in_shape")
        self._gradient_arg(dLdZ, "dLdZ", self._out_shape, self._spec)
        return _spread(dLdZ, self._in_shape, self.factor, self._nd)


class Upsample1d(_Upsample):
    """Insert ``upsampling_factor - 1`` zeros between samples: (N, C, W) -> (N, C, k(W-1) + 1)."""

    _nd = 1

    def __init__(self, upsampling_factor: int) -> None:
        super().__init__(upsampling_factor)


class Upsample2d(_Upsample):
    """Zero insertion along height and width: (N, C, H, W) -> (N, C, k(H-1) + 1, k(W-1) + 1)."""

    _nd = 2

    def __init__(self, upsampling_factor: int) -> None:
        super().__init__(upsampling_factor)


class Downsample1d(_Downsample):
    """Keep every ``downsampling_factor``-th sample: (N, C, W) -> (N, C, ceil(W / k))."""

    _nd = 1

    def __init__(self, downsampling_factor: int) -> None:
        super().__init__(downsampling_factor)


class Downsample2d(_Downsample):
    """Keep every k-th row and column: (N, C, H, W) -> (N, C, ceil(H / k), ceil(W / k))."""

    _nd = 2

    def __init__(self, downsampling_factor: int) -> None:
        super().__init__(downsampling_factor)
