"""Arrays of any library: conversion, in-place updates where the library allows them, and
where an array lives. Every function takes and returns arrays of the caller's namespace."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import array_api_compat
import array_api_extra as xpx
from array_api_compat import (
    array_namespace,
    device,
    is_cupy_array,
    is_jax_array,
    is_numpy_array,
    is_torch_array,
)

from ._config import Backend, get_backend


def to_backend(
    x: Any, backend: Backend | None = None, dtype: Any = None, copy: bool | None = None
) -> Any:
    """Move ``x`` (a NumPy array, nested sequence or any array) to ``backend``.

    The result has ``dtype`` (default: the backend's float dtype). Like ``asarray`` it may
    share memory with ``x`` when nothing needs converting; ``copy=True`` always copies.
    """
    backend = backend or get_backend()
    xp = backend.xp
    dtype = backend.dtype if dtype is None else dtype
    if array_api_compat.is_array_api_obj(x) and not array_api_compat.is_numpy_array(x):
        try:
            same = array_namespace(x) is xp and device(x) == backend.device
        except TypeError:
            same = False
        if not same:
            x = to_numpy(x)
    return xp.asarray(x, dtype=dtype, device=backend.device, copy=copy)


def supplied_dtype(x: Any, backend: Backend | None = None) -> Any:
    """The dtype a parameter built from the user's array ``x`` takes on ``backend``.

    A floating array keeps its precision (float32 or float64, as the backend's namespace
    spells it); anything else (an integer array, a nested list) takes the backend's
    default dtype. This is portaconv's dtype rule: a parameter has the dtype of the array
    the user supplied, else the backend default.
    """
    backend = backend or get_backend()
    if array_api_compat.is_array_api_obj(x) and not isinstance(x, (int, float, complex)):
        xp = array_namespace(x)
        for name in ("float64", "float32"):
            if x.dtype == getattr(xp, name):
                return getattr(backend.xp, name)
    return backend.dtype


def astype(x: Any, dtype: Any) -> Any:
    """``x`` in ``dtype``: ``x`` itself when it already has it (no copy)."""
    return x if x.dtype == dtype else array_namespace(x).astype(x, dtype)


def to_numpy(x: Any) -> Any:
    """A NumPy copy (or view) of any supported array, wherever it lives."""
    import numpy as np

    if array_api_compat.is_numpy_array(x):
        return x
    if array_api_compat.is_torch_array(x):
        return x.detach().cpu().numpy()
    if array_api_compat.is_cupy_array(x):
        return x.get()
    if is_jax_array(x):
        return np.asarray(x)  # from any device (DLPack export works on the CPU only)
    if hasattr(x, "__dlpack__"):
        return np.from_dlpack(x)
    return np.asarray(x)


# ------------------------------------------------------------------------ in-place updates


def _mutable_in_place(x: Any) -> bool:
    """Whether ``x[index] op= values`` may update ``x`` itself: a writable NumPy array, a
    CuPy array, or a torch tensor outside autograd. (array-api-extra's ``at`` decides the
    same way, but at a fixed cost per call, which the convolution and pooling loops would pay
    K**d times a step, and on torch it copies the whole array first.)"""
    if is_numpy_array(x):
        return bool(x.flags.writeable)
    if is_torch_array(x):
        return not x.requires_grad
    return is_cupy_array(x)


def slice_add(x: Any, index: tuple, values: Any) -> Any:
    """``x[index] += values`` for basic (slice) indices; returns the updated array.

    Works where arrays are immutable (array-api-extra's ``at``); slices never repeat an
    element, so there is no scatter-with-duplicates ambiguity. NumPy, CuPy and torch add
    into the view ``x[index]`` in place (Python's ``x[index] += values`` would also copy the
    view back onto itself: one more operation, a whole pass over the slice).
    """
    if _mutable_in_place(x):
        view = x[index]
        view += values
        return x
    return xpx.at(x, index).add(values)


def slice_set(x: Any, index: tuple, values: Any) -> Any:
    """``x[index] = values`` for basic (slice) indices; returns the updated array."""
    if _mutable_in_place(x):
        x[index] = values
        return x
    return xpx.at(x, index).set(values)


def shared_zeros(like: Any) -> Any:
    """Zeros with the shape, dtype and device of ``like``: a broadcast view of one zero (no
    memory, no fill), read-only where the library refuses writes through such views (NumPy,
    torch)."""
    xp = array_namespace(like)
    zero = xp.zeros((), dtype=like.dtype, device=device(like))
    return xp.broadcast_to(zero, tuple(like.shape))


def updates_in_place(x: Any) -> bool:
    """Whether an update may write into ``x`` itself: a writable NumPy array, a torch tensor
    outside autograd, a CuPy or array-api-strict array; not a JAX array (immutable)."""
    if is_numpy_array(x):
        return bool(x.flags.writeable)
    if is_torch_array(x):
        return not x.requires_grad
    return is_cupy_array(x) or type(x).__module__.startswith("array_api_strict")


def scaled_add(
    y: Any,
    x: Any,
    alpha: float,
    scale: float = 1.0,
    rebind: Callable[[Any], None] | None = None,
) -> Any:
    """``scale * y + alpha * x`` (Python floats ``alpha``, ``scale``; ``x`` None: ``scale *
    y`` alone), written into ``y`` itself where the library allows (:func:`updates_in_place`);
    returns the result. Elsewhere (JAX, any immutable array) the result is a new array,
    passed to ``rebind`` (the setter of whatever holds ``y``: ``model.set_parameter``) before
    it is returned, so that no update can silently change a local copy only.

    The optimizers' one update. torch: ``y.mul_(scale).add_(x, alpha=alpha)``, two native
    in-place operations and no temporary (``torch.optim``'s own form); other mutable
    libraries: ``y *= scale; y += alpha * x``.
    """
    if not updates_in_place(y):
        y = scale * y if x is None else scale * y + alpha * x
        if rebind is not None:
            rebind(y)
        return y
    if is_torch_array(y):
        if scale != 1:
            y.mul_(scale)
        return y if x is None else y.add_(x, alpha=alpha)
    if scale != 1:
        y *= scale
    if x is not None:
        y += alpha * x
    return y


# ------------------------------------------------------------------------- where it lives


def is_gpu_array(x: Any) -> bool:
    """Whether ``x`` lives on a GPU (CuPy, or a torch or JAX array on a non-CPU device)."""
    if is_cupy_array(x):
        return True
    if is_jax_array(x):
        dev = device(x)  # None for an array being traced by jax.jit: placed by its inputs
        return dev is not None and dev.platform != "cpu"
    return is_torch_array(x) and x.device.type != "cpu"


def on_host(x: Any) -> bool:
    """Whether reading ``x``'s values back costs no wait on a device: NumPy arrays, and
    array-api-strict's (NumPy arrays underneath, whatever device they name)."""
    return is_numpy_array(x) or type(x).__module__.startswith("array_api_strict")
