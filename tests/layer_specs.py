"""One table of layer specifications: every per-layer test draws its cases from here.

A row (:class:`LayerSpec`) is one configuration of one layer: how to build it (with init
functions where it has parameters), its PyTorch twin, its parameters and their shapes, its
integer hyper-parameters, a valid input, and the ways that input can be wrong. The
conformance tests (test_layers.py), the error tests (test_errors.py), the backend tests
(test_backend.py) and the mixed-dtype tests (test_handout.py) read it, so adding a layer is
adding its rows to ``SPECS`` (and, at most, a torch twin below).

Every row gets the per-row checks: forward and backward against its twin, finite
differences, a strided input, bad inputs and bad gradients. The first row of each class is
its reference configuration: the checks made once per class (bad integer hyper-parameters,
init functions, default initialisation, inputs from another library or device) build that
one, so it spells out every integer hyper-parameter (checked when this module loads).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

import portaconv.layers as L

from .helpers import sh


@dataclass(frozen=True)
class BadInput:
    """A forward input of ``shape`` that the layer refuses with ``exc``; ``pattern`` is the
    message's regex after ``"Name: "``. ``marks``: e.g. an ``xfail(strict=True)`` that keeps
    a gap found in the library, its reason saying what happens and what should."""

    id: str
    shape: tuple[int, ...]
    exc: type[Exception]
    pattern: str
    marks: tuple[Any, ...] = ()


@dataclass(frozen=True)
class BadHyper:
    """Constructor arguments (replacing the row's own) that the layer refuses with ``exc``;
    ``pattern`` is the message's regex after ``"Name: "``."""

    id: str
    kwargs: dict[str, Any]
    exc: type[Exception]
    pattern: str


@dataclass(frozen=True)
class LayerSpec:
    """One configuration of one layer."""

    id: str
    cls: type
    in_shape: tuple[int, ...]  # a valid input
    layout: str  # the input's layout as the messages print it, e.g. "(N, C_in, W_in)"
    # (A, **params) -> Z in float64 torch; None where no deterministic twin exists (Dropout:
    # its mask is checked in test_norm_dropout.py)
    torch_fn: Callable[..., torch.Tensor] | None
    # integer hyper-parameters and their values: positive integers (padding: >= 0); the
    # integer hyper-parameters tests replace each with bad values
    hyper: dict[str, int] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)  # the other constructor arguments
    params: dict[str, tuple[int, ...]] = field(default_factory=dict)  # name -> shape
    init_fns: bool = False  # W and b come from weight_init_fn / bias_init_fn (default: random)
    ranks: tuple[int, ...] = ()  # the ranks forward accepts, where it checks the rank
    arg: str = "A"  # forward's argument, as the messages name it
    grad: str = "dLdZ"  # backward's argument
    kink: float | None = None  # redraw inputs closer than this to a kink (ReLU at 0, max ties)
    bad_inputs: tuple[BadInput, ...] = ()  # beyond the generic ones (not an array, rank, dtype)
    bad_hyper: tuple[BadHyper, ...] = ()  # beyond the integer ones, listed on one row per class

    @property
    def name(self) -> str:
        return self.cls.__name__

    def make(self, **init_fns: Any) -> Any:
        """The layer; ``weight_init_fn`` / ``bias_init_fn`` go to layers with init_fns."""
        return self.cls(**self.hyper, **self.options, **init_fns)


# ----------------------------------------------------------------------- torch twins


def conv_twin(nd: int, stride: int = 1, padding: int = 0) -> Callable[..., torch.Tensor]:
    conv = F.conv1d if nd == 1 else F.conv2d
    return lambda A, W, b: conv(A, W, b, stride=stride, padding=padding)


def conv_transpose_twin(nd: int, kernel_size: int, factor: int) -> Callable[..., torch.Tensor]:
    """The documented conversion: flip in space, swap channel axes, stride k, padding K-1."""
    conv_t = F.conv_transpose1d if nd == 1 else F.conv_transpose2d
    spatial = tuple(range(2, nd + 2))
    return lambda A, W, b: conv_t(
        A, W.flip(spatial).transpose(0, 1), b, stride=factor, padding=kernel_size - 1
    )


