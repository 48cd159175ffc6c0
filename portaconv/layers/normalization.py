"""Batch normalisation over the batch and spatial axes, with PyTorch's semantics.

For each channel c, over every axis but 1 (n values per channel: N, N*L or N*H*W):

    NZ = (Z - M) / sqrt(V + eps)        BZ = BW * NZ + Bb

Training mode uses the batch mean ``M`` and the biased batch variance ``V`` and updates the
running statistics with the unbiased variance, as ``torch.nn.BatchNorm*d`` does:

    running_M = (1 - momentum) running_M + momentum M
    running_V = (1 - momentum) running_V + momentum V n / (n - 1)

Evaluation mode normalises with ``running_M`` and ``running_V`` instead. With ``sync`` set
(a :class:`portaconv.distributed.Communicator`, see ``sync_batch_norm``), training mode
takes M and V over the global batch of every rank, and backward sums over it too.

Names follow the
MyTorch handout: scale ``BW``, shift ``Bb``, gradients ``dLdBW``, ``dLdBb``; ``backward``
takes ``dLdBZ`` and returns ``dLdZ``.
"""

from __future__ import annotations

import math
from numbers import Real
from typing import Any

from array_api_compat import array_namespace, device

from ..backend._arrays import astype, to_numpy
from ..backend._config import get_backend
from ..checks import shape_str
from ._base import Layer, spec_of


