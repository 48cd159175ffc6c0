"""Training machinery: optimizers, learning-rate schedules and parameter initialisers.

>>> import numpy as np
>>> import portaconv
>>> from portaconv.layers import CrossEntropyLoss, Linear
>>> model = Linear(64, 10, weight_init_fn=xavier_uniform, bias_init_fn=zeros)
>>> optimizer = SGD(model, lr=0.1, momentum=0.9, nesterov=True)
>>> scheduler = CosineAnnealingLR(optimizer, T_max=20, warmup_epochs=2)
>>> loss = CrossEntropyLoss()
>>> X = portaconv.to_backend(np.random.rand(32, 64))        # one batch, for the example
>>> y = portaconv.to_backend(np.arange(32) % 10, dtype=portaconv.get_backend().xp.int64)
>>> for epoch in range(20):
...     optimizer.zero_grad()
...     _ = loss.forward(model.forward(X), y)
...     _ = model.backward(loss.backward())
...     optimizer.step()
...     scheduler.step()                                    # once per epoch
>>> round(optimizer.lr, 6)                                  # the cosine's end
0.0

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
