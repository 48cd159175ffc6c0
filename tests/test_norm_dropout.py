"""BatchNorm and Dropout against PyTorch, on every backend: their modes, running statistics
and random masks.

The oracle is PyTorch in float64 (``torch.nn.functional.batch_norm``, ``torch.nn.BatchNorm*d``
and autograd), fed the same inputs and parameters rounded to the test dtype. Dropout's mask
is random, so it is checked two ways: with the mask the layer drew (forward and backward
against PyTorch applying that mask / (1 - p)), and by its statistics on a large input.

Global average pooling, and what every layer shares (conformance in training mode, bad
inputs, gradients and hyper-parameters, other libraries and devices), are rows of the layer
table (tests/layer_specs.py), tested in test_layers.py and test_errors.py.
"""

from __future__ import annotations

import json
import math
import zlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

import portaconv
from portaconv.backend._arrays import to_numpy
from portaconv.backend._random import get_rng_state, host_rng, set_rng_state
from portaconv.layers import Linear
from portaconv.layers.dropout import Dropout, Dropout1d, Dropout2d
from portaconv.layers.normalization import BatchNorm1d, BatchNorm2d

from .helpers import (
    assert_close,
    assert_on_backend,
    finite_difference_check,
    floats,
    on,
    rounded,
    rx,
    snapshot,
    torch_reference,
)

# ------------------------------------------------------------------------------- helpers

EPS, MOMENTUM = 1e-5, 0.1


def _draw(rng, shape, dtype):
    """Inputs with a channel-dependent mean and spread, so normalising has work to do."""
    if len(shape) < 2:
        return rounded(0.5 + 1.5 * rng.standard_normal(shape), dtype)
    C = shape[1]
    mean = np.linspace(-2.0, 3.0, C).reshape((1, C) + (1,) * (len(shape) - 2))
    spread = np.linspace(0.5, 2.5, C).reshape(mean.shape)
    return rounded(mean + spread * rng.standard_normal(shape), dtype)


def _bn_layer(cls, C, bk, rng, eps=EPS, momentum=MOMENTUM):
    """A layer with random BW and Bb (as float64 NumPy, rounded to the backend's dtype)."""
    layer = cls(C, eps=eps, momentum=momentum)
    BW = rounded(1.0 + 0.5 * rng.standard_normal(C), bk.dtype_name)
    Bb = rounded(rng.standard_normal(C), bk.dtype_name)
    layer.BW, layer.Bb = on(bk, BW), on(bk, Bb)
    return layer, BW, Bb


def _torch_train(eps=EPS):
    return lambda A, W, b: F.batch_norm(A, None, None, W, b, training=True, eps=eps)


def _torch_eval(mean, var, eps=EPS):
    rm, rv = torch.tensor(mean), torch.tensor(var)
    return lambda A, W, b: F.batch_norm(A, rm, rv, W, b, training=False, eps=eps)


BN_CASES = [
    pytest.param(BatchNorm1d, (6, 4), id="BatchNorm1d-(N,C)"),
    pytest.param(BatchNorm1d, (2, 3), id="BatchNorm1d-(N,C)-N2"),
    pytest.param(BatchNorm1d, (4, 3, 7), id="BatchNorm1d-(N,C,L)"),
    pytest.param(BatchNorm1d, (1, 2, 5), id="BatchNorm1d-(N,C,L)-N1"),
    pytest.param(BatchNorm2d, (3, 4, 5, 6), id="BatchNorm2d"),
    pytest.param(BatchNorm2d, (1, 2, 3, 3), id="BatchNorm2d-N1"),
    pytest.param(BatchNorm2d, (5, 1, 1, 1), id="BatchNorm2d-1x1"),
]


# ------------------------------------------------------------------ BatchNorm, training