def pool_twin(nd: int, is_max: bool, kernel, stride, padding=0):
    fn = {
        (1, True): F.max_pool1d,
        (2, True): F.max_pool2d,
        (1, False): F.avg_pool1d,
        (2, False): F.avg_pool2d,
    }[nd, is_max]
    return lambda A: fn(A, kernel, stride, padding)  # stride None: the kernel, as portaconv's


def upsample_twin(nd: int, factor: int) -> Callable[..., torch.Tensor]:
    conv_t = F.conv_transpose1d if nd == 1 else F.conv_transpose2d

    def torch_fn(A):  # zero insertion == transposed convolution with a unit kernel, stride k
        N, C = A.shape[:2]
        one = torch.ones((1, 1) + (1,) * nd, dtype=A.dtype)
        Z = conv_t(A.reshape(N * C, 1, *A.shape[2:]), one, stride=factor)
        return Z.reshape(N, C, *Z.shape[2:])

    return torch_fn


def downsample_twin(nd: int, factor: int) -> Callable[..., torch.Tensor]:
    pool = F.avg_pool1d if nd == 1 else F.avg_pool2d  # a 1-wide window every k: the k-th samples
    return lambda A: pool(A, 1, factor)


def linear_twin(A, W, b):
    return F.linear(A, W, b)


def batch_norm_twin(A, BW, Bb):
    """Training mode: the batch's own statistics."""
    return F.batch_norm(A, None, None, BW, Bb, training=True, eps=1e-5)


def global_avg_pool_twin(nd: int) -> Callable[..., torch.Tensor]:
    pool = F.adaptive_avg_pool1d if nd == 1 else F.adaptive_avg_pool2d
    return lambda A: pool(A, 1).flatten(1)


# ------------------------------------------------------------------------ row builders


def _spatial(size, nd):
    return (size,) * nd if isinstance(size, int) else tuple(size)


def _image_layout(nd: int, channels: str) -> str:
    return f"(N, {channels}, W_in)" if nd == 1 else f"(N, {channels}, H_in, W_in)"


def conv(nd, cin, cout, size, k, stride=1, padding=0, n=2, stride1=False, bad_inputs=()):
    """Conv1d / Conv2d (``stride1``: Conv1d_stride1 / Conv2d_stride1) on ``size``."""
    cls = {
        (1, False): L.Conv1d,
        (2, False): L.Conv2d,
        (1, True): L.Conv1d_stride1,
        (2, True): L.Conv2d_stride1,
    }[nd, stride1]
    spatial = _spatial(size, nd)
    hyper = dict(in_channels=cin, out_channels=cout, kernel_size=k)
    if not stride1:  # dilation and groups: their bad values checked on the reference rows
        hyper.update(stride=stride, padding=padding, dilation=1, groups=1)
    return LayerSpec(
        f"{cls.__name__}-c{cin}to{cout}-in{spatial}-k{k}-s{stride}-p{padding}-n{n}",
        cls,
        (n, cin, *spatial),
        _image_layout(nd, "C_in"),
        conv_twin(nd, stride, padding),
        hyper=hyper,
        params={"W": (cout, cin, *(k,) * nd), "b": (cout,)},
        init_fns=True,
        ranks=(nd + 2,),
        bad_inputs=tuple(bad_inputs),
    )


def conv_transpose(nd, cin, cout, size, k, factor, n=2, bad_inputs=()):
    cls = L.ConvTranspose1d if nd == 1 else L.ConvTranspose2d
    return LayerSpec(
        f"{cls.__name__}-c{cin}to{cout}-in{size}-k{k}-up{factor}",
        cls,
        (n, cin, *_spatial(size, nd)),
        _image_layout(nd, "C_in"),
        conv_transpose_twin(nd, k, factor),
        hyper=dict(in_channels=cin, out_channels=cout, kernel_size=k, upsampling_factor=factor),
        params={"W": (cout, cin, *(k,) * nd), "b": (cout,)},
        init_fns=True,
        ranks=(nd + 2,),
        bad_inputs=tuple(bad_inputs),
    )


