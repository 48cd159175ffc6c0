"""Models built from the layers: Sequential, an MLP, scanning MLPs written as CNNs, a 1-d CNN
classifier, and the ready-made networks the trainer builds by name (:func:`build_model`).

>>> from portaconv.models import Sequential, MLP, CNN, build_model
"""

from ._model import Model
from .cnn import CNN
from .mlp import MLP
from .mlp_scan import CNN_DistributedScanningMLP, CNN_SimpleScanningMLP
from .sequential import Sequential
from .zoo import MODELS, build_model

__all__ = [
    "CNN",
    "MLP",
    "CNN_DistributedScanningMLP",
    "CNN_SimpleScanningMLP",
    "MODELS",
    "Model",
    "Sequential",
    "build_model",
]
