"""Backend selection and the gap-fillers the array API standard leaves open.

This is the only place in portaconv that knows which array library is in use.
"""

from ._config import (
    BACKENDS,
    DTYPES,
    Backend,
    BackendUnavailableError,
    get_backend,
    make_backend,
    set_backend,
    use_backend,
)
from ._ops import (
    col2im,
    conv_out_size,
    erf,
    erf_portable,
    im2col,
    kernel_offsets,
    pad_spatial,
    slice_add,
    slice_set,
    swap_leading_axes,
    to_backend,
    to_numpy,
    window_index,
    windows,
)
from ._random import host_rng, manual_seed, uniform

__all__ = [
    "BACKENDS",
    "DTYPES",
    "Backend",
    "BackendUnavailableError",
    "col2im",
    "conv_out_size",
    "erf",
    "erf_portable",
    "get_backend",
    "host_rng",
    "im2col",
    "kernel_offsets",
    "make_backend",
    "manual_seed",
    "pad_spatial",
    "set_backend",
    "slice_add",
    "slice_set",
    "swap_leading_axes",
    "to_backend",
    "to_numpy",
    "uniform",
    "use_backend",
    "window_index",
    "windows",
]
