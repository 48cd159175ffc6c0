"""Dropout: in training mode, zero each element (or each whole channel) with probability p
and scale what is kept by 1 / (1 - p), so the expected output equals the input:

    Z = x * mask / (1 - p)          mask ~ Bernoulli(1 - p), drawn anew by every forward

``mask`` (the layer attribute) is the unscaled keep-mask: 1 where kept, 0 where dropped, in
the input's namespace, device and dtype. It is drawn as ``random(shape) < 1 - p`` on the
input's device by its library's own generator (``portaconv.backend.bernoulli_mask``: nothing
waits for the host), so ``portaconv.manual_seed`` makes it reproducible on each backend and
checkpoints keep the generators' state. Evaluation mode and p = 0 are the identity and draw
nothing; p = 1 gives zeros and draws nothing.
"""

from __future__ import annotations

from numbers import Real
from typing import Any

from array_api_compat import device

from ..backend._random import bernoulli_mask
from ._base import Layer, spec_of


class _DropoutNd(Layer):
    _layout = "(N, ...)"
    _ndim: int | range = range(0, 64)

    def __init__(self, p: float = 0.5) -> None:
        if isinstance(p, bool) or not isinstance(p, Real):
            raise TypeError(f"{self.name}: p must be a real number, got {type(p).__name__}")
        if not 0 <= p <= 1:
            raise ValueError(f"{self.name}: p must be a probability in [0, 1], got {p!r}")
        self.p = float(p)
        self.mask = None  # the keep-mask of the last training-mode forward (None: identity)
        self._scale = 1.0  # what kept values are multiplied by: 1 / (1 - p)
        self._shape: tuple[int, ...] | None = None
        self._spec = None

    def __repr__(self) -> str:
        return f"{self.name}(p={self.p})"

    def _mask_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """The shape of one draw: the input's, or one value per (sample, channel)."""
        return shape

    def forward(self, x: Any, train: bool | None = None) -> Any:
        """``x`` -> ``Z`` of the same shape. ``train=None`` follows the layer's mode
        (:meth:`train` / :meth:`eval`); ``True`` or ``False`` overrides it for this call."""
        if train is not None and not isinstance(train, bool):
            raise TypeError(
                f"{self.name}: train must be True, False or None, got {type(train).__name__}"
            )
        xp = self._array_arg(x, "x", self._layout, self._ndim)
        self._shape, self._spec = tuple(x.shape), spec_of(x)
        training = self.training if train is None else train
        if not training or self.p == 0:
            self.mask, self._scale = None, 1.0
            return x
        shape = self._mask_shape(tuple(x.shape))
        if self.p == 1:
            self.mask, self._scale = xp.zeros(shape, dtype=x.dtype, device=device(x)), 0.0
        else:
            self.mask, self._scale = bernoulli_mask(shape, 1 - self.p, x), 1 / (1 - self.p)
        # x * scale is rounded once, then * mask is exact: kept values are exactly x * scale
        return (x * self._scale) * self.mask

    def backward(self, dLdZ: Any) -> Any:
        """``dLdZ`` -> ``dLdx = dLdZ * mask / (1 - p)`` (``dLdZ`` itself after an identity
        forward)."""
        self._forward_done("_shape")
        self._gradient_arg(dLdZ, "dLdZ", self._shape, self._spec)
        if self.mask is None:
            return dLdZ
        return (dLdZ * self._scale) * self.mask


class Dropout(_DropoutNd):
    """Elementwise dropout of ``x`` of any shape, as ``torch.nn.Dropout(p)``."""


class _ChannelDropout(_DropoutNd):
    """Zero whole channels: one draw per (sample, channel), broadcast over the rest."""

    def _mask_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        return (*shape[:2], *(1,) * (len(shape) - 2))


class Dropout1d(_ChannelDropout):
    """Channel dropout of ``x`` (N, C, L), as ``torch.nn.Dropout1d(p)``; ``mask`` is
    (N, C, 1)."""

    _layout = "(N, C, L)"
    _ndim = 3


class Dropout2d(_ChannelDropout):
    """Channel dropout of ``x`` (N, C, H, W), as ``torch.nn.Dropout2d(p)``; ``mask`` is
    (N, C, 1, 1)."""

    _layout = "(N, C, H, W)"
    _ndim = 4