class _BatchNorm(Layer):
    """The N-d implementation; subclasses say which ranks they accept."""

    param_names = ("BW", "Bb")
    buffer_names = ("running_M", "running_V")
    _ndims: tuple[int, ...] = ()
    _layout = ""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1) -> None:
        self.num_features = self._int_arg("num_features", num_features)
        self.eps = self._real_arg("eps", eps)
        if not self.eps > 0:
            raise ValueError(f"{self.name}: eps must be a positive number, got {eps!r}")
        self.momentum = self._real_arg("momentum", momentum)
        if not 0 <= self.momentum <= 1:
            raise ValueError(f"{self.name}: momentum must be in [0, 1], got {momentum!r}")
        backend = get_backend()
        xp, place = backend.xp, dict(dtype=backend.dtype, device=backend.device)
        shape = (self.num_features,)
        self.BW = xp.ones(shape, **place)
        self.Bb = xp.zeros(shape, **place)
        self.dLdBW = xp.zeros(shape, **place)
        self.dLdBb = xp.zeros(shape, **place)
        self.running_M = xp.zeros(shape, **place)
        self.running_V = xp.ones(shape, **place)
        # what forward leaves for backward
        self._NZ = None  # the normalised input, shape of Z
        self.M = self.V = None  # the statistics used by the last forward, (C,)
        self._inv_std = None  # 1 / sqrt(V + eps), shaped (1, C, 1, ...) to broadcast
        self._batch_stats = False  # whether the last forward used the batch statistics
        self._spec = None
        #: A communicator to normalise over every rank's batch (``--sync-bn``); None: this
        #: process's batch alone.
        self.sync: Any = None
        self._share = 1.0  # this rank's part of the global batch, n_r / n (sync only)

    def __repr__(self) -> str:
        return f"{self.name}({self.num_features}, eps={self.eps}, momentum={self.momentum})"

    def _real_arg(self, arg: str, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, Real):
            raise TypeError(f"{self.name}: {arg} must be a real number, got {type(value).__name__}")
        return float(value)

    def forward(self, Z: Any, eval: bool | None = None) -> Any:
        """``Z`` (N, C, *spatial) -> ``BZ`` of the same shape.

        ``eval=None`` follows the layer's mode (:meth:`train` / :meth:`eval`); ``True`` or
        ``False`` overrides it for this call (the handout's signature).
        """
        use_batch = self.training if eval is None else not eval
        Z, BW, Bb, running_M, running_V = self._checked_input(Z, eval)
        xp = array_namespace(Z)
        axes = (0, *range(2, Z.ndim))
        channel = (1, self.num_features, *(1,) * (Z.ndim - 2))
        if use_batch and self.sync is not None:
            M, V, n, self._share = _global_statistics(self.sync, Z, axes)
        elif use_batch:
            M, V = xp.mean(Z, axis=axes), None
            n = math.prod([Z.shape[a] for a in axes])  # values per channel
        else:
            M, V = running_M, running_V
        centered = Z - xp.reshape(M, channel)
        if V is None:
            V = xp.mean(centered * centered, axis=axes)  # biased, as torch
        self.M, self.V = M, V
        if use_batch:
            self._update_running(running_M, running_V, n)
        self._inv_std = 1 / xp.sqrt(xp.reshape(V, channel) + self.eps)
        self._NZ = centered * self._inv_std
        self._batch_stats = use_batch
        return xp.reshape(BW, channel) * self._NZ + xp.reshape(Bb, channel)

    def _checked_input(self, Z: Any, eval: bool | None) -> tuple[Any, ...]:
        """``Z`` checked and, with the parameters and buffers, in the dtype forward computes
        in: ``(Z, BW, Bb, running_M, running_V)``."""
        if eval is not None and not isinstance(eval, bool):
            raise TypeError(
                f"{self.name}: eval must be True, False or None, got {type(eval).__name__}"
            )
        self._array_arg(Z, "Z", self._layout, range(0, 64))
        if Z.ndim not in self._ndims:
            want = " or ".join(str(n) for n in self._ndims)
            raise ValueError(
                f"{self.name}: Z must have {want} dimensions {self._layout}, "
                f"got {Z.ndim} dimensions with shape {shape_str(Z.shape)}"
            )
        self._axis_size(Z, "Z", 1, "num_features", self.num_features)
        promoted = self._promote(Z, "Z", *self.buffer_names)
        use_batch = self.training if eval is None else not eval
        if use_batch and math.prod(Z.shape) // self.num_features <= 1:
            raise ValueError(
                f"{self.name}: training needs more than one value per channel, "
                f"got input of shape {shape_str(Z.shape)}"
            )
        self._spec, self._ndim = spec_of(promoted[0]), Z.ndim
        return promoted

    def _record_batch_statistics(
        self, M: Any, V: Any, n: int, running_M: Any, running_V: Any, NZ: Any, inv_std: Any
    ) -> None:
        """What a training-mode forward computed elsewhere (a step of the backend's plan)
        leaves on the layer: the batch statistics, the running ones moved towards them, a
        function that computes ``NZ`` (None where the step pooled the input first: its
        backward then belongs to the step) and ``1 / sqrt(V + eps)`` (C,)."""
        self.M, self.V = M, V
        self._update_running(running_M, running_V, n)
        channel = (1, self.num_features, *(1,) * (self._ndim - 2))
        self._NZ, self._batch_stats = NZ, True
        self._inv_std = array_namespace(inv_std).reshape(inv_std, channel)

    def _update_running(self, running_M: Any, running_V: Any, n: int) -> None:
        """Move the running statistics towards the batch's; the buffers keep their own dtype
        whatever the input's."""
        m = self.momentum
        self.running_M = astype((1 - m) * running_M + m * self.M, self.running_M.dtype)
        self.running_V = astype(
            (1 - m) * running_V + (m * n / (n - 1)) * self.V, self.running_V.dtype
        )

    @property
    def NZ(self) -> Any:
        """The normalised input of the last forward, ``(Z - M) / sqrt(V + eps)``."""
        return self._NZ() if callable(self._NZ) else self._NZ

    def backward(self, dLdBZ: Any) -> Any:
        """``dLdBZ`` (N, C, *spatial) -> ``dLdZ``; sets ``dLdBW`` and ``dLdBb``.

        ``dLdBb = sum(dLdBZ)``, ``dLdBW = sum(dLdBZ NZ)`` over every axis but 1. After a
        training-mode forward the batch statistics depend on Z too:

            dLdZ = BW / (n sqrt(V + eps)) (n dLdBZ - dLdBb - NZ dLdBW)

        after an evaluation-mode forward it is the affine map's ``BW / sqrt(V + eps) dLdBZ``.
        """
        self._forward_done("_spec")
        if self._NZ is None:
            raise ValueError(
                f"{self.name}: the last forward pooled its input first, fused with the ReLU "
                "and max pooling after it (a model's step); backpropagate through the model"
            )
        NZ = self.NZ
        xp = self._gradient_arg(dLdBZ, "dLdBZ", tuple(NZ.shape), self._spec)
        axes = (0, *range(2, NZ.ndim))
        channel = (1, self.num_features, *(1,) * (NZ.ndim - 2))
        dLdBb = xp.sum(dLdBZ, axis=axes, keepdims=True)
        dLdBW = xp.sum(dLdBZ * NZ, axis=axes, keepdims=True)
        self._set_grads(BW=dLdBW, Bb=dLdBb)
        scale = xp.reshape(astype(self.BW, NZ.dtype), channel) * self._inv_std
        if not self._batch_stats:
            return self._as_input(scale * dLdBZ)
        if self.sync is not None:
            return self._as_input(scale * (dLdBZ - self._global_sums(dLdBb, dLdBW, NZ)))
        n = math.prod([NZ.shape[a] for a in axes])
        return self._as_input((scale / n) * (n * dLdBZ - dLdBb - NZ * dLdBW))

    def _global_sums(self, dLdBb: Any, dLdBW: Any, NZ: Any) -> Any:
        """``(sum dLdBZ + NZ sum dLdBZ NZ) / n_r`` with the sums over the global batch.

        Each rank's dLdBZ is the gradient of its own mean loss, and the global loss is
        ``sum_r w_r L_r`` (``w_r = n_r / n``): the global sums weight rank r's sums by w_r,
        and dividing by n_r instead of n returns rank r's gradient to its own scale, the one
        the gradient all-reduce then weights by w_r again. The parameter gradients stay this
        rank's own sums."""
        summed_b, summed_W = self.sync.allreduce_arrays(self._share * dLdBb, self._share * dLdBW)
        n_local = math.prod(NZ.shape[a] for a in (0, *range(2, NZ.ndim)))
        return (summed_b + NZ * summed_W) / n_local


