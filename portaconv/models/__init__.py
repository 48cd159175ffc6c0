"""Models built from the layers: Sequential, Residual, an MLP, scanning MLPs written as CNNs,
a 1-d CNN classifier, and the ready-made networks the trainer builds by name
(:func:`build_model`).

>>> from portaconv.models import Sequential, Residual, MLP, CNN, build_model
"""

from ._model import Model
from .cnn import CNN
from .mlp import MLP
from .mlp_scan import CNN_DistributedScanningMLP, CNN_SimpleScanningMLP
from .residual import Residual
from .sequential import Sequential
from .zoo import MODELS, build_model

__all__ = [
    "CNN",
    "MLP",
    "CNN_DistributedScanningMLP",
    "CNN_SimpleScanningMLP",
    "MODELS",
    "Model",
    "Residual",
    "Sequential",
    "build_model",
]
