"""Max, mean and average pooling in 1-d and 2-d, computed directly for any stride and padding.

Each window is visited as a loop over the kernel offsets (strided slices of the input), so
nothing the size of the unfolded input is built. Max pooling keeps the first maximum in
row-major order within the window (the handout's rule) and propagates NaN like PyTorch; its
forward records which offset won (``window_max``) and backward sends each output gradient
to that one input (``window_max_grad``: one masked slice assignment per offset); both have
NumPy fast paths in ``portaconv.backend``. Mean pooling spreads it evenly.

``kernel`` (the handout's name; ``kernel_size=`` as PyTorch names it), ``stride`` (default:
the kernel) and ``padding`` are each an integer for every spatial axis or a tuple per axis::

    A (N, C, *in) -> Z (N, C, *out)
    out = floor((in + 2 padding - kernel) / stride) + 1      (PyTorch's ceil_mode=False)

Padding is at most half the kernel on each axis (``padding <= kernel // 2``, PyTorch's rule),
so every window holds an element of the input. Max pooling pads with -inf (a padded position
never wins; where the window's maximum is -inf itself, its first input element takes the
gradient, as in PyTorch), mean pooling with zeros: ``MeanPool*d`` and ``AvgPool*d`` divide
each window's sum by the kernel's size (PyTorch's ``count_include_pad=True``),
``AvgPool*d(..., count_include_pad=False)`` by the number of the window's elements inside
the input. Forward pads and pools the padded input; backward crops the padded gradient.
"""

from __future__ import annotations

import math
from typing import Any

from array_api_compat import array_namespace, device

from ..backend._windows import (
    conv_out_size,
    pad_spatial,
    window_max,
    window_max_grad,
    window_scatter,
    windows,
)
from ..checks import check_int_tuple, shape_str
from ._base import Layer, spec_of

_LAYOUT = {1: "(N, C, W_in)", 2: "(N, C, H_in, W_in)"}

IntOrTuple = int | tuple[int, ...]


def per_axis(value: IntOrTuple, nd: int) -> tuple[int, ...]:
    """A checked int-or-tuple hyper-parameter as one int per spatial axis."""
    return value if isinstance(value, tuple) else (value,) * nd


