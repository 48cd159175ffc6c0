"""Parameter initialisers with ``torch.nn.init``'s formulas, usable as a layer's init function.

portaconv layers call ``weight_init_fn(*shape)`` and ``bias_init_fn(*shape)`` once, so each
initialiser takes the shape as positional arguments and its options as keywords; combine
them with :func:`functools.partial`::

    from functools import partial
    from portaconv.layers import Conv2d, Linear
    from portaconv.optim import init

    Linear(128, 10, weight_init_fn=init.xavier_uniform, bias_init_fn=init.zeros)
    Conv2d(3, 16, 3, weight_init_fn=partial(init.kaiming_normal, nonlinearity="relu"),
           bias_init_fn=partial(init.constant, value=0.01))

Values are drawn in float64 from portaconv's host generator (seeded by
:func:`portaconv.manual_seed`, so a seed gives the same numbers on every backend) and
returned on the active backend in its dtype. Fans follow PyTorch: for a weight of shape
``(out, in, *kernel)``, ``fan_in = in * prod(kernel)`` and ``fan_out = out * prod(kernel)``;
the xavier and kaiming initialisers need at least 2 dimensions (initialise 1-d biases with
:func:`zeros`, :func:`constant`, :func:`normal` or :func:`uniform`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from ..backend._arrays import to_backend
from ..backend._config import get_backend
from ..backend._random import host_rng
from ..checks import check_int, check_real, shape_str

_LINEAR = (
    "linear",
    "conv1d",
    "conv2d",
    "conv3d",
    "conv_transpose1d",
    "conv_transpose2d",
    "conv_transpose3d",
)
_NONLINEARITIES = (*_LINEAR, "sigmoid", "tanh", "relu", "leaky_relu", "selu")
_MODES = ("fan_in", "fan_out")


def calculate_gain(nonlinearity: str, param: float | None = None) -> float:
    """The recommended gain for a nonlinearity, as ``torch.nn.init.calculate_gain``.

    linear, conv*, sigmoid: 1; tanh: 5/3; relu: sqrt(2); selu: 3/4;
    leaky_relu: sqrt(2 / (1 + negative_slope**2)) with ``negative_slope = param`` (0.01 if None).
    """
    if nonlinearity in _LINEAR or nonlinearity == "sigmoid":
        return 1
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        if param is None:
            negative_slope = 0.01
        elif isinstance(param, (int, float)) and not isinstance(param, bool):
            negative_slope = param
        else:
            raise ValueError(
                f"calculate_gain: the leaky_relu negative slope must be a number, got {param!r}"
            )
        return math.sqrt(2.0 / (1 + negative_slope**2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(
        f"calculate_gain: unsupported nonlinearity {nonlinearity!r}; "
        f"valid names are {', '.join(_NONLINEARITIES)}"
    )


def fan_in_and_fan_out(shape: Sequence[int], owner: str = "fan_in_and_fan_out") -> tuple[int, int]:
    """``(fan_in, fan_out)`` of a weight of shape ``(out, in, *kernel)``, as PyTorch computes
    them: ``(in * prod(kernel), out * prod(kernel))``. Needs at least 2 dimensions."""
    shape = _shape(owner, tuple(shape))
    if len(shape) < 2:
        raise ValueError(
            f"{owner}: fan_in and fan_out need a shape with at least 2 dimensions "
            f"(out, in, *kernel), got {shape_str(shape)}; initialise 1-d biases with "
            "zeros, constant, normal or uniform"
        )
    receptive_field = math.prod(shape[2:])
    return shape[1] * receptive_field, shape[0] * receptive_field


# ------------------------------------------------------------------------ fixed values


def zeros(*shape: int) -> Any:
    """All zeros, of any shape."""
    return _full("zeros", shape, 0.0)


def ones(*shape: int) -> Any:
    """All ones, of any shape."""
    return _full("ones", shape, 1.0)


def constant(*shape: int, value: float) -> Any:
    """Every element ``value``, of any shape: ``partial(constant, value=0.01)``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"constant: value must be a real number, got {value!r}")
    return _full("constant", shape, float(value))


# ------------------------------------------------------------------------------ random


def normal(*shape: int, mean: float = 0.0, std: float = 1.0) -> Any:
    """Draws from N(mean, std**2), of any shape."""
    shape = _shape("normal", shape)
    mean = _finite("normal", "mean", mean)
    std = check_real("normal", "std", std)
    return _normal(shape, mean, std)


def uniform(*shape: int, a: float = 0.0, b: float = 1.0) -> Any:
    """Draws from U(a, b), of any shape (``a <= b``)."""
    shape = _shape("uniform", shape)
    a = _finite("uniform", "a", a)
    b = _finite("uniform", "b", b)
    if a > b:
        raise ValueError(f"uniform: a must be <= b, got a={a}, b={b}")
    return _uniform(shape, a, b)


