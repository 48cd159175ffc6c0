"""The package's learning-rate schedules: ``scheduler(epoch)`` -> the learning rate.

``Constant(lr)`` always gives ``lr``; ``Exponential(lr, decay, stage_length, staircase)``
gives ``lr * decay ** (epoch / stage_length)``, with the exponent rounded down when
``staircase`` is True. As in the package, :func:`initialize_scheduler` accepts
``staircase`` and builds ``Exponential`` without it (a smooth decay); build
``Exponential(..., staircase=True)`` directly for steps.

>>> from portaconv.compat.cs189.schedulers import initialize_scheduler
>>> schedule = initialize_scheduler("exponential", lr=0.1, decay=0.5, stage_length=2)
>>> [round(schedule(epoch), 6) for epoch in (0, 2, 3)]
[0.1, 0.05, 0.035355]
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

from .utils import unknown_name

__all__ = ["Constant", "Exponential", "Scheduler", "initialize_scheduler"]


class Scheduler(ABC):
    """``scheduler(epoch)`` is ``scheduler.scheduled_lr(epoch)``."""

    def __call__(self, epoch: int) -> float:
        return self.scheduled_lr(epoch)

    @abstractmethod
    def scheduled_lr(self, epoch: int | None = None) -> float: ...


class Constant(Scheduler):
    def __init__(self, lr: float = 0.01) -> None:
        self.lr = lr

    def __repr__(self) -> str:
        return f"Constant(lr={self.lr})"

    def scheduled_lr(self, epoch: int | None = None) -> float:
        return self.lr


class Exponential(Scheduler):
    def __init__(
        self,
        lr: float = 0.01,
        decay: float = 0.9,
        stage_length: int = 1000,
        staircase: bool = False,
    ) -> None:
        if stage_length is None or not stage_length > 0:
            raise ValueError(f"Exponential: stage_length must be positive, got {stage_length!r}")
        self.lr, self.decay, self.stage_length, self.staircase = lr, decay, stage_length, staircase

    def __repr__(self) -> str:
        return (
            f"Exponential(lr={self.lr}, decay={self.decay}, stage_length={self.stage_length}, "
            f"staircase={self.staircase})"
        )

    def scheduled_lr(self, epoch: int) -> float:
        stage = epoch / self.stage_length
        return self.lr * self.decay ** (math.floor(stage) if self.staircase else stage)


def initialize_scheduler(
    name: str,
    lr: float,
    decay: float | None = None,
    stage_length: int | None = None,
    staircase: bool | None = None,
) -> Scheduler:
    """The schedule called ``name`` ("constant" or "exponential"; None: "constant"). An
    argument left None takes ``Exponential``'s default; ``staircase`` is not passed on."""
    if name in (None, "constant"):
        return Constant(lr=lr)
    if name == "exponential":
        return Exponential(
            lr=lr,
            decay=0.9 if decay is None else decay,
            stage_length=1000 if stage_length is None else stage_length,
        )
    raise unknown_name("initialize_scheduler", "scheduler", name, ("constant", "exponential"))