class _PoolNd(Layer):
    _nd = 0
    _max = True

    def __init__(
        self,
        kernel: IntOrTuple | None = None,
        stride: IntOrTuple | None = None,
        padding: IntOrTuple = 0,
        *,
        kernel_size: IntOrTuple | None = None,
    ) -> None:
        if kernel is not None and kernel_size is not None:
            raise TypeError(
                f"{self.name}: give kernel or kernel_size, not both; got kernel={kernel!r} "
                f"and kernel_size={kernel_size!r}"
            )
        self._kernel_arg = "kernel" if kernel_size is None else "kernel_size"
        self._setup(kernel if kernel_size is None else kernel_size, stride, padding)

    def _setup(self, kernel: Any, stride: Any, padding: Any) -> None:
        """Check and keep the geometry: ``kernel``, ``stride``, ``padding`` as given (an int
        or a tuple), ``_kernel``, ``_stride``, ``_padding`` as tuples per axis."""
        nd = self._nd
        self.kernel = check_int_tuple(self.name, self._kernel_arg, kernel, nd)
        self.stride = (
            self.kernel if stride is None else check_int_tuple(self.name, "stride", stride, nd)
        )
        self.padding = check_int_tuple(self.name, "padding", padding, nd, minimum=0)
        self._kernel, self._stride, self._padding = (
            per_axis(v, nd) for v in (self.kernel, self.stride, self.padding)
        )
        if any(p > k // 2 for p, k in zip(self._padding, self._kernel)):
            half = tuple(k // 2 for k in self._kernel)
            most = half if isinstance(self.kernel, tuple) else half[0]
            raise ValueError(
                f"{self.name}: padding={self.padding} must be at most half the kernel "
                f"({self._kernel_arg}={self.kernel} allows padding up to {most})"
            )
        self._in_shape: tuple[int, ...] | None = None
        self._out_shape: tuple[int, ...] | None = None
        self._spec = None
        self._argmax = None  # index of the chosen kernel offset, per output element
        self._divisor: Any = None  # what each window's sum is divided by (mean pooling)

    def __repr__(self) -> str:
        options = [f"{self._kernel_arg}={self.kernel}", f"stride={self.stride}"]
        if any(self._padding):
            options.append(f"padding={self.padding}")
        if not getattr(self, "count_include_pad", True):
            options.append("count_include_pad=False")
        return f"{self.name}({', '.join(options)})"

    @property
    def kernel_size(self) -> IntOrTuple:
        return self.kernel

    def _geometry(self) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        """(kernel, stride, out) per axis, of the windows over the padded input."""
        return self._kernel, self._stride, self._out_shape[2:]

    def _padded_shape(self) -> tuple[int, ...]:
        in_shape, padding = self._in_shape, self._padding
        return (*in_shape[:2], *(n + 2 * p for n, p in zip(in_shape[2:], padding)))

    def forward(self, A: Any) -> Any:
        """``A`` (N, C, *in) -> ``Z`` (N, C, *out)."""
        self._array_arg(A, "A", _LAYOUT[self._nd], self._nd + 2)
        in_size = tuple(A.shape[2:])
        if any(n < 1 for n in in_size):  # padding alone would make windows of no input
            raise ValueError(
                f"{self.name}: every spatial size of A must be >= 1, got shape {shape_str(A.shape)}"
            )
        padded = tuple(n + 2 * p for n, p in zip(in_size, self._padding))
        if any(n < k for n, k in zip(padded, self._kernel)):
            where = (
                f"padded input {shape_str(padded)} (input {shape_str(in_size)}, "
                f"padding={self.padding})"
                if any(self._padding)
                else f"input {shape_str(in_size)}"
            )
            raise ValueError(
                f"{self.name}: {self._kernel_arg}={self.kernel} is larger than the {where}"
            )
        out = tuple(
            conv_out_size(n, k, s, p)
            for n, k, s, p in zip(in_size, self._kernel, self._stride, self._padding)
        )
        self._in_shape, self._out_shape = tuple(A.shape), (*A.shape[:2], *out)
        self._spec = spec_of(A)
        if self._max:
            Z, argmax = window_max(pad_spatial(A, self._padding, -math.inf), *self._geometry())
            self._argmax = self._inside(Z, argmax) if any(self._padding) else argmax
            return Z
        views = windows(pad_spatial(A, self._padding), *self._geometry())
        Z = views[0]
        for view in views[1:]:
            Z = Z + view
        self._divisor = self._window_counts(A)
        return Z / self._divisor

    def _inside(self, Z: Any, argmax: Any) -> Any:
        """``argmax`` with the windows whose maximum is -inf pointed at their first input
        element, as PyTorch does: there a padded -inf ties with the input's and may come first.
        Per axis that offset is ``max(padding - o * stride, 0)``; row-major over the axes."""
        xp, nd = array_namespace(Z), self._nd
        first = None
        for axis, (s, p, o) in enumerate(zip(self._stride, self._padding, Z.shape[2:])):
            offset = xp.clip(p - s * xp.arange(o, dtype=xp.int64, device=device(Z)), 0, None)
            offset = xp.reshape(
                offset * math.prod(self._kernel[axis + 1 :]),
                tuple(o if a == axis else 1 for a in range(nd)),
            )
            first = offset if first is None else first + offset
        return xp.where(Z == -math.inf, xp.astype(first, argmax.dtype), argmax)

    def _window_counts(self, A: Any) -> Any:
        """What mean pooling divides each window's sum by: the kernel's size."""
        return math.prod(self._kernel)

    def backward(self, dLdZ: Any) -> Any:
        """``dLdZ`` (N, C, *out) -> ``dLdA`` (N, C, *in)."""
        self._forward_done("_in_shape")
        self._gradient_arg(dLdZ, "dLdZ", self._out_shape, self._spec)
        kernel, stride, out = self._geometry()
        padded = self._padded_shape()
        if self._max:
            dLdA = window_max_grad(dLdZ, self._argmax, padded, kernel, stride, out)
        else:
            share = dLdZ / self._divisor
            dLdA = window_scatter(lambda k: share, dLdZ, padded, kernel, stride, out)
        if not any(self._padding):
            return dLdA
        return dLdA[(..., *(slice(p, p + n) for p, n in zip(self._padding, self._in_shape[2:])))]


class MaxPool1d(_PoolNd):
    """Max over windows of ``kernel`` samples every ``stride``: (N, C, W) -> (N, C, W_out);
    ``padding`` samples of -inf at each end."""

    _nd, _max = 1, True


class MeanPool1d(_PoolNd):
    """Mean over windows of ``kernel`` samples every ``stride``: (N, C, W) -> (N, C, W_out);
    ``padding`` zeros at each end, counted in the mean."""

    _nd, _max = 1, False


class MaxPool2d(_PoolNd):
    """Max over ``kernel`` windows (K or (K_h, K_w)) every ``stride``; first maximum wins
    ties; ``padding`` rows and columns of -inf on each side."""

    _nd, _max = 2, True


class MeanPool2d(_PoolNd):
    """Mean over ``kernel`` windows (K or (K_h, K_w)) every ``stride``; ``padding`` rows and
    columns of zeros on each side, counted in the mean."""

    _nd, _max = 2, False


class MaxPool2d_stride1(MaxPool2d):
    """Max pooling with stride 1: (N, C, H, W) -> (N, C, H - K + 1, W - K + 1)."""

    def __init__(self, kernel: int) -> None:
        super().__init__(kernel, 1)


class MeanPool2d_stride1(MeanPool2d):
    """Mean pooling with stride 1: (N, C, H, W) -> (N, C, H - K + 1, W - K + 1)."""

    def __init__(self, kernel: int) -> None:
        super().__init__(kernel, 1)


class _AvgPoolNd(_PoolNd):
    """PyTorch's average pooling: mean pooling with PyTorch's signature, and
    ``count_include_pad``."""

    _max = False

    def __init__(
        self,
        kernel_size: IntOrTuple,
        stride: IntOrTuple | None = None,
        padding: IntOrTuple = 0,
        count_include_pad: bool = True,
    ) -> None:
        if not isinstance(count_include_pad, bool):
            raise TypeError(
                f"{self.name}: count_include_pad must be True or False, "
                f"got {count_include_pad!r} of type {type(count_include_pad).__name__}"
            )
        self.count_include_pad = count_include_pad
        self._kernel_arg = "kernel_size"
        self._setup(kernel_size, stride, padding)

    def _window_counts(self, A: Any) -> Any:
        """The kernel's size, or with ``count_include_pad=False`` the number of input
        elements in each window: per axis ``min(start + K, in) - max(start, 0)`` for the
        window starting at ``start = o * stride - padding``, their product over the axes,
        shaped (*out) to broadcast."""
        if self.count_include_pad or not any(self._padding):
            return math.prod(self._kernel)
        xp, nd = array_namespace(A), self._nd
        counts = None
        for axis, (n, k, s, p, o) in enumerate(
            zip(A.shape[2:], self._kernel, self._stride, self._padding, self._out_shape[2:])
        ):
            start = xp.arange(o, dtype=xp.int64, device=device(A)) * s - p
            inside = xp.clip(start + k, None, n) - xp.clip(start, 0, None)
            shape = tuple(o if a == axis else 1 for a in range(nd))
            inside = xp.reshape(xp.astype(inside, A.dtype), shape)
            counts = inside if counts is None else counts * inside
        return counts


class AvgPool1d(_AvgPoolNd):
    """Average over windows of ``kernel_size`` samples every ``stride`` (default the kernel),
    ``padding`` zeros at each end: (N, C, W) -> (N, C, W_out), as ``torch.nn.AvgPool1d``."""

    _nd = 1


class AvgPool2d(_AvgPoolNd):
    """Average over ``kernel_size`` windows (K or (K_h, K_w)) every ``stride`` (default the
    kernel), ``padding`` rows and columns of zeros on each side, as ``torch.nn.AvgPool2d``
    (no ``ceil_mode`` or ``divisor_override``)."""

    _nd = 2