def pool(cls, nd, size, kernel, stride, n=2, c=3, bad_inputs=(), padding=0):
    """A max or mean pool; ``stride=None`` leaves the layer's default (the kernel)."""
    is_max = "Max" in cls.__name__
    spatial = _spatial(size, nd)
    hyper = {"kernel": kernel}
    if cls not in (L.MaxPool2d_stride1, L.MeanPool2d_stride1):
        hyper["padding"] = padding
        if stride is not None:
            hyper["stride"] = stride
    return LayerSpec(
        f"{cls.__name__}-in{spatial}-k{kernel}-s{stride}"
        + (f"-p{padding}" if padding else "")
        + (f"-c{c}" if c != 3 else ""),
        cls,
        (n, c, *spatial),
        _image_layout(nd, "C"),
        pool_twin(nd, is_max, kernel, stride, padding),
        hyper=hyper,
        ranks=(nd + 2,),
        kink=1e-3 if is_max else None,  # ties between window elements are tested on their own
        bad_inputs=tuple(bad_inputs),
    )


def upsample(nd, factor, size, c=3, bad_inputs=()):
    cls = L.Upsample1d if nd == 1 else L.Upsample2d
    return LayerSpec(
        f"{cls.__name__}-k{factor}-in{size}" + (f"-c{c}" if c != 3 else ""),
        cls,
        (2, c, *_spatial(size, nd)),
        _image_layout(nd, "C"),
        upsample_twin(nd, factor),
        hyper={"upsampling_factor": factor},
        ranks=(nd + 2,),
        bad_inputs=tuple(bad_inputs),
    )


def downsample(nd, factor, size, c=3):
    cls = L.Downsample1d if nd == 1 else L.Downsample2d
    return LayerSpec(
        f"{cls.__name__}-k{factor}-in{size}" + (f"-c{c}" if c != 3 else ""),
        cls,
        (2, c, *_spatial(size, nd)),
        _image_layout(nd, "C"),
        downsample_twin(nd, factor),
        hyper={"downsampling_factor": factor},
        ranks=(nd + 2,),
    )


def linear(id, in_features, out_features, in_shape, bad_inputs=()):
    return LayerSpec(
        id,
        L.Linear,
        in_shape,
        "(N, in_features)",
        linear_twin,
        hyper=dict(in_features=in_features, out_features=out_features),
        params={"W": (out_features, in_features), "b": (out_features,)},
        init_fns=True,
        bad_inputs=tuple(bad_inputs),
    )


def flatten(id, in_shape, bad_inputs=()):
    N = in_shape[0]
    return LayerSpec(
        id,
        L.Flatten,
        in_shape,
        "(N, ...)",
        lambda A: A.reshape(N, -1),
        bad_inputs=tuple(bad_inputs),
    )


def activation(cls, fn, kink=None, shape=(4, 7), bad_inputs=(), bad_hyper=(), **options):
    return LayerSpec(
        f"{cls.__name__}{options or ''}-{shape}",
        cls,
        shape,
        "(N, ...)",
        lambda A: fn(A),
        options=options,
        arg="Z",
        grad="dLdA",
        kink=kink,
        bad_inputs=tuple(bad_inputs),
        bad_hyper=tuple(bad_hyper),
    )


def batch_norm(cls, shape, bad_hyper=()):
    """A BatchNorm over 3 channels; its twin normalises with the batch's statistics."""
    assert shape[1] == 3
    wrong_channels = (shape[0], 4, *shape[2:])
    one_value = (1, 3) + (1,) * (len(shape) - 2)
    return LayerSpec(
        f"{cls.__name__}-{shape}",
        cls,
        shape,
        "(N, C) or (N, C, L)" if cls is L.BatchNorm1d else "(N, C, H, W)",
        batch_norm_twin,
        hyper={"num_features": 3},
        params={"BW": (3,), "Bb": (3,)},
        ranks=(2, 3) if cls is L.BatchNorm1d else (4,),
        arg="Z",
        grad="dLdBZ",
        bad_inputs=(
            BadInput("wrong-channels", wrong_channels, ValueError,
                     rf"Z must have num_features=3 \(axis 1\), got shape {sh(wrong_channels)}$"),
            BadInput("one-value-per-channel", one_value, ValueError,
                     r"training needs more than one value per channel, "
                     rf"got input of shape {sh(one_value)}$"),
        ),
        bad_hyper=tuple(bad_hyper),
    )  # fmt: skip


