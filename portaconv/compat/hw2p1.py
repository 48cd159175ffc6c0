"""The MyTorch handout's bonus layers (11-785 HW2P1), with the handout's semantics.

portaconv's own ``BatchNorm2d(num_features, eps, momentum)`` and ``Dropout2d(p)`` follow
PyTorch: ``BatchNorm2d(3, 0.4)`` reads 0.4 as ``eps`` and ``Dropout2d(p)(x, False)`` reads
False as ``train``. The handout means other things by the same calls; its code, and its
public bonus autograder, run unchanged against the classes here:

``BatchNorm2d(num_features, alpha=0.9)``
    eps is 1e-8; the running statistics move with weight ``alpha`` on the OLD value, and the
    running variance is the biased batch variance::

        running_M = alpha running_M + (1 - alpha) M
        running_V = alpha running_V + (1 - alpha) V        V = mean((Z - M)^2)

    ``BW``, ``Bb``, ``dLdBW``, ``dLdBb``, ``running_M``, ``running_V``, ``M`` and ``V`` are
    shaped (1, C, 1, 1). ``forward(Z, eval)``: ``eval=True`` normalises with the running
    statistics and leaves what backward needs untouched, so ``backward`` after an
    evaluation forward is the backward of the last training forward.
``Dropout2d(p=0.5)``
    ``forward(x, eval)`` draws one keep-mask per (sample, channel) from NumPy's global
    generator, ``np.random.binomial(1, 1 - p, (N, C))``, exactly as the handout does, so
    code seeded with ``np.random.seed`` gets the handout's masks; ``Z = x * mask / (1 - p)``.
    An evaluation forward returns ``x`` and keeps the last mask for ``backward(delta)``.
``ConvBlock(in_channels, out_channels, kernel_size, stride, padding)``
    the handout's ``Conv2d`` (weights drawn as ``np.random.normal(0, 1.0, (C_out, C_in, K,
    K))`` when the block is built, zero bias) followed by this module's ``BatchNorm2d``.
``ResBlock(in_channels, out_channels, filter_size, stride=3, padding=1)``
    ``ReLU(convolution_layers(A) + residual_connection(A))`` with ``convolution_layers`` =
    ConvBlock(in, out, filter_size, stride, padding), ReLU, ConvBlock(out, out, 1, 1, 0),
    and ``residual_connection`` a ConvBlock(in, out, filter_size, stride, padding), or the
    identity where that would change nothing (stride 1, in == out, filter_size 1, padding
    0). Built in that order, so a seeded ResBlock draws the autograder's weights.

``eval`` defaults to None, the layer's mode: training unless ``.eval()`` was called, so
``forward(Z)`` is the handout's ``forward(Z, eval=False)``, and ``model.eval()`` reaches these
layers inside a portaconv model. The handout's tests feed integer arrays: every forward and
backward here turns an integer input into float64, as the handout's NumPy arithmetic would.
Parameters are float64 (the handout's ``np.ones``/``np.zeros``/``np.random.normal``) on the
active backend; inputs must live there too (NumPy by default).

>>> import numpy as np
>>> from portaconv.compat.hw2p1 import BatchNorm2d, Dropout2d
>>> np.random.seed(11785)
>>> x = np.random.randint(0, 255, size=(2, 3, 4, 4))
>>> bn = BatchNorm2d(3, 0.4)
>>> y = bn(x, False)
>>> y.dtype, bn.running_M.shape, bn.alpha, bn.eps
(dtype('float64'), (1, 3, 1, 1), 0.4, 1e-08)
>>> drop = Dropout2d(0.4)
>>> z = drop(y, False)
>>> drop.mask.shape, drop(y, True) is y
((2, 3, 1, 1), True)
"""

from __future__ import annotations

from numbers import Real
from typing import Any

import array_api_compat
import numpy as np
from array_api_compat import array_namespace, device

from .. import layers
from ..backend import get_backend
from ..layers import Conv2d, Identity, Layer, ReLU
from ..models import Model, Residual, Sequential

__all__ = ["BatchNorm2d", "ConvBlock", "Dropout2d", "ResBlock"]


def as_float(x: Any) -> Any:
    """``x`` in float64 where it is an integer or boolean array (what the handout's NumPy
    arithmetic makes of one), else ``x`` itself: the layers check anything else."""
    if not array_api_compat.is_array_api_obj(x) or isinstance(x, (int, float, complex)):
        return x
    xp = array_namespace(x)
    if xp.isdtype(x.dtype, ("integral", "bool")):
        return xp.astype(x, xp.float64)
    return x


def _eval_arg(layer: Layer, eval: Any) -> bool:
    """Whether this call evaluates: ``eval`` itself, or with None the layer's mode."""
    if eval is None:
        return not layer.training
    if not isinstance(eval, bool):
        raise TypeError(
            f"{layer.name}: eval must be True, False or None, got {eval!r} of type "
            f"{type(eval).__name__}"
        )
    return eval


