"""Arrays that record an ONNX graph instead of computing (ndonnx, used by
``portaconv.interop.export_onnx``): what the portable functions do differently for them.

Such an array may have a size of None (the array API's "unknown": the batch axis of an
exported model), which the portable bodies allow for; and one of ndonnx's operations is
replaced here, for the time a trace takes, not for what the graph computes.
"""

from __future__ import annotations

from typing import Any


def is_graph_array(x: Any) -> bool:
    """Whether ``x`` is an ndonnx array (a node of a graph being recorded)."""
    return type(x).__module__.startswith("ndonnx")


def graph_matmul(a: Any, b: Any) -> Any:
    """``a @ b`` as one ONNX ``MatMul`` node. ndonnx's own matmul wraps every product in an
    ``If`` on the sizes (a guard against an onnxruntime failure on empty inputs) built as a
    sub-model of its own, which made tracing a network take most of its time; an exported
    model takes batches of at least one sample, so the plain node is emitted."""
    import ndonnx
    from spox.opset.ai.onnx import v21 as op

    a, b = ndonnx.asarray(a), ndonnx.asarray(b)
    return ndonnx.asarray(op.matmul(a.unwrap_spox(), b.unwrap_spox()))