def dropout(cls, shape):
    """Dropout with p=0.5; its random mask has no twin (test_norm_dropout.py checks it)."""
    bad_p = [  # (value, exception, pattern)
        (-0.1, ValueError, r"p must be a probability in \[0, 1\], got -0\.1$"),
        (1.5, ValueError, r"p must be a probability in \[0, 1\], got 1\.5$"),
        (float("nan"), ValueError, r"p must be a probability in \[0, 1\], got nan$"),
        (2, ValueError, r"p must be a probability in \[0, 1\], got 2$"),
        ("0.5", TypeError, r"p must be a real number, got str$"),
        (None, TypeError, r"p must be a real number, got NoneType$"),
        (True, TypeError, r"p must be a real number, got bool$"),
        (np.array(0.5), TypeError, r"p must be a real number, got ndarray$"),
    ]
    return LayerSpec(
        f"{cls.__name__}-{shape}",
        cls,
        shape,
        {L.Dropout: "(N, ...)", L.Dropout1d: "(N, C, L)", L.Dropout2d: "(N, C, H, W)"}[cls],
        None,
        options={"p": 0.5},
        ranks=() if cls is L.Dropout else (len(shape),),
        arg="x",
        bad_hyper=tuple(BadHyper(f"p-{v!r}", {"p": v}, exc, tail) for v, exc, tail in bad_p),
    )


def global_avg_pool(nd, shape, bad_inputs=()):
    cls = L.GlobalAvgPool1d if nd == 1 else L.GlobalAvgPool2d
    return LayerSpec(
        f"{cls.__name__}-{shape}",
        cls,
        shape,
        "(N, C, L)" if nd == 1 else "(N, C, H, W)",
        global_avg_pool_twin(nd),
        ranks=(nd + 2,),
        bad_inputs=tuple(bad_inputs),
    )


# ------------------------------------------------------------ layer-specific bad inputs


def wrong_channels(shape, expected):
    return BadInput("wrong-channels", shape, ValueError,
                    rf"A must have C_in={expected} \(axis 1\), got shape {sh(shape)}")  # fmt: skip


def kernel_too_large(shape, what, K, shown, more):
    return BadInput("kernel-larger-than-input", shape, ValueError,
                    rf"{what}={K} is larger than the {shown}{more}")  # fmt: skip


def empty_spatial_axis(shape):
    return BadInput("empty-spatial-axis", shape, ValueError,
                    rf"every spatial size of A must be >= 1, got shape {sh(shape)}$")  # fmt: skip


def _bad_batch_norm() -> list[BadHyper]:
    return [
        BadHyper("eps-0", {"eps": 0}, ValueError, r"eps must be a positive number, got 0$"),
        BadHyper("eps-negative", {"eps": -1e-5}, ValueError,
                 r"eps must be a positive number, got -1e-05$"),
        BadHyper("eps-str", {"eps": "1e-5"}, TypeError, r"eps must be a real number, got str$"),
        BadHyper("momentum-1.5", {"momentum": 1.5}, ValueError,
                 r"momentum must be in \[0, 1\], got 1\.5$"),
        BadHyper("momentum-nan", {"momentum": float("nan")}, ValueError,
                 r"momentum must be in \[0, 1\], got nan$"),
        BadHyper("momentum-None", {"momentum": None}, TypeError,
                 r"momentum must be a real number, got NoneType$"),
    ]  # fmt: skip


# ------------------------------------------------------------------------------ the table

