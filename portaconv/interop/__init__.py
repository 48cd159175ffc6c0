"""portaconv models in other tools' formats: PyTorch modules, safetensors files, ONNX.

==========================  ================================================================
``to_torch``                the same network as plain ``torch.nn`` modules, same state
``from_torch``              a ``torch.nn`` network of the layers portaconv has, as portaconv
``save_safetensors``        parameters and buffers in a safetensors file, by state name
``load_safetensors``        and back, names and shapes checked
``export_onnx``             the evaluation-mode forward traced (ndonnx) into an ONNX model
                            with a dynamic batch axis, checked with onnxruntime
``torch_name``              a state name as PyTorch spells it (``0.W`` -> ``0.weight``)
``MissingDependencyError``  an optional package is missing (names the extra to install)
==========================  ================================================================

The packages are optional: ``pip install 'portaconv[torch]'``, ``'portaconv[safetensors]'``,
``'portaconv[onnx]'`` (ndonnx, onnx, onnxruntime), or every one with ``'portaconv[interop]'``;
each is imported when its function is called.
"""

from ._deps import MissingDependencyError
from ._onnx import export_onnx
from ._safetensors import load_safetensors, save_safetensors
from ._torch import from_torch, to_torch, torch_name

__all__ = [
    "MissingDependencyError",
    "export_onnx",
    "from_torch",
    "load_safetensors",
    "save_safetensors",
    "to_torch",
    "torch_name",
]
