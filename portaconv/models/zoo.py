"""Ready-made networks, built by name for a given input shape and number of classes.

=============  ==============================================================================
``two-layer``  Linear -> ReLU -> Linear (the handout's two-layer network; Iris)
``mlp``        Flatten -> [Linear -> ReLU -> Dropout] x len(hidden) -> Linear
``lenet``      LeNet-5: 5x5 convs 6 and 16 channels, 2x2 max pooling, Linear 120 -> 84 -> classes
``cnn``        two blocks [3x3 conv -> BatchNorm2d -> ReLU] x convs_per_block -> 2x2 max pool,
               then Flatten -> Linear -> BatchNorm1d -> ReLU -> Dropout -> Linear
``resnet``     a small ResNet (the CIFAR ResNet-20 family, 6 x blocks + 2 layers): 3x3 conv
               stem, stages of residual blocks of widths (16, 32, 64), each stage after the
               first halving the image, global average pooling, Linear
``mobilenet``  a small MobileNetV2: 3x3 conv stem, inverted residual blocks (1x1 expansion,
               3x3 depthwise, 1x1 linear projection; BatchNorm, ReLU6), 1x1 conv head,
               global average pooling, Linear
=============  ==============================================================================

Every one is a :class:`~portaconv.models.Sequential`: ``forward`` gives logits (N, classes)
for a :class:`~portaconv.layers.CrossEntropyLoss`; the residual ones hold
:class:`~portaconv.models.Residual` blocks.

>>> net = build_model("cnn", input_shape=(1, 28, 28), num_classes=10)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from ..backend._windows import conv_out_size
from ..checks import check_int
from ..layers import (
    BatchNorm1d,
    BatchNorm2d,
    Conv2d,
    Dropout,
    Flatten,
    GlobalAvgPool2d,
    Linear,
    MaxPool2d,
    ReLU,
    ReLU6,
)
from .residual import Residual
from .sequential import Sequential


def two_layer(input_shape: Sequence[int], num_classes: int, hidden: int = 32) -> Sequential:
    """One hidden layer of ``hidden`` ReLU units."""
    features = math.prod(input_shape)
    head = [Flatten()] if len(input_shape) > 1 else []
    return Sequential(*head, Linear(features, hidden), ReLU(), Linear(hidden, num_classes))


def mlp(
    input_shape: Sequence[int],
    num_classes: int,
    hidden: Sequence[int] = (512, 256),
    dropout: float = 0.2,
) -> Sequential:
    """Fully connected layers of the ``hidden`` widths, ReLU and Dropout between them."""
    layers: list[Any] = [Flatten()] if len(input_shape) > 1 else []
    width = math.prod(input_shape)
    for units in hidden:
        layers += [Linear(width, units), ReLU()]
        if dropout > 0:
            layers.append(Dropout(dropout))
        width = units
    return Sequential(*layers, Linear(width, num_classes))


def lenet(input_shape: Sequence[int], num_classes: int) -> Sequential:
    """LeNet-5 with ReLU and max pooling; 28x28 input is padded by 2 as in the original."""
    channels, height, width = _image_shape("lenet", input_shape)
    padding = 2 if min(height, width) < 32 else 0
    size = [height, width]
    for kernel, pad in ((5, padding), (2, 0), (5, 0), (2, 0)):
        stride = 2 if kernel == 2 else 1
        if min(size) + 2 * pad < kernel:
            raise ValueError(
                f"build_model: lenet needs images of at least 28x28, got {height}x{width}; "
                "use --model cnn for small images"
            )
        size = [conv_out_size(s + 2 * pad, kernel, stride) for s in size]
    return Sequential(
        Conv2d(channels, 6, 5, padding=padding),
        ReLU(),
        MaxPool2d(2),
        Conv2d(6, 16, 5),
        ReLU(),
        MaxPool2d(2),
        Flatten(),
        Linear(16 * size[0] * size[1], 120),
        ReLU(),
        Linear(120, 84),
        ReLU(),
        Linear(84, num_classes),
    )


def cnn(
    input_shape: Sequence[int],
    num_classes: int,
    widths: Sequence[int] = (32, 64),
    convs_per_block: int = 1,
    hidden: int = 128,
    dropout: float = 0.3,
) -> Sequential:
    """Conv blocks of the given ``widths`` (each halves the image), then a hidden layer."""
    channels, height, width = _image_shape("cnn", input_shape)
    layers: list[Any] = []
    for out_channels in widths:
        if min(height, width) < 2:
            raise ValueError(
                f"build_model: cnn with {len(widths)} pooling blocks needs images of at least "
                f"{2 ** len(widths)}x{2 ** len(widths)}, got {input_shape[1]}x{input_shape[2]}"
            )
        for _ in range(convs_per_block):
            layers += [Conv2d(channels, out_channels, 3, padding=1), BatchNorm2d(out_channels)]
            layers.append(ReLU())
            channels = out_channels
        layers.append(MaxPool2d(2))
        height, width = height // 2, width // 2
    layers += [Flatten(), Linear(channels * height * width, hidden), BatchNorm1d(hidden), ReLU()]
    if dropout > 0:
        layers.append(Dropout(dropout))
    return Sequential(*layers, Linear(hidden, num_classes))


def resnet(
    input_shape: Sequence[int],
    num_classes: int,
    widths: Sequence[int] = (16, 32, 64),
    blocks: int | Sequence[int] = 1,
) -> Sequential:
    """A post-activation ResNet for small images (8x8 to 32x32): ``blocks`` residual blocks in
    each stage of ``widths`` (an int: that many in every stage; the default 1 is ResNet-8, 3 is
    ResNet-20).

    stem      3x3 conv (widths[0]) -> BatchNorm2d -> ReLU
    block     Residual(body, shortcut) -> ReLU, body = 3x3 conv (stride) -> BatchNorm2d ->
              ReLU -> 3x3 conv -> BatchNorm2d; shortcut the identity, or where the block
              changes the width or the size (the first block of every stage after the
              first: stride 2), a 1x1 conv of stride 2 -> BatchNorm2d
    head      GlobalAvgPool2d -> Linear(widths[-1], num_classes)

    Every convolution is followed by a BatchNorm, whose shift takes the place of a bias: the
    convolutions have none (``bias=False``), as in the original. Post-activation (the
    addition, then the ReLU) as in the original ResNet, whose CIFAR networks this follows:
    pre-activation pays off through the long identity paths of networks of a hundred layers
    and more, not at one to three blocks a stage; and here the projection shortcut sees the
    block's input as it is, so a block is exactly a ``Residual`` and a ReLU. Each stage after
    the first halves the image (3x3 conv, padding 1, stride 2: ceil(size / 2)); the last
    stage must still see at least 2x2.
    """
    channels, height, width = _image_shape("resnet", input_shape)
    widths = [check_int("build_model", "resnet widths", w) for w in widths]
    per_stage = [blocks] * len(widths) if not isinstance(blocks, Sequence) else list(blocks)
    if not widths or len(per_stage) != len(widths):
        raise ValueError(
            f"build_model: resnet needs one block count per stage and at least one stage, got "
            f"widths {tuple(widths)} and blocks {blocks!r}"
        )
    per_stage = [check_int("build_model", "resnet blocks", n) for n in per_stage]
    smallest = next(n for n in range(1, 2 ** len(widths) + 2) if _halved(n, len(widths)) >= 2)
    if _halved(min(height, width), len(widths)) < 2:
        raise ValueError(
            f"build_model: resnet with {len(widths)} stages needs images of at least "
            f"{smallest}x{smallest} (each stage after the first halves them, and the last "
            f"needs 2x2), got {height}x{width}"
        )
    layers: list[Any] = [
        Conv2d(channels, widths[0], 3, padding=1, bias=False),
        BatchNorm2d(widths[0]),
        ReLU(),
    ]
    channels = widths[0]
    for stage, (out_channels, count) in enumerate(zip(widths, per_stage)):
        for block in range(count):
            stride = 2 if stage > 0 and block == 0 else 1
            layers += [_basic_block(channels, out_channels, stride), ReLU()]
            channels = out_channels
    return Sequential(*layers, GlobalAvgPool2d(), Linear(channels, num_classes))


def _basic_block(in_channels: int, out_channels: int, stride: int) -> Residual:
    """Two 3x3 convs with BatchNorm (the first of ``stride``), and the shortcut that matches."""
    body = Sequential(
        Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
        BatchNorm2d(out_channels),
        ReLU(),
        Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
        BatchNorm2d(out_channels),
    )
    shortcut = None
    if stride != 1 or in_channels != out_channels:
        shortcut = Sequential(
            Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
            BatchNorm2d(out_channels),
        )
    return Residual(body, shortcut)


def _halved(size: int, stages: int) -> int:
    """The image size in the last of ``stages`` stages, each after the first halving it."""
    for _ in range(stages - 1):
        size = conv_out_size(size, 3, 2, 1)
    return size


def mobilenet(
    input_shape: Sequence[int],
    num_classes: int,
    widths: Sequence[int] = (16, 24, 32, 64),
    strides: Sequence[int] = (1, 2, 2, 1),
    blocks: int | Sequence[int] = (1, 2, 2, 1),
    expansion: int = 4,
    head: int = 128,
) -> Sequential:
    """A small MobileNetV2 (Sandler et al. 2018) for 8x8 to 32x32 images: stages of inverted
    residual blocks of ``widths``, ``blocks`` a stage (an int: that many in every stage),
    the first block of stage i of stride ``strides[i]``.

    stem      3x3 conv (widths[0]) -> BatchNorm2d -> ReLU6
    block     [1x1 conv (in x expansion) -> BatchNorm2d -> ReLU6] -> 3x3 depthwise conv
              (stride; groups = its channels) -> BatchNorm2d -> ReLU6 -> 1x1 conv (out) ->
              BatchNorm2d (linear: no activation after the projection); a ``Residual`` with
              the identity where the stride is 1 and the width stays; the first stage's
              blocks expand by 1, i.e. have no expansion conv, as in MobileNetV2
    head      1x1 conv (``head``) -> BatchNorm2d -> ReLU6 -> GlobalAvgPool2d -> Linear

    Sized for a 2-core CPU and small images, where MobileNetV2's ImageNet network is not:
    the stem keeps the image (stride 1, as CIFAR ports of it do), the widths start at 16
    and stop at 64 (the paper's 16 to 320, head 1280), the expansion is 4 (the paper's 6).
    Convolutions have no bias (each is followed by a BatchNorm). The last stage must still
    see at least 2x2.
    """
    channels, height, width = _image_shape("mobilenet", input_shape)
    widths = [check_int("build_model", "mobilenet widths", w) for w in widths]
    strides = [check_int("build_model", "mobilenet strides", s) for s in strides]
    per_stage = [blocks] * len(widths) if not isinstance(blocks, Sequence) else list(blocks)
    if not widths or not len(strides) == len(per_stage) == len(widths):
        raise ValueError(
            f"build_model: mobilenet needs one stride and one block count per stage and at "
            f"least one stage, got widths {tuple(widths)}, strides {tuple(strides)} and "
            f"blocks {blocks!r}"
        )
    per_stage = [check_int("build_model", "mobilenet blocks", n) for n in per_stage]
    expansion = check_int("build_model", "mobilenet expansion", expansion)
    head = check_int("build_model", "mobilenet head", head)

    def last_size(size: int) -> int:
        for stride in strides:
            size = conv_out_size(size, 3, stride, 1)
        return size

    if last_size(min(height, width)) < 2:
        smallest = next(n for n in range(1, math.prod(strides) * 2 + 2) if last_size(n) >= 2)
        raise ValueError(
            f"build_model: mobilenet with strides {tuple(strides)} needs images of at least "
            f"{smallest}x{smallest} (the last stage needs 2x2), got {height}x{width}"
        )
    layers: list[Any] = [
        Conv2d(channels, widths[0], 3, padding=1, bias=False),
        BatchNorm2d(widths[0]),
        ReLU6(),
    ]
    channels = widths[0]
    for stage, (out_channels, stride, count) in enumerate(zip(widths, strides, per_stage)):
        for block in range(count):
            factor = 1 if stage == 0 else expansion
            layers.append(
                _inverted_residual(channels, out_channels, stride if block == 0 else 1, factor)
            )
            channels = out_channels
    layers += [Conv2d(channels, head, 1, bias=False), BatchNorm2d(head), ReLU6()]
    return Sequential(*layers, GlobalAvgPool2d(), Linear(head, num_classes))


def _inverted_residual(in_channels: int, out_channels: int, stride: int, expansion: int) -> Any:
    """MobileNetV2's block: expand, filter each channel alone, project; residual where the
    input and the output have one shape."""
    hidden = in_channels * expansion
    layers: list[Any] = []
    if expansion != 1:
        layers += [Conv2d(in_channels, hidden, 1, bias=False), BatchNorm2d(hidden), ReLU6()]
    layers += [
        Conv2d(hidden, hidden, 3, stride=stride, padding=1, groups=hidden, bias=False),
        BatchNorm2d(hidden),
        ReLU6(),
        Conv2d(hidden, out_channels, 1, bias=False),
        BatchNorm2d(out_channels),
    ]
    body = Sequential(*layers)
    return Residual(body) if stride == 1 and in_channels == out_channels else body


MODELS: dict[str, Callable[..., Sequential]] = {
    "two-layer": two_layer,
    "mlp": mlp,
    "lenet": lenet,
    "cnn": cnn,
    "resnet": resnet,
    "mobilenet": mobilenet,
}


def build_model(
    name: str, input_shape: Sequence[int], num_classes: int, **options: Any
) -> Sequential:
    """The network ``name`` (see :data:`MODELS`) for inputs of ``input_shape`` (one sample's
    shape, e.g. (1, 28, 28)) and ``num_classes`` outputs; ``options`` go to its builder."""
    if name not in MODELS:
        raise ValueError(f"build_model: unknown model {name!r}; choose one of {sorted(MODELS)}")
    shape = tuple(check_int("build_model", "input_shape", n) for n in input_shape)
    check_int("build_model", "num_classes", num_classes, minimum=2)
    return MODELS[name](shape, num_classes, **options)


def _image_shape(model: str, input_shape: Sequence[int]) -> tuple[int, int, int]:
    if len(input_shape) != 3:
        raise ValueError(
            f"build_model: {model} needs image input (C, H, W), got input shape "
            f"{tuple(input_shape)}; use --model mlp or two-layer for feature vectors"
        )
    return tuple(input_shape)  # type: ignore[return-value]
