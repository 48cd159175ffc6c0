"""Learning-rate schedules, stepped once per epoch, with PyTorch's values.

Each scheduler reads ``optimizer.lr`` once, as ``base_lr``, and from then on sets
``optimizer.lr`` to a closed-form function of the epoch count ``last_epoch`` (0 at
construction, +1 per :meth:`LRScheduler.step`). PyTorch computes the same values
recursively; the two agree to float64 rounding. Because the learning rate depends on
``last_epoch`` alone, a schedule resumes exactly from :meth:`LRScheduler.state_dict`.

>>> from portaconv.layers import Linear
>>> from portaconv.optim import SGD
>>> optimizer = SGD(Linear(4, 2), lr=0.1)
>>> scheduler = CosineAnnealingLR(optimizer, T_max=50, warmup_epochs=5)
>>> rates = [round(optimizer.lr, 4)]    # epoch 0: warmup_start_factor x the peak
>>> for epoch in range(50):
...     pass                            # train one epoch: forward, backward, optimizer.step()
...     scheduler.step()
...     rates.append(round(optimizer.lr, 4))
>>> rates[:6], rates[-1]                # linear warm-up to the peak, then the cosine to 0
([0.01, 0.028, 0.046, 0.064, 0.082, 0.1], 0.0)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from ..checks import check_int, check_real, check_state_dict


class LRScheduler:
    """Base class: subclasses give :meth:`lr_at`, the learning rate at an epoch.

    ``optimizer`` is anything with a float ``lr`` attribute (every portaconv optimizer).
    Construction sets ``optimizer.lr`` to the epoch-0 value, like PyTorch.
    """

    #: Hyper-parameters saved by :meth:`state_dict` besides ``base_lr`` and ``last_epoch``.
    _hyper_names: tuple[str, ...] = ()

    def __init__(self, optimizer: Any) -> None:
        lr = getattr(optimizer, "lr", None)
        if isinstance(lr, bool) or not isinstance(lr, (int, float)):
            raise TypeError(
                f"{self.name}: optimizer must have a numeric lr attribute (a portaconv "
                f"optimizer), got {type(optimizer).__name__}"
            )
        self.optimizer = optimizer
        #: The learning rate at epoch 0 before any scaling (``optimizer.lr`` when built).
        self.base_lr = float(lr)
        #: Epochs stepped so far.
        self.last_epoch = 0
        self._apply()

    @property
    def name(self) -> str:
        return type(self).__name__

    def __repr__(self) -> str:
        hyper = ", ".join(f"{n}={getattr(self, n)!r}" for n in self._hyper_names)
        return f"{self.name}({hyper}, base_lr={self.base_lr!r}, last_epoch={self.last_epoch})"

    def lr_at(self, epoch: int) -> float:
        """The learning rate after ``epoch`` calls of :meth:`LRScheduler.step`."""
        raise NotImplementedError

    def step(self) -> None:
        """Advance one epoch and set ``optimizer.lr`` to its learning rate."""
        self.last_epoch += 1
        self._apply()

    def get_last_lr(self) -> list[float]:
        """The learning rate set by the last step, as a one-element list (like PyTorch)."""
        return [self._last_lr]

    def _apply(self) -> None:
        self._last_lr = self.lr_at(self.last_epoch)
        self.optimizer.lr = self._last_lr

    def state_dict(self) -> dict[str, Any]:
        """A plain JSON-able dict: ``type``, ``base_lr``, ``last_epoch`` and the settings."""
        return {
            "type": self.name,
            "base_lr": self.base_lr,
            "last_epoch": self.last_epoch,
            **{n: getattr(self, n) for n in self._hyper_names},
        }

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore the settings and the epoch count, and set ``optimizer.lr`` to match."""
        check_state_dict(self.name, state_dict, ("base_lr", "last_epoch", *self._hyper_names))
        base_lr = check_real(self.name, "base_lr", state_dict["base_lr"])
        last_epoch = check_int(self.name, "last_epoch", state_dict["last_epoch"], minimum=0)
        self._configure(**{n: state_dict[n] for n in self._hyper_names})
        self.base_lr = base_lr
        self.last_epoch = last_epoch
        self._apply()

    def _configure(self, **hyper: Any) -> None:
        raise NotImplementedError


