"""Layer and group normalisation, with PyTorch's semantics: the statistics are each sample's
own, so training and evaluation compute the same (no running statistics).

``LayerNorm(normalized_shape)`` normalises ``A`` ``(..., *normalized_shape)`` over its trailing
axes, once per leading index; ``W`` and ``b`` have ``normalized_shape``.
``GroupNorm(num_groups, num_channels)`` splits the channels of ``A`` ``(N, C, *)`` into
``num_groups`` groups of ``C / num_groups`` consecutive channels and normalises each
(sample, group) over its channels and positions; ``W`` and ``b`` are per channel, (C,).
Over the n values of each statistic:

    M = mean(A)      V = mean((A - M)^2) (biased)      NZ = (A - M) / sqrt(V + eps)
    Z = W NZ + b                                        (without the affine map: Z = NZ)

Backward, with ``dNZ = dLdZ W`` and the means over the same n values:

    dLdA = (dNZ - mean(dNZ) - NZ mean(dNZ NZ)) / sqrt(V + eps)
    dLdW = sum(dLdZ NZ)      dLdb = sum(dLdZ)       (over every axis W does not have)

``W`` starts at ones and ``b`` at zeros, in the backend's dtype (assign arrays to change
them: a parameter keeps the dtype of the array assigned); an input of another float dtype is
promoted with them, as every layer does.
"""

from __future__ import annotations

import math
from typing import Any

from array_api_compat import array_namespace

from ..backend._arrays import astype
from ..backend._config import get_backend
from ..checks import check_int, check_real, shape_str
from ._base import Layer, spec_of


class _SampleNorm(Layer):
    """Shared body: subclasses say which values each statistic covers and how ``W`` lines up
    with the input."""

    param_names: tuple[str, ...] = ("W", "b")

    def _setup(self, eps: Any, affine: Any, affine_arg: str, shape: tuple[int, ...]) -> None:
        self.eps = check_real(self.name, "eps", eps, 0.0, strict=True)
        if not isinstance(affine, bool):
            raise TypeError(
                f"{self.name}: {affine_arg} must be True or False, got {affine!r} of type "
                f"{type(affine).__name__}"
            )
        self._affine = affine
        if affine:
            backend = get_backend()
            xp, place = backend.xp, dict(dtype=backend.dtype, device=backend.device)
            self.W, self.b = xp.ones(shape, **place), xp.zeros(shape, **place)
            self.dLdW, self.dLdb = xp.zeros(shape, **place), xp.zeros(shape, **place)
        else:
            self.param_names = ()  # no W, no b: nothing to train
        self._NZ = None  # the normalised input of the last forward
        self._inv_std = None  # 1 / sqrt(V + eps), one per statistic
        self._spec = None

    # what subclasses define
    def _check(self, A: Any) -> None:
        raise NotImplementedError

    def _grouped_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """``shape`` with each statistic's values along the last axis."""
        raise NotImplementedError

    def _param_view(self, ndim: int) -> tuple[int, ...]:
        """``W``'s shape to broadcast against an input of ``ndim`` axes."""
        raise NotImplementedError

    def _param_axes(self, ndim: int) -> tuple[int, ...]:
        """The axes of an input of ``ndim`` axes that ``W``'s gradient sums over."""
        raise NotImplementedError

    def forward(self, A: Any) -> Any:
        """``A`` -> ``Z`` of the same shape (see the module docstring)."""
        self._check(A)
        A, *params = self._promote(A)
        xp = array_namespace(A)
        shape = tuple(-1 if n is None else n for n in A.shape)  # None: a graph's unknown batch
        grouped = xp.reshape(A, self._grouped_shape(shape))
        centered = grouped - xp.mean(grouped, axis=-1, keepdims=True)
        V = xp.mean(centered * centered, axis=-1, keepdims=True)
        self._inv_std = 1.0 / xp.sqrt(V + self.eps)
        self._NZ = xp.reshape(centered * self._inv_std, shape)
        self._spec = spec_of(A)
        if not self._affine:
            return self._NZ
        W, b = (xp.reshape(p, self._param_view(A.ndim)) for p in params)
        return self._NZ * W + b

    def backward(self, dLdZ: Any) -> Any:
        """``dLdZ`` -> ``dLdA``; sets ``dLdW`` and ``dLdb`` (sums over the batch)."""
        self._forward_done("_NZ")
        NZ = self._NZ
        xp = self._gradient_arg(dLdZ, "dLdZ", tuple(NZ.shape), self._spec)
        dNZ = dLdZ
        if self._affine:
            axes = self._param_axes(NZ.ndim)
            self._set_grads(W=_sum(xp, dLdZ * NZ, axes), b=_sum(xp, dLdZ, axes))
            dNZ = dLdZ * xp.reshape(astype(self.W, NZ.dtype), self._param_view(NZ.ndim))
        grouped = self._grouped_shape(tuple(NZ.shape))
        g, nz = xp.reshape(dNZ, grouped), xp.reshape(NZ, grouped)
        mean_g = xp.mean(g, axis=-1, keepdims=True)
        mean_gnz = xp.mean(g * nz, axis=-1, keepdims=True)
        dLdA = (g - mean_g - nz * mean_gnz) * self._inv_std
        return self._as_input(xp.reshape(dLdA, tuple(NZ.shape)))


