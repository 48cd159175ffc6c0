"""Issue 27's pooling, normalisation and activation layers beyond their rows of the layer table
(tests/specs_normpool.py): the activations at exactly their kinks, max pooling of -inf inputs
beside -inf padding, any padded or adaptive geometry (hypothesis), padded max pooling inside
the fast paths' execution plan, and what LayerNorm and GroupNorm keep. Every check against
PyTorch autograd in float64.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

import portaconv.layers as L
from portaconv.backend import fast_paths, use_backend
from portaconv.models import Sequential

from .helpers import assert_close, on, rounded, snapshot, torch_reference

# ----------------------------------------------------------------------- activations

#: Each kink (ReLU's and ReLU6's 0, ReLU6's 6, Hardswish's -3 and 3) and a value in every
#: piece; all exact in float32.
KINKS = np.array([-7.0, -3.0, -1.5, 0.0, 0.5, 3.0, 4.5, 6.0, 7.5])


@pytest.mark.parametrize(
    "cls, fn, nan_passes",
    [
        (L.ReLU6, F.relu6, True),
        (L.Hardswish, F.hardswish, True),
        (L.SiLU, F.silu, False),
        (L.ReLU, F.relu, True),
    ],
    ids=["ReLU6", "Hardswish", "SiLU", "ReLU"],
)
def test_activations_at_their_kinks_match_torch_autograd(bk, rng, cls, fn, nan_passes):
    """PyTorch's side of each kink: ReLU6 has slope 0 at 0 and 6, Hardswish 0 at -3 and 1 at
    3. A NaN gives NaN and passes its gradient (SiLU: NaN), the rule of PyTorch's scalar
    kernels: its vectorised ones differ by position for ReLU6 and Hardswish, so there the
    rule is checked, not torch."""
    Z = KINKS[None, :]
    dLdA = rounded(rng.standard_normal(Z.shape), bk.dtype_name)
    A_ref, grads = torch_reference(lambda A: fn(A), {"A": Z}, dLdA)
    layer = cls()
    assert_close(layer.forward(on(bk, Z)), A_ref, bk, "A")
    assert_close(layer.backward(on(bk, dLdA)), grads["A"], bk, "dLdZ")

    A = snapshot(layer.forward(on(bk, np.array([[np.nan, 1.0]]))))
    dLdZ = snapshot(layer.backward(on(bk, np.array([[2.0, 2.0]]))))
    assert np.isnan(A[0, 0])
    np.testing.assert_array_equal(dLdZ[0, 0], 2.0 if nan_passes else np.nan)


# --------------------------------------------------------------------------- pooling


def _minus_inf_input(nd: int) -> np.ndarray:
    """Channel 0 all -inf; channel 1 -inf at the start of each axis (where the windows that
    begin in the padding are) and finite values elsewhere."""
    shape = (1, 2, *(7,) * nd)
    A = np.arange(np.prod(shape), dtype=float).reshape(shape) % 5 - 2.0
    A[:, 0] = -np.inf
    A[(0, 1, *(slice(0, 2),) * nd)] = -np.inf
    return A


@pytest.mark.parametrize("fast", ["auto", "never"])
@pytest.mark.parametrize(
    "make, fn",
    [
        (
            lambda: L.MaxPool2d(kernel_size=3, stride=2, padding=1),
            lambda A: F.max_pool2d(A, 3, 2, 1),
        ),
        (lambda: L.MaxPool1d(4, 3, 2), lambda A: F.max_pool1d(A, 4, 3, 2)),
        (
            lambda: L.MaxPool2d((3, 2), (1, 2), (1, 1)),
            lambda A: F.max_pool2d(A, (3, 2), (1, 2), (1, 1)),
        ),
    ],
    ids=["2d", "1d", "2d-per-axis"],
)
def test_padded_max_pool_of_minus_inf_matches_torch(bk, fast, make, fn):
    """A window whose maximum is -inf ties with the padding's -inf: its gradient goes to its
    first input element, as PyTorch's does, never to the padding (which would lose it)."""
    layer = make()
    A = _minus_inf_input(layer._nd)
    Z_ref, _ = torch_reference(fn, {"A": A}, None)
    dLdZ = rounded(np.random.default_rng(3).standard_normal(Z_ref.shape), bk.dtype_name)
    _, grads = torch_reference(fn, {"A": A}, dLdZ)
    with fast_paths(fast):
        Z = layer.forward(on(bk, A))
        dLdA = layer.backward(on(bk, dLdZ))
    np.testing.assert_array_equal(snapshot(Z), Z_ref)  # a maximum is exact; -inf compared too
    assert_close(dLdA, grads["A"], bk, "dLdA")