@pytest.mark.parametrize("cls, shape", BN_CASES)
def test_batchnorm_training_matches_torch(bk, rng, cls, shape):
    layer, BW, Bb = _bn_layer(cls, shape[1], bk, rng)
    A = _draw(rng, shape, bk.dtype_name)
    dLdBZ = rounded(rng.standard_normal(shape), bk.dtype_name)
    expected_Z, expected = torch_reference(_torch_train(), {"A": A, "W": BW, "b": Bb}, dLdBZ)

    A_b, dLdBZ_b = on(bk, A), on(bk, dLdBZ)
    A_before, dLdBZ_before = snapshot(A_b), snapshot(dLdBZ_b)
    assert_close(layer.forward(A_b), expected_Z, bk, "BZ")
    assert_close(layer.backward(dLdBZ_b), expected["A"], bk, "dLdZ")
    assert_close(layer.dLdBW, expected["W"], bk, "dLdBW")
    assert_close(layer.dLdBb, expected["b"], bk, "dLdBb")
    np.testing.assert_array_equal(snapshot(A_b), A_before, err_msg="forward/backward modified Z")
    np.testing.assert_array_equal(snapshot(dLdBZ_b), dLdBZ_before, err_msg="backward modified")


@pytest.mark.parametrize("cls, shape", BN_CASES)
def test_batchnorm_running_statistics_match_torch(bk, rng, cls, shape):
    """Three training steps with different batches: running_M and running_V as torch's
    running_mean and running_var (which use the unbiased variance), then eval mode."""
    momentum = 0.3
    C = shape[1]
    layer, BW, Bb = _bn_layer(cls, C, bk, rng, momentum=momentum)
    module = getattr(torch.nn, cls.__name__)(C, eps=EPS, momentum=momentum, dtype=torch.float64)
    with torch.no_grad():
        module.weight.copy_(torch.tensor(BW))
        module.bias.copy_(torch.tensor(Bb))
    for step in range(3):
        A = _draw(rng, shape, bk.dtype_name) * (step + 1)
        module(torch.tensor(A))
        layer.forward(on(bk, A))
        assert_close(layer.running_M, module.running_mean.numpy(), bk, f"running_M step {step}")
        assert_close(layer.running_V, module.running_var.numpy(), bk, f"running_V step {step}")
    assert not np.allclose(module.running_var.numpy(), 1.0), "the test must move running_var"

    # eval mode normalises with the running statistics, and leaves them alone
    assert layer.eval() is layer and not layer.training
    module.eval()
    A = _draw(rng, shape, bk.dtype_name)
    dLdBZ = rounded(rng.standard_normal(shape), bk.dtype_name)
    tA = torch.tensor(A, requires_grad=True)
    tZ = module(tA)
    tZ.backward(torch.tensor(dLdBZ))
    M_before, V_before = snapshot(layer.running_M), snapshot(layer.running_V)
    assert_close(layer.forward(on(bk, A)), tZ.detach().numpy(), bk, "eval BZ")
    assert_close(layer.backward(on(bk, dLdBZ)), tA.grad.numpy(), bk, "eval dLdZ")
    assert_close(layer.dLdBW, module.weight.grad.numpy(), bk, "eval dLdBW")
    assert_close(layer.dLdBb, module.bias.grad.numpy(), bk, "eval dLdBb")
    np.testing.assert_array_equal(snapshot(layer.running_M), M_before)
    np.testing.assert_array_equal(snapshot(layer.running_V), V_before)


