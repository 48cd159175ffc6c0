"""A model's evaluation-mode forward pass, traced through ndonnx into an ONNX model.

The layers run as they are, on ndonnx arrays, which record every array-API call as ONNX
nodes instead of computing it: the graph is the forward pass itself, with no second
description of the network. The parameters and buffers enter the trace as named arguments
and leave it as the graph's initializers, under their ``state_dict`` names (``"0.W"``).
The input's batch axis is the symbolic dimension ``N``: the graph takes any batch size.
"""

from __future__ import annotations

import collections
import contextlib
import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from ..backend import fast_paths, to_numpy
from ..checks import check_int
from ._deps import require
from ._walk import every_part, leaf_layers, state_names

#: The names of the exported graph's input and output.
INPUT_NAME, OUTPUT_NAME = "input", "output"


def export_onnx(
    model: Any,
    path: str | os.PathLike,
    input_shape: Sequence[int],
    *,
    check: bool = True,
) -> dict[str, Any]:
    """Write ``model``'s evaluation-mode forward pass to ``path`` as an ONNX model.

    ``input_shape`` is one sample's shape (``(1, 28, 28)``, ``(4,)``): the graph's input
    ``"input"`` is ``(N, *input_shape)`` with ``N`` dynamic, of the model's floating dtype;
    its output is ``"output"``. The model runs the trace itself, in evaluation mode, and
    gets its mode and parameters back (what its layers keep for a backward pass is that of
    the last forward it ran: run forward again before a backward). With ``check`` (the
    default) onnxruntime runs the file on batches of 1 and 3 random samples, and a
    ``ValueError`` is raised unless it agrees with the model's own evaluation-mode outputs
    (to 1e-4 of their largest magnitude in float32, 1e-9 in float64).

    Returns ``{"path", "opset", "operators", "nodes", "initializers"}``: the ONNX opset
    (the default domain's version) and how many nodes of each operator the graph holds.
    """
    ndx = require("ndonnx", "export_onnx")
    onnx = require("onnx", "export_onnx")
    from onnx import numpy_helper

    shape = _input_shape(input_shape)
    if not callable(getattr(model, "forward", None)) or not callable(
        getattr(model, "state_dict", None)
    ):
        raise TypeError(
            f"export_onnx: model must be a portaconv model or layer, got {type(model).__name__}"
        )
    layers = list(leaf_layers(model))
    values = {
        prefix + name: np.asarray(to_numpy(getattr(layer, name)))
        for prefix, layer in layers
        for name in state_names(layer)
    }
    if set(values) != set(model.state_dict()):  # a model whose named_layers miss a layer
        raise TypeError(
            f"export_onnx: {type(model).__name__} does not list all its layers in "
            "named_layers(), so its parameters cannot be named"
        )
    arguments = {
        name: ndx.argument(shape=value.shape, dtype=ndx.from_numpy_dtype(value.dtype))
        for name, value in values.items()
    }
    dtype = _float_dtype(values)
    x = ndx.argument(shape=("N", *shape), dtype=ndx.from_numpy_dtype(dtype))
    # The model itself runs the trace, its parameters swapped for the graph's arguments and
    # in evaluation mode, then gets both back (a copy would have to copy what its layers
    # keep of their last forward, array namespaces included).
    with _evaluation_mode(model), _swapped(layers, arguments), _constants_known():
        with fast_paths("never"):  # the portable code alone: the fast half computes on NumPy
            try:
                y = model.forward(x)
            except (ValueError, TypeError) as exc:
                raise ValueError(
                    f"export_onnx: tracing the forward pass on inputs of shape (N, "
                    f"{', '.join(map(str, shape))}) failed: {exc}"
                ) from exc
    proto = ndx.build({INPUT_NAME: x, **arguments}, {OUTPUT_NAME: y})
    graph = proto.graph
    kept = [info for info in graph.input if info.name not in values]
    initializers = [
        numpy_helper.from_array(values[i.name], i.name) for i in graph.input if i.name in values
    ]
    del graph.input[:]
    graph.input.extend(kept)
    graph.initializer.extend(initializers)
    proto.producer_name = "portaconv"
    onnx.checker.check_model(proto)
    onnx.save(proto, os.fspath(path))
    if check:
        _check(model, os.fspath(path), shape, dtype)
    operators = collections.Counter(node.op_type for node in graph.node)
    return {
        "path": os.fspath(path),
        "opset": next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")),
        "operators": dict(sorted(operators.items())),
        "nodes": len(graph.node),
        "initializers": len(initializers),
    }


