"""Rows of the layer table (tests/layer_specs.py) for issue 27's pooling, normalisation and
activation layers: padded and per-axis pooling, AvgPool*d, AdaptiveAvgPool*d, LayerNorm,
GroupNorm, SiLU, ReLU6 and Hardswish. layer_specs.py appends ``NORMPOOL_SPECS`` to its
``SPECS``, so every per-row and per-class check of the table covers them.

Each row checks something the others do not; the first row of each new class is its
reference row (with the class's bad hyper-parameters). This module imports layer_specs,
which imports it back at its end: import layer_specs first (as the test modules do).
"""

from __future__ import annotations

import re
from dataclasses import replace

import torch.nn.functional as F

import portaconv.layers as L

from .helpers import sh
from .layer_specs import (
    BadHyper,
    BadInput,
    LayerSpec,
    _image_layout,
    activation,
    empty_spatial_axis,
    kernel_too_large,
    pool,
    pool_twin,
)

# ------------------------------------------------------------------------------ pooling


def tuple_pool(cls, size, kernel, stride, padding, bad_hyper=(), **options):
    """A 2-d pool with per-axis kernel, stride and padding (options, not integer
    hyper-parameters); ``options`` may hold ``count_include_pad``."""
    arg = "kernel" if cls is L.MeanPool2d else "kernel_size"
    count_include_pad = options.get("count_include_pad", True)
    twin = F.avg_pool2d

    def torch_fn(A):
        return twin(A, kernel, stride, padding, count_include_pad=count_include_pad)

    return LayerSpec(
        f"{cls.__name__}-in{size}-k{kernel}-s{stride}-p{padding}"
        + ("" if count_include_pad else "-exclude-pad"),
        cls,
        (2, 3, *size),
        _image_layout(2, "C"),
        torch_fn,
        options={arg: kernel, "stride": stride, "padding": padding, **options},
        ranks=(4,),
        bad_hyper=tuple(bad_hyper),
    )


def avg_pool_1d(size, kernel_size, stride, padding, bad_inputs=(), bad_hyper=()):
    return LayerSpec(
        f"AvgPool1d-in{size}-k{kernel_size}-s{stride}-p{padding}",
        L.AvgPool1d,
        (2, 3, size),
        _image_layout(1, "C"),
        lambda A: F.avg_pool1d(A, kernel_size, stride, padding),
        hyper={"kernel_size": kernel_size, "stride": stride, "padding": padding},
        ranks=(3,),
        bad_inputs=tuple(bad_inputs),
        bad_hyper=tuple(bad_hyper),
    )


def padded_max_pool_2d(size, kernel_size, stride, padding, bad_hyper=()):
    """MaxPool2d(kernel_size=..., stride, padding): PyTorch's keyword beside the handout's."""
    return LayerSpec(
        f"MaxPool2d-in{size}-kernel_size{kernel_size}-s{stride}-p{padding}",
        L.MaxPool2d,
        (2, 3, *size),
        _image_layout(2, "C"),
        pool_twin(2, True, kernel_size, stride, padding),
        hyper={"stride": stride, "padding": padding},
        options={"kernel_size": kernel_size},
        ranks=(4,),
        kink=1e-3,
        bad_hyper=tuple(bad_hyper),
    )


def adaptive(nd, size, output_size, bad_inputs=(), bad_hyper=()):
    """An adaptive average pool; an int ``output_size`` is an integer hyper-parameter."""
    cls = L.AdaptiveAvgPool1d if nd == 1 else L.AdaptiveAvgPool2d
    fn = F.adaptive_avg_pool1d if nd == 1 else F.adaptive_avg_pool2d
    given = {"output_size": output_size}
    return LayerSpec(
        f"{cls.__name__}-in{size}-out{output_size}",
        cls,
        (2, 3, *((size,) if nd == 1 else size)),
        "(N, C, L)" if nd == 1 else "(N, C, H, W)",
        lambda A: fn(A, output_size),
        hyper=given if isinstance(output_size, int) else {},
        options={} if isinstance(output_size, int) else given,
        ranks=(nd + 2,),
        bad_inputs=tuple(bad_inputs),
        bad_hyper=tuple(bad_hyper),
    )


def too_small_for_output(shape, output_size, shown):
    return BadInput("output-larger-than-input", shape, ValueError,
                    rf"output_size={re.escape(str(output_size))} is larger than the input "
                    rf"{sh(shown)}$")  # fmt: skip