def _normal_weights(*shape: int) -> Any:
    """The handout's ``Conv2d_stride1`` default: ``np.random.normal(0, 1.0, shape)``."""
    return np.random.normal(0, 1.0, shape)


def _zero_bias(out_channels: int) -> Any:
    return np.zeros(out_channels)


class BatchNorm2d(Layer):
    """``BatchNorm2d(num_features, alpha=0.9)``: the handout's batch norm of ``Z``
    (N, C, H, W), eps 1e-8, running statistics weighted by ``alpha`` (see the module).

    A training forward and the backward are those of ``portaconv.layers.BatchNorm2d``
    (batch mean, biased batch variance, the same eps); this layer keeps the handout's
    running statistics, shapes and names around it.
    """

    param_names = ("BW", "Bb")
    buffer_names = ("running_M", "running_V")
    _layout = "(N, C, H, W)"

    def __init__(self, num_features: int, alpha: float = 0.9) -> None:
        self.num_features = self._int_arg("num_features", num_features)
        what = f"{self.name}: alpha (the weight of the old running statistics) must be"
        if isinstance(alpha, bool) or not isinstance(alpha, Real):
            raise TypeError(f"{what} a real number, got {alpha!r}")
        if not 0 <= alpha <= 1:
            raise ValueError(f"{what} in [0, 1], got {alpha!r}")
        self.alpha = float(alpha)
        self.eps = 1e-8
        # the batch statistics' forward and backward; its own running statistics (PyTorch's,
        # with the unbiased variance) are left unused: this layer keeps the handout's
        self._norm = layers.BatchNorm2d(self.num_features, eps=self.eps, momentum=0.0)
        backend = get_backend()
        xp = backend.xp
        shape = (1, self.num_features, 1, 1)
        place = dict(dtype=xp.float64, device=backend.device)
        self.BW, self.Bb = xp.ones(shape, **place), xp.zeros(shape, **place)
        self.dLdBW, self.dLdBb = xp.zeros(shape, **place), xp.zeros(shape, **place)
        self.running_M, self.running_V = xp.zeros(shape, **place), xp.ones(shape, **place)
        self.M = self.V = None  # the batch statistics of the last training forward

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.forward(*args, **kwargs)

    def __repr__(self) -> str:
        return f"{self.name}({self.num_features}, alpha={self.alpha})"

    @property
    def NZ(self) -> Any:
        """The normalised input of the last training forward, ``(Z - M) / sqrt(V + eps)``."""
        return self._norm.NZ

    def _lend_parameters(self) -> None:
        """Hand the current ``BW`` and ``Bb`` (the handout's code may assign them) to the
        inner layer, in its (C,) shape."""
        xp = array_namespace(self.BW)
        self._norm.BW = xp.reshape(self.BW, (self.num_features,))
        self._norm.Bb = xp.reshape(self.Bb, (self.num_features,))

    def forward(self, Z: Any, eval: bool | None = None) -> Any:
        """``Z`` (N, C, H, W) -> ``BZ = BW NZ + Bb`` of the same shape.

        Training (``eval=False``, or None in training mode): batch statistics; moves the
        running ones. ``eval=True``: ``NZ = (Z - running_M) / sqrt(running_V + eps)``, and
        nothing that backward reads changes.
        """
        evaluating = _eval_arg(self, eval)
        Z = as_float(Z)
        if evaluating:
            xp = self._array_arg(Z, "Z", self._layout, 4)
            self._axis_size(Z, "Z", 1, "num_features", self.num_features)
            Z, BW, Bb, running_M, running_V = self._promote(Z, "Z", *self.buffer_names)
            return BW * ((Z - running_M) / xp.sqrt(running_V + self.eps)) + Bb
        self._lend_parameters()
        BZ = self._norm.forward(Z, eval=False)
        xp = array_namespace(BZ)
        shape = (1, self.num_features, 1, 1)
        self.M, self.V = xp.reshape(self._norm.M, shape), xp.reshape(self._norm.V, shape)
        a = self.alpha
        # float64 whatever Z's float dtype: BW is float64, so the batch statistics are too
        self.running_M = a * self.running_M + (1 - a) * self.M
        self.running_V = a * self.running_V + (1 - a) * self.V
        return BZ

    def backward(self, dLdBZ: Any) -> Any:
        """``dLdBZ`` (N, C, H, W) -> ``dLdZ``, through the last training forward's batch
        statistics; sets ``dLdBW = sum(dLdBZ NZ)`` and ``dLdBb = sum(dLdBZ)`` (1, C, 1, 1)."""
        self._lend_parameters()
        dLdZ = self._norm.backward(as_float(dLdBZ))
        xp = array_namespace(dLdZ)
        shape = (1, self.num_features, 1, 1)
        self.dLdBW = xp.reshape(self._norm.dLdBW, shape)
        self.dLdBb = xp.reshape(self._norm.dLdBb, shape)
        return dLdZ


