"""Gap-fillers: what the array API standard lacks and the layers need, written once.

Every function takes and returns arrays of the caller's namespace. Where a library has a
native routine that does the same job faster it may be used here, behind the same
signature ("delegation", as array-api-extra calls it); the portable path stays tested on
NumPy and array-api-strict.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import array_api_compat
import array_api_extra as xpx
from array_api_compat import array_namespace, device, is_cupy_namespace, is_torch_namespace

from ._config import Backend, get_backend

# --------------------------------------------------------------------------- conversion


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


def to_numpy(x: Any) -> Any:
    """A NumPy copy (or view) of any supported array, wherever it lives."""
    import numpy as np

    if array_api_compat.is_numpy_array(x):
        return x
    if array_api_compat.is_torch_array(x):
        return x.detach().cpu().numpy()
    if array_api_compat.is_cupy_array(x):
        return x.get()
    if hasattr(x, "__dlpack__"):
        return np.from_dlpack(x)
    return np.asarray(x)


# ------------------------------------------------------------------------ in-place updates


def slice_add(x: Any, index: tuple, values: Any) -> Any:
    """``x[index] += values`` for basic (slice) indices; returns the updated array.

    Works where arrays are immutable (array-api-extra's ``at``); slices never repeat an
    element, so there is no scatter-with-duplicates ambiguity.
    """
    return xpx.at(x, index).add(values)


def slice_set(x: Any, index: tuple, values: Any) -> Any:
    """``x[index] = values`` for basic (slice) indices; returns the updated array."""
    return xpx.at(x, index).set(values)


# --------------------------------------------------------------------- windows and padding


def conv_out_size(in_size: int, kernel_size: int, stride: int = 1, padding: int = 0) -> int:
    """Output length of a valid sliding window: floor((in + 2p - k) / s) + 1 (PyTorch's)."""
    return (in_size + 2 * padding - kernel_size) // stride + 1


def swap_leading_axes(x: Any) -> Any:
    """``(N, C, ...)`` <-> ``(C, N, ...)``, as a view where the library allows."""
    xp = array_namespace(x)
    return xp.permute_dims(x, (1, 0, *range(2, x.ndim)))


def pad_spatial(x: Any, padding: Sequence[int]) -> Any:
    """Zero-pad the trailing ``len(padding)`` axes of ``x`` by ``padding[i]`` on each side."""
    if not any(padding):
        return x
    lead = [(0, 0)] * (x.ndim - len(padding))
    return xpx.pad(x, lead + [(p, p) for p in padding])


def window_index(offset: Sequence[int], stride: Sequence[int], out_size: Sequence[int]) -> tuple:
    """The strided slices that pick, for each output position, the element at ``offset``."""
    return (...,) + tuple(
        slice(o, o + s * (n - 1) + 1, s) for o, s, n in zip(offset, stride, out_size)
    )


def kernel_offsets(kernel_size: Sequence[int]) -> list[tuple[int, ...]]:
    """All kernel offsets in row-major order: (0, 0), (0, 1), ..., (K-1, K-1)."""
    return list(itertools.product(*(range(k) for k in kernel_size)))


def windows(
    x: Any, kernel_size: Sequence[int], stride: Sequence[int], out_size: Sequence[int]
) -> list[Any]:
    """The strided views ``x[..., i::s, j::s]`` (cropped to ``out_size``), one per offset."""
    return [x[window_index(o, stride, out_size)] for o in kernel_offsets(kernel_size)]


def im2col(
    x: Any, kernel_size: Sequence[int], stride: Sequence[int], out_size: Sequence[int]
) -> Any:
    """Gather sliding windows: ``(C, N, *in)`` -> ``(C, prod(K), N, *out_size)``.

    ``cols[c, k, n, *o] = x[c, n, *(o * stride + offset_k)]`` with offsets in row-major
    order. One copy, made as a loop over the kernel offsets (Chainer's ``im2col_cpu``).
    Channels lead so that ``reshape(cols, (C * prod(K), N * prod(out)))`` is a view and a
    convolution is a single matrix product over the whole batch.
    """
    xp = array_namespace(x)
    return xp.stack(windows(x, kernel_size, stride, out_size), axis=1)


def col2im(
    cols: Any,
    in_shape: Sequence[int],
    kernel_size: Sequence[int],
    stride: Sequence[int],
    out_size: Sequence[int],
) -> Any:
    """Adjoint of :func:`im2col`: scatter-add ``(C, prod(K), N, *out)`` into ``in_shape``.

    A loop over the kernel offsets, each a ``+=`` on one strided slice.
    """
    xp = array_namespace(cols)
    x = xp.zeros(tuple(in_shape), dtype=cols.dtype, device=device(cols))
    for k, offset in enumerate(kernel_offsets(kernel_size)):
        x = slice_add(x, window_index(offset, stride, out_size), cols[:, k, ...])
    return x


# ------------------------------------------------------------------------ special functions

# Cephes' rational approximations (S. L. Moshier, Cephes Math Library 2.9, BSD licence):
# erf(x) = x T(x^2) / U(x^2) for |x| < 1; erfc(x) = exp(-x^2) P(x) / Q(x) for 1 <= x < 8,
# and exp(-x^2) R(x) / S(x) for x >= 8. Cephes leaves the leading 1 of U, Q and S implicit.
_ERF_T = (
    9.60497373987051638749e0,
    9.00260197203842689217e1,
    2.23200534594684319226e3,
    7.00332514112805075473e3,
    5.55923013010394962768e4,
)
_ERF_U = (
    1.0,
    3.35617141647503099647e1,
    5.21357949780152679795e2,
    4.59432382970980127987e3,
    2.26290000613890934246e4,
    4.92673942608635921086e4,
)
_ERFC_P = (
    2.46196981473530512524e-10,
    5.64189564831068821977e-1,
    7.46321056442269912687e0,
    4.86371970985681366614e1,
    1.96520832956077098242e2,
    5.26445194995477358631e2,
    9.34528527171957607540e2,
    1.02755188689515710272e3,
    5.57535335369399327526e2,
)
_ERFC_Q = (
    1.0,
    1.32281951154744992508e1,
    8.67072140885989742329e1,
    3.54937778887819891062e2,
    9.75708501743205489753e2,
    1.82390916687909736289e3,
    2.24633760818710981792e3,
    1.65666309194161350182e3,
    5.57535340817727675546e2,
)
_ERFC_R = (
    5.64189583547755073984e-1,
    1.27536670759978104416e0,
    5.01905042251180477414e0,
    6.16021097993053585195e0,
    7.40974269950448939160e0,
    2.97886665372100240670e0,
)
_ERFC_S = (
    1.0,
    2.26052863220117276590e0,
    9.39603524938001434673e0,
    1.20489539808096656605e1,
    1.70814450747565897222e1,
    9.60896809063285878198e0,
    3.36907645100081516050e0,
)


def _polyval(coefficients: Sequence[float], x: Any) -> Any:
    """Horner's rule, highest power first."""
    result = coefficients[0] + 0 * x
    for c in coefficients[1:]:
        result = result * x + c
    return result


def erf_portable(x: Any) -> Any:
    """The error function from array-API arithmetic alone (Cephes; ~1e-16 relative in float64)."""
    xp = array_namespace(x)
    ax = xp.abs(x)
    small = ax < 1.0
    # Evaluate each branch only on arguments inside its range, so neither overflows.
    xs = xp.where(small, x, xp.zeros_like(x))
    z = xs * xs
    erf_small = xs * _polyval(_ERF_T, z) / _polyval(_ERF_U, z)
    xl = xp.clip(ax, 1.0, 30.0)
    mid = xl < 8.0
    ratio = xp.where(
        mid,
        _polyval(_ERFC_P, xl) / _polyval(_ERFC_Q, xl),
        _polyval(_ERFC_R, xl) / _polyval(_ERFC_S, xl),
    )
    erfc_large = xp.exp(-xl * xl) * ratio
    erf_large = xp.where(x < 0, erfc_large - 1.0, 1.0 - erfc_large)
    return xp.where(small, erf_small, erf_large)


def erf(x: Any) -> Any:
    """The error function, elementwise; the library's own kernel where it has one."""
    xp = array_namespace(x)
    if is_torch_namespace(xp):
        import torch

        return torch.special.erf(x)
    if is_cupy_namespace(xp):
        import cupyx.scipy.special

        return cupyx.scipy.special.erf(x)
    return erf_portable(x)


SQRT_2 = math.sqrt(2.0)
SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