def _global_statistics(comm: Any, Z: Any, axes: tuple[int, ...]) -> tuple[Any, Any, int, float]:
    """(mean, biased variance, count, this rank's share of the count) per channel over
    every rank's ``Z``: each rank's count, mean and sum of squared deviations are gathered and
    combined the same way on every rank (Chan et al.'s pairwise update, accurate where
    sum(Z^2) - n M^2 would cancel)."""
    xp = array_namespace(Z)
    n_local = math.prod(Z.shape[a] for a in axes)
    mean = xp.mean(Z, axis=axes)
    deviation = Z - xp.reshape(mean, (1, -1, *(1,) * (Z.ndim - 2)))
    squares = xp.sum(deviation * deviation, axis=axes)
    count = xp.full(mean.shape, n_local, dtype=mean.dtype, device=device(mean))
    gathered = comm.allgather(xp.stack([count, mean, squares]))  # (ranks, 3, C)
    counts, means, squares = gathered[:, 0, :], gathered[:, 1, :], gathered[:, 2, :]
    n = xp.sum(counts, axis=0)
    M = xp.sum(counts * means, axis=0) / n
    spread = means - M
    V = xp.sum(squares + counts * spread * spread, axis=0) / n
    # the count is back on the host anyway: MPI moved it there and back
    total = int(to_numpy(n)[0])
    return M, V, total, n_local / total


class BatchNorm1d(_BatchNorm):
    """Batch normalisation of ``Z`` (N, C) or (N, C, L) per channel C, as
    ``torch.nn.BatchNorm1d(num_features, eps, momentum)``: statistics over N (and L)."""

    _ndims = (2, 3)
    _layout = "(N, C) or (N, C, L)"


class BatchNorm2d(_BatchNorm):
    """Batch normalisation of ``Z`` (N, C, H, W) per channel C, as
    ``torch.nn.BatchNorm2d(num_features, eps, momentum)``: statistics over N, H and W."""

    _ndims = (4,)
    _layout = "(N, C, H, W)"
