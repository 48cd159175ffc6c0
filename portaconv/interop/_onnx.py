"""A model's evaluation-mode forward pass, traced through ndonnx into an ONNX model.

The layers run as they are, on ndonnx arrays, which record every array-API call as ONNX
nodes instead of computing it: the graph is the forward pass itself, with no second
description of the network. The parameters and buffers enter the trace as named arguments
and leave it as the graph's initializers, under their ``state_dict`` names (``"0.W"``).
The input's batch axis is the symbolic dimension ``N``: the graph takes any batch size.
"""

from __future__ import annotations

import collections
import copy
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..backend import fast_paths, to_numpy
from ..checks import check_int
from ._deps import require
from ._walk import leaf_layers, state_names

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
    its output is ``"output"``. The model itself is not changed (a copy is traced in
    evaluation mode). With ``check`` (the default) onnxruntime runs the file on batches of
    1 and 3 random samples, and a ``ValueError`` is raised unless it agrees with the
    model's own evaluation-mode outputs (relative 1e-4 in float32, 1e-9 in float64).

    Returns ``{"path", "opset", "operators", "nodes", "initializers"}``: the ONNX opset
    (the default domain's version) and how many nodes of each operator the graph holds.
    """
    ndx = require("ndonnx", "export_onnx")
    onnx = require("onnx", "export_onnx")
    from onnx import numpy_helper

    shape = _input_shape(input_shape)
    traced = copy.deepcopy(model)
    if not callable(getattr(traced, "forward", None)) or not callable(
        getattr(traced, "state_dict", None)
    ):
        raise TypeError(
            f"export_onnx: model must be a portaconv model or layer, got {type(model).__name__}"
        )
    traced.eval()
    values: dict[str, np.ndarray] = {}
    arguments: dict[str, Any] = {}
    for prefix, layer in leaf_layers(traced):
        for name in state_names(layer):
            value = np.asarray(to_numpy(getattr(layer, name)))
            values[prefix + name] = value
            arguments[prefix + name] = ndx.argument(
                shape=value.shape, dtype=ndx.from_numpy_dtype(value.dtype)
            )
            setattr(layer, name, arguments[prefix + name])
    if set(values) != set(model.state_dict()):  # a model whose named_layers miss a layer
        raise TypeError(
            f"export_onnx: {type(model).__name__} does not list all its layers in "
            "named_layers(), so its parameters cannot be named"
        )
    dtype = _float_dtype(values)
    x = ndx.argument(shape=("N", *shape), dtype=ndx.from_numpy_dtype(dtype))
    with fast_paths("never"):  # the portable code alone: the fast half computes on NumPy
        try:
            y = traced.forward(x)
        except (ValueError, TypeError) as exc:
            raise ValueError(
                f"export_onnx: the model does not take inputs of shape (N, "
                f"{', '.join(map(str, shape))}) ({exc})"
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
    reference = copy.deepcopy(model).eval()
    state = list(model.state_dict().values())
    rtol = 1e-4 if dtype == np.float32 else 1e-9
    rng = np.random.default_rng(0)
    for batch in (1, 3):
        x = rng.standard_normal((batch, *shape)).astype(dtype)
        if state:
            xp = array_namespace(state[0])
            expected = reference.forward(xp.asarray(x, device=device(state[0])))
        else:
            expected = reference.forward(x)
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
