"""Convolution (cross-correlation, as in deep learning) in 1-d and 2-d.

One layer class, :class:`_ConvNd`, serves both. It validates its arguments and input,
applies the dtype rule and keeps the bookkeeping of ``W``, ``b``, ``dLdW`` and ``dLdb``; the
computation is an engine's (``portaconv.backend._conv``), chosen per call by
``conv_engine``: the portable im2col gather and one matrix product (batched over the groups)
for any library and geometry, or on NumPy and PyTorch a fast engine where the kernel size,
stride and padding are the same on every axis (padding on both sides), with dilation 1 and
one group. Strided convolution is computed directly, never as stride-1 convolution followed
by downsampling (which would waste stride**d of the work).

Shapes, with ``d`` spatial axes and ``G`` groups::

    A    (N, C_in, *in)          W    (C_out, C_in / G, *K)
    Z    (N, C_out, *out)        b    (C_out,)              (none with bias=False)
    out = floor((in + left + right - dilation * (K - 1) - 1) / stride) + 1     per axis

    Z[n, o, *x] = b[o] + sum_{c, k} W[o, c, *k] * A_pad[n, g C_in/G + c, *(x stride + k dilation)]
    with g = o // (C_out / G), the group of output channel o

``kernel_size``, ``stride``, ``dilation``: an int (every axis) or a tuple of ``d`` ints.
``padding``: the same (zeros on both sides of each axis), ``"valid"`` (none) or ``"same"``
(stride 1 only, out = in): a total of ``dilation * (K - 1)`` per axis, ``total // 2`` on the
left and the rest on the right, as PyTorch splits an odd total. ``groups == C_in`` is a
depthwise convolution.

Forward keeps its input by reference for backward (as Chainer does): modify it in place
before backward and dL/dW is wrong.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from array_api_compat import array_namespace

from ..backend._conv import conv_engine
from ..backend._windows import conv_out_size
from ..checks import check_int_tuple, shape_str
from ._base import Layer, fan_in_bound, spec_of

_LAYOUT = {1: "(N, C_in, W_in)", 2: "(N, C_in, H_in, W_in)"}


def _per_axis(value: int | tuple[int, ...], nd: int) -> tuple[int, ...]:
    return (value,) * nd if isinstance(value, int) else value


class _ConvNd(Layer):
    """Shared body of every convolution layer; ``_nd`` is the number of spatial axes.

    ``kernel_size``, ``stride``, ``padding`` and ``dilation`` keep the form they were given
    in (an int, a tuple per axis, ``"same"``/``"valid"``), so the handout's integer readers
    keep working. ``weight_init_fn(C_out, C_in // groups, *K)``. A layer built with
    ``bias=False`` has no ``b`` and no ``dLdb``: its ``param_names`` is ``("W",)``.
    """

    _nd = 0
    param_names = ("W", "b")

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, ...],
        stride: int | tuple[int, ...] = 1,
        padding: int | tuple[int, ...] | str = 0,
        weight_init_fn: Callable[..., Any] | None = None,
        bias_init_fn: Callable[..., Any] | None = None,
        *,
        dilation: int | tuple[int, ...] = 1,
        groups: int = 1,
        bias: bool = True,
    ) -> None:
        nd = self._nd
        self.in_channels = self._int_arg("in_channels", in_channels)
        self.out_channels = self._int_arg("out_channels", out_channels)
        self.kernel_size = check_int_tuple(self.name, "kernel_size", kernel_size, nd)
        self.stride = check_int_tuple(self.name, "stride", stride, nd)
        self.padding = self._padding_arg(padding)
        self.dilation = check_int_tuple(self.name, "dilation", dilation, nd)
        self.groups = self._int_arg("groups", groups)
        for arg, channels in (
            ("in_channels", self.in_channels),
            ("out_channels", self.out_channels),
        ):
            if channels % self.groups:
                raise ValueError(f"{self.name}: groups={self.groups} must divide {arg}={channels}")
        if not isinstance(bias, bool):
            raise TypeError(
                f"{self.name}: bias must be True or False, got {bias!r} of type "
                f"{type(bias).__name__}"
            )
        if not bias:
            if bias_init_fn is not None:
                raise ValueError(
                    f"{self.name}: bias_init_fn is given but bias=False (the layer has no b)"
                )
            self.param_names = ("W",)
        self._kernel = _per_axis(self.kernel_size, nd)
        self._stride = _per_axis(self.stride, nd)
        self._dilation = _per_axis(self.dilation, nd)
        self._pads = self._pad_pairs()

        fan_in = self.in_channels // self.groups * math.prod(self._kernel)
        bound = fan_in_bound(fan_in)
        w_shape = (self.out_channels, self.in_channels // self.groups, *self._kernel)
        self.W = self._init_param(weight_init_fn, "weight_init_fn", w_shape, bound)
        xp = array_namespace(self.W)
        self.dLdW = xp.zeros_like(self.W)
        if bias:
            self.b = self._init_param(bias_init_fn, "bias_init_fn", (self.out_channels,), bound)
            self.dLdb = xp.zeros_like(self.b)
        self._engine: Any = None  # the engine that ran the last forward, and its state
        self._spec: Any = None  # (namespace, device, dtype) of the last forward's computation
        self._out_shape: tuple[int, ...] | None = None

    def _padding_arg(self, padding: Any) -> int | tuple[int, ...] | str:
        if not isinstance(padding, str):
            return check_int_tuple(self.name, "padding", padding, self._nd, minimum=0)
        if padding not in ("same", "valid"):
            raise ValueError(
                f"{self.name}: padding must be an integer >= 0, a tuple of {self._nd} of them, "
                f"'same' or 'valid', got {padding!r}"
            )
        if padding == "same" and _per_axis(self.stride, self._nd) != (1,) * self._nd:
            raise ValueError(
                f"{self.name}: padding='same' needs stride 1 (as in PyTorch), "
                f"got stride={self.stride}"
            )
        return padding

    def _pad_pairs(self) -> tuple[tuple[int, int], ...]:
        """``(left, right)`` zeros per spatial axis."""
        if self.padding == "same":  # PyTorch's split: the odd one on the right
            totals = [d * (k - 1) for k, d in zip(self._kernel, self._dilation)]
            return tuple((t // 2, t - t // 2) for t in totals)
        if self.padding == "valid":
            return ((0, 0),) * self._nd
        return tuple((p, p) for p in _per_axis(self.padding, self._nd))

    def __repr__(self) -> str:
        options = [f"kernel_size={self.kernel_size}", f"stride={self.stride}"]
        if self._pads != ((0, 0),) * self._nd or isinstance(self.padding, str):
            options.append(f"padding={self.padding!r}")
        if self._dilation != (1,) * self._nd:
            options.append(f"dilation={self.dilation}")
        if self.groups != 1:
            options.append(f"groups={self.groups}")
        if "b" not in self.param_names:
            options.append("bias=False")
        return f"{self.name}({self.in_channels}, {self.out_channels}, {', '.join(options)})"

    def forward(self, A: Any) -> Any:
        """``A`` (N, C_in, *in) -> ``Z`` (N, C_out, *out)."""
        nd = self._nd
        self._array_arg(A, "A", _LAYOUT[nd], nd + 2)
        self._axis_size(A, "A", 1, "C_in", self.in_channels)
        A, W, *bias = self._promote(A)
        spans = tuple(d * (k - 1) + 1 for k, d in zip(self._kernel, self._dilation))
        padded = tuple(n + left + right for n, (left, right) in zip(A.shape[2:], self._pads))
        if any(n < span for n, span in zip(padded, spans)):
            kernel = f"kernel_size={self.kernel_size}"
            if self._dilation != (1,) * nd:
                kernel += f" with dilation={self.dilation} (windows of {shape_str(spans)})"
            raise ValueError(
                f"{self.name}: {kernel} is larger than the padded input {shape_str(padded)} "
                f"(input {shape_str(A.shape[2:])}, padding={self.padding!r})"
            )
        out = tuple(
            conv_out_size(n, k, s, 0, d)
            for n, k, s, d in zip(padded, self._kernel, self._stride, self._dilation)
        )
        self._out_shape = (A.shape[0], self.out_channels, *out)
        self._spec = spec_of(A)
        geometry = (self._kernel, self._stride, self._pads, self._dilation, self.groups)
        self._engine = conv_engine(
            A, nd, *geometry, bias=bool(bias), out_channels=self.out_channels
        )
        return self._engine.forward(A, W, bias[0] if bias else None)

    def backward(self, dLdZ: Any) -> Any:
        """``dLdZ`` (N, C_out, *out) -> ``dLdA`` (N, C_in, *in); sets ``dLdW`` and ``dLdb``.

        With ``needs_input_grad = False`` only ``dLdW`` and ``dLdb`` are computed and the
        result is None.
        """
        self._forward_done("_engine")
        self._gradient_arg(dLdZ, "dLdZ", self._out_shape, self._spec)
        dLdA, dLdW, dLdb = self._engine.backward(dLdZ, self.needs_input_grad)
        self._set_grads(W=dLdW)
        if "b" in self.param_names:
            self._set_grads(b=dLdb)
        return self._as_input(dLdA)


class Conv1d_stride1(_ConvNd):
    """1-d convolution with stride 1 and no padding. ``A`` (N, C_in, W_in) -> (N, C_out, W_in-K+1).

    ``weight_init_fn(out_channels, in_channels, kernel_size)`` and
    ``bias_init_fn(out_channels)`` are called once, here; they may return NumPy arrays.
    """

    _nd = 1

    def __init__(
        self, in_channels, out_channels, kernel_size, weight_init_fn=None, bias_init_fn=None
    ):
        super().__init__(in_channels, out_channels, kernel_size, 1, 0, weight_init_fn, bias_init_fn)


class Conv2d_stride1(_ConvNd):
    """2-d convolution, stride 1, no padding: (N, C_in, H, W) -> (N, C_out, H-K+1, W-K+1).

    ``weight_init_fn(out_channels, in_channels, kernel_size, kernel_size)`` and
    ``bias_init_fn(out_channels)`` are called once, here; they may return NumPy arrays.
    """

    _nd = 2

    def __init__(
        self, in_channels, out_channels, kernel_size, weight_init_fn=None, bias_init_fn=None
    ):
        super().__init__(in_channels, out_channels, kernel_size, 1, 0, weight_init_fn, bias_init_fn)


class Conv1d(_ConvNd):
    """1-d convolution; same results as ``torch.nn.Conv1d`` (and its options).

    ``Conv1d(in_channels, out_channels, kernel_size, stride=1, padding=0, weight_init_fn=None,
    bias_init_fn=None, *, dilation=1, groups=1, bias=True)``: ``A`` (N, C_in, W_in) ->
    ``Z`` (N, C_out, (W_in + 2 padding - dilation (K - 1) - 1) // stride + 1).
    ``weight_init_fn(C_out, C_in // groups, K)`` and ``bias_init_fn(C_out)`` are called once.
    The handout reaches the parameters through ``layer.conv1d_stride1.W``; that path works
    and names this same layer.
    """

    _nd = 1

    @property
    def conv1d_stride1(self) -> Conv1d:
        return self


class Conv2d(_ConvNd):
    """2-d convolution; same results as ``torch.nn.Conv2d`` (and its options).

    ``Conv2d(in_channels, out_channels, kernel_size, stride=1, padding=0, weight_init_fn=None,
    bias_init_fn=None, *, dilation=1, groups=1, bias=True)``: ``A`` (N, C_in, H, W) ->
    ``Z`` (N, C_out, H_out, W_out), each spatial size ``(n + 2 padding - dilation (K - 1) -
    1) // stride + 1`` (per axis where the arguments are tuples). ``weight_init_fn(C_out,
    C_in // groups, K_h, K_w)`` and ``bias_init_fn(C_out)`` are called once.
    ``layer.conv2d_stride1.W`` (the handout's path) names this same layer's ``W``.
    """

    _nd = 2

    @property
    def conv2d_stride1(self) -> Conv2d:
        return self
