"""Whole-array updates that work whether or not the library lets an array change.

NumPy, PyTorch (outside autograd), CuPy and array-api-strict update an array in place;
JAX arrays never change, so an update there is a new array that its owner must hold
instead. :func:`update` does whichever applies, and hands a new array to the owner's setter
(``model.set_parameter``), so that no optimizer can silently update a local copy only.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

from array_api_compat import is_cupy_array, is_numpy_array, is_torch_array

#: op -> (in-place operator, out-of-place operator)
_OPS = {
    "add": (operator.iadd, operator.add),
    "subtract": (operator.isub, operator.sub),
    "multiply": (operator.imul, operator.mul),
}


def updates_in_place(x: Any) -> bool:
    """Whether ``x op= value`` changes ``x`` itself: a writable NumPy array, a torch tensor
    outside autograd, a CuPy or array-api-strict array; not a JAX array (immutable)."""
    if is_numpy_array(x):
        return bool(x.flags.writeable)
    if is_torch_array(x):
        return not x.requires_grad
    return is_cupy_array(x) or type(x).__module__.startswith("array_api_strict")


def update(x: Any, op: str, value: Any, rebind: Callable[[Any], None] | None = None) -> Any:
    """``x op= value`` (``op``: ``"add"``, ``"subtract"`` or ``"multiply"``); returns the
    updated array.

    In place where the library allows it (:func:`updates_in_place`): ``x`` itself is
    returned. Elsewhere the result is a new array, passed to ``rebind`` (the setter of
    whatever holds ``x``) before it is returned. Callers that keep ``x`` themselves (an
    optimizer's state buffers) store the return value instead.
    """
    in_place, out_of_place = _OPS[op]
    if updates_in_place(x):
        in_place(x, value)
        return x
    x = out_of_place(x, value)
    if rebind is not None:
        rebind(x)
    return x
