"""Every layer, forward and backward, against PyTorch autograd in float64.

Each case (a row of tests/layer_specs.py) builds a portaconv layer and the same computation
from ``torch.nn.functional`` with the same weights; both see the same inputs (rounded to the
test dtype first). The portaconv output and every gradient must match the oracle, come back
as arrays of the backend's namespace, device and dtype, and leave the inputs untouched.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

import portaconv.layers as L
from portaconv.backend import to_numpy

from .helpers import assert_close, finite_difference_check, on, rounded, snapshot, torch_reference
from .layer_specs import SPECS, LayerSpec, conv, pool

# Every row with a PyTorch twin (Dropout's random mask is checked in test_norm_dropout.py).
CASES = [spec for spec in SPECS if spec.torch_fn is not None]


def _draw_input(case: LayerSpec, rng, dtype: str) -> np.ndarray:
    A = rng.standard_normal(case.in_shape)
    if case.kink is not None:  # keep clear of kinks and of ties, where the gradient is not unique
        A = np.where(np.abs(A) < case.kink, A + 4 * case.kink, A)
        A = A + np.arange(A.size).reshape(A.shape) * 1e-3 / A.size
        A = rng.permuted(A.reshape(-1)).reshape(A.shape)
    return rounded(A, dtype)


def _build(case: LayerSpec, bk, rng):
    """The layer on backend ``bk`` and its parameters as float64 NumPy (rounded to bk's dtype).

    The init functions return the values in bk's dtype: a parameter takes the dtype of the
    array its init function returns. A layer without init functions (BatchNorm) gets its
    parameters assigned, on bk in bk's dtype."""
    values = {k: rounded(rng.standard_normal(s), bk.dtype_name) for k, s in case.params.items()}
    if not case.init_fns:
        layer = case.make()
        for name, value in values.items():
            setattr(layer, name, on(bk, value))
        return layer, values
    supplied = {k: v.astype(bk.dtype_name) for k, v in values.items()}
    init_fns = {"weight_init_fn": lambda *shape: supplied["W"]}
    if "b" in case.params:  # a layer built with bias=False takes no bias_init_fn
        init_fns["bias_init_fn"] = lambda *shape: supplied["b"]
    return case.make(**init_fns), values


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_forward_backward_match_torch(case: LayerSpec, bk, rng):
    layer, params = _build(case, bk, rng)
    A = _draw_input(case, rng, bk.dtype_name)
    expected_Z, _ = torch_reference(case.torch_fn, {"A": A, **params}, None)
    dLdZ = rounded(rng.standard_normal(expected_Z.shape), bk.dtype_name)
    _, expected = torch_reference(case.torch_fn, {"A": A, **params}, dLdZ)

    A_b, dLdZ_b = on(bk, A), on(bk, dLdZ)
    A_before = snapshot(A_b)
    Z = layer.forward(A_b)
    assert_close(Z, expected_Z, bk, "Z")
    dLdZ_before = snapshot(dLdZ_b)
    dLdA = layer.backward(dLdZ_b)
    assert_close(dLdA, expected["A"], bk, "dLdA")
    for name in case.params:
        assert_close(getattr(layer, "dLd" + name), expected[name], bk, "dLd" + name)
    np.testing.assert_array_equal(snapshot(A_b), A_before, err_msg="forward/backward modified A")
    np.testing.assert_array_equal(snapshot(dLdZ_b), dLdZ_before, err_msg="backward modified dLdZ")


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_finite_differences(case: LayerSpec, bk64, rng):
    layer, _ = _build(case, bk64, rng)
    A = on(bk64, _draw_input(case, rng, "float64"))
    finite_difference_check(layer, A, params=tuple(case.params))


@pytest.mark.parametrize("case", [c for c in CASES if len(c.in_shape) >= 3], ids=lambda c: c.id)
def test_non_contiguous_input(case: LayerSpec, bk, rng):
    """A strided view (every other sample of a wider array) gives the same results."""
    layer, params = _build(case, bk, rng)
    A = _draw_input(case, rng, bk.dtype_name)
    wide = np.zeros((*case.in_shape[:-1], 2 * case.in_shape[-1]))
    wide[..., ::2] = A
    view = on(bk, wide)[..., ::2]
    expected_Z, _ = torch_reference(case.torch_fn, {"A": A, **params}, None)
    dLdZ = rounded(rng.standard_normal(expected_Z.shape), bk.dtype_name)
    _, expected = torch_reference(case.torch_fn, {"A": A, **params}, dLdZ)
    assert_close(layer.forward(view), expected_Z, bk, "Z")
    assert_close(layer.backward(on(bk, dLdZ)), expected["A"], bk, "dLdA")


# ----------------------------------------------------------------- the handout's examples


def test_conv2d_stride1_backward_worked_example(bk):
    """Figure 15 of the handout (section 5.3.2): dLdb, dLdW and dLdA of a 3x3 kernel on 5x5."""
    A = np.array(
        [
            [0, 2, -3, 2, -3],
            [-2, -2, -2, -1, -2],
            [-3, -3, 2, -2, 1],
            [-3, -2, 1, -3, 1],
            [0, -1, 0, 2, -3],
        ],
        dtype=float,
    )
    W = np.array([[-1, 0, -2], [1, 1, -1], [-1, -1, 0]], dtype=float)
    dLdZ = np.array([[1, 0, 1], [1, 2, 3], [0, 1, 2]], dtype=float)
    layer = L.Conv2d_stride1(
        1,
        1,
        3,
        weight_init_fn=lambda *s: W.reshape(s).astype(bk.dtype_name),
        bias_init_fn=lambda *s: np.zeros(s, dtype=bk.dtype_name),
    )
    layer.forward(on(bk, A[None, None]))
    dLdA = layer.backward(on(bk, dLdZ[None, None]))
    assert_close(layer.dLdb, np.array([11.0]), bk, "dLdb")
    assert_close(layer.dLdW, np.array([[[[-14, -7, -16], [-7, -13, -4], [-6, -10, -3]]]]), bk)
    assert_close(
        dLdA,
        np.array(
            [
                [
                    [
                        [-1, 0, -3, 0, -2],
                        [0, -1, -5, -3, -7],
                        [0, 1, 1, -2, -7],
                        [-1, -2, -2, -2, -2],
                        [0, -1, -3, -2, 0],
                    ]
                ]
            ]
        ),
        bk,
        "dLdA",
    )


def test_upsample1d_figure(bk):
    """Figure 2: k=2 puts one zero between neighbours; backward drops those positions."""
    layer = L.Upsample1d(2)
    Z = layer.forward(on(bk, np.array([[[1.0, 2.0, 3.0]]])))
    assert_close(Z, np.array([[[1.0, 0.0, 2.0, 0.0, 3.0]]]), bk)
    assert_close(
        layer.backward(on(bk, np.array([[[5.0, 6.0, 7.0, 8.0, 9.0]]]))),
        np.array([[[5.0, 7.0, 9.0]]]),
        bk,
    )


@pytest.mark.parametrize("width", [6, 7])
def test_downsample_backward_restores_width(bk, width):
    layer = L.Downsample1d(2)
    A = np.arange(width, dtype=float)[None, None]
    Z = layer.forward(on(bk, A))
    dLdA = layer.backward(on(bk, np.ones((1, 1, (width + 1) // 2))))
    expected = np.zeros((1, 1, width))
    expected[..., ::2] = 1
    assert_close(Z, A[..., ::2], bk)
    assert_close(dLdA, expected, bk)


def test_maxpool_ties_go_to_first_in_row_major_order(bk):
    """The handout's rule: with equal maxima in a window, the first (row-major) takes it."""
    A = np.array(
        [[[[1.0, 5.0, 5.0, 0.0], [5.0, 2.0, 3.0, 5.0], [0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 1.0]]]]
    )
    layer = L.MaxPool2d(2, 2)
    assert_close(layer.forward(on(bk, A)), np.array([[[[5.0, 5.0], [0.0, 1.0]]]]), bk)
    dLdA = layer.backward(on(bk, np.array([[[[1.0, 2.0], [3.0, 4.0]]]])))
    expected = np.zeros((1, 1, 4, 4))
    expected[0, 0, 0, 1], expected[0, 0, 0, 2], expected[0, 0, 2, 0], expected[0, 0, 2, 2] = (
        1,
        2,
        3,
        4,
    )
    assert_close(dLdA, expected, bk)


@pytest.mark.parametrize("cls,nd", [(L.MaxPool1d, 1), (L.MaxPool2d, 2)])
def test_maxpool_ties_match_torch(bk, rng, cls, nd):
    """Small integers make ties everywhere; PyTorch's CPU kernel also keeps the first maximum."""
    A = rng.integers(0, 3, size=(2, 3, *(9,) * nd)).astype(float)
    fn = F.max_pool1d if nd == 1 else F.max_pool2d
    dLdZ = rng.standard_normal(fn(torch.tensor(A), 3, 2).shape)
    Z_ref, grads = torch_reference(lambda A: fn(A, 3, 2), {"A": A}, dLdZ)
    layer = cls(3, 2)
    assert_close(layer.forward(on(bk, A)), Z_ref, bk)
    assert_close(
        layer.backward(on(bk, rounded(dLdZ, bk.dtype_name))),
        torch_reference(lambda A: fn(A, 3, 2), {"A": A}, rounded(dLdZ, bk.dtype_name))[1]["A"],
        bk,
    )


def test_maxpool_propagates_nan(bk):
    A = np.array([[[1.0, np.nan, 3.0, 2.0]]])
    Z = L.MaxPool1d(2, 2).forward(on(bk, A))
    expected = F.max_pool1d(torch.tensor(A), 2, 2).numpy()
    np.testing.assert_array_equal(np.isnan(snapshot(Z)), np.isnan(expected))


@pytest.mark.parametrize(
    "make", [lambda: L.Conv2d(2, 3, 3, stride=2, padding=1), lambda: L.Conv1d(2, 3, 3)]
)
def test_conv_without_input_grad_gives_the_same_parameter_gradients(bk, rng, make):
    layer = make()
    A = rounded(rng.standard_normal((4, 2) + (7,) * (layer.W.ndim - 2)), bk.dtype_name)
    W, b = (rounded(to_numpy(p), bk.dtype_name) for p in (layer.W, layer.b))
    layer.W, layer.b = on(bk, W), on(bk, b)
    Z = layer.forward(on(bk, A))
    dLdZ = rounded(rng.standard_normal(tuple(Z.shape)), bk.dtype_name)
    conv = F.conv2d if layer.W.ndim == 4 else F.conv1d
    stride, padding = layer.stride, layer.padding
    _, grads = torch_reference(
        lambda A, W, b: conv(A, W, b, stride=stride, padding=padding),
        {"A": A, "W": W, "b": b},
        dLdZ,
    )
    layer.needs_input_grad = False
    assert layer.backward(on(bk, dLdZ)) is None
    assert_close(layer.dLdW, grads["W"], bk, "dLdW")
    assert_close(layer.dLdb, grads["b"], bk, "dLdb")


def test_relu_propagates_nan_like_torch(bk):
    A = np.array([[-1.0, 0.0, 2.0, np.nan]])
    layer = L.ReLU()
    Z = layer.forward(on(bk, A))
    dLdZ = layer.backward(on(bk, np.ones_like(A)))
    t = torch.tensor(A, requires_grad=True)
    expected = torch.relu(t)
    expected.backward(torch.ones_like(t))
    np.testing.assert_array_equal(snapshot(Z), expected.detach().numpy())
    np.testing.assert_array_equal(snapshot(dLdZ), t.grad.numpy())


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("labels", ["integer", "one-hot", "probabilities"])
def test_cross_entropy_matches_torch(bk, rng, labels, smoothing):
    A = rounded(rng.standard_normal((6, 5)) * 3, bk.dtype_name)
    classes = rng.integers(0, 5, size=6)
    if labels == "integer":
        Y_np, Y_b = np.eye(5)[classes], on(bk, classes)
        Y_b = bk.xp.astype(Y_b, bk.xp.int64)
    elif labels == "one-hot":
        Y_np = np.eye(5)[classes]
        Y_b = on(bk, Y_np)
    else:
        Y_np = rounded(
            F.softmax(torch.tensor(rng.standard_normal((6, 5))), 1).numpy(), bk.dtype_name
        )
        Y_b = on(bk, Y_np)
    loss_ref, grads = torch_reference(
        lambda A: F.cross_entropy(A, torch.tensor(Y_np), label_smoothing=smoothing),
        {"A": A},
        np.array(1.0),
    )
    layer = L.CrossEntropyLoss(label_smoothing=smoothing)
    loss = layer.forward(on(bk, A), Y_b)
    assert loss.ndim == 0
    assert_close(loss, loss_ref, bk, "loss")
    assert_close(layer.backward(), grads["A"], bk, "dLdA")


@pytest.mark.parametrize(
    "value, error", [(-0.1, ValueError), (1.5, ValueError), ("0.1", TypeError), (True, TypeError)]
)
def test_cross_entropy_rejects_bad_label_smoothing(value, error):
    with pytest.raises(error, match="CrossEntropyLoss: label_smoothing must"):
        L.CrossEntropyLoss(label_smoothing=value)


def test_mse_matches_torch(bk, rng):
    A = rounded(rng.standard_normal((5, 4)), bk.dtype_name)
    Y = rounded(rng.standard_normal((5, 4)), bk.dtype_name)
    loss_ref, grads = torch_reference(
        lambda A: F.mse_loss(A, torch.tensor(Y)), {"A": A}, np.array(1.0)
    )
    layer = L.MSELoss()
    assert_close(layer.forward(on(bk, A), on(bk, Y)), loss_ref, bk, "loss")
    assert_close(layer.backward(), grads["A"], bk, "dLdA")


def test_sigmoid_and_softmax_stay_finite_for_large_inputs(bk):
    A = np.array([[-1000.0, -50.0, 0.0, 50.0, 1000.0]])
    for layer, fn in ((L.Sigmoid(), torch.sigmoid), (L.Softmax(), lambda t: F.softmax(t, -1))):
        assert_close(layer.forward(on(bk, A)), fn(torch.tensor(A)).numpy(), bk, layer.name)


# --------------------------------------------------------------------- properties


@given(
    nd=st.sampled_from([1, 2]),
    n=st.integers(1, 3),
    cin=st.integers(1, 3),
    cout=st.integers(1, 3),
    k=st.integers(1, 4),
    stride=st.integers(1, 4),
    padding=st.integers(0, 2),
    extra=st.integers(0, 6),
    seed=st.integers(0, 2**16),
)
def test_conv_any_geometry_matches_torch(bk64, nd, n, cin, cout, k, stride, padding, extra, seed):
    """Any geometry with a kernel that fits the padded input: shapes and values as PyTorch."""
    size = max(1, k - 2 * padding + extra)
    case = conv(nd, cin, cout, size, k, stride, padding, n=n)
    rng = np.random.default_rng(seed)
    layer, params = _build(case, bk64, rng)
    A = rng.standard_normal(case.in_shape)
    Z_ref, _ = torch_reference(case.torch_fn, {"A": A, **params}, None)
    dLdZ = rng.standard_normal(Z_ref.shape)
    _, grads = torch_reference(case.torch_fn, {"A": A, **params}, dLdZ)
    assert_close(layer.forward(on(bk64, A)), Z_ref, bk64, "Z")
    assert_close(layer.backward(on(bk64, dLdZ)), grads["A"], bk64, "dLdA")
    assert_close(layer.dLdW, grads["W"], bk64, "dLdW")


@given(
    nd=st.sampled_from([1, 2]),
    is_max=st.booleans(),
    kernel=st.integers(1, 4),
    stride=st.integers(1, 5),
    extra=st.integers(0, 7),
    seed=st.integers(0, 2**16),
)
def test_pool_any_geometry_matches_torch(bk64, nd, is_max, kernel, stride, extra, seed):
    cls = {
        (1, True): L.MaxPool1d,
        (2, True): L.MaxPool2d,
        (1, False): L.MeanPool1d,
        (2, False): L.MeanPool2d,
    }[nd, is_max]
    case = pool(cls, nd, kernel + extra, kernel, stride, n=2, c=2)
    rng = np.random.default_rng(seed)
    A = _draw_input(case, rng, "float64")
    Z_ref, _ = torch_reference(case.torch_fn, {"A": A}, None)
    dLdZ = rng.standard_normal(Z_ref.shape)
    _, grads = torch_reference(case.torch_fn, {"A": A}, dLdZ)
    layer = case.make()
    assert_close(layer.forward(on(bk64, A)), Z_ref, bk64, "Z")
    assert_close(layer.backward(on(bk64, dLdZ)), grads["A"], bk64, "dLdA")


@given(nd=st.sampled_from([1, 2]), factor=st.integers(1, 4), size=st.integers(1, 9))
def test_down_and_upsampling_are_adjoint_and_invert(bk64, nd, factor, size):
    """Downsample(Upsample(A)) == A, and <Up(a), z> == <a, Up^T(z)> for the backward."""
    up = (L.Upsample1d if nd == 1 else L.Upsample2d)(factor)
    down = (L.Downsample1d if nd == 1 else L.Downsample2d)(factor)
    rng = np.random.default_rng(size * 31 + factor)
    A = rng.standard_normal((2, 2, *(size,) * nd))
    Z = up.forward(on(bk64, A))
    assert tuple(Z.shape[2:]) == (factor * (size - 1) + 1,) * nd
    assert_close(down.forward(Z), A, bk64)
    R = rng.standard_normal(tuple(Z.shape))
    lhs = float(np.sum(snapshot(Z) * R))
    rhs = float(np.sum(A * snapshot(up.backward(on(bk64, R)))))
    np.testing.assert_allclose(lhs, rhs, rtol=1e-12)