def _pool_case(draw, nd):
    kernel = tuple(draw(st.integers(1, 4)) for _ in range(nd))
    stride = tuple(draw(st.integers(1, 4)) for _ in range(nd))
    padding = tuple(draw(st.integers(0, k // 2)) for k in kernel)
    size = tuple(max(1, k - 2 * p + draw(st.integers(0, 6))) for k, p in zip(kernel, padding))
    return kernel, stride, padding, size


@given(
    nd=st.sampled_from([1, 2]),
    kind=st.sampled_from(["max", "mean", "avg-exclude-pad"]),
    data=st.data(),
    seed=st.integers(0, 2**16),
)
def test_padded_pools_any_geometry_match_torch(bk64, nd, kind, data, seed):
    """Any per-axis kernel, stride and padding (up to half the kernel) with a window that fits
    the padded input: shapes, values and gradients as PyTorch's."""
    kernel, stride, padding, size = _pool_case(data.draw, nd)
    if kind == "max":
        layer = (L.MaxPool1d if nd == 1 else L.MaxPool2d)(kernel, stride, padding)
        fn = F.max_pool1d if nd == 1 else F.max_pool2d
    elif kind == "mean":
        layer = (L.MeanPool1d if nd == 1 else L.MeanPool2d)(kernel_size=kernel, stride=stride,
                                                            padding=padding)  # fmt: skip
        fn = F.avg_pool1d if nd == 1 else F.avg_pool2d
    else:
        layer = (L.AvgPool1d if nd == 1 else L.AvgPool2d)(kernel, stride, padding, False)
        pool = F.avg_pool1d if nd == 1 else F.avg_pool2d

        def fn(A, kernel, stride, padding):
            return pool(A, kernel, stride, padding, count_include_pad=False)

    rng = np.random.default_rng(seed)
    # distinct values: no ties, whose gradient PyTorch and the handout may place differently
    A = rng.permutation(np.prod((2, 2, *size))).reshape((2, 2, *size)) / 7.0
    torch_fn = lambda A: fn(A, kernel, stride, padding)  # noqa: E731
    Z_ref, _ = torch_reference(torch_fn, {"A": A}, None)
    dLdZ = rng.standard_normal(Z_ref.shape)
    _, grads = torch_reference(torch_fn, {"A": A}, dLdZ)
    assert_close(layer.forward(on(bk64, A)), Z_ref, bk64, "Z")
    assert_close(layer.backward(on(bk64, dLdZ)), grads["A"], bk64, "dLdA")


@given(
    nd=st.sampled_from([1, 2]),
    sizes=st.lists(st.integers(1, 9), min_size=2, max_size=2),
    data=st.data(),
    seed=st.integers(0, 2**16),
)
def test_adaptive_avg_pool_any_size_matches_torch(bk64, nd, sizes, data, seed):
    """Every output size up to the input's: PyTorch's bins, overlapping ones included."""
    size = tuple(sizes[:nd])
    out = tuple(data.draw(st.integers(1, n)) for n in size)
    output_size = out[0] if nd == 1 else out
    layer = (L.AdaptiveAvgPool1d if nd == 1 else L.AdaptiveAvgPool2d)(output_size)
    fn = F.adaptive_avg_pool1d if nd == 1 else F.adaptive_avg_pool2d
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((2, 3, *size))
    Z_ref, _ = torch_reference(lambda A: fn(A, output_size), {"A": A}, None)
    dLdZ = rng.standard_normal(Z_ref.shape)
    _, grads = torch_reference(lambda A: fn(A, output_size), {"A": A}, dLdZ)
    assert_close(layer.forward(on(bk64, A)), Z_ref, bk64, "Z")
    assert_close(layer.backward(on(bk64, dLdZ)), grads["A"], bk64, "dLdA")


def test_pool_arguments_as_given():
    """The handout's positional kernel, PyTorch's keyword, tuples kept as tuples."""
    assert repr(L.MaxPool2d(2)) == "MaxPool2d(kernel=2, stride=2)"
    layer = L.MaxPool2d(kernel_size=(3, 2), padding=(1, 0))
    assert (layer.kernel, layer.kernel_size, layer.stride, layer.padding) == (
        (3, 2), (3, 2), (3, 2), (1, 0))  # fmt: skip
    assert repr(layer) == "MaxPool2d(kernel_size=(3, 2), stride=(3, 2), padding=(1, 0))"
    assert repr(L.AvgPool1d(3, padding=1, count_include_pad=False)) == (
        "AvgPool1d(kernel_size=3, stride=3, padding=1, count_include_pad=False)")  # fmt: skip
    assert repr(L.AdaptiveAvgPool2d((3, 2))) == "AdaptiveAvgPool2d((3, 2))"


# --------------------------------------------------------- padded pooling in the plan


def _steps(model):
    return [type(step).__name__ for step in model._ran.steps]


def test_relu_then_padded_max_pool_fused_matches_torch(bk, rng):
    """ReLU + a padded max pooling run pooling first (``PoolThenReLU``): the -inf padding never
    wins, so the output and the gradient are the layers' in turn, and PyTorch's."""
    A = rounded(rng.standard_normal((2, 3, 7, 8)), bk.dtype_name)
    fn = lambda A: F.max_pool2d(F.relu(A), 3, 2, 1)  # noqa: E731
    Z_ref, _ = torch_reference(fn, {"A": A}, None)
    dLdZ = rounded(rng.standard_normal(Z_ref.shape), bk.dtype_name)
    _, grads = torch_reference(fn, {"A": A}, dLdZ)
    for mode in ("auto", "never"):
        with fast_paths(mode):
            model = Sequential(L.ReLU(), L.MaxPool2d(3, 2, 1))
            Z = model.forward(on(bk, A))
            dLdA = model.backward(on(bk, dLdZ))
            fused = ["PoolThenReLU"] if mode == "auto" else ["Step", "Step"]
            assert _steps(model) == fused
        assert_close(Z, Z_ref, bk, f"Z ({mode})")
        assert_close(dLdA, grads["A"], bk, f"dLdA ({mode})")


@pytest.mark.parametrize("padding", [0, 1])
def test_batchnorm_relu_padded_max_pool_not_pooled_first(monkeypatch, padding):
    """On NumPy's batch-norm fast path, BatchNorm + ReLU + max pooling is one step that pools
    first, but for a padded pooling (whose gradient has the padded shape): that one runs as
    its own step after the fused BatchNorm + ReLU. PyTorch's results either way."""
    import portaconv.backend.fast.norm as norm

    monkeypatch.setattr(norm, "CHUNK_BYTES", 256)  # small inputs take it
    monkeypatch.setattr(norm, "MIN_ROWS", 1)
    rng = np.random.default_rng(5)
    A = rng.standard_normal((6, 4, 9, 10))
    BW, Bb = rng.uniform(0.5, 1.5, 4), rng.standard_normal(4)
    dLdZ = None
    with use_backend("numpy", None, "float64"):
        bn = L.BatchNorm2d(4)
        bn.BW, bn.Bb = BW.copy(), Bb.copy()
        model = Sequential(bn, L.ReLU(), L.MaxPool2d(3, 2, padding))
        Z = model.forward(A)
        dLdZ = rng.standard_normal(Z.shape)
        dLdA = model.backward(dLdZ)
        assert _steps(model) == (["NormStep"] if padding == 0 else ["NormStep", "Step"])
        (step, *_) = model._ran.steps
        assert step._engine is not None and step._engine.pooled is (padding == 0)

    def fn(A, BW, Bb):
        Y = F.batch_norm(A, None, None, BW, Bb, training=True, eps=1e-5)
        return F.max_pool2d(F.relu(Y), 3, 2, padding)

    Z_ref, grads = torch_reference(fn, {"A": A, "BW": BW, "Bb": Bb}, dLdZ)
    np.testing.assert_allclose(Z, Z_ref, atol=1e-10)
    np.testing.assert_allclose(dLdA, grads["A"], atol=1e-10)
    np.testing.assert_allclose(bn.dLdBW, grads["BW"], atol=1e-10)
    np.testing.assert_allclose(bn.dLdBb, grads["Bb"], atol=1e-10)


# -------------------------------------------------------------------- normalisation


@pytest.mark.parametrize(
    "make, shape",
    [
        (lambda: L.LayerNorm((3, 4)), (2, 5, 3, 4)),
        (lambda: L.LayerNorm(4, elementwise_affine=False), (3, 4)),
        (lambda: L.GroupNorm(2, 4), (3, 4, 5)),
        (lambda: L.GroupNorm(1, 2, affine=False), (3, 2, 2, 2)),
    ],
    ids=["LayerNorm", "LayerNorm-no-affine", "GroupNorm", "GroupNorm-no-affine"],
)
def test_sample_norms_have_no_modes_and_their_parameters_only(bk, rng, make, shape):
    """Training and evaluation mode give the same output (each sample's own statistics); the
    parameters are W and b (none without the affine map), and nothing else is saved."""
    layer = make()
    A = on(bk, rng.standard_normal(shape))
    train = snapshot(layer.forward(A))
    np.testing.assert_array_equal(snapshot(layer.eval().forward(A)), train)
    affine = getattr(layer, "elementwise_affine", getattr(layer, "affine", None))
    names = ["W", "b"] if affine else []
    assert list(layer.parameters()) == names and list(layer.state_dict()) == names
    layer.backward(on(bk, rng.standard_normal(shape)))
    assert list(layer.gradients()) == names