def _sum(xp: Any, x: Any, axes: tuple[int, ...]) -> Any:
    # an empty axis tuple sums nothing (torch's sum would take it as every axis)
    return xp.sum(x, axis=axes) if axes else x


class LayerNorm(_SampleNorm):
    """``A`` ``(..., *normalized_shape)`` normalised over its trailing ``normalized_shape`` axes,
    as ``torch.nn.LayerNorm(normalized_shape, eps, elementwise_affine)``.

    ``normalized_shape``: an int (the last axis) or a tuple; kept as a tuple, as PyTorch
    does. ``W`` and ``b`` have that shape (none with ``elementwise_affine=False``).
    """

    def __init__(
        self,
        normalized_shape: int | tuple[int, ...],
        eps: float = 1e-5,
        elementwise_affine: bool = True,
    ) -> None:
        if isinstance(normalized_shape, (tuple, list)):
            if not normalized_shape:
                raise ValueError(
                    f"{self.name}: normalized_shape must be a positive integer or a non-empty "
                    f"tuple of them, got {normalized_shape!r}"
                )
            shape = tuple(
                check_int(self.name, f"normalized_shape[{i}]", n)
                for i, n in enumerate(normalized_shape)
            )
        else:
            shape = (check_int(self.name, "normalized_shape", normalized_shape),)
        self.normalized_shape = shape
        self.elementwise_affine = elementwise_affine
        self._layout = "(..., " + ", ".join(str(n) for n in shape) + ")"
        self._setup(eps, elementwise_affine, "elementwise_affine", shape)

    def __repr__(self) -> str:
        return (
            f"LayerNorm({self.normalized_shape}, eps={self.eps}, "
            f"elementwise_affine={self.elementwise_affine})"
        )

    def _check(self, A: Any) -> None:
        k = len(self.normalized_shape)
        self._array_arg(A, "A", self._layout, range(k, 64))
        if tuple(A.shape[A.ndim - k :]) != self.normalized_shape:
            raise ValueError(
                f"{self.name}: A must have shape {self._layout} (normalized_shape="
                f"{self.normalized_shape} last), got shape {shape_str(A.shape)}"
            )

    def _grouped_shape(self, shape):
        lead = len(shape) - len(self.normalized_shape)
        return (*shape[:lead], math.prod(self.normalized_shape))

    def _param_view(self, ndim):
        return self.normalized_shape

    def _param_axes(self, ndim):
        return tuple(range(ndim - len(self.normalized_shape)))


class GroupNorm(_SampleNorm):
    """``A`` ``(N, C, *)`` normalised per sample over each group of ``C / num_groups``
    consecutive channels (and every position), as ``torch.nn.GroupNorm(num_groups,
    num_channels, eps, affine)``: one group is LayerNorm over ``(C, *)`` with a per-channel
    ``W``, as many groups as channels is instance normalisation. ``W`` and ``b``: (C,).
    """

    _layout = "(N, C, *)"

    def __init__(
        self, num_groups: int, num_channels: int, eps: float = 1e-5, affine: bool = True
    ) -> None:
        self.num_groups = self._int_arg("num_groups", num_groups)
        self.num_channels = self._int_arg("num_channels", num_channels)
        if self.num_channels % self.num_groups:
            raise ValueError(
                f"{self.name}: num_groups={self.num_groups} must divide "
                f"num_channels={self.num_channels}"
            )
        self.affine = affine
        self._setup(eps, affine, "affine", (self.num_channels,))

    def __repr__(self) -> str:
        return (
            f"GroupNorm({self.num_groups}, {self.num_channels}, eps={self.eps}, "
            f"affine={self.affine})"
        )

    def _check(self, A: Any) -> None:
        self._array_arg(A, "A", self._layout, range(2, 64))
        self._axis_size(A, "A", 1, "num_channels", self.num_channels)

    def _grouped_shape(self, shape):
        per_group = math.prod(shape[1:]) // self.num_groups
        return (shape[0], self.num_groups, per_group)

    def _param_view(self, ndim):
        return (1, self.num_channels, *(1,) * (ndim - 2))

    def _param_axes(self, ndim):
        return (0, *range(2, ndim))
