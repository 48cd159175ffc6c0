"""Backend selection, the fast-paths switch, and the gap-fillers of the array API standard.

This is the only place in portaconv that knows which array library is in use. Its public
surface (``__all__``) is what users call; the layers, models and optimizers import the
gap-fillers from its modules (``_arrays``, ``_windows``, ``_conv``, ``_special``,
``_random``, ``_compile``, ``_delegate``). Everything that exists for speed on one library
lives in the private package ``portaconv.backend.fast``, reached only through them.

============================  ===========================================================
``set_backend``               choose the array library (``"numpy"``, ``"torch"``, ``"jax"``,
                              ``"cupy"``, ``"array_api_strict"``), device and float dtype;
                              also ``PORTACONV_BACKEND``, ``PORTACONV_DEVICE``,
                              ``PORTACONV_DTYPE``
``use_backend``               the same for a ``with`` block
``get_backend``               the active :class:`Backend` (``xp``, ``device``, ``dtype``)
``make_backend``              a :class:`Backend` without making it active
``Backend``                   a library, device and dtype
``BackendUnavailableError``   the library or device asked for cannot run here
``BACKENDS``, ``DTYPES``      the names ``set_backend`` accepts
``to_backend``                an array of any library (or a list) on the active backend
``to_numpy``                  any supported array as a NumPy array
``manual_seed``               seed every random stream portaconv draws from
``get_rng_state``             the random streams' state, for a checkpoint
``set_rng_state``             restore it
``num_threads``               threads the NumPy fast paths share their work between
``set_num_threads``           set it (None: ``PORTACONV_NUM_THREADS``, else OpenBLAS's count)
``fast_paths``                ``with fast_paths("never")``: the reference code alone;
                              ``"auto"``: fast bodies where they apply; ``conv=`` forces a
                              convolution engine; also ``PORTACONV_FAST_PATHS``
``fast_paths_mode``           the mode in force
``CONV_ENGINES``              the names ``fast_paths(conv=...)`` accepts
``execution_plan``            the steps a model runs its layers as (fused groups included)
``COMPILING_BACKENDS``        the backends whose training step can be compiled
============================  ===========================================================
"""

from ._arrays import to_backend, to_numpy
from ._compile import COMPILING_BACKENDS
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
from ._delegate import execution_plan
from ._random import get_rng_state, manual_seed, set_rng_state
from ._switch import CONV_ENGINES, fast_paths, fast_paths_mode
from .fast.threads import num_threads, set_num_threads

__all__ = [
    "BACKENDS",
    "COMPILING_BACKENDS",
    "CONV_ENGINES",
    "DTYPES",
    "Backend",
    "BackendUnavailableError",
    "execution_plan",
    "fast_paths",
    "fast_paths_mode",
    "get_backend",
    "get_rng_state",
    "make_backend",
    "manual_seed",
    "num_threads",
    "set_backend",
    "set_num_threads",
    "set_rng_state",
    "to_backend",
    "to_numpy",
    "use_backend",
]