@pytest.mark.parametrize("cls, shape", BN_CASES)
def test_batchnorm_eval_matches_torch(bk, rng, cls, shape):
    """Running statistics loaded from NumPy; eval() and forward(eval=True) both use them."""
    C = shape[1]
    layer, BW, Bb = _bn_layer(cls, C, bk, rng)
    mean = rounded(rng.standard_normal(C), bk.dtype_name)
    var = rounded(0.5 + rng.random(C), bk.dtype_name)
    layer.load_state_dict({"BW": BW, "Bb": Bb, "running_M": mean, "running_V": var})
    A = _draw(rng, shape, bk.dtype_name)
    dLdBZ = rounded(rng.standard_normal(shape), bk.dtype_name)
    fn = _torch_eval(mean, var)
    expected_Z, expected = torch_reference(fn, {"A": A, "W": BW, "b": Bb}, dLdBZ)

    for how in ("override", "mode"):
        if how == "mode":
            layer.eval()
            Z = layer.forward(on(bk, A))
            layer.train()  # backward follows the mode forward ran in, not the current one
        else:
            assert layer.training
            Z = layer.forward(on(bk, A), eval=True)
        assert_close(Z, expected_Z, bk, f"BZ ({how})")
        assert_close(layer.backward(on(bk, dLdBZ)), expected["A"], bk, f"dLdZ ({how})")
        assert_close(layer.dLdBW, expected["W"], bk, f"dLdBW ({how})")
        assert_close(layer.dLdBb, expected["b"], bk, f"dLdBb ({how})")
        assert_close(layer.running_M, mean, bk, "running_M unchanged")
        assert_close(layer.running_V, var, bk, "running_V unchanged")


def test_batchnorm_train_override_in_eval_mode(bk, rng):
    """forward(eval=False) on a layer in eval mode uses (and updates) the batch statistics."""
    layer, BW, Bb = _bn_layer(BatchNorm2d, 3, bk, rng)
    layer.eval()
    A = _draw(rng, (4, 3, 3, 2), bk.dtype_name)
    expected_Z, _ = torch_reference(_torch_train(), {"A": A, "W": BW, "b": Bb}, None)
    assert_close(layer.forward(on(bk, A), eval=False), expected_Z, bk, "BZ")
    batch = A.transpose(1, 0, 2, 3).reshape(3, -1)
    assert_close(layer.running_M, 0.1 * batch.mean(axis=1), bk, "running_M")
    assert_close(layer.running_V, 0.9 + 0.1 * batch.var(axis=1, ddof=1), bk, "running_V")


def test_batchnorm_eval_accepts_one_value_per_channel(bk, rng):
    """Only the batch statistics need two values; eval mode takes a batch of one, as torch."""
    layer, BW, Bb = _bn_layer(BatchNorm1d, 3, bk, rng)
    A = _draw(rng, (1, 3), bk.dtype_name)
    expected_Z, _ = torch_reference(
        _torch_eval(np.zeros(3), np.ones(3)), {"A": A, "W": BW, "b": Bb}, None
    )
    assert_close(layer.eval().forward(on(bk, A)), expected_Z, bk, "BZ")


def test_batchnorm_defaults_and_state_dict_round_trip(bk, rng):
    layer = BatchNorm2d(3)
    assert (layer.eps, layer.momentum, layer.param_names) == (1e-5, 0.1, ("BW", "Bb"))
    assert layer.buffer_names == ("running_M", "running_V")
    for name, value in [("BW", 1), ("Bb", 0), ("running_M", 0), ("running_V", 1)]:
        assert_close(getattr(layer, name), np.full(3, float(value)), bk, name)
    for name in ("dLdBW", "dLdBb"):
        assert_close(getattr(layer, name), np.zeros(3), bk, name)
    assert set(layer.parameters()) == set(layer.gradients()) == {"BW", "Bb"}

    layer, _, _ = _bn_layer(BatchNorm2d, 3, bk, rng)
    for _ in range(2):
        layer.forward(on(bk, _draw(rng, (4, 3, 2, 2), bk.dtype_name)))
    state = layer.state_dict()
    assert list(state) == ["BW", "Bb", "running_M", "running_V"]
    assert all(state[n] is not getattr(layer, n) for n in state), "state_dict must copy"

    A = on(bk, _draw(rng, (2, 3, 2, 2), bk.dtype_name))
    expected = to_numpy(layer.eval().forward(A))
    for source in ("backend", "numpy"):
        restored = BatchNorm2d(3)
        restored.load_state_dict(
            state if source == "backend" else {k: to_numpy(v) for k, v in state.items()}
        )
        for name in state:
            value = getattr(restored, name)
            assert_on_backend(value, bk, name)
            np.testing.assert_array_equal(to_numpy(value), to_numpy(state[name]), err_msg=name)
        np.testing.assert_array_equal(to_numpy(restored.eval().forward(A)), expected)


