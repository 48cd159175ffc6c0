"""Every layer of the handout, each with ``forward`` and an explicit ``backward``, and the
ones real training needs beside them (BatchNorm, Dropout, global average pooling).

>>> from portaconv.layers import Conv2d, MaxPool2d, Flatten, Linear, ReLU, CrossEntropyLoss
"""

from ._base import Layer
from .activation import GELU, Activation, Identity, LeakyReLU, ReLU, Sigmoid, Softmax, Tanh
from .conv import Conv1d, Conv1d_stride1, Conv2d, Conv2d_stride1
from .conv_transpose import ConvTranspose1d, ConvTranspose2d
from .dropout import Dropout, Dropout1d, Dropout2d
from .flatten import Flatten
from .global_pool import GlobalAvgPool1d, GlobalAvgPool2d
from .linear import Linear
from .loss import CrossEntropyLoss, MSELoss
from .normalization import BatchNorm1d, BatchNorm2d
from .pool import (
    MaxPool1d,
    MaxPool2d,
    MaxPool2d_stride1,
    MeanPool1d,
    MeanPool2d,
    MeanPool2d_stride1,
)
from .resampling import Downsample1d, Downsample2d, Upsample1d, Upsample2d

__all__ = [
    "GELU",
    "Activation",
    "BatchNorm1d",
    "BatchNorm2d",
    "Conv1d",
    "Conv1d_stride1",
    "Conv2d",
    "Conv2d_stride1",
    "ConvTranspose1d",
    "ConvTranspose2d",
    "CrossEntropyLoss",
    "Downsample1d",
    "Downsample2d",
    "Dropout",
    "Dropout1d",
    "Dropout2d",
    "Flatten",
    "GlobalAvgPool1d",
    "GlobalAvgPool2d",
    "Identity",
    "Layer",
    "LeakyReLU",
    "Linear",
    "MSELoss",
    "MaxPool1d",
    "MaxPool2d",
    "MaxPool2d_stride1",
    "MeanPool1d",
    "MeanPool2d",
    "MeanPool2d_stride1",
    "ReLU",
    "Sigmoid",
    "Softmax",
    "Tanh",
    "Upsample1d",
    "Upsample2d",
]