class StepLR(LRScheduler):
    """Decay by ``gamma`` every ``step_size`` epochs, as ``torch.optim.lr_scheduler.StepLR``:
    ``lr(epoch) = base_lr * gamma ** (epoch // step_size)``."""

    _hyper_names = ("step_size", "gamma")

    def __init__(self, optimizer: Any, step_size: int, gamma: float = 0.1) -> None:
        self._configure(step_size=step_size, gamma=gamma)
        super().__init__(optimizer)

    def _configure(self, step_size: int, gamma: float) -> None:
        step_size = check_int(self.name, "step_size", step_size)
        self.gamma = check_real(self.name, "gamma", gamma, strict=True)
        self.step_size = step_size

    def lr_at(self, epoch: int) -> float:
        return self.base_lr * self.gamma ** (epoch // self.step_size)


class ExponentialLR(LRScheduler):
    """Decay by ``gamma`` every epoch, as ``torch.optim.lr_scheduler.ExponentialLR``:
    ``lr(epoch) = base_lr * gamma ** epoch``."""

    _hyper_names = ("gamma",)

    def __init__(self, optimizer: Any, gamma: float) -> None:
        self._configure(gamma=gamma)
        super().__init__(optimizer)

    def _configure(self, gamma: float) -> None:
        self.gamma = check_real(self.name, "gamma", gamma, strict=True)

    def lr_at(self, epoch: int) -> float:
        return self.base_lr * self.gamma**epoch


class CosineAnnealingLR(LRScheduler):
    """Cosine annealing from ``base_lr`` to ``eta_min`` over ``T_max`` epochs, optionally
    after a linear warm-up of ``warmup_epochs`` (W) epochs starting at
    ``warmup_start_factor * base_lr``::

        lr(epoch) = base_lr * (f + (1 - f) * epoch / W)                         epoch < W
        lr(epoch) = eta_min + (base_lr - eta_min) * (1 + cos(pi * (epoch - W) / (T_max - W))) / 2

    Without warm-up this is ``torch.optim.lr_scheduler.CosineAnnealingLR(T_max, eta_min)``;
    with it, torch's ``SequentialLR([LinearLR(start_factor=f, total_iters=W),
    CosineAnnealingLR(T_max=T_max - W, eta_min=eta_min)], milestones=[W])``. Past ``T_max``
    the cosine continues (the rate climbs back), as in PyTorch.
    """

    _hyper_names = ("T_max", "eta_min", "warmup_epochs", "warmup_start_factor")

    def __init__(
        self,
        optimizer: Any,
        T_max: int,
        eta_min: float = 0.0,
        warmup_epochs: int = 0,
        warmup_start_factor: float = 0.1,
    ) -> None:
        self._configure(
            T_max=T_max,
            eta_min=eta_min,
            warmup_epochs=warmup_epochs,
            warmup_start_factor=warmup_start_factor,
        )
        super().__init__(optimizer)

    def _configure(
        self, T_max: int, eta_min: float, warmup_epochs: int, warmup_start_factor: float
    ) -> None:
        T_max = check_int(self.name, "T_max", T_max)
        eta_min = check_real(self.name, "eta_min", eta_min)
        warmup_epochs = check_int(self.name, "warmup_epochs", warmup_epochs, minimum=0)
        if warmup_epochs >= T_max:
            raise ValueError(
                f"{self.name}: warmup_epochs must be smaller than T_max, "
                f"got warmup_epochs={warmup_epochs}, T_max={T_max}"
            )
        factor = check_real(self.name, "warmup_start_factor", warmup_start_factor, strict=True)
        if factor > 1:
            raise ValueError(
                f"{self.name}: warmup_start_factor must be in (0, 1], got {warmup_start_factor!r}"
            )
        self.T_max = T_max
        self.eta_min = eta_min
        self.warmup_epochs = warmup_epochs
        self.warmup_start_factor = factor

    def lr_at(self, epoch: int) -> float:
        warmup, factor = self.warmup_epochs, self.warmup_start_factor
        if epoch < warmup:
            return self.base_lr * (factor + (1 - factor) * epoch / warmup)
        phase = math.pi * (epoch - warmup) / (self.T_max - warmup)
        return self.eta_min + (self.base_lr - self.eta_min) * (1 + math.cos(phase)) / 2
