"""A model's layers with the prefix of their state names, as ``state_dict`` names them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


def state_names(layer: Any) -> tuple[str, ...]:
    """The names of a layer's parameters and buffers (``W``, ``running_M``, ...)."""
    return (*getattr(layer, "param_names", ()), *getattr(layer, "buffer_names", ()))


def leaf_layers(model: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """``(prefix, layer)`` for every layer of ``model`` that is not itself a model, in the
    order ``named_layers`` lists them; ``prefix + "W"`` is a key of ``model.state_dict()``."""
    children = getattr(model, "named_layers", None)
    if children is None:
        yield prefix, model
        return
    for name, child in children():
        yield from leaf_layers(child, f"{prefix}{name}.")


def every_part(model: Any) -> Iterator[Any]:
    """``model`` and everything inside it: its models (Sequential, Residual) and layers."""
    yield model
    for _, child in getattr(model, "named_layers", list)():
        yield from every_part(child)
