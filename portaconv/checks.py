"""The argument checks every part of portaconv shares: layers, models, optimizers, data.

Each turns bad input into the library's own ValueError or TypeError, saying who complains
(``owner``: a layer, an optimizer, a loader), which argument, what it expected and what it
got. One module, as scikit-learn's ``utils/validation.py``: nothing here knows about layers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import array_api_compat
from array_api_compat import array_namespace


def shape_str(shape: Sequence[int | None]) -> str:
    """A shape as Python writes a tuple: ``(2,)``, ``(3, 4)``; an unknown size (None, the
    batch axis of a graph being recorded) stays None."""
    return str(tuple(None if n is None else int(n) for n in shape))


def counted(count: int, noun: str) -> str:
    """A count and its noun as a message says it: singular for 1, else with an ``s``.

    >>> counted(1, "epoch"), counted(2, "epoch"), counted(0, "image")
    ('1 epoch', '2 epochs', '0 images')
    """
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def check_int(owner: str, arg: str, value: Any, minimum: int = 1) -> int:
    """An integer hyper-parameter >= ``minimum``; bool and float are refused."""
    # (NumPy 1.x's np.bool_ still has a deprecated __index__)
    is_bool = isinstance(value, bool) or getattr(getattr(value, "dtype", None), "kind", "") == "b"
    if is_bool or not hasattr(value, "__index__"):
        raise TypeError(
            f"{owner}: {arg} must be an integer, got {value!r} of type {type(value).__name__}"
        )
    try:
        value = int(value.__index__())
    except TypeError:
        raise TypeError(
            f"{owner}: {arg} must be an integer, got {value!r} of type {type(value).__name__}"
        ) from None
    if value < minimum:
        bound = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"{owner}: {arg} must be {bound}, got {value}")
    return value


def check_int_tuple(
    owner: str, arg: str, value: Any, length: int, minimum: int = 1
) -> int | tuple[int, ...]:
    """An integer hyper-parameter >= ``minimum``, or a tuple (or list) of ``length`` of them
    (one per spatial axis, as PyTorch's ``kernel_size=(3, 5)``): an int stays an int, a
    sequence becomes a tuple."""
    if not isinstance(value, (tuple, list)):
        return check_int(owner, arg, value, minimum)
    if len(value) != length:
        what = "integer" if length == 1 else "integers"
        raise ValueError(
            f"{owner}: {arg} must be an integer or a tuple of {length} {what}, got {value!r}"
        )
    return tuple(check_int(owner, f"{arg}[{i}]", v, minimum) for i, v in enumerate(value))


def check_array(owner: str, x: Any, arg: str, layout: str, ndim: int | Sequence[int]) -> Any:
    """Check an input array's type, dtype and rank; return its namespace.

    ``layout`` names the axes expected, e.g. ``"(N, C_in, H, W)"``; ``ndim`` is the allowed
    number of dimensions (an int, or a range such as ``range(2, 64)`` for "at least 2").
    """
    if not array_api_compat.is_array_api_obj(x) or isinstance(x, (int, float, complex)):
        raise TypeError(f"{owner}: {arg} must be an array {layout}, got {type(x).__name__}")
    xp = array_namespace(x)
    if not xp.isdtype(x.dtype, "real floating"):
        raise TypeError(
            f"{owner}: {arg} must be a real floating-point array (float32 or float64), "
            f"got dtype {x.dtype}"
        )
    allowed = range(ndim, ndim + 1) if isinstance(ndim, int) else ndim
    if x.ndim not in allowed:
        want = str(allowed[0]) if len(allowed) == 1 else f"at least {allowed[0]}"
        raise ValueError(
            f"{owner}: {arg} must have {want} dimensions {layout}, "
            f"got {x.ndim} dimensions with shape {shape_str(x.shape)}"
        )
    return xp


def check_real(
    owner: str,
    arg: str,
    value: Any,
    minimum: float = 0.0,
    strict: bool = False,
    below: float = math.inf,
) -> float:
    """A finite real number >= ``minimum`` (> with ``strict``) and < ``below``, returned as a
    Python float, so float32 arrays stay float32 (a NumPy float64 scalar would promote them)."""
    number = None
    if not isinstance(value, (bool, str, bytes)) and hasattr(value, "__float__"):
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = None
    if number is None:
        raise TypeError(
            f"{owner}: {arg} must be a real number, got {value!r} of type {type(value).__name__}"
        )
    low_ok = number > minimum if strict else number >= minimum
    if not (math.isfinite(number) and low_ok and number < below):
        if below != math.inf:
            bound = f"in {'(' if strict else '['}{minimum:g}, {below:g})"
        else:
            bound = f"{'>' if strict else '>='} {minimum:g}"
        raise ValueError(f"{owner}: {arg} must be {bound}, got {value!r}")
    return number


def check_state_dict(
    owner: str, state_dict: Any, required: tuple[str, ...], what: str = ""
) -> None:
    """A ``load_state_dict`` argument: a mapping of ``owner``'s type holding ``required``."""
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"{owner}: load_state_dict expects a dict, got {type(state_dict).__name__}")
    kind = state_dict.get("type", owner)
    if kind != owner:
        raise ValueError(f"{owner}: load_state_dict got the state of a {kind} {what}".rstrip())
    missing = [key for key in required if key not in state_dict]
    if missing:
        raise ValueError(f"{owner}: load_state_dict is missing the keys {missing}")


def check_state_keys(owner: str, names: Sequence[str], state: Any) -> None:
    """``state`` is a mapping whose keys are exactly ``names`` (for ``load_state_dict``)."""
    if not isinstance(state, Mapping):
        raise TypeError(
            f"{owner}: load_state_dict expects a mapping of name -> array, "
            f"got {type(state).__name__}"
        )
    missing = [n for n in names if n not in state]
    unexpected = [k for k in state if k not in names]
    if missing or unexpected:
        raise ValueError(
            f"{owner}: load_state_dict keys do not match: missing {missing}, "
            f"unexpected {unexpected}"
        )
