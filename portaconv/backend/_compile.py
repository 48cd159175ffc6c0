"""Compiling a training step: ``torch.compile`` on PyTorch, ``jax.jit`` on JAX.

The step handed to :func:`compile_step` is a pure function of arrays (pytrees of them: dicts
and tuples) to arrays; :mod:`portaconv.train.compiled` builds it from the model, the loss and
the optimizer. Only PyTorch and JAX compile one; the other libraries run their steps as they
come (:func:`check_compiles` says so).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from array_api_compat import array_namespace, device, is_jax_array, is_torch_array

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


def compile_step(step: Callable[..., Any], like: Any) -> Callable[..., Any]:
    """``step`` compiled for arrays like ``like`` (see :func:`check_compiles`).

    torch: ``torch.compile(fullgraph=True)``, so anything that would split the step into
    several graphs (a value read to the host, an untraceable call) is an error naming the
    line, not a silent slowdown; ``dynamic=False``: one graph per batch shape (the last,
    smaller batch of an epoch gets its own). JAX: ``jax.jit`` with the first argument (the
    state the step replaces) donated, so the update reuses its memory.
    """
    check_compiles("compile_step", like)
    if _compiler(like) == "torch":
        import torch

        return torch.compile(step, fullgraph=True, dynamic=False)
    import jax

    return jax.jit(step, donate_argnums=0)


def scalar_array(value: float, like: Any) -> Any:
    """``value`` as a 0-d array of ``like``'s namespace, device and dtype: a host number a
    compiled step takes as an input, so that a new value compiles nothing again. Made with
    ``full``, a fill on the device: no copy from the host to wait for."""
    return array_namespace(like).full((), value, dtype=like.dtype, device=device(like))
