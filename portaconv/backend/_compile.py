"""Compiling a training step: ``torch.compile`` on PyTorch, ``jax.jit`` on JAX.

The step handed to :func:`compile_step` is a pure function of arrays (pytrees of them: dicts
and tuples) to arrays; :mod:`portaconv.train.compiled` builds it from the model, the loss and
the optimizer. Only PyTorch and JAX compile one; the other libraries run their steps as they
come (:func:`check_compiles` says so).
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Callable, Iterator
from typing import Any

from array_api_compat import array_namespace, device, is_jax_array, is_torch_array

from . import _random

#: The backends whose training step can be compiled.
COMPILING_BACKENDS = ("torch", "jax")


def _compiler(like: Any) -> str | None:
    if is_torch_array(like):
        return "torch"
    if is_jax_array(like):
        return "jax"
    return None


def check_compiles(owner: str, like: Any) -> None:
    """``ValueError`` unless arrays like ``like`` (a parameter) can run a compiled step."""
    if _compiler(like) is None:
        library = type(like).__module__.split(".")[0]
        raise ValueError(
            f"{owner}: compile=True compiles the training step on the "
            f"{' and '.join(COMPILING_BACKENDS)} backends only; the model's arrays are "
            f"{library}'s. Set PORTACONV_BACKEND=torch (or jax), or train without compile"
        )


def _torch_compiler() -> str:
    """``torch.compile``'s backend: ``PORTACONV_TORCH_COMPILER``, else ``inductor``."""
    return os.environ.get("PORTACONV_TORCH_COMPILER", "").strip() or "inductor"


def compiler_name(like: Any) -> str:
    """The library and what compiles a step for arrays like ``like``, as a log line names
    them: ``"torch (torch.compile, inductor)"`` (the compiler :func:`compile_step` picks) or
    ``"jax (jax.jit)"``."""
    check_compiles("compiler_name", like)
    if _compiler(like) == "torch":
        return f"torch (torch.compile, {_torch_compiler()})"
    return "jax (jax.jit)"


def compile_step(step: Callable[..., Any], like: Any) -> Callable[..., Any]:
    """``step`` compiled for arrays like ``like`` (see :func:`check_compiles`).

    torch: ``torch.compile(fullgraph=True)``, so anything that would split the step into
    several graphs (a value read to the host, an untraceable call) is an error naming the
    line, not a silent slowdown; ``dynamic=False``: one graph per batch shape (the last,
    smaller batch of an epoch gets its own). Its compiler is ``PORTACONV_TORCH_COMPILER``
    (default ``inductor``, which builds C++ or GPU kernels: fast steps, but minutes of
    compiling on a small CPU when its cache is cold; ``aot_eager`` traces the same graph and
    runs it with eager kernels, compiled in seconds). JAX: ``jax.jit`` with the first
    argument (the state the step replaces) donated, so the update reuses its memory.
    """
    check_compiles("compile_step", like)
    if _compiler(like) == "torch":
        import torch

        return torch.compile(step, fullgraph=True, dynamic=False, backend=_torch_compiler())
    import jax

    return jax.jit(step, donate_argnums=0)


def compile_count(compiled: Callable[..., Any], like: Any) -> int:
    """A number that grows each time ``compiled`` (from :func:`compile_step`) builds a
    program: compare it before and after a call to learn whether the call compiled. JAX: the
    programs in the function's cache; torch: the graphs dynamo has compiled in this process
    (torch recompiles for reasons of its own, e.g. new strides, that a caller cannot
    foresee)."""
    if _compiler(like) == "torch":
        from torch._dynamo.utils import counters

        return int(counters["stats"]["unique_graphs"])
    return int(compiled._cache_size())


#: The modules of torch's compiler, whose warnings concern its tracing of portaconv's code
#: (e.g. that array-api-compat's cached helpers are traced through), not the user's.
_TORCH_COMPILER_MODULES = r"torch\._(dynamo|inductor|functorch)(\.|$)"


@contextlib.contextmanager
def quiet_compiler() -> Iterator[None]:
    """Around a call that may compile: the warnings of torch's compiler modules are not
    shown. Warnings raised by any other module (the user's code included) still are."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module=_TORCH_COMPILER_MODULES)
        yield


def scalar_array(value: float, like: Any) -> Any:
    """``value`` as a 0-d array of ``like``'s namespace, device and dtype: a host number a
    compiled step takes as an input, so that a new value compiles nothing again. Made with
    ``full``, a fill on the device: no copy from the host to wait for."""
    return array_namespace(like).full((), value, dtype=like.dtype, device=device(like))


def step_random_state(like: Any) -> Any:
    """The random state a compiled step takes in and hands back for arrays like ``like``:
    on JAX the key of the device's stream (Dropout's masks; a jitted step cannot change it
    in place); None elsewhere (torch: see :func:`compiled_random`)."""
    if is_jax_array(like):
        return _random._streams.for_array(like).key
    return None


def set_step_random_state(like: Any, state: Any) -> None:
    """Put back what :func:`step_random_state` gave (the key a jitted step returned)."""
    if state is not None:
        _random._streams.for_array(like).key = state


@contextlib.contextmanager
def compiled_random(like: Any) -> Iterator[None]:
    """Around a compiled torch step: its device's default generator takes the state of
    portaconv's stream for that device, and gives the advanced state back afterwards.

    ``torch.compile`` cannot trace a draw from a ``torch.Generator`` object, so compiled
    masks come from the default generator (the compiled kernels draw their own numbers from
    seeds it gives: other masks than eager steps draw, from the same seed). Swapping the
    states keeps ``portaconv.manual_seed`` and checkpoints in charge of them, and leaves the
    default generator as it was. Host-side states only: nothing waits for the device."""
    if not is_torch_array(like):
        yield
        return
    import torch

    stream = _random._streams.for_array(like).generator
    dev = like.device
    default = torch.default_generator
    if dev.type == "cuda":
        default = torch.cuda.default_generators[dev.index or 0]
    saved = default.get_state()
    default.set_state(stream.get_state())
    try:
        yield
    finally:
        stream.set_state(default.get_state())
        default.set_state(saved)


@contextlib.contextmanager
def tracing_for(like: Any) -> Iterator[None]:
    """While a step is traced for arrays like ``like`` (concrete ones): JAX's traced arrays
    have no device, and Dropout's draws inside the trace take the key of ``like``'s
    device, the one :func:`step_random_state` hands in."""
    saved = _random._traced_device[0]
    _random._traced_device[0] = device(like) if is_jax_array(like) else None
    try:
        yield
    finally:
        _random._traced_device[0] = saved
