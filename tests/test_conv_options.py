"""The convolution options beyond the rows of the layer table (tests/specs_conv.py): any
geometry of them against PyTorch, what ``bias=False`` leaves out, the default
initialisation of a grouped layer, the printed form, and which engines take what.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

import portaconv
import portaconv.layers as L
from portaconv.backend import fast_paths, to_numpy
from portaconv.models import Sequential
from portaconv.optim import SGD

from . import layer_specs  # noqa: F401  (first: the table imports specs_conv at its end)
from .helpers import assert_close, on, torch_reference
from .specs_conv import conv_options_twin


@given(
    nd=st.sampled_from([1, 2]),
    groups=st.sampled_from([1, 2, 3]),
    per_group=st.tuples(st.integers(1, 2), st.integers(1, 2)),
    kernel=st.tuples(st.integers(1, 4), st.integers(1, 4)),
    stride=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    dilation=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    padding=st.one_of(st.tuples(st.integers(0, 2), st.integers(0, 2)), st.just("same")),
    extra=st.tuples(st.integers(0, 4), st.integers(0, 4)),
    bias=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_conv_options_any_geometry_match_torch(
    bk64, nd, groups, per_group, kernel, stride, dilation, padding, extra, bias, seed
):
    """Tuples per axis, "same", dilation, groups and bias=False together: values as PyTorch."""
    kernel, stride, dilation, extra = kernel[:nd], stride[:nd], dilation[:nd], extra[:nd]
    if padding == "same":
        stride = (1,) * nd
    else:
        padding = padding[:nd]
    pads = (0,) * nd if padding == "same" else padding
    size = tuple(
        max(1, d * (k - 1) + 1 - 2 * p + e) for k, d, p, e in zip(kernel, dilation, pads, extra)
    )
    cin, cout = groups * per_group[0], groups * per_group[1]
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((cout, cin // groups, *kernel))
    b = rng.standard_normal(cout)
    A = rng.standard_normal((2, cin, *size))
    options = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    twin = conv_options_twin(nd, **options)
    params = {"A": A, "W": W, **({"b": b} if bias else {})}
    Z_ref, _ = torch_reference(twin, params, None)
    dLdZ = rng.standard_normal(Z_ref.shape)
    _, grads = torch_reference(twin, params, dLdZ)

    init = {"weight_init_fn": lambda *s: W, **({"bias_init_fn": lambda *s: b} if bias else {})}
    layer = (L.Conv1d if nd == 1 else L.Conv2d)(cin, cout, kernel, **options, **init, bias=bias)
    assert_close(layer.forward(on(bk64, A)), Z_ref, bk64, "Z")
    assert_close(layer.backward(on(bk64, dLdZ)), grads["A"], bk64, "dLdA")
    assert_close(layer.dLdW, grads["W"], bk64, "dLdW")
    if bias:
        assert_close(layer.dLdb, grads["b"], bk64, "dLdb")


def test_without_bias_there_is_no_b(bk, rng):
    """bias=False: no b, no dLdb, nothing named b in parameters, gradients or the state; a
    model and an optimizer step work with W alone."""
    layer = L.Conv2d(2, 3, 3, padding=1, bias=False)
    assert layer.param_names == ("W",) and L.Conv2d.param_names == ("W", "b")
    assert not hasattr(layer, "b") and not hasattr(layer, "dLdb")
    assert list(layer.parameters()) == ["W"] and list(layer.state_dict()) == ["W"]
    model = Sequential(layer, L.ReLU(), L.Conv2d(3, 1, 1, bias=False))
    assert list(model.parameters()) == ["0.W", "2.W"]
    A = on(bk, rng.standard_normal((2, 2, 5, 5)))
    Z = model.forward(A)
    model.backward(on(bk, np.ones(tuple(Z.shape))))
    assert list(layer.gradients()) == ["W"] and not hasattr(layer, "dLdb")
    before = to_numpy(layer.W).copy()
    SGD(model, lr=0.1).step()
    assert not np.array_equal(to_numpy(layer.W), before)
    with pytest.raises(ValueError, match=r"unexpected \['b'\]"):
        layer.load_state_dict({"W": layer.W, "b": np.zeros(3)})


def test_grouped_default_init_is_pytorchs(bk64, monkeypatch):
    """W (C_out, C_in / groups, *K) and b drawn from U(-1/sqrt(fan_in), 1/sqrt(fan_in)), with
    fan_in = C_in / groups * prod(K) as PyTorch has it."""
    portaconv.manual_seed(3)
    layer = L.Conv2d(6, 4, (3, 2), groups=2)
    assert tuple(layer.W.shape) == (4, 3, 3, 2) and tuple(layer.b.shape) == (4,)
    bound = 1 / math.sqrt(3 * 3 * 2)
    for p in ("W", "b"):
        values = to_numpy(getattr(layer, p))
        assert np.all(np.abs(values) <= bound), p
    assert np.abs(to_numpy(layer.W)).max() > 0.7 * bound  # not a narrower interval
    calls = []
    L.Conv1d(6, 9, 5, groups=3, weight_init_fn=lambda *s: calls.append(s) or np.zeros(s))
    assert calls == [(9, 2, 5)]


@pytest.mark.parametrize(
    "layer, text",
    [
        (L.Conv2d(3, 8, 3), "Conv2d(3, 8, kernel_size=3, stride=1)"),
        (L.Conv2d(3, 8, 3, 2, 1), "Conv2d(3, 8, kernel_size=3, stride=2, padding=1)"),
        (
            L.Conv2d(4, 8, (3, 5), padding="same", dilation=(1, 2), groups=4, bias=False),
            "Conv2d(4, 8, kernel_size=(3, 5), stride=1, padding='same', dilation=(1, 2), "
            "groups=4, bias=False)",
        ),
        (
            L.Conv1d(2, 2, 4, padding="valid"),
            "Conv1d(2, 2, kernel_size=4, stride=1, padding='valid')",
        ),
        (L.Conv1d_stride1(2, 3, 4), "Conv1d_stride1(2, 3, kernel_size=4, stride=1)"),
    ],
    ids=["plain", "padded", "options", "valid", "stride1"],
)
def test_repr_is_pytorchs(layer, text):
    """As torch.nn prints its convolutions: only the options that differ from the default."""
    assert repr(layer) == text


@pytest.mark.parametrize(
    "options",
    [
        dict(groups=2),
        dict(dilation=2),
        dict(kernel_size=(3, 1)),
        dict(stride=(1, 2)),
        dict(padding=(1, 0)),
        dict(padding="same", kernel_size=2),  # 1 zero, on the right only
    ],
    ids=["groups", "dilation", "kernel-tuple", "stride-tuple", "padding-tuple", "same-even"],
)
@pytest.mark.parametrize("library", ["numpy", "torch"])
def test_fast_engines_leave_other_geometries_to_the_reference(library, options):
    """Every fast engine takes one kernel size, stride and symmetric padding on all axes,
    dilation 1 and one group: anything else runs the reference engine, and forcing a fast
    engine on it is a ValueError. The same layer without the option takes a fast engine."""
    fast = {"numpy": ("nchw", "im2row", "row_gather"), "torch": ("strided",)}[library]
    device = "cpu" if library == "torch" else None
    with portaconv.use_backend(library, device, "float64") as bk:
        A = on(bk, np.ones((2, 4, 9, 9)))
        layer = L.Conv2d(4, 4, **{"kernel_size": 3, **options})
        layer.forward(A)
        # the one fast engine for groups: NumPy's loop over the kernel offsets, at stride 1
        offset_loop = library == "numpy" and "groups" in options
        expected = "OffsetLoopConv" if offset_loop else "ReferenceConv"
        assert type(layer._engine).__name__ == expected
        for engine in fast:
            with fast_paths(conv=engine), pytest.raises(ValueError, match=rf"conv='{engine}'"):
                layer.forward(A)
        L_plain = L.Conv2d(4, 4, 3)
        L_plain.forward(A)
        assert type(L_plain._engine).__name__ != "ReferenceConv"


@pytest.mark.parametrize(
    "cin, cout, groups, kernel_size, padding, nd, bias",
    [
        (6, 6, 6, 3, 1, 2, True),  # depthwise
        (8, 8, 2, 3, 1, 2, True),  # two groups
        (8, 12, 4, 3, 0, 2, False),  # grouped, no padding, no bias
        (4, 4, 4, 5, 2, 1, True),  # 1-d depthwise
        (6, 12, 3, 3, 1, 1, True),  # 1-d grouped
    ],
)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_offset_loop_engine_matches_torch(cin, cout, groups, kernel_size, padding, nd, bias, dtype):
    """NumPy's engine for grouped convolution at stride 1, forced, against torch autograd in
    float64: output, every gradient, with and without dL/dA."""
    rng = np.random.default_rng(groups * 10 + nd)
    cls = L.Conv2d if nd == 2 else L.Conv1d
    W = rng.standard_normal((cout, cin // groups) + (kernel_size,) * nd).astype(dtype)
    b = rng.standard_normal(cout).astype(dtype)
    A = rng.standard_normal((3, cin) + (7,) * nd).astype(dtype)
    with portaconv.use_backend("numpy", None, dtype) as bk, fast_paths(conv="offset_loop"):
        init = dict(weight_init_fn=lambda *s: W, bias_init_fn=(lambda *s: b) if bias else None)
        layer = cls(cin, cout, kernel_size, 1, padding, **init, groups=groups, bias=bias)
        Z = layer.forward(A)
        assert type(getattr(layer._engine, "engine", layer._engine)).__name__ == "OffsetLoopConv"
        dZ = rng.standard_normal(Z.shape).astype(dtype)
        dA = layer.backward(dZ)
        fn = F.conv1d if nd == 1 else F.conv2d
        params = {"A": A, "W": W, **({"b": b} if bias else {})}
        twin = lambda A, W, b=None: fn(A, W, b, padding=padding, groups=groups)  # noqa: E731
        expected_Z, grads = torch_reference(twin, params, dZ)
        assert_close(Z, expected_Z, bk, "Z")
        assert_close(dA, grads["A"], bk, "dLdA")
        assert_close(layer.dLdW, grads["W"], bk, "dLdW")
        if bias:
            assert_close(layer.dLdb, grads["b"], bk, "dLdb")
        layer.forward(A)
        layer.needs_input_grad = False
        assert layer.backward(dZ) is None
        assert_close(layer.dLdW, grads["W"], bk, "dLdW without dL/dA")


def test_offset_loop_refuses_what_it_cannot_take():
    """Forced on a geometry it does not take (stride 2, two filters a channel, one group):
    the library's ValueError naming the engine."""
    A = np.ones((2, 4, 9, 9))
    with portaconv.use_backend("numpy", None, "float64"), fast_paths(conv="offset_loop"):
        for layer in (L.Conv2d(4, 4, 3, 2, groups=4), L.Conv2d(4, 8, 3, groups=4),
                      L.Conv2d(4, 4, 3)):  # fmt: skip
            with pytest.raises(ValueError, match=r"fast_paths\(conv='offset_loop'\)"):
                layer.forward(A)
