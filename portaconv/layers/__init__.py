"""Every layer of the handout, each with ``forward`` and an explicit ``backward``, and the
ones real training needs beside them (BatchNorm, LayerNorm, GroupNorm, Dropout, average and
adaptive average pooling, global average pooling, SiLU, ReLU6, Hardswish).

>>> from portaconv.layers import Conv2d, MaxPool2d, Flatten, Linear, ReLU, CrossEntropyLoss
"""

from ._base import Layer
from .activation import (
    GELU,
    Activation,
    Hardswish,
    Identity,
    LeakyReLU,
    ReLU,
    ReLU6,
    Sigmoid,
    SiLU,
    Softmax,
    Tanh,
)
from .adaptive_pool import AdaptiveAvgPool1d, AdaptiveAvgPool2d
from .conv import Conv1d, Conv1d_stride1, Conv2d, Conv2d_stride1
from .conv_transpose import ConvTranspose1d, ConvTranspose2d
from .dropout import Dropout, Dropout1d, Dropout2d
from .flatten import Flatten
from .global_pool import GlobalAvgPool1d, GlobalAvgPool2d
from .linear import Linear
from .loss import CrossEntropyLoss, MSELoss
from .norm_groups import GroupNorm, LayerNorm
from .normalization import BatchNorm1d, BatchNorm2d
from .pool import (
    AvgPool1d,
    AvgPool2d,
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
    "AdaptiveAvgPool1d",
    "AdaptiveAvgPool2d",
    "AvgPool1d",
    "AvgPool2d",
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
    "GroupNorm",
    "Hardswish",
    "Identity",
    "Layer",
    "LayerNorm",
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
    "ReLU6",
    "SiLU",
    "Sigmoid",
    "Softmax",
    "Tanh",
    "Upsample1d",
    "Upsample2d",
]