def _bad_pool(cls_arg: str, kernel, allowed) -> list[BadHyper]:
    """Bad kernels, strides and paddings of a 2-d pool whose row has ``cls_arg=kernel``."""
    other = "kernel" if cls_arg == "kernel_size" else "kernel_size"
    return [
        BadHyper("kernel-and-kernel_size", {other: 3}, TypeError,
                 r"give kernel or kernel_size, not both; got kernel=.+ and kernel_size=.+$"),
        BadHyper("padding-over-half", {"padding": 2}, ValueError,
                 rf"padding=2 must be at most half the kernel \({cls_arg}="
                 rf"{re.escape(str(kernel))} allows padding up to {re.escape(str(allowed))}\)$"),
        BadHyper("padding-over-half-per-axis", {cls_arg: (3, 1), "padding": (1, 1)}, ValueError,
                 rf"padding=\(1, 1\) must be at most half the kernel \({cls_arg}=\(3, 1\) "
                 r"allows padding up to \(1, 0\)\)$"),
        BadHyper("kernel-3-axes", {cls_arg: (3, 3, 3)}, ValueError,
                 rf"{cls_arg} must be an integer or a tuple of 2 integers, got \(3, 3, 3\)$"),
        BadHyper("stride-axis-0", {"stride": (2, 0)}, ValueError,
                 r"stride\[1\] must be a positive integer, got 0$"),
        BadHyper("padding-axis-negative", {"padding": (0, -1)}, ValueError,
                 r"padding\[1\] must be an integer >= 0, got -1$"),
        BadHyper("kernel-axis-float", {cls_arg: (3, 2.0)}, TypeError,
                 rf"{cls_arg}\[1\] must be an integer, got 2\.0 of type float$"),
    ]  # fmt: skip


