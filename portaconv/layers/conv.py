"""Convolution (cross-correlation, as in deep learning) in 1-d and 2-d.

One layer class, :class:`_ConvNd`, serves both. It validates its input, applies the dtype
rule and keeps the bookkeeping of ``W``, ``b``, ``dLdW`` and ``dLdb``; the computation is an
engine's (``portaconv.backend.conv``), chosen per call by ``conv_engine``: the portable
im2row gather and matrix product for any library, stride and padding, or on NumPy the NCHW
engine (2-d with fewer than ``MAX_CHANNELS`` input channels, or strided or 1x1 with enough
output positions; 1-d with enough output positions) and the row-gather engine (2-d, stride
1 or 2, at least ``MIN_CHANNELS`` input channels). Strided convolution is computed
directly, never as stride-1 convolution followed by downsampling (which would waste
stride**d of the work).

Shapes, with ``d`` spatial axes::

    A    (N, C_in, *in)          W    (C_out, C_in, K, ..., K)
    Z    (N, C_out, *out)        b    (C_out,)
    out = floor((in + 2 * padding - K) / stride) + 1

    Z[n, o, *x] = b[o] + sum_{c, k} W[o, c, *k] * A_pad[n, c, *(x * stride + k)]

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
from ..checks import shape_str
from ._base import Layer, fan_in_bound, spec_of

_LAYOUT = {1: "(N, C_in, W_in)", 2: "(N, C_in, H_in, W_in)"}


class _ConvNd(Layer):
    """Shared body of every convolution layer; ``_nd`` is the number of spatial axes."""

    _nd = 0
    param_names = ("W", "b")

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        weight_init_fn: Callable[..., Any] | None = None,
        bias_init_fn: Callable[..., Any] | None = None,
    ) -> None:
        self.in_channels = self._int_arg("in_channels", in_channels)
        self.out_channels = self._int_arg("out_channels", out_channels)
        self.kernel_size = self._int_arg("kernel_size", kernel_size)
        self.stride = self._int_arg("stride", stride)
        self.padding = self._int_arg("padding", padding, minimum=0)

        kernel = (self.kernel_size,) * self._nd
        bound = fan_in_bound(self.in_channels * math.prod(kernel))
        w_shape = (self.out_channels, self.in_channels, *kernel)
        self.W = self._init_param(weight_init_fn, "weight_init_fn", w_shape, bound)
        self.b = self._init_param(bias_init_fn, "bias_init_fn", (self.out_channels,), bound)
        xp = array_namespace(self.W)
        self.dLdW = xp.zeros_like(self.W)
        self.dLdb = xp.zeros_like(self.b)
        self._engine: Any = None  # the engine that ran the last forward, and its state
        self._spec: Any = None  # (namespace, device, dtype) of the last forward's computation
        self._out_shape: tuple[int, ...] | None = None

    def __repr__(self) -> str:
        return (
            f"{self.name}({self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding})"
        )

    def forward(self, A: Any) -> Any:
        """``A`` (N, C_in, *in) -> ``Z`` (N, C_out, *out)."""
        self._array_arg(A, "A", _LAYOUT[self._nd], self._nd + 2)
        self._axis_size(A, "A", 1, "C_in", self.in_channels)
        A, W, b = self._promote(A)
        nd, K, s, p = self._nd, self.kernel_size, self.stride, self.padding
        padded = tuple(n + 2 * p for n in A.shape[2:])
        if any(n < K for n in padded):
            raise ValueError(
                f"{self.name}: kernel_size={K} is larger than the padded input "
                f"{shape_str(padded)} (input {shape_str(A.shape[2:])}, padding={p})"
            )
        out = tuple(conv_out_size(n, K, s) for n in padded)
        self._out_shape = (A.shape[0], self.out_channels, *out)
        self._spec = spec_of(A)
        self._engine = conv_engine(A, nd, K, s, p)
        return self._engine.forward(A, W, b)

    def backward(self, dLdZ: Any) -> Any:
        """``dLdZ`` (N, C_out, *out) -> ``dLdA`` (N, C_in, *in); sets ``dLdW`` and ``dLdb``.

        With ``needs_input_grad = False`` only ``dLdW`` and ``dLdb`` are computed and the
        result is None.
        """
        self._forward_done("_engine")
        self._gradient_arg(dLdZ, "dLdZ", self._out_shape, self._spec)
        dLdA, dLdW, dLdb = self._engine.backward(dLdZ, self.needs_input_grad)
        self._set_grads(W=dLdW, b=dLdb)
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
    """1-d convolution with stride and zero padding; same results as ``torch.nn.Conv1d``.

    ``A`` (N, C_in, W_in) -> ``Z`` (N, C_out, (W_in + 2 padding - K) // stride + 1).
    The handout reaches the parameters through ``layer.conv1d_stride1.W``; that path works
    and names this same layer.
    """

    _nd = 1

    @property
    def conv1d_stride1(self) -> Conv1d:
        return self


class Conv2d(_ConvNd):
    """2-d convolution with stride and zero padding; same results as ``torch.nn.Conv2d``.

    ``A`` (N, C_in, H, W) -> ``Z`` (N, C_out, H_out, W_out), each spatial size
    ``(n + 2 padding - K) // stride + 1``. ``layer.conv2d_stride1.W`` (the handout's path)
    names this same layer's ``W``.
    """

    _nd = 2

    @property
    def conv2d_stride1(self) -> Conv2d:
        return self
