"""``portaconv export``: a checkpoint's model written as ONNX, safetensors or a PyTorch file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..models import build_model
from ._deps import require

FORMATS = ("onnx", "safetensors", "torch")


def export_checkpoint(checkpoint: str | os.PathLike, fmt: str, out: str | os.PathLike) -> dict:
    """Rebuild the model of a training checkpoint (as ``portaconv evaluate`` does) and write
    it to ``out`` in ``fmt``:

    - ``onnx``: :func:`~portaconv.interop.export_onnx`, checked with onnxruntime;
    - ``safetensors``: :func:`~portaconv.interop.save_safetensors` (portaconv's state names);
    - ``torch``: the :func:`~portaconv.interop.to_torch` module in evaluation mode, exported
      with ``torch.export`` (dynamic batch axis) and saved by ``torch.export.save``: load it
      with ``torch.export.load(path).module()``, no portaconv needed.

    The network takes inputs standardised as the run did: ``(x - mean) / std`` per channel
    with the checkpoint's normalisation, which the returned summary lists."""
    from ..train.rundir import checkpoint_errors, run_state

    if fmt not in FORMATS:
        raise ValueError(
            f"portaconv export: --format must be one of {', '.join(FORMATS)}, got {fmt!r}"
        )
    if fmt == "torch" and not os.fspath(out).endswith(".pt2"):
        raise ValueError(
            "portaconv export: --format torch writes a torch.export archive, whose name "
            f"torch.export.load wants to end in .pt2; got --out {os.fspath(out)}"
        )
    path = Path(checkpoint)
    state = run_state(path)
    meta = state["meta"]
    spec = meta["model"]
    model = build_model(spec["name"], spec["input_shape"], spec["classes"])
    with checkpoint_errors(path):
        try:
            model.load_state_dict(state["model"])
        except (ValueError, TypeError) as exc:
            raise ValueError(
                f"its weights are not those of the {spec['name']} its metadata names ({exc})"
            ) from exc
    model.eval()
    summary: dict[str, Any] = {
        "checkpoint": str(path),
        "format": fmt,
        "out": os.fspath(out),
        "model": spec["name"],
        "input_shape": list(spec["input_shape"]),
        "classes": spec["classes"],
        "normalisation": meta["normalisation"],
    }
    if fmt == "onnx":
        from ._onnx import export_onnx

        info = export_onnx(model, out, spec["input_shape"])
        summary.update(opset=info["opset"], operators=info["operators"])
    elif fmt == "safetensors":
        from ._safetensors import save_safetensors

        save_safetensors(model, out)
    else:
        summary["load_with"] = "torch.export.load(path).module()"
        _save_torch(model, out, spec["input_shape"])
    return summary


def _save_torch(model: Any, out: str | os.PathLike, input_shape: list[int]) -> None:
    torch = require("torch", "portaconv export --format torch")
    from ._torch import to_torch

    module = to_torch(model).eval()
    dtype = next(iter(module.parameters())).dtype
    example = torch.zeros((2, *input_shape), dtype=dtype)
    program = torch.export.export(
        module, (example,), dynamic_shapes=({0: torch.export.Dim("batch")},)
    )
    torch.export.save(program, os.fspath(out))
