"""What the reference half asks the backend for beyond single functions: an execution plan
for a model's layers and a fused optimizer update. Each comes from the fast half where it
has one for the arrays at hand (``portaconv.backend.fast``), else the plain reference."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import fast


def execution_plan(layers: list[Any]) -> Any:
    """The steps that run ``layers`` in order: a ``Plan`` with ``steps`` (each with
    ``forward(Z)``, ``backward(grad, input_grad)``, ``where`` and ``param_names``) and
    ``held(A)``, a context for running them. Under ``fast_paths("never")`` every layer is its
    own step; else BatchNorm + ReLU (+ max pooling) and ReLU + max pooling may run fused,
    with the same results."""
    return fast.make_plan(layers)


def fused_adam(p: Any, g: Any, *buffers: Any) -> Callable[..., None] | None:
    """A fused Adam update that takes this parameter, its gradient and its moments, or
    None: the optimizer's own update runs."""
    return fast.adam_body(p, g, *buffers)


def share_cores(processes: int) -> int | None:
    """Give each of ``processes`` processes on this machine its share of the cores for
    portaconv's threads (MPI ranks); see ``fast.threads.share_cores``."""
    from .fast.threads import share_cores as share

    return share(processes)
