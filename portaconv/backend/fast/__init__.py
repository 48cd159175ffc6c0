"""The fast half: everything in portaconv that exists for speed on one library.

Nothing outside ``portaconv.backend`` imports this package. The backend's portable
functions and engines ask it, per call, for a body that fits the arrays at hand, and run
their own reference code where it has none or ``fast_paths("never")`` is in force:

- :func:`body`: a NumPy or PyTorch body of a portable function (``backend._windows``);
- :func:`conv_engine`, :func:`transposed_engine`: the convolution engines (``engines.py``);
- :func:`adam_body`: Adam's update as one pass over cache-sized chunks (``update.py``);
- :func:`make_plan`: a sequence of layers as steps, fused groups included (``plan.py``).

Modules: ``blas`` (products, OpenBLAS's gemm, chunk budgets), ``threads`` (the thread pool
and OpenBLAS's thread count), ``numpy_ops`` and ``native`` (bodies of the portable
functions), ``im2row``, ``nchw``, ``rowgather``, ``strided``, ``transposed`` (convolution
engines), ``norm`` (batch normalisation, fused with ReLU and max pooling), ``update``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from array_api_compat import is_numpy_array, is_torch_array

from .._switch import fast_enabled, forced_conv_engine


def body(op: str, *arrays: Any) -> Callable[..., Any] | None:
    """The fast body of the portable function ``op`` for arrays like ``arrays``, or None.

    A body may still return None for an input it leaves to the portable code (a NaN that
    the portable loop places exactly)."""
    if not fast_enabled():
        return None
    first = arrays[0]
    if is_numpy_array(first):
        from .numpy_ops import BODIES

        return BODIES.get(op)
    if is_torch_array(first):
        from . import native

        return native.BODIES.get(op) if native.applies(first) else None
    return None


def conv_engine(
    A: Any,
    nd: int,
    kernel_size: Any,
    stride: Any,
    padding: Any,
    dilation: Any = 1,
    groups: int = 1,
    out_channels: int | None = None,
) -> Any:
    """A fast engine for this convolution, or None: the reference engine runs. Arguments as
    ``backend._conv.ReferenceConv`` takes them."""
    forced = forced_conv_engine()
    if forced == "reference" or not fast_enabled():
        return None
    from .engines import conv_engine as choose

    return choose(A, nd, kernel_size, stride, padding, forced, dilation, groups, out_channels)


def transposed_engine(A: Any, nd: int, kernel_size: int, factor: int) -> Any:
    """A fast engine for the handout's transposed convolution, or None."""
    if not fast_enabled():
        return None
    from .engines import transposed_engine as choose

    return choose(A, nd, kernel_size, factor)


def adam_body(p: Any, g: Any, *buffers: Any) -> Callable[..., None] | None:
    """The fused NumPy Adam update for these arrays, or None."""
    if not fast_enabled():
        return None
    from .update import adam_update, fusable

    return adam_update if fusable(p, g, *buffers) else None


def make_plan(layers: list[Any]) -> Any:
    """The layers as steps; see ``plan.py``."""
    from .plan import plan as make

    return make(layers, fast_enabled())