def _bad_avg_pool(kernel_size: int) -> list[BadHyper]:
    return [
        BadHyper("count_include_pad-int", {"count_include_pad": 1}, TypeError,
                 r"count_include_pad must be True or False, got 1 of type int$"),
        BadHyper("padding-over-half", {"padding": kernel_size // 2 + 1}, ValueError,
                 rf"padding={kernel_size // 2 + 1} must be at most half the kernel "
                 rf"\(kernel_size={kernel_size} allows padding up to {kernel_size // 2}\)$"),
    ]  # fmt: skip


# ------------------------------------------------------------------------ normalisation


def layer_norm(in_shape, normalized_shape, affine=True, bad_inputs=(), bad_hyper=()):
    dims = (normalized_shape,) if isinstance(normalized_shape, int) else normalized_shape
    if affine:
        params = {"W": dims, "b": dims}

        def torch_fn(A, W, b):
            return F.layer_norm(A, dims, W, b, eps=1e-5)
    else:
        params = {}

        def torch_fn(A):
            return F.layer_norm(A, dims, eps=1e-5)

    return LayerSpec(
        f"LayerNorm-{in_shape}-over{dims}" + ("" if affine else "-no-affine"),
        L.LayerNorm,
        in_shape,
        "(..., " + ", ".join(str(n) for n in dims) + ")",
        torch_fn,
        options={"normalized_shape": normalized_shape, "elementwise_affine": affine},
        params=params,
        bad_inputs=tuple(bad_inputs),
        bad_hyper=tuple(bad_hyper),
    )


def group_norm(in_shape, num_groups, bad_inputs=(), bad_hyper=()):
    C = in_shape[1]
    return LayerSpec(
        f"GroupNorm-{in_shape}-groups{num_groups}",
        L.GroupNorm,
        in_shape,
        "(N, C, *)",
        lambda A, W, b: F.group_norm(A, num_groups, W, b, eps=1e-5),
        hyper={"num_groups": num_groups, "num_channels": C},
        params={"W": (C,), "b": (C,)},
        bad_inputs=tuple(bad_inputs),
        bad_hyper=tuple(bad_hyper),
    )


def too_few_axes(shape, at_least, layout):
    return BadInput(f"{len(shape)}-d", shape, ValueError,
                    rf"A must have at least {at_least} dimensions {re.escape(layout)}, "
                    rf"got {len(shape)} dimensions with shape {sh(shape)}$")  # fmt: skip


def _bad_eps() -> list[BadHyper]:
    return [
        BadHyper("eps-0", {"eps": 0}, ValueError, r"eps must be > 0, got 0$"),
        BadHyper("eps-str", {"eps": "1e-5"}, TypeError,
                 r"eps must be a real number, got '1e-5' of type str$"),
    ]  # fmt: skip


# ------------------------------------------------------------------------------ the rows

NORMPOOL_SPECS: list[LayerSpec] = [
    # padded max pooling: PyTorch's keyword on an odd size; 1-d with half the kernel padded
    padded_max_pool_2d((7, 9), 3, 2, 1, bad_hyper=_bad_pool("kernel_size", 3, 1)),
    replace(pool(L.MaxPool1d, 1, 9, 4, 2, padding=2, bad_inputs=[
        empty_spatial_axis((2, 3, 0)),
    ]), bad_hyper=(
        BadHyper("padding-over-half", {"padding": 3}, ValueError,
                 r"padding=3 must be at most half the kernel \(kernel=4 allows padding up to 2\)$"),
    )),
    # mean pooling: per-axis kernel, stride and padding (zeros counted); AvgPool*d
    tuple_pool(L.MeanPool2d, (7, 6), (3, 2), (2, 1), (1, 1),
               bad_hyper=_bad_pool("kernel", (3, 2), (1, 1))),
    tuple_pool(L.AvgPool2d, (6, 7), (3, 4), (2, 3), (1, 2), count_include_pad=False,
               bad_hyper=_bad_avg_pool(3)[:1]),
    avg_pool_1d(11, 5, 2, 1, bad_inputs=[
        kernel_too_large((2, 3, 2), "kernel_size", 5, rf"padded input {sh((4,))}",
                         rf" \(input {sh((2,))}, padding=1\)$"),
    ], bad_hyper=_bad_avg_pool(5)),
    # adaptive average pooling: to 1, to bins that overlap (7 -> 3, 5 -> 2), 1-d
    adaptive(2, (5, 4), 1),
    adaptive(2, (7, 5), (3, 2), bad_inputs=[too_small_for_output((2, 3, 2, 5), (3, 2), (2, 5))],
             bad_hyper=[
        BadHyper("output_size-3-axes", {"output_size": (3, 2, 1)}, ValueError,
                 r"output_size must be an integer or a tuple of 2 integers, got \(3, 2, 1\)$"),
        BadHyper("output_size-axis-0", {"output_size": (3, 0)}, ValueError,
                 r"output_size\[1\] must be a positive integer, got 0$"),
    ]),
    adaptive(1, 11, 4, bad_inputs=[too_small_for_output((2, 3, 3), 4, (3,))]),
    # LayerNorm: over the last axis, over (C, H, W), without the affine map
    layer_norm((4, 3, 5), 5, bad_inputs=[
        BadInput("wrong-last-axis", (4, 3, 6), ValueError,
                 rf"A must have shape \(\.\.\., 5\) \(normalized_shape=\(5,\) last\), "
                 rf"got shape {sh((4, 3, 6))}$"),
        too_few_axes((), 1, "(..., 5)"),
    ], bad_hyper=[
        *_bad_eps(),
        BadHyper("normalized_shape-0", {"normalized_shape": 0}, ValueError,
                 r"normalized_shape must be a positive integer, got 0$"),
        BadHyper("normalized_shape-empty", {"normalized_shape": ()}, ValueError,
                 r"normalized_shape must be a positive integer or a non-empty tuple of them, "
                 r"got \(\)$"),
        BadHyper("normalized_shape-float", {"normalized_shape": (3, 2.0)}, TypeError,
                 r"normalized_shape\[1\] must be an integer, got 2\.0 of type float$"),
        BadHyper("elementwise_affine-int", {"elementwise_affine": 1}, TypeError,
                 r"elementwise_affine must be True or False, got 1 of type int$"),
    ]),
    layer_norm((2, 3, 4, 4), (3, 4, 4), bad_inputs=[
        BadInput("wrong-trailing-axes", (2, 4, 4, 3), ValueError,
                 rf"A must have shape \(\.\.\., 3, 4, 4\) \(normalized_shape=\(3, 4, 4\) "
                 rf"last\), got shape {sh((2, 4, 4, 3))}$"),
        too_few_axes((4, 4), 3, "(..., 3, 4, 4)"),
    ]),
    layer_norm((3, 4, 5), (4, 5), affine=False),
    # GroupNorm: one group (LayerNorm with a per-channel W), a group per channel, and 2 groups
    # of 3 channels (the only one where which channels make a group matters)
    group_norm((2, 4, 3, 3), 1, bad_inputs=[
        BadInput("wrong-channels", (2, 3, 3, 3), ValueError,
                 rf"A must have num_channels=4 \(axis 1\), got shape {sh((2, 3, 3, 3))}$"),
        too_few_axes((4,), 2, "(N, C, *)"),
    ], bad_hyper=[
        *_bad_eps(),
        BadHyper("num_groups-not-dividing", {"num_groups": 3}, ValueError,
                 r"num_groups=3 must divide num_channels=4$"),
        BadHyper("affine-None", {"affine": None}, TypeError,
                 r"affine must be True or False, got None of type NoneType$"),
    ]),
    group_norm((2, 3, 5), 3),
    group_norm((3, 6, 2, 3), 2),
    # MobileNet's activations (ReLU6's kink at 6 and Hardswish's at +-3: tests/test_normpool.py)
    activation(L.SiLU, F.silu),
    activation(L.ReLU6, F.relu6, kink=1e-3),
    activation(L.Hardswish, F.hardswish),
]  # fmt: skip