@pytest.mark.parametrize("cls, shape", BN_CASES)
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_batchnorm_finite_differences(bk64, rng, cls, shape, mode):
    layer, _, _ = _bn_layer(cls, shape[1], bk64, rng)
    C = shape[1]
    layer.running_M = on(bk64, rng.standard_normal(C))
    layer.running_V = on(bk64, 0.5 + rng.random(C))
    layer.train(mode == "train")
    finite_difference_check(layer, on(bk64, _draw(rng, shape, "float64")), params=("BW", "Bb"))


@pytest.mark.parametrize("cls, shape", [p for p in BN_CASES if len(p.values[1]) >= 3])
def test_batchnorm_non_contiguous_input(bk, rng, cls, shape):
    """A strided view (every other sample of a wider array) gives the same results."""
    layer, BW, Bb = _bn_layer(cls, shape[1], bk, rng)
    A = _draw(rng, shape, bk.dtype_name)
    wide = np.zeros((*shape[:-1], 2 * shape[-1]))
    wide[..., ::2] = A
    dLdBZ = rounded(rng.standard_normal(shape), bk.dtype_name)
    expected_Z, expected = torch_reference(_torch_train(), {"A": A, "W": BW, "b": Bb}, dLdBZ)
    assert_close(layer.forward(on(bk, wide)[..., ::2]), expected_Z, bk, "BZ")
    assert_close(layer.backward(on(bk, dLdBZ)), expected["A"], bk, "dLdZ")
    assert_close(layer.dLdBW, expected["W"], bk, "dLdBW")


@given(
    n=st.integers(1, 4),
    c=st.integers(1, 3),
    h=st.integers(1, 4),
    w=st.integers(1, 4),
    eps=st.sampled_from([1e-5, 1e-3, 0.5]),
    seed=st.integers(0, 2**16),
)
def test_batchnorm2d_any_shape_matches_torch(bk64, n, c, h, w, eps, seed):
    rng = np.random.default_rng(seed)
    shape = (n, c, h, w)
    layer, BW, Bb = _bn_layer(BatchNorm2d, c, bk64, rng, eps=eps)
    A = _draw(rng, shape, "float64")
    if n * h * w == 1:
        with pytest.raises(ValueError, match="^BatchNorm2d: training needs more than one value"):
            layer.forward(on(bk64, A))
        return
    dLdBZ = rng.standard_normal(shape)
    expected_Z, expected = torch_reference(_torch_train(eps), {"A": A, "W": BW, "b": Bb}, dLdBZ)
    assert_close(layer.forward(on(bk64, A)), expected_Z, bk64, "BZ")
    assert_close(layer.backward(on(bk64, dLdBZ)), expected["A"], bk64, "dLdZ")
    assert_close(layer.dLdBW, expected["W"], bk64, "dLdBW")
    assert_close(layer.dLdBb, expected["b"], bk64, "dLdBb")


# ---------------------------------------------------------------------------- Dropout

DROPOUT_CASES = [  # (class, input shape, mask shape)
    pytest.param(Dropout, (4, 5, 6), (4, 5, 6), id="Dropout-3d"),
    pytest.param(Dropout, (30,), (30,), id="Dropout-1d"),
    pytest.param(Dropout1d, (3, 8, 5), (3, 8, 1), id="Dropout1d"),
    pytest.param(Dropout2d, (3, 8, 5, 4), (3, 8, 1, 1), id="Dropout2d"),
]


