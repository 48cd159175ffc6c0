"""Training machinery: optimizers, learning-rate schedules and parameter initialisers.

>>> model = Linear(784, 10, weight_init_fn=xavier_uniform, bias_init_fn=zeros)
>>> optimizer = SGD(model, lr=0.1, momentum=0.9, nesterov=True)
>>> scheduler = CosineAnnealingLR(optimizer, T_max=20, warmup_epochs=2)
>>> for epoch in range(20):
...     train_one_epoch(model, optimizer)  # forward, backward, optimizer.step(), zero_grad()
...     scheduler.step()

Optimizers update the model's parameter arrays in place with PyTorch's update rules
(:class:`SGD`, :class:`Adam`, :class:`AdamW`); schedulers set ``optimizer.lr`` once per epoch
(:class:`StepLR`, :class:`ExponentialLR`, :class:`CosineAnnealingLR`); initialisers have
``torch.nn.init``'s formulas and the layers' ``init_fn(*shape)`` signature (options through
:func:`functools.partial`; see :mod:`portaconv.optim.init`).
"""

from .init import (
    calculate_gain,
    constant,
    fan_in_and_fan_out,
    glorot_normal,
    glorot_uniform,
    he_normal,
    he_uniform,
    kaiming_normal,
    kaiming_uniform,
    normal,
    ones,
    uniform,
    xavier_normal,
    xavier_uniform,
    zeros,
)
from .optimizer import SGD, Adam, AdamW, Optimizer
from .scheduler import CosineAnnealingLR, ExponentialLR, LRScheduler, StepLR

__all__ = [
    "SGD",
    "Adam",
    "AdamW",
    "CosineAnnealingLR",
    "ExponentialLR",
    "LRScheduler",
    "Optimizer",
    "StepLR",
    "calculate_gain",
    "constant",
    "fan_in_and_fan_out",
    "glorot_normal",
    "glorot_uniform",
    "he_normal",
    "he_uniform",
    "kaiming_normal",
    "kaiming_uniform",
    "normal",
    "ones",
    "uniform",
    "xavier_normal",
    "xavier_uniform",
    "zeros",
]