class Dropout2d(layers.Dropout2d):
    """``Dropout2d(p=0.5)``: the handout's channel dropout of ``x`` (N, C, H, W), its
    keep-mask drawn from NumPy's global generator (see the module). ``mask`` is the keep-mask
    (N, C, 1, 1) in x's dtype on x's device; ``keep_p = 1 - p``. ``p = 1`` drops every
    channel: zeros (the handout's 0 / 0 would give NaN)."""

    def __init__(self, p: float = 0.5) -> None:
        super().__init__(p)
        self.keep_p = 1 - self.p

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.forward(*args, **kwargs)

    def _scaled(self, x: Any) -> Any:
        return x * self.mask / self.keep_p if self.keep_p else x * self.mask

    def forward(self, x: Any, eval: bool | None = None) -> Any:  # type: ignore[override]
        """``x`` -> ``x * mask / keep_p``; with ``eval=True`` (or None in evaluation mode)
        ``x`` itself, and nothing is drawn."""
        evaluating = _eval_arg(self, eval)
        x = as_float(x)
        xp = self._array_arg(x, "x", self._layout, self._ndim)
        if evaluating:
            return x
        # the handout's call, argument for argument: the same draws from the same stream
        keep = np.random.binomial(1, self.keep_p, (x.shape[0], x.shape[1]))
        self.mask = xp.asarray(keep[:, :, None, None], dtype=x.dtype, device=device(x))
        self._shape, self._spec = tuple(x.shape), (xp, device(x), x.dtype)
        return self._scaled(x)

    def backward(self, delta: Any) -> Any:
        """``delta`` (the last training forward's shape) -> ``delta * mask / keep_p``."""
        self._forward_done("_shape")
        delta = as_float(delta)
        self._gradient_arg(delta, "delta", self._shape, self._spec)
        return self._scaled(delta)


class ConvBlock(Sequential):
    """The handout's ``ConvBlock(in_channels, out_channels, kernel_size, stride, padding)``:
    ``layers = [Conv2d, BatchNorm2d]``, the convolution's weights drawn from NumPy's global
    generator as it is built, its bias zero. ``A`` (N, C_in, H, W) -> (N, C_out, H_out,
    W_out)."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, stride: int, padding: int
    ) -> None:
        conv = Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            stride,
            padding,
            weight_init_fn=_normal_weights,
            bias_init_fn=_zero_bias,
        )
        super().__init__(conv, BatchNorm2d(out_channels))

    def forward(self, A: Any) -> Any:
        return super().forward(as_float(A))

    def backward(self, grad: Any, input_grad: bool = True) -> Any:
        return super().backward(as_float(grad), input_grad)


class ResBlock(Model):
    """The handout's ``ResBlock(in_channels, out_channels, filter_size, stride=3,
    padding=1)``: ``Z = ReLU(convolution_layers(A) + residual_connection(A))`` (see the
    module), ``A`` (N, C_in, H, W) -> ``Z`` (N, C_out, H_out, W_out). ``backward(grad)``
    sends the gradient through both branches and returns the sum of their input gradients.

    Parameters are named by the handout's attributes: ``"convolution_layers.0.0.W"``,
    ``"residual_connection.1.BW"``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        filter_size: int,
        stride: int = 3,
        padding: int = 1,
    ) -> None:
        self._args = (in_channels, out_channels, filter_size, stride, padding)
        # the handout's order of construction is the order of its weight draws
        self.convolution_layers = Sequential(
            ConvBlock(in_channels, out_channels, filter_size, stride, padding),
            ReLU(),
            ConvBlock(out_channels, out_channels, 1, 1, 0),
        )
        self.final_activation = ReLU()
        projects = (stride, in_channels, filter_size, padding) != (1, out_channels, 1, 0)
        self.residual_connection = (
            ConvBlock(in_channels, out_channels, filter_size, stride, padding)
            if projects
            else Identity()
        )
        self._sum = Residual(self.convolution_layers, self.residual_connection)

    def __repr__(self) -> str:
        c_in, c_out, k, stride, padding = self._args
        return f"ResBlock({c_in}, {c_out}, filter_size={k}, stride={stride}, padding={padding})"

    def named_layers(self) -> list[tuple[str, Any]]:
        return [
            ("convolution_layers", self.convolution_layers),
            ("residual_connection", self.residual_connection),
            ("final_activation", self.final_activation),
        ]

    def forward(self, A: Any) -> Any:
        return self.final_activation.forward(self._sum.forward(as_float(A)))

    def backward(self, grad: Any, input_grad: bool = True) -> Any:
        return self._sum.backward(self.final_activation.backward(as_float(grad)), input_grad)