@pytest.mark.parametrize("p", [0.2, 0.5, 0.75])
@pytest.mark.parametrize("cls, shape, mask_shape", DROPOUT_CASES)
def test_dropout_with_its_mask_matches_torch(bk, rng, cls, shape, mask_shape, p):
    """Forward and backward against torch applying the mask the layer drew, / (1 - p)."""
    portaconv.manual_seed(1234)
    layer = cls(p)
    A = _draw(rng, shape, bk.dtype_name)
    A_b = on(bk, A)
    A_before = snapshot(A_b)
    Z = layer.forward(A_b)
    assert_on_backend(layer.mask, bk, "mask")
    mask = to_numpy(layer.mask).astype(np.float64)
    assert mask.shape == mask_shape
    assert set(np.unique(mask)) <= {0.0, 1.0}
    assert 0 < mask.sum() < mask.size, "a mask that keeps all or nothing tests nothing"

    dLdZ = rounded(rng.standard_normal(shape), bk.dtype_name)
    fn = lambda A: A * torch.tensor(mask) / (1 - p)  # noqa: E731
    expected_Z, expected = torch_reference(fn, {"A": A}, dLdZ)
    assert_close(Z, expected_Z, bk, "Z")
    assert_close(layer.backward(on(bk, dLdZ)), expected["A"], bk, "dLdA")
    np.testing.assert_array_equal(snapshot(A_b), A_before, err_msg="forward modified x")


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
@pytest.mark.parametrize("cls", [Dropout, Dropout1d, Dropout2d])
def test_dropout_statistics(bk, rng, cls, p):
    """On a large input: the zeroed fraction is p within 5 binomial sigmas, kept values are
    exactly x times 1/(1 - p) (in the dtype), whole channels go together for the channel
    variants, the mean is preserved within 5 sigmas, and backward zeroes the same places."""
    shape = {Dropout: (400, 500), Dropout1d: (200, 300, 4), Dropout2d: (200, 300, 2, 2)}[cls]
    x = rounded(1.0 + rng.random(shape), bk.dtype_name)  # never 0, so a 0 means dropped
    layer = cls(p)
    Z = to_numpy(layer.forward(on(bk, x))).astype(np.float64)
    dropped = Z == 0
    if cls is not Dropout:  # one draw per (sample, channel): all of a channel or none of it
        per_channel = dropped.reshape(*shape[:2], -1)
        assert np.all(per_channel.all(axis=2) | ~per_channel.any(axis=2)), "partial channel"
        dropped_draws = per_channel[..., 0]
    else:
        dropped_draws = dropped
    draws = dropped_draws.size
    fraction = dropped_draws.mean()
    assert abs(fraction - p) <= 5 * math.sqrt(p * (1 - p) / draws), (fraction, p)

    dt = np.dtype(bk.dtype_name)
    scaled = (x.astype(dt) * dt.type(1 / (1 - p))).astype(np.float64)
    np.testing.assert_array_equal(Z[~dropped], scaled[~dropped], err_msg="kept values")
    np.testing.assert_allclose(
        Z[~dropped], x[~dropped] / (1 - p), rtol=1e-6 if dt == "f8" else 2e-7
    )

    # E[Z] = x; Var(Z - x) = x^2 p / (1 - p) per draw (a whole channel at once for Dropout2d)
    group = x.reshape(*dropped_draws.shape, -1).sum(axis=-1)
    sigma = math.sqrt(np.sum(group**2) * p / (1 - p)) / x.size
    assert abs(Z.mean() - x.mean()) <= 5 * sigma, (Z.mean(), x.mean(), sigma)

    dLdA = to_numpy(layer.backward(on(bk, np.ones(shape)))).astype(np.float64)
    np.testing.assert_array_equal(dLdA == 0, dropped, err_msg="backward drops other places")
    np.testing.assert_array_equal(
        dLdA[~dropped], np.full((~dropped).sum(), float(dt.type(1 / (1 - p))))
    )