@contextlib.contextmanager
def _constants_known() -> Iterator[None]:
    """Inside, spox takes the value of a ``Constant`` node from the node itself.

    spox works out the value of every node whose inputs are known (ndonnx needs them for
    shapes) by running the node alone in an onnxruntime session; for the thousands of
    ``Constant`` nodes a trace creates (slice bounds, shapes) that session only returns the
    value the node holds, and it cost most of a trace's time. This replaces spox's private
    hook for that one operator, for the time of the trace; where a spox release has no
    such hook, nothing is replaced and the trace is only slower."""
    try:
        from spox._value_prop import PropValue
        from spox.opset.ai.onnx.v21 import _Constant
    except ImportError:
        yield
        return
    general = _Constant.propagate_values

    def held_value(node: Any, input_prop_values: Any) -> Any:
        tensor, output = node.attrs.value, node.outputs.output
        if tensor is None or output.type is None:  # value_int, value_floats, ...: as before
            return general(node, input_prop_values)
        return {"output": PropValue.from_ref_value(output.type, tensor.value)}

    _Constant.propagate_values = held_value
    try:
        yield
    finally:
        _Constant.propagate_values = general


@contextlib.contextmanager
def _evaluation_mode(model: Any) -> Iterator[None]:
    """``model`` in evaluation mode inside, and every part of it back in its mode after."""
    modes = [(part, getattr(part, "training", None)) for part in every_part(model)]
    model.eval()
    try:
        yield
    finally:
        for part, mode in reversed(modes):
            if mode is not None:
                part.training = mode


@contextlib.contextmanager
def _swapped(layers: list[tuple[str, Any]], replacements: dict[str, Any]) -> Iterator[None]:
    """Each layer's state ``prefix + name`` replaced by ``replacements[...]`` inside."""
    kept = []
    try:
        for prefix, layer in layers:
            for name in state_names(layer):
                kept.append((layer, name, getattr(layer, name)))
                setattr(layer, name, replacements[prefix + name])
        yield
    finally:
        for layer, name, value in kept:
            setattr(layer, name, value)


def _input_shape(input_shape: Any) -> tuple[int, ...]:
    if isinstance(input_shape, (str, bytes)) or not isinstance(input_shape, Sequence):
        raise TypeError(
            "export_onnx: input_shape must be one sample's shape, a sequence of positive "
            f"integers such as (1, 28, 28), got {input_shape!r}"
        )
    return tuple(check_int("export_onnx", "input_shape", n) for n in input_shape)


def _float_dtype(values: dict[str, np.ndarray]) -> np.dtype:
    """The dtype the graph computes in: the parameters' (float32 without any)."""
    dtypes = {v.dtype for v in values.values() if v.dtype.kind == "f"}
    if len(dtypes) > 1:
        raise ValueError(
            f"export_onnx: the model's parameters have several dtypes "
            f"{sorted(map(str, dtypes))}; cast them to one"
        )
    return dtypes.pop() if dtypes else np.dtype(np.float32)


def _check(model: Any, path: str, shape: tuple[int, ...], dtype: np.dtype) -> None:
    """Run the file with onnxruntime and compare with ``model``'s evaluation-mode forward."""
    ort = require("onnxruntime", "export_onnx(check=True)")
    from array_api_compat import array_namespace, device

    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    state = list(model.state_dict().values())
    rtol = 1e-4 if dtype == np.float32 else 1e-9
    rng = np.random.default_rng(0)
    for batch in (1, 3):
        x = rng.standard_normal((batch, *shape)).astype(dtype)
        with _evaluation_mode(model):
            if state:
                xp = array_namespace(state[0])
                expected = model.forward(xp.asarray(x, device=device(state[0])))
            else:
                expected = model.forward(x)
        expected = np.asarray(to_numpy(expected))
        (got,) = session.run([OUTPUT_NAME], {INPUT_NAME: x})
        scale = max(float(np.max(np.abs(expected))), 1.0)
        error = float(np.max(np.abs(got - expected))) if got.shape == expected.shape else np.inf
        if error > rtol * scale:
            raise ValueError(
                f"export_onnx: onnxruntime's outputs for a batch of {batch} differ from the "
                f"model's by {error:.3g} (allowed {rtol * scale:.3g}; shapes "
                f"{got.shape} and {expected.shape})"
            )
