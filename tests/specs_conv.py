"""Rows of the layer table for the convolution options beyond the handout's: tuple kernel
sizes, strides and paddings, ``"same"`` and ``"valid"``, dilation, groups and ``bias=False``.

``tests/layer_specs.py`` appends :data:`ROWS` to ``SPECS``, so every per-row check of the
table (forward and backward against ``torch.nn.functional`` in float64, finite differences,
a strided input, mixed dtypes, bad gradients, the fast paths on and off) runs on each. Each
row checks something the others do not; the sizes are odd or uneven so that no axis can be
mistaken for another. The integer options go in ``hyper`` (so the reference rows, which
name ``dilation`` and ``groups`` too, cover their bad integer values); tuples, strings and
``bias`` go in ``options``. Import ``tests.layer_specs``, not this module: it builds on
that one's classes and is imported at its end.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

import portaconv.layers as L

from .helpers import sh
from .layer_specs import BadHyper, BadInput, LayerSpec, wrong_channels

_INT_ARGS = ("kernel_size", "stride", "padding", "dilation", "groups")
_SHORT = {"kernel_size": "k", "stride": "s", "padding": "p", "dilation": "d", "groups": "g"}


def conv_options_twin(nd: int, **options: Any) -> Callable[..., torch.Tensor]:
    """F.conv1d / F.conv2d with the layer's stride, padding (tuples and strings as PyTorch
    takes them), dilation and groups; without a ``b`` where the layer has none."""
    conv = F.conv1d if nd == 1 else F.conv2d

    def twin(A: torch.Tensor, W: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
        with warnings.catch_warnings():  # "same" with an even kernel: a note on its speed
            warnings.filterwarnings("ignore", "Using padding='same'", UserWarning)
            return conv(A, W, b, **options)

    return twin


def _axes(value: Any, nd: int) -> tuple[int, ...]:
    return (value,) * nd if isinstance(value, int) else tuple(value)


def conv_options(
    nd: int,
    cin: int,
    cout: int,
    size: int | tuple[int, ...],
    kernel_size: Any,
    n: int = 2,
    bias: bool = True,
    bad_inputs=(),
    bad_hyper=(),
    **options: Any,
) -> LayerSpec:
    """A Conv1d / Conv2d row; ``options``: stride, padding, dilation, groups as the layer
    takes them (ints, tuples, ``"same"``/``"valid"``)."""
    cls = L.Conv1d if nd == 1 else L.Conv2d
    spatial = _axes(size, nd)
    args = {"kernel_size": kernel_size, **options}
    hyper = {"in_channels": cin, "out_channels": cout}
    hyper.update({k: v for k, v in args.items() if k in _INT_ARGS and isinstance(v, int)})
    others = {k: v for k, v in args.items() if k not in hyper}
    if not bias:
        others["bias"] = False
    groups = options.get("groups", 1)
    params = {"W": (cout, cin // groups, *_axes(kernel_size, nd))}
    if bias:
        params["b"] = (cout,)
    twin = {k: v for k, v in options.items() if k in ("stride", "padding", "dilation", "groups")}
    described = "-".join(f"{_SHORT[k]}{v}" for k, v in args.items()).replace(" ", "")
    return LayerSpec(
        f"{cls.__name__}-c{cin}to{cout}-in{spatial}-{described}" + ("" if bias else "-nobias"),
        cls,
        (n, cin, *spatial),
        "(N, C_in, W_in)" if nd == 1 else "(N, C_in, H_in, W_in)",
        conv_options_twin(nd, **twin),
        hyper=hyper,
        options=others,
        params=params,
        init_fns=True,
        ranks=(nd + 2,),
        bad_inputs=tuple(bad_inputs),
        bad_hyper=tuple(bad_hyper),
    )


def _bad_conv2d() -> list[BadHyper]:
    """On the tuple-kernel Conv2d row (in_channels=3, out_channels=4)."""
    return [
        BadHyper("groups-not-dividing-in_channels", {"groups": 2}, ValueError,
                 r"groups=2 must divide in_channels=3$"),
        BadHyper("groups-not-dividing-out_channels", {"in_channels": 6, "groups": 3}, ValueError,
                 r"groups=3 must divide out_channels=4$"),
        BadHyper("same-with-stride-2", {"padding": "same", "stride": 2}, ValueError,
                 r"padding='same' needs stride 1 \(as in PyTorch\), got stride=2$"),
        BadHyper("same-with-stride-tuple", {"padding": "same", "stride": (1, 2)}, ValueError,
                 r"padding='same' needs stride 1 \(as in PyTorch\), got stride=\(1, 2\)$"),
        BadHyper("dilation-0-in-tuple", {"dilation": (1, 0)}, ValueError,
                 r"dilation\[1\] must be a positive integer, got 0$"),
        BadHyper("padding-full", {"padding": "full"}, ValueError,
                 r"padding must be an integer >= 0, a tuple of 2 of them, 'same' or 'valid', "
                 r"got 'full'$"),
        BadHyper("padding-negative-in-tuple", {"padding": (1, -1)}, ValueError,
                 r"padding\[1\] must be an integer >= 0, got -1$"),
        BadHyper("kernel-tuple-of-3", {"kernel_size": (3, 3, 3)}, ValueError,
                 r"kernel_size must be an integer or a tuple of 2 integers, got \(3, 3, 3\)$"),
        BadHyper("kernel-tuple-with-a-float", {"kernel_size": (3, 2.0)}, TypeError,
                 r"kernel_size\[1\] must be an integer, got 2\.0 of type float$"),
        BadHyper("bias_init_fn-without-bias", {"bias": False, "bias_init_fn": np.zeros},
                 ValueError, r"bias_init_fn is given but bias=False \(the layer has no b\)$"),
        BadHyper("bias-int", {"bias": 1}, TypeError, r"bias must be True or False, got 1 of type "
                                                    r"int$"),
    ]  # fmt: skip


def _bad_conv1d() -> list[BadHyper]:
    """On the dilated, grouped Conv1d row (in_channels=4, out_channels=6, groups=2)."""
    return [
        BadHyper("kernel-tuple-of-2", {"kernel_size": (3, 3)}, ValueError,
                 r"kernel_size must be an integer or a tuple of 1 integer, got \(3, 3\)$"),
        BadHyper("groups-not-dividing-in_channels", {"groups": 3}, ValueError,
                 r"groups=3 must divide in_channels=4$"),
        BadHyper("same-with-stride-3", {"padding": "same", "stride": 3}, ValueError,
                 r"padding='same' needs stride 1 \(as in PyTorch\), got stride=3$"),
    ]  # fmt: skip


ROWS: list[LayerSpec] = [
    # per-axis kernel, stride and padding
    conv_options(2, 3, 4, (9, 11), (3, 5), stride=(2, 1), padding=(1, 2),
                 bad_hyper=_bad_conv2d()),
    # dilation with stride: windows 5 wide taken every other position; too small an input
    conv_options(2, 2, 3, (11, 9), 3, stride=2, padding=1, dilation=2, bad_inputs=[
        wrong_channels((2, 3, 11, 9), 2),
        BadInput("kernel-with-dilation-larger-than-input", (2, 2, 2, 9), ValueError,
                 rf"kernel_size=3 with dilation=2 \(windows of {sh((5, 5))}\) is larger than "
                 rf"the padded input {sh((4, 11))} \(input {sh((2, 9))}, padding=1\)$"),
    ]),
    # depthwise (groups == in_channels), two filters per channel
    conv_options(2, 3, 6, (7, 9), 3, padding=1, groups=3),
    # grouped, strided: each half of the outputs sees one half of the inputs
    conv_options(2, 4, 6, (9, 7), 3, stride=2, groups=2, bad_inputs=[
        wrong_channels((2, 2, 9, 7), 4),
    ]),
    # no bias, an even kernel: the fast engines on NumPy and torch, given a zero bias
    conv_options(2, 3, 4, (7, 8), 2, padding=1, bias=False),
    # "same" with an even kernel: 3 zeros per axis, 1 on the left and 2 on the right
    conv_options(2, 2, 3, (7, 6), 4, padding="same"),
    # "same" with a per-axis dilation: totals 9 (4 left, 5 right) and 4, no bias
    conv_options(2, 2, 3, (11, 8), (4, 3), padding="same", dilation=(3, 2), bias=False),
    # "valid" on Conv1d, strided
    conv_options(1, 3, 2, 12, 4, stride=2, padding="valid"),
    # Conv1d with dilation and groups
    conv_options(1, 4, 6, 13, 3, padding=2, dilation=2, groups=2, bad_hyper=_bad_conv1d()),
]  # fmt: skip