@pytest.mark.parametrize("cls, shape, mask_shape", DROPOUT_CASES)
def test_dropout_identity_without_drawing(bk, rng, cls, shape, mask_shape):
    """Eval mode, train=False and p=0 are the identity and leave the random stream alone."""
    x = on(bk, _draw(rng, shape, bk.dtype_name))
    dLdZ = on(bk, _draw(rng, shape, bk.dtype_name))
    for layer, kwargs in [
        (cls(0.5).eval(), {}),
        (cls(0.5), {"train": False}),
        (cls(0), {}),
        (cls(0.0), {"train": True}),
    ]:
        state = get_rng_state()
        Z = layer.forward(x, **kwargs)
        np.testing.assert_array_equal(snapshot(Z), snapshot(x))
        np.testing.assert_array_equal(snapshot(layer.backward(dLdZ)), snapshot(dLdZ))
        assert layer.mask is None
        assert get_rng_state() == state, "identity must not draw"


@pytest.mark.parametrize("cls, shape, mask_shape", DROPOUT_CASES)
def test_dropout_p1_gives_zeros(bk, rng, cls, shape, mask_shape):
    layer = cls(1.0)
    state = get_rng_state()
    Z = layer.forward(on(bk, _draw(rng, shape, bk.dtype_name)))
    assert get_rng_state() == state, "p=1 needs no draw"
    assert_close(Z, np.zeros(shape), bk, "Z")
    assert_close(layer.backward(on(bk, _draw(rng, shape, bk.dtype_name))), np.zeros(shape), bk)
    assert_close(layer.mask, np.zeros(mask_shape), bk, "mask")


@pytest.mark.parametrize("cls, shape, mask_shape", DROPOUT_CASES)
def test_dropout_masks_follow_manual_seed(bk, rng, cls, shape, mask_shape):
    """manual_seed fixes the masks (each drawn by the backend's own generator on the array's
    device); successive forwards draw anew; building layers (host draws) between the seed and
    the forward changes nothing. On NumPy, the documented draw."""
    p = 0.4
    x = on(bk, _draw(rng, shape, bk.dtype_name))
    layer = cls(p)
    masks = {}
    for seed in (7, 7, 8):
        portaconv.manual_seed(seed)
        if len(masks.get(7, ())) == 1:
            Linear(30, 20)  # initial values come from the host stream, not the masks'
        layer.forward(x)
        first = to_numpy(layer.mask)
        layer.forward(x)
        masks.setdefault(seed, []).append((first, to_numpy(layer.mask)))
    (a1, a2), (b1, b2) = masks[7]
    np.testing.assert_array_equal(a1, b1)
    np.testing.assert_array_equal(a2, b2)
    assert not np.array_equal(a1, a2), "each forward draws a new mask"
    assert not np.array_equal(a1, masks[8][0][0]), "another seed, another mask"
    if bk.name == "numpy":
        stream = np.random.SeedSequence([7, zlib.crc32(b"numpy")])
        documented = np.random.default_rng(stream).random(mask_shape) < 1 - p
        np.testing.assert_array_equal(a1, documented.astype(a1.dtype))


@pytest.mark.parametrize("cls, shape, mask_shape", DROPOUT_CASES)
def test_dropout_masks_repeat_from_a_saved_random_state(bk, rng, cls, shape, mask_shape):
    """get_rng_state / set_rng_state (what checkpoints keep) repeat the masks exactly, also
    through JSON and in a process whose streams started from another seed."""
    x = on(bk, _draw(rng, shape, bk.dtype_name))
    layer = cls(0.5)
    portaconv.manual_seed(3)
    layer.forward(x)  # the stream exists and has drawn before the state is taken
    state = json.loads(json.dumps(get_rng_state()))
    expected = []
    for _ in range(2):
        layer.forward(x)
        expected.append(snapshot(layer.mask))
    for seed in (3, 99):  # the same process, and one seeded otherwise
        portaconv.manual_seed(seed)
        layer.forward(x)
        set_rng_state(state)
        for i, want in enumerate(expected):
            layer.forward(x)
            np.testing.assert_array_equal(to_numpy(layer.mask), want, err_msg=f"draw {i}")


