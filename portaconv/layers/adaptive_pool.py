"""Adaptive average pooling: the output's size is given, the windows follow from the input's.

Along an axis of length ``in`` pooled to ``out`` bins, bin ``i`` averages the elements
``start_i <= j < end_i`` with PyTorch's bounds

    start_i = floor(i in / out)        end_i = ceil((i + 1) in / out)

(neighbouring bins overlap by one element where ``out`` does not divide ``in``). That is an
averaging matrix ``P`` (out, in) per axis, ``P[i, j] = 1 / (end_i - start_i)`` inside bin i
and 0 elsewhere, so the layer is matrix products over the whole batch, no loop over bins:

    1-d:  Z = A P^T              dLdA = dLdZ P
    2-d:  Z = P_h A P_w^T        dLdA = P_h^T dLdZ P_w

with ``A`` (N, C, *in) and ``Z`` (N, C, *out). Each forward makes its matrices (a few
operations on (out, in) arrays, nothing of the batch's size) and backward reuses them; they
are not kept between forwards, where a compiled step (``jax.jit``) would keep a traced
value. ``output_size`` larger than the input along an axis is refused (PyTorch would repeat
elements).
"""

from __future__ import annotations

from typing import Any

from array_api_compat import device

from ..backend._windows import matmul
from ..checks import check_int_tuple, shape_str
from ._base import Layer, spec_of
from .pool import per_axis


def averaging_matrix(xp: Any, in_size: int, out_size: int, dtype: Any, dev: Any) -> Any:
    """``P`` (out_size, in_size): row ``i`` holds ``1 / (end_i - start_i)`` on bin ``i``."""
    bins = xp.reshape(xp.arange(out_size, dtype=xp.int64, device=dev), (-1, 1))
    start = (bins * in_size) // out_size
    end = ((bins + 1) * in_size + out_size - 1) // out_size  # the ceiling, in integers
    j = xp.reshape(xp.arange(in_size, dtype=xp.int64, device=dev), (1, -1))
    inside = (j >= start) & (j < end)
    weight = 1.0 / xp.astype(end - start, dtype)
    return xp.where(inside, weight, xp.zeros((), dtype=dtype, device=dev))


class _AdaptiveAvgPoolNd(Layer):
    _nd = 0
    _layout = ""

    def __init__(self, output_size: int | tuple[int, ...]) -> None:
        #: as given, an int or a tuple (PyTorch keeps it so)
        self.output_size = check_int_tuple(self.name, "output_size", output_size, self._nd)
        self._out = per_axis(self.output_size, self._nd)
        self._matrices: tuple[Any, ...] = ()  # P per axis, of the last forward
        self._in_shape: tuple[int, ...] | None = None
        self._spec = None

    def __repr__(self) -> str:
        return f"{self.name}({self.output_size})"

    def forward(self, A: Any) -> Any:
        """``A`` (N, C, *in) -> ``Z`` (N, C, *output_size)."""
        xp = self._array_arg(A, "A", self._layout, self._nd + 2)
        in_size = tuple(A.shape[2:])
        if any(n < o for n, o in zip(in_size, self._out)):
            raise ValueError(
                f"{self.name}: output_size={self.output_size} is larger than the input "
                f"{shape_str(in_size)}"
            )
        self._in_shape, self._spec = tuple(A.shape), spec_of(A)
        P = self._matrices = tuple(
            averaging_matrix(xp, n, o, A.dtype, device(A)) for n, o in zip(in_size, self._out)
        )
        Z = matmul(A, xp.matrix_transpose(P[-1]))
        return Z if self._nd == 1 else matmul(P[0], Z)

    def backward(self, dLdZ: Any) -> Any:
        """``dLdZ`` (N, C, *output_size) -> ``dLdA`` (N, C, *in)."""
        self._forward_done("_in_shape")
        out_shape = (*self._in_shape[:2], *self._out)
        xp = self._gradient_arg(dLdZ, "dLdZ", out_shape, self._spec)
        P = self._matrices
        dLdA = xp.matmul(dLdZ, P[-1])
        return dLdA if self._nd == 1 else xp.matmul(xp.matrix_transpose(P[0]), dLdA)


class AdaptiveAvgPool1d(_AdaptiveAvgPoolNd):
    """Average over ``output_size`` bins of the length: (N, C, L) -> (N, C, output_size), as
    ``torch.nn.AdaptiveAvgPool1d``."""

    _nd = 1
    _layout = "(N, C, L)"


class AdaptiveAvgPool2d(_AdaptiveAvgPoolNd):
    """Average over ``output_size`` bins (an int for both axes, or (H_out, W_out)): (N, C, H, W)
    -> (N, C, H_out, W_out), as ``torch.nn.AdaptiveAvgPool2d``."""

    _nd = 2
    _layout = "(N, C, H, W)"