SPECS: list[LayerSpec] = [
    # Conv1d: odd widths, kernel 1, kernel = width, stride > kernel, padding, batch 1
    conv(1, 3, 4, 11, 3),
    conv(1, 2, 5, 10, 1),
    conv(1, 3, 2, 7, 7),
    conv(1, 4, 3, 13, 2, stride=3),
    conv(1, 3, 4, 9, 4, stride=2, padding=2),
    conv(1, 1, 1, 5, 3, padding=1, n=1),
    conv(1, 3, 4, 11, 3, stride1=True),
    conv(1, 24, 8, 128, 8, stride=4),
    conv(1, 2, 3, 7, 3, stride1=True, bad_inputs=[
        wrong_channels((2, 3, 7), 2),
        kernel_too_large((2, 2, 2), "kernel_size", 3,
                         rf"padded input {sh((2,))}", rf" \(input {sh((2,))}, padding=0\)"),
    ]),
    conv(1, 2, 3, 7, 4, stride=2, padding=1, bad_inputs=[
        wrong_channels((2, 1, 7), 2),
        kernel_too_large((2, 2, 1), "kernel_size", 4,
                         rf"padded input {sh((3,))}", rf" \(input {sh((1,))}, padding=1\)"),
    ]),
    # Conv2d
    conv(2, 3, 4, 9, 3),
    conv(2, 2, 3, (7, 6), 1),
    conv(2, 2, 2, 5, 5),
    conv(2, 3, 2, 11, 2, stride=3),
    conv(2, 3, 4, 8, 3, stride=2, padding=1),
    conv(2, 1, 6, (13, 10), 5, stride=2, padding=2, n=1),
    conv(2, 2, 3, 7, 3, stride1=True),
    conv(2, 2, 2, 4, 3, padding=3),
    conv(2, 5, 4, (9, 8), 3, stride1=True),  # 5 input channels: NumPy's row-gather path
    conv(2, 2, 3, (5, 6), 3, stride1=True, bad_inputs=[
        wrong_channels((2, 3, 5, 6), 2),
        kernel_too_large((2, 2, 5, 2), "kernel_size", 3,
                         rf"padded input {sh((5, 2))}", rf" \(input {sh((5, 2))}, padding=0\)"),
    ]),
    conv(2, 2, 3, (5, 6), 4, stride=2, padding=1, bad_inputs=[
        wrong_channels((2, 3, 5, 6), 2),
        kernel_too_large((2, 2, 5, 1), "kernel_size", 4,
                         rf"padded input {sh((7, 3))}", rf" \(input {sh((5, 1))}, padding=1\)"),
    ]),
    # transposed convolution
    conv_transpose(1, 3, 2, 6, 3, 2),
    conv_transpose(1, 2, 3, 5, 1, 3),
    conv_transpose(1, 2, 2, 4, 4, 1),
    conv_transpose(2, 3, 2, 4, 3, 2),
    conv_transpose(2, 2, 3, 3, 2, 3),
    conv_transpose(2, 1, 2, 5, 5, 2),
    conv_transpose(1, 2, 3, 4, 4, 2, bad_inputs=[
        wrong_channels((2, 3, 4), 2),
        kernel_too_large((2, 2, 2), "kernel_size", 4, rf"upsampled input {sh((3,))}",
                         rf" \(input {sh((2,))}, upsampling_factor=2\)"),
    ]),
    conv_transpose(2, 2, 3, (4, 3), 4, 2, bad_inputs=[
        wrong_channels((2, 1, 4, 3), 2),
        kernel_too_large((2, 2, 4, 1), "kernel_size", 4, rf"upsampled input {sh((7, 1))}",
                         rf" \(input {sh((4, 1))}, upsampling_factor=2\)"),
    ]),
    # pooling
    pool(L.MaxPool1d, 1, 11, 3, 2),
    pool(L.MaxPool1d, 1, 9, 2, 3),
    pool(L.MeanPool1d, 1, 11, 3, 2),
    pool(L.MeanPool1d, 1, 7, 7, 1),
    pool(L.MaxPool2d, 2, 9, 2, 2),
    pool(L.MaxPool2d, 2, (7, 8), 3, 2),
    pool(L.MaxPool2d, 2, 10, 2, 3),
    pool(L.MeanPool2d, 2, 9, 3, 2),
    pool(L.MeanPool2d, 2, (5, 6), 1, 2),
    pool(L.MaxPool2d_stride1, 2, 6, 3, 1),
    pool(L.MeanPool2d_stride1, 2, 6, 3, 1),
    pool(L.MaxPool1d, 1, 7, 3, 2, c=2, bad_inputs=[
        kernel_too_large((2, 2, 2), "kernel", 3, f"input {sh((2,))}", "$")]),
    pool(L.MeanPool1d, 1, 7, 3, None, c=2, bad_inputs=[
        kernel_too_large((2, 2, 2), "kernel", 3, f"input {sh((2,))}", "$")]),
    pool(L.MaxPool2d, 2, (5, 6), 2, None, c=2, bad_inputs=[
        kernel_too_large((2, 2, 5, 1), "kernel", 2, f"input {sh((5, 1))}", "$")]),
    pool(L.MeanPool2d, 2, (5, 6), 2, 1, c=2, bad_inputs=[
        kernel_too_large((2, 2, 1, 6), "kernel", 2, f"input {sh((1, 6))}", "$")]),
    pool(L.MaxPool2d_stride1, 2, (5, 6), 3, 1, c=2, bad_inputs=[
        kernel_too_large((2, 2, 2, 6), "kernel", 3, f"input {sh((2, 6))}", "$")]),
    pool(L.MeanPool2d_stride1, 2, (5, 6), 3, 1, c=2, bad_inputs=[
        kernel_too_large((2, 2, 5, 2), "kernel", 3, f"input {sh((5, 2))}", "$")]),
    # global average pooling
    global_avg_pool(1, (2, 3, 7)),
    global_avg_pool(1, (3, 2, 1)),
    global_avg_pool(2, (2, 3, 4, 5)),
    global_avg_pool(2, (1, 1, 1, 1)),
    global_avg_pool(2, (2, 4, 7, 1)),
    global_avg_pool(1, (2, 3, 5), bad_inputs=[empty_spatial_axis((2, 3, 0))]),
    global_avg_pool(2, (2, 3, 4, 4), bad_inputs=[empty_spatial_axis((2, 3, 4, 0))]),
    # resampling: odd and even widths
    upsample(1, 2, 7),
    upsample(1, 3, 4),
    upsample(2, 2, 5),
    upsample(2, 3, 4),
    upsample(1, 2, 5, c=2, bad_inputs=[empty_spatial_axis((2, 2, 0))]),
    upsample(2, 3, (4, 5), c=2, bad_inputs=[empty_spatial_axis((2, 2, 0, 5))]),
    downsample(1, 2, 7),
    downsample(1, 2, 8),
    downsample(1, 3, 10),
    downsample(2, 2, 5),
    downsample(2, 3, 6),
    downsample(1, 2, 7, c=2),
    downsample(2, 3, (7, 5), c=2),
    # flatten, linear
    flatten("Flatten-3d", (3, 4, 5)),
    flatten("Flatten-4d", (2, 3, 4, 5)),
    flatten("Flatten-(2, 3, 4)", (2, 3, 4), bad_inputs=[
        BadInput("0-d", (), ValueError, r"A must have at least 1 dimensions \(N, \.\.\.\), "
                                        r"got 0 dimensions with shape \(\)$"),
    ]),
    linear("Linear-7to5", 7, 5, (4, 7)),
    linear("Linear-batch1", 3, 2, (1, 3)),
    linear("Linear-3d", 4, 3, (2, 5, 4)),
    linear("Linear-4to3", 4, 3, (2, 4), bad_inputs=[
        BadInput("wrong-features", (2, 5), ValueError,
                 rf"A must have in_features=4 \(axis 1\), got shape {sh((2, 5))}"),
        BadInput("wrong-features-3d", (2, 3, 5), ValueError,
                 rf"A must have in_features=4 \(axis 2\), got shape {sh((2, 3, 5))}"),
        BadInput("1-d", (4,), ValueError, r"A must have at least 2 dimensions \(N, in_features\), "
                                          rf"got 1 dimensions with shape {sh((4,))}$"),
    ]),
    # normalisation and dropout
    batch_norm(L.BatchNorm1d, (4, 3), bad_hyper=_bad_batch_norm()),
    batch_norm(L.BatchNorm1d, (4, 3, 5)),
    batch_norm(L.BatchNorm2d, (2, 3, 4, 4), bad_hyper=_bad_batch_norm()),
    dropout(L.Dropout, (2, 5)),
    dropout(L.Dropout1d, (2, 3, 5)),
    dropout(L.Dropout2d, (2, 3, 4, 4)),
    # activations
    activation(L.Identity, lambda A: A),
    activation(L.Sigmoid, torch.sigmoid),
    activation(L.Tanh, torch.tanh),
    activation(L.ReLU, F.relu, kink=1e-3),
    activation(L.LeakyReLU, lambda A: F.leaky_relu(A, 0.01), kink=1e-3, bad_hyper=[
        BadHyper("negative_slope-str", {"negative_slope": "0.1"}, TypeError,
                 r"negative_slope must be a number, got str$"),
        BadHyper("negative_slope-bool", {"negative_slope": True}, TypeError,
                 r"negative_slope must be a number, got bool$"),
    ]),
    activation(L.LeakyReLU, lambda A: F.leaky_relu(A, 0.2), kink=1e-3, negative_slope=0.2),
    activation(L.GELU, F.gelu, bad_hyper=[
        BadHyper("approximate-unknown", {"approximate": "exact"}, ValueError,
                 r"approximate must be 'none' or 'tanh', got 'exact'$"),
    ]),
    activation(L.GELU, lambda A: F.gelu(A, approximate="tanh"), approximate="tanh"),
    activation(L.Softmax, lambda A: F.softmax(A, dim=-1), bad_hyper=[
        BadHyper("dim-float", {"dim": 1.0}, TypeError, r"dim must be an integer, got float$"),
        BadHyper("dim-bool", {"dim": True}, TypeError, r"dim must be an integer, got bool$"),
    ]),
    activation(L.Softmax, lambda A: F.softmax(A, dim=1), shape=(2, 4, 3), dim=1),
    activation(L.ReLU, F.relu, kink=1e-3, shape=(2, 3, 4, 5)),
    # the same activations on a smaller input
    activation(L.Identity, lambda A: A, shape=(2, 5)),
    activation(L.Sigmoid, torch.sigmoid, shape=(2, 5)),
    activation(L.Tanh, torch.tanh, shape=(2, 5)),
    activation(L.ReLU, F.relu, kink=1e-3, shape=(2, 5)),
    activation(L.LeakyReLU, lambda A: F.leaky_relu(A, 0.1), kink=1e-3, shape=(2, 5),
               negative_slope=0.1),
    activation(L.GELU, F.gelu, shape=(2, 5)),
    activation(L.GELU, lambda A: F.gelu(A, approximate="tanh"), shape=(2, 5), approximate="tanh"),
    activation(L.Softmax, lambda A: F.softmax(A, dim=-1), shape=(2, 5), bad_inputs=[
        BadInput("0-d", (), ValueError, r"dim=-1 is out of range for Z with 0 dimensions"),
    ]),
    activation(L.Softmax, lambda A: F.softmax(A, dim=2), shape=(2, 5, 3), dim=2, bad_inputs=[
        BadInput("dim-out-of-range", (2, 5), ValueError,
                 r"dim=2 is out of range for Z with 2 dimensions"),
    ]),
]  # fmt: skip