def test_dropout_train_eval_switch(bk, rng):
    layer = Dropout(0.5)
    assert layer.training
    x = on(bk, 1.0 + rng.random((50, 40)))
    assert (to_numpy(layer.forward(x)) == 0).any()
    assert layer.eval() is layer and not layer.training
    np.testing.assert_array_equal(to_numpy(layer.forward(x)), to_numpy(x))
    assert (to_numpy(layer.forward(x, train=True)) == 0).any(), "train=True overrides eval()"
    assert layer.train() is layer and layer.training
    assert (to_numpy(layer.forward(x)) == 0).any()
    assert layer.forward(x, train=False) is x
    assert repr(Dropout2d(0.25)) == "Dropout2d(p=0.25)"


# ------------------------------------------------------------------------------- errors

# The layer tests, the errors of bad inputs, gradients and hyper-parameters, and inputs from
# another library or device run on the rows of tests/layer_specs.py (BatchNorm, Dropout and
# global average pooling have theirs); what is particular to these layers stays here.


def test_number_like_hyper_parameters_are_accepted(bk64):
    """The positive control: NumPy scalars and Python ints are numbers."""
    assert Dropout(np.float32(0.25)).p == 0.25 and Dropout2d(1).p == 1.0
    layer = BatchNorm2d(np.int64(3), eps=np.float64(1e-3), momentum=1)
    assert (layer.num_features, layer.eps, layer.momentum) == (3, 1e-3, 1.0)
    assert repr(layer) == "BatchNorm2d(3, eps=0.001, momentum=1.0)"


@pytest.mark.parametrize(
    "make, flag",
    [
        (lambda: BatchNorm2d(3), "eval"),
        (lambda: Dropout2d(0.5), "train"),
    ],
    ids=["BatchNorm2d", "Dropout2d"],
)
def test_mode_flag_must_be_bool(bk64, make, flag):
    layer = make()
    name = type(layer).__name__
    with pytest.raises(
        TypeError,
        match=rx(
            name,
            rf"{flag} must be True, False or None, "
            r"got int$",
        ),
    ):
        layer.forward(floats((2, 3, 4, 4))(bk64), **{flag: 1})


def test_an_older_checkpoints_random_state_restores_the_initialisers_stream():
    """Checkpoints written before the device streams hold a NumPy generator state alone."""
    portaconv.manual_seed(5)
    legacy = host_rng().bit_generator.state
    expected = host_rng().random(3)
    portaconv.manual_seed(6)
    set_rng_state(legacy)
    np.testing.assert_array_equal(host_rng().random(3), expected)


@pytest.mark.parametrize(
    "change",
    [
        lambda s: s.pop("streams"),
        lambda s: s.update(seed="7"),
        lambda s: s.update(host={"bit_generator": "nope"}),
        lambda s: s["streams"].update(x={"kind": "torch", "state": 5}),
        lambda s: s["streams"].update(x={"kind": "jax", "key": "ab"}),
        lambda s: s["streams"].update(x={"kind": "cupy", "draws": -1}),
        lambda s: s["streams"].update(x={"kind": "mxnet"}),
    ],
    ids=["no-streams", "seed", "host", "torch", "jax", "cupy", "kind"],
)
def test_a_damaged_random_state_is_refused_and_changes_nothing(change):
    portaconv.manual_seed(5)
    state = get_rng_state()
    change(state)
    with pytest.raises(ValueError, match="not a portaconv random state"):
        set_rng_state(state)
    portaconv.manual_seed(5)
    expected = host_rng().random(2)
    portaconv.manual_seed(5)
    with pytest.raises(ValueError):
        set_rng_state(state)
    np.testing.assert_array_equal(host_rng().random(2), expected)
