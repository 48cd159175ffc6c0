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
from ._random import (
    bernoulli_mask,
    get_rng_state,
    host_rng,
    manual_seed,
    set_rng_state,
    uniform,
)

__all__ = [
    "BACKENDS",
    "DTYPES",
    "Backend",
    "BackendUnavailableError",
    "bernoulli_mask",
    "col2im",
    "conv_out_size",
    "erf",
    "erf_portable",
    "get_backend",
    "get_rng_state",
    "host_rng",
    "im2col",
    "kernel_offsets",
    "make_backend",
    "manual_seed",
    "pad_spatial",
    "set_backend",
    "set_rng_state",
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