# The rows of other modules, built on the classes above (kept under ~600 lines each)
from .specs_conv import ROWS as CONV_ROWS  # noqa: E402
from .specs_normpool import NORMPOOL_SPECS  # noqa: E402

SPECS += CONV_ROWS + NORMPOOL_SPECS


def one_per_layer(specs: Sequence[LayerSpec]) -> list[LayerSpec]:
    """The first row of each layer class in ``specs``: its reference configuration."""
    first: dict[type, LayerSpec] = {}
    for spec in specs:
        first.setdefault(spec.cls, spec)
    return list(first.values())


REFERENCE = one_per_layer(SPECS)  # one row per layer class
WITH_PARAMS = [spec for spec in REFERENCE if spec.params]  # conv, linear, batch norm
WITH_INIT_FNS = [spec for spec in REFERENCE if spec.init_fns]  # conv, linear


def _check_table() -> None:
    """What the tests rely on: unique ids, a reference row that names every integer
    hyper-parameter its class's rows use, one row per class with the other bad ones."""
    ids = [spec.id for spec in SPECS]
    assert len(set(ids)) == len(ids), f"duplicate ids: {sorted(i for i in ids if ids.count(i) > 1)}"
    for ref in REFERENCE:
        rows = [spec for spec in SPECS if spec.cls is ref.cls]
        missing = set().union(*(spec.hyper for spec in rows)) - set(ref.hyper)
        assert not missing, f"{ref.id} (the first {ref.name} row) must also set {missing}"
        assert sum(bool(spec.bad_hyper) for spec in rows) <= 1, f"{ref.name}: bad_hyper twice"


_check_table()
