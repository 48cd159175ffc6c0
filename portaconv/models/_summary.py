"""A model's summary: its layers as a table, with output shapes and parameter counts.

:func:`summary_table` is what :meth:`Model.summary <portaconv.models.Model.summary>` returns.
Output shapes come from one forward pass of a single input of zeros, recorded as each layer
runs (as torchinfo's hooks do), so a layer of any model, nested ones included, shows the
shape it really produced; rows follow the order in which the layers ran.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from array_api_compat import array_namespace, device

from ..backend import fast_paths
from ..backend._config import get_backend
from ..checks import check_int

# -------------------------------------------------------------------------- the layer tree


def walk(model: Any, prefix: str = "", depth: int = 0) -> Iterator[tuple[str, int, Any]]:
    """``(dotted name, depth, layer)`` of every layer under ``model``, parents before their
    children (the order of :meth:`Model.named_layers`, recursively); ``model`` itself is not
    listed."""
    for name, layer in model.named_layers():
        full = f"{prefix}{name}"
        yield full, depth, layer
        if callable(getattr(layer, "named_layers", None)):
            yield from walk(layer, full + ".", depth + 1)


def parameter_count(layer: Any) -> int:
    """The number of values in ``layer``'s parameters (a model's: all of its layers')."""
    parameters = getattr(layer, "parameters", None)
    if not callable(parameters):
        return 0
    return sum(_size(value) for value in parameters().values())


def _size(x: Any) -> int:
    count = 1
    for n in x.shape:
        count *= int(n)
    return count


def training_modes(model: Any) -> list[tuple[Any, bool]]:
    """``(layer, its training flag)`` for the model and every layer under it that has
    ``train``, parents first: :func:`restore_modes` sets them back in this order, so a
    layer whose mode differed from its parent's (one BatchNorm frozen in eval mode) gets
    its own back after the parent's ``train`` has set every child."""
    modes = [(model, bool(model.training))]
    for _, _, layer in walk(model):
        if callable(getattr(layer, "train", None)) and hasattr(layer, "training"):
            modes.append((layer, bool(layer.training)))
    return modes


def restore_modes(modes: list[tuple[Any, bool]]) -> None:
    for layer, mode in modes:
        layer.train(mode)


# -------------------------------------------------------------------------------- the table


def summary_table(model: Any, input_shape: Any = None) -> str:
    """The table :meth:`Model.summary` returns; see there."""
    owner = f"{model.name}.summary"
    rows: list[tuple[str, int, Any, str | None]]
    if input_shape is None:
        rows = [(name, depth, layer, None) for name, depth, layer in walk(model)]
        shown_input = None
    else:
        shape = _input_shape(owner, input_shape)
        rows = _run_and_record(model, owner, shape)
        shown_input = _shape_text((1, *shape))
    table = [("name", "layer", "output shape", "parameters")]
    for name, depth, layer, out_shape in rows:
        table.append(
            ("  " * depth + name, _describe(layer), out_shape or "-", f"{parameter_count(layer):,}")
        )
    if shown_input is None:  # no output shapes to show
        table = [(name, kind, count) for name, kind, _, count in table]
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    lines = []
    for row in table:
        cells = [cell.ljust(width) for cell, width in zip(row[:-1], widths)]
        lines.append("  ".join([*cells, row[-1].rjust(widths[-1])]).rstrip())
    lines.insert(1, "-" * len(lines[0]))
    total = parameter_count(model)
    head = f"{model.name}" + ("" if shown_input is None else f", input {shown_input}")
    return "\n".join([head, *lines, "-" * len(lines[0]), f"total: {total:,} parameters"])


def _input_shape(owner: str, input_shape: Any) -> tuple[int, ...]:
    if isinstance(input_shape, int) and not isinstance(input_shape, bool):
        input_shape = (input_shape,)
    if isinstance(input_shape, (str, bytes)) or not hasattr(input_shape, "__iter__"):
        raise TypeError(
            f"{owner}: input_shape must be the shape of one input without the batch axis, "
            f"e.g. (1, 28, 28), got {type(input_shape).__name__}"
        )
    shape = tuple(check_int(owner, f"input_shape[{i}]", n) for i, n in enumerate(input_shape))
    if not shape:
        raise ValueError(f"{owner}: input_shape must have at least one entry, got ()")
    return shape


def _describe(layer: Any) -> str:
    """A layer's one-line repr (``Conv2d(1, 32, kernel_size=3, ...)``); a container's name."""
    text = repr(layer)
    return type(layer).__name__ if "\n" in text else text


def _shape_text(shape: Any) -> str:
    """``(N, 32, 8, 8)``: the batch axis of one input shown as N."""
    dims = ["N", *(str(int(n)) for n in shape[1:])]
    return "(" + ", ".join(dims) + (",)" if len(dims) == 1 else ")")


def _zeros(model: Any, shape: tuple[int, ...]) -> Any:
    """One input of zeros, on the library, device and dtype of the model's parameters."""
    for value in model.parameters().values():
        xp = array_namespace(value)
        return xp.zeros((1, *shape), dtype=value.dtype, device=device(value))
    backend = get_backend()  # a model without parameters runs on the active backend
    return backend.xp.zeros((1, *shape), dtype=backend.dtype, device=backend.device)


def _run_and_record(
    model: Any, owner: str, shape: tuple[int, ...]
) -> list[tuple[str, int, Any, str | None]]:
    """Run ``model`` on zeros in evaluation mode with every layer's ``forward`` wrapped to
    note its output's shape; every wrapper and every mode is undone before returning.

    The reference half runs (``fast_paths("never")``): a fused step of the fast half would
    run several layers without calling their ``forward``."""
    names: dict[int, tuple[str, int, Any]] = {}
    for name, depth, layer in walk(model):
        names.setdefault(id(layer), (name, depth, layer))
    ran: list[tuple[str, int, Any, str | None]] = []

    def recording(layer: Any, forward: Any) -> Any:
        name, depth, _ = names[id(layer)]

        def forward_and_note(*args: Any) -> Any:
            ran.append((name, depth, layer, None))
            row = len(ran) - 1
            Z = forward(*args)
            ran[row] = (name, depth, layer, _shape_text(Z.shape))
            return Z

        return forward_and_note

    wrapped = []
    modes = training_modes(model)
    try:
        for _, _, layer in names.values():
            if "forward" in vars(layer):  # an instance's own forward: leave it alone
                continue
            layer.forward = recording(layer, layer.forward)
            wrapped.append(layer)
        model.eval()
        with fast_paths("never"):
            model.forward(_zeros(model, shape))
    except (ValueError, TypeError) as exc:
        kind = TypeError if isinstance(exc, TypeError) else ValueError
        raise kind(
            f"{owner}: the model cannot run an input of shape {_shape_text((1, *shape))}: {exc}"
        ) from exc
    finally:
        for layer in wrapped:
            del layer.forward
        restore_modes(modes)
    seen = {id(layer) for _, _, layer, _ in ran}
    # layers the forward pass never called (none in portaconv's models) keep their place
    # at the end, without a shape
    ran += [(n, d, layer, None) for n, d, layer in names.values() if id(layer) not in seen]
    return ran