def xavier_uniform(*shape: int, gain: float = 1.0) -> Any:
    """Glorot & Bengio's uniform init, as ``torch.nn.init.xavier_uniform_``:
    U(-bound, bound) with ``bound = gain * sqrt(6 / (fan_in + fan_out))``."""
    shape = _shape("xavier_uniform", shape)
    fan_in, fan_out = fan_in_and_fan_out(shape, "xavier_uniform")
    gain = check_real("xavier_uniform", "gain", gain)
    if math.prod(shape) == 0:
        return _full("zeros", shape, 0.0)
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return _uniform(shape, -bound, bound)


def xavier_normal(*shape: int, gain: float = 1.0) -> Any:
    """Glorot & Bengio's normal init, as ``torch.nn.init.xavier_normal_``:
    N(0, std**2) with ``std = gain * sqrt(2 / (fan_in + fan_out))``."""
    shape = _shape("xavier_normal", shape)
    fan_in, fan_out = fan_in_and_fan_out(shape, "xavier_normal")
    gain = check_real("xavier_normal", "gain", gain)
    if math.prod(shape) == 0:
        return _full("zeros", shape, 0.0)
    return _normal(shape, 0.0, gain * math.sqrt(2.0 / (fan_in + fan_out)))


def kaiming_uniform(
    *shape: int, a: float = 0.0, mode: str = "fan_in", nonlinearity: str = "leaky_relu"
) -> Any:
    """He et al.'s uniform init, as ``torch.nn.init.kaiming_uniform_``: U(-bound, bound) with
    ``bound = sqrt(3) * calculate_gain(nonlinearity, a) / sqrt(fan)``, ``fan`` chosen by
    ``mode`` ("fan_in" keeps forward variances, "fan_out" backward ones); ``a`` is the
    negative slope of a leaky ReLU."""
    shape = _shape("kaiming_uniform", shape)
    std = _kaiming_std("kaiming_uniform", shape, a, mode, nonlinearity)
    if math.prod(shape) == 0:
        return _full("zeros", shape, 0.0)
    bound = math.sqrt(3.0) * std
    return _uniform(shape, -bound, bound)


def kaiming_normal(
    *shape: int, a: float = 0.0, mode: str = "fan_in", nonlinearity: str = "leaky_relu"
) -> Any:
    """He et al.'s normal init, as ``torch.nn.init.kaiming_normal_``: N(0, std**2) with
    ``std = calculate_gain(nonlinearity, a) / sqrt(fan)`` (see :func:`kaiming_uniform`)."""
    shape = _shape("kaiming_normal", shape)
    std = _kaiming_std("kaiming_normal", shape, a, mode, nonlinearity)
    if math.prod(shape) == 0:
        return _full("zeros", shape, 0.0)
    return _normal(shape, 0.0, std)


glorot_uniform = xavier_uniform
glorot_normal = xavier_normal
he_uniform = kaiming_uniform
he_normal = kaiming_normal


# ----------------------------------------------------------------------------- helpers


def _shape(owner: str, shape: tuple[Any, ...]) -> tuple[int, ...]:
    """The shape as a tuple of non-negative ints; ``f((3, 4))`` is accepted like ``f(3, 4)``."""
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    return tuple(check_int(owner, f"shape[{i}]", n, minimum=0) for i, n in enumerate(shape))


def _finite(owner: str, arg: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{owner}: {arg} must be a finite real number, got {value!r}")
    return float(value)


def _kaiming_std(owner: str, shape: tuple[int, ...], a: Any, mode: Any, nonlinearity: Any) -> float:
    fan_in, fan_out = fan_in_and_fan_out(shape, owner)
    mode = mode.lower() if isinstance(mode, str) else mode  # PyTorch accepts "FAN_IN"
    if mode not in _MODES:
        raise ValueError(f"{owner}: mode must be 'fan_in' or 'fan_out', got {mode!r}")
    if nonlinearity not in _NONLINEARITIES:
        raise ValueError(
            f"{owner}: unsupported nonlinearity {nonlinearity!r}; "
            f"valid names are {', '.join(_NONLINEARITIES)}"
        )
    if isinstance(a, bool) or not isinstance(a, (int, float)):
        raise TypeError(f"{owner}: a (the leaky ReLU negative slope) must be a number, got {a!r}")
    fan = fan_in if mode == "fan_in" else fan_out
    return calculate_gain(nonlinearity, a) / math.sqrt(fan) if fan else 0.0


def _full(owner: str, shape: tuple[Any, ...], value: float) -> Any:
    backend = get_backend()
    shape = _shape(owner, shape)
    return backend.xp.full(shape, value, dtype=backend.dtype, device=backend.device)


def _uniform(shape: tuple[int, ...], low: float, high: float) -> Any:
    return to_backend(host_rng().uniform(low, high, size=shape))


def _normal(shape: tuple[int, ...], mean: float, std: float) -> Any:
    return to_backend(host_rng().normal(mean, std, size=shape))
