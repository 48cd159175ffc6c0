"""Special functions the array API standard lacks: the error function (GELU needs it)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from array_api_compat import array_namespace, is_cupy_namespace, is_torch_namespace

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
