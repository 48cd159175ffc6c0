"""The package's optimizer: SGD with momentum and gradient-norm clipping.

``update(param_name, param, param_grad, epoch)`` returns the step ``delta`` that the model
subtracts from the parameter (``layer.parameters["W"] -= delta``)::

    g     = param_grad * min(1, clip_norm / |param_grad|)     (|.|: the 2-norm of all entries)
    delta = momentum * delta_before + lr(epoch) * g

``delta_before`` is the last step of the same ``param_name`` (zeros at first), ``lr(epoch)``
the schedule's (:mod:`.schedulers`). The clipping reads no value back from the device.

>>> import numpy as np
>>> from portaconv.compat.cs189.optimizers import initialize_optimizer
>>> sgd = initialize_optimizer("SGD", lr=0.1, lr_scheduler="constant", momentum=0.9)
>>> W, grad = np.zeros(2), np.array([1.0, 1.0])
>>> sgd.update("W0", W, grad, 0).tolist(), sgd.update("W0", W, grad, 0).tolist()
([0.1, 0.1], [0.19, 0.19])
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from array_api_compat import array_namespace

from .schedulers import initialize_scheduler
from .utils import unknown_name

__all__ = ["SGD", "Optimizer", "initialize_optimizer"]


class Optimizer(ABC):
    """``update(param_name, param, param_grad, epoch)`` -> the step to subtract."""

    def __init__(self) -> None:
        self.lr = None
        self.lr_scheduler = None

    @abstractmethod
    def update(self, param_name: str, param: Any, param_grad: Any, epoch: int) -> Any: ...


class SGD(Optimizer):
    """SGD with ``momentum`` (None: 0) and, when ``clip_norm`` is set, each gradient scaled
    down to that 2-norm; ``lr_scheduler`` names the schedule of ``lr`` (None: constant)."""

    def __init__(
        self,
        lr: float,
        lr_scheduler: str | None = "constant",
        momentum: float | None = 0.0,
        clip_norm: float | None = None,
        lr_decay: float | None = 0.9,
        stage_length: int | None = None,
        staircase: bool | None = None,
    ) -> None:
        super().__init__()
        self.lr = lr
        self.lr_scheduler = initialize_scheduler(
            lr_scheduler, lr=lr, decay=lr_decay, stage_length=stage_length, staircase=staircase
        )
        self.momentum = 0.0 if momentum is None else momentum
        if clip_norm is not None and not clip_norm > 0:
            raise ValueError(f"SGD: clip_norm must be positive or None, got {clip_norm!r}")
        self.clip_norm = clip_norm
        self.cache: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"SGD(lr={self.lr}, momentum={self.momentum}, clip_norm={self.clip_norm})"

    def update(self, param_name: str, param: Any, param_grad: Any, epoch: int) -> Any:
        """The step for ``param`` (its gradient ``param_grad``) at ``epoch``; see the module."""
        xp = array_namespace(param_grad)
        if param_name not in self.cache:
            self.cache[param_name] = xp.zeros_like(param)
        if self.clip_norm is not None:
            # clip / max(|g|, clip) is 1 up to the norm and clip / |g| beyond it
            norm = xp.linalg.vector_norm(param_grad)
            param_grad = param_grad * (self.clip_norm / xp.clip(norm, min=self.clip_norm))
        delta = self.momentum * self.cache[param_name] + self.lr_scheduler(epoch) * param_grad
        self.cache[param_name] = delta
        return delta


def initialize_optimizer(
    name: str,
    lr: float,
    lr_scheduler: str | None = None,
    momentum: float | None = None,
    clip_norm: float | None = None,
    lr_decay: float | None = None,
    staircase: bool | None = None,
    stage_length: int | None = None,
) -> Optimizer:
    """The optimizer called ``name``: "SGD"."""
    if name != "SGD":
        raise unknown_name("initialize_optimizer", "optimizer", name, ("SGD",))
    return SGD(
        lr=lr,
        lr_scheduler=lr_scheduler,
        momentum=momentum,
        clip_norm=clip_norm,
        lr_decay=lr_decay,
        stage_length=stage_length,
        staircase=staircase,
    )
