"""portaconv.compat.hw2p1: the handout's bonus layers, written the course's way.

NumPy's global generator seeded with ``np.random.seed``, float64, NCHW, and the public bonus
autograder's calls (``BatchNorm2d(3, 0.4)``, ``Dropout2d(0.4)(x, False)``, ``ResBlock(3, 64,
3, stride=4, padding=4)`` on integer arrays). Oracles: PyTorch float64 autograd for every
forward and backward (``nn.BatchNorm2d(eps=1e-8, momentum=1 - alpha)``, ``F.conv2d``), the
handout's definitions written out in torch where PyTorch differs (the biased running
variance), and NumPy's own draws after the same seed for the masks and weights: each test
seeds, draws what the handout's code would draw in the handout's order, and builds the
oracle from those draws, never from the layers under test.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import portaconv
from portaconv.backend import to_backend
from portaconv.compat.hw2p1 import BatchNorm2d, ConvBlock, Dropout2d, ResBlock
from portaconv.layers import Identity

from .helpers import assert_close, rx

TOL = dict(rtol=1e-10, atol=1e-10)  # float64 against float64


@pytest.fixture(autouse=True)
def _numpy_backend():
    """The handout's code is NumPy: these tests run there (the default backend's dtype)."""
    with portaconv.use_backend("numpy"):
        yield


def close(actual, expected, what=""):
    """``actual`` is a float64 NumPy array matching ``expected`` to float64's tolerance."""
    assert isinstance(actual, np.ndarray) and actual.dtype == np.float64, what
    expected = expected.detach().numpy() if isinstance(expected, torch.Tensor) else expected
    scale = max(1.0, float(np.max(np.abs(expected))))
    np.testing.assert_allclose(
        actual, expected, rtol=TOL["rtol"], atol=TOL["atol"] * scale, err_msg=what
    )


def t(x, grad=False):
    return torch.tensor(np.asarray(x, dtype=np.float64), requires_grad=grad)


# ------------------------------------------------------------------------------ BatchNorm2d


@pytest.mark.parametrize("assigned_affine", [False, True], ids=["defaults", "assigned-BW-Bb"])
def test_batchnorm2d_matches_torch_and_the_handouts_running_statistics(assigned_affine):
    """The autograder's check, with two training steps: train forward, running statistics,
    eval forward (running statistics unchanged), then backward, which is the last training
    forward's."""
    alpha, C = 0.4, 3
    np.random.seed(11785)
    first = np.random.random((5, C, 4, 4))
    x = np.random.random((5, C, 4, 4))
    delta = np.random.random((5, C, 4, 4))
    bn = BatchNorm2d(C, alpha)
    twin = torch.nn.BatchNorm2d(C, eps=1e-8, momentum=1 - alpha).double()
    if assigned_affine:  # the handout's code may assign the parameters directly
        BW, Bb = np.random.normal(size=(1, C, 1, 1)), np.random.normal(size=(1, C, 1, 1))
        bn.BW, bn.Bb = BW, Bb
        with torch.no_grad():
            twin.weight.copy_(t(BW.ravel()))
            twin.bias.copy_(t(Bb.ravel()))
    running_V = np.ones((1, C, 1, 1))
    for step, data in enumerate((first, x)):
        xt = t(data, grad=True)
        yt = twin(xt)
        y = bn(data, False)
        close(y, yt, f"train forward {step}")
        # torch moves running_mean as the handout moves running_M (momentum = 1 - alpha)
        close(bn.running_M, twin.running_mean.reshape(1, C, 1, 1), f"running_M {step}")
        # its running_var takes the unbiased variance; the handout's takes the biased one
        V = torch.var(xt.detach(), dim=(0, 2, 3), correction=0).numpy().reshape(1, C, 1, 1)
        running_V = alpha * running_V + (1 - alpha) * V
        close(bn.running_V, running_V, f"running_V {step}")
        assert bn.running_M.shape == bn.running_V.shape == bn.M.shape == (1, C, 1, 1)

    M, V = bn.running_M.copy(), bn.running_V.copy()
    expected = F.batch_norm(
        t(x), t(M.ravel()), t(V.ravel()), twin.weight, twin.bias, training=False, eps=1e-8
    )
    close(bn(x, True), expected, "eval forward")
    np.testing.assert_array_equal(bn.running_M, M)
    np.testing.assert_array_equal(bn.running_V, V)

    yt.backward(t(delta))
    dLdZ = bn.backward(delta)
    close(dLdZ, xt.grad, "dLdZ after an eval forward")
    close(bn.dLdBW, twin.weight.grad.reshape(1, C, 1, 1), "dLdBW")
    close(bn.dLdBb, twin.bias.grad.reshape(1, C, 1, 1), "dLdBb")


def test_batchnorm2d_layer_mode_and_integer_input():
    """``eval=None`` follows ``.train()``/``.eval()``; integer input computes in float64."""
    np.random.seed(3)
    x = np.random.randint(0, 255, size=(4, 2, 3, 3))
    bn = BatchNorm2d(2)
    expected = F.batch_norm(t(x), None, None, training=True, eps=1e-8)
    close(bn(x), expected, "forward(Z): the training forward")
    close(bn.running_M, 0.1 * np.mean(x, axis=(0, 2, 3), keepdims=True), "alpha 0.9 by default")
    M, V = bn.running_M.ravel(), bn.running_V.ravel()
    close(bn.eval()(x), F.batch_norm(t(x), t(M), t(V), training=False, eps=1e-8), ".eval()")


# -------------------------------------------------------------------------------- Dropout2d


def test_dropout2d_masks_are_the_handouts_draws():
    """The autograder's check: after ``np.random.seed(11785)`` the masks are
    ``np.random.binomial(1, 0.6, (N, C))``, one per training forward; an eval forward
    returns x and draws nothing; backward follows the last training forward."""
    p, shape = 0.4, (5, 3, 4, 4)
    np.random.seed(11785)
    x, delta = np.random.random(shape), np.random.random(shape)
    drop = Dropout2d(p)
    y = drop(x, False)
    assert drop(x, True) is x
    dx = drop.backward(delta)
    y2 = drop(x, False)
    after = np.random.random()

    np.random.seed(11785)
    np.random.random(shape), np.random.random(shape)
    masks = [np.random.binomial(1, 1 - p, shape[:2]) for _ in range(2)]
    assert after == np.random.random(), "the eval forward drew from the generator"
    for i, (got, mask) in enumerate(zip((y, y2), masks)):
        xt = t(x, grad=True)
        yt = xt * t(mask)[:, :, None, None] / (1 - p)
        close(got, yt, f"forward {i}")
        if i == 0:
            yt.backward(t(delta))
            close(dx, xt.grad, "backward after an eval forward")
    np.testing.assert_array_equal(drop.mask, masks[1][:, :, None, None])
    assert 0 < masks[0].sum() < masks[0].size  # the draws drop some channels, not all


def test_dropout2d_eval_mode_integer_input_and_p_one():
    drop = Dropout2d(0.3)
    ints = np.arange(8).reshape(1, 2, 2, 2)
    np.random.seed(0)
    y = drop(ints)  # training by default: the handout's forward(x, eval=False)
    np.random.seed(0)
    mask = np.random.binomial(1, 0.7, (1, 2))[:, :, None, None]
    close(y, ints * mask / 0.7, "integer input")
    assert drop.eval()(ints).dtype == np.float64
    np.testing.assert_array_equal(Dropout2d(1.0)(ints, False), np.zeros((1, 2, 2, 2)))


# ---------------------------------------------------------------------- ConvBlock, ResBlock


def _torch_resblock(x, weights, stride, padding):
    """The handout's ResBlock in torch: ConvBlock = conv (zero bias) + batch norm in training
    mode, eps 1e-8; weights in the order drawn (main path's two, then the projection's)."""

    def conv_block(A, W, s, p):
        return F.batch_norm(
            F.conv2d(A, W, stride=s, padding=p), None, None, training=True, eps=1e-8
        )

    main = conv_block(F.relu(conv_block(x, weights[0], stride, padding)), weights[1], 1, 0)
    shortcut = conv_block(x, weights[2], stride, padding) if len(weights) == 3 else x
    return F.relu(main + shortcut)


@pytest.mark.parametrize(
    "args, x_shape",
    [
        ((3, 64, 3, 4, 4), (5, 3, 128, 128)),  # the autograder's
        (
            (2, 2, 3),
            (2, 2, 7, 7),
        ),  # the default stride 3, padding 1: projected though C_in == C_out
        ((4, 4, 1, 1, 0), (2, 4, 5, 5)),  # nothing to project: the identity shortcut
    ],
    ids=["autograder", "defaults", "identity"],
)
def test_resblock_matches_torch_with_the_handouts_weight_draws(args, x_shape):
    """Seeded as the autograder seeds, integer data drawn first; the block draws its weights
    (``np.random.normal(0, 1.0, shape)``) main path first, then the projection."""
    c_in, c_out, k, *geometry = args
    stride, padding = geometry or (3, 1)
    n, out = x_shape[0], (x_shape[2] + 2 * padding - k) // stride + 1
    np.random.seed(11785)
    x = np.random.randint(0, 255, size=x_shape)
    delta = np.random.randint(0, 255, size=(n, c_out, out, out))
    block = ResBlock(*args)
    y = block.forward(x)
    dx = block.backward(delta)

    np.random.seed(11785)
    np.random.randint(0, 255, size=x_shape), np.random.randint(0, 255, size=delta.shape)
    shapes = [(c_out, c_in, k, k), (c_out, c_out, 1, 1)]
    projects = (stride, c_in, k, padding) != (1, c_out, 1, 0)
    weights = [t(np.random.normal(0, 1.0, s), grad=True) for s in shapes + shapes[:projects]]
    xt = t(x, grad=True)
    yt = _torch_resblock(xt, weights, stride, padding)
    yt.backward(t(delta))
    close(y, yt, "forward")
    close(dx, xt.grad, "backward")
    convs = [block.convolution_layers[0][0], block.convolution_layers[2][0]]
    if projects:
        convs.append(block.residual_connection[0])
    else:
        assert isinstance(block.residual_connection, Identity)
    for i, (conv, W) in enumerate(zip(convs, weights)):
        close(conv.dLdW, W.grad, f"dLdW of convolution {i}")


def test_resblock_parameters_mode_and_convblock():
    np.random.seed(0)
    block = ResBlock(2, 3, 3, stride=2, padding=1)
    assert repr(block) == "ResBlock(2, 3, filter_size=3, stride=2, padding=1)"
    names = sorted(block.parameters())
    assert names[:2] == ["convolution_layers.0.0.W", "convolution_layers.0.0.b"]
    assert "residual_connection.1.BW" in names and block.parameters()[
        "residual_connection.1.BW"
    ].shape == (1, 3, 1, 1)
    x = np.random.randint(0, 9, size=(2, 2, 6, 6))
    block.forward(x)
    norm = block.convolution_layers[0][1]
    running = norm.running_M.copy()
    block.eval().forward(x)
    np.testing.assert_array_equal(norm.running_M, running)  # eval mode reached the norms

    np.random.seed(5)
    convblock = ConvBlock(2, 3, 3, 1, 1)
    np.random.seed(5)
    W = np.random.normal(0, 1.0, (3, 2, 3, 3))
    expected = F.batch_norm(F.conv2d(t(x), t(W), padding=1), None, None, training=True, eps=1e-8)
    close(convblock.forward(x), expected, "ConvBlock")
    assert [type(layer).__name__ for layer in convblock.layers] == ["Conv2d", "BatchNorm2d"]


# -------------------------------------------------------------------------------- bad input


X4 = np.ones((2, 3, 2, 2))
BN, DROP = "BatchNorm2d", "Dropout2d"
BAD_INPUT = [  # (id, the call, the error, who complains, the message after "who: ")
    ("alpha-range", lambda: BatchNorm2d(3, 1.5), ValueError, BN, r"alpha .* in \[0, 1\], got 1.5"),
    (
        "alpha-type",
        lambda: BatchNorm2d(3, "0.4"),
        TypeError,
        BN,
        "alpha .* a real number, got '0.4'",
    ),
    ("num_features", lambda: BatchNorm2d(0), ValueError, BN, "num_features must be a positive"),
    (
        "bn-eval",
        lambda: BatchNorm2d(3)(X4, "no"),
        TypeError,
        BN,
        "eval must be True, False or None",
    ),
    (
        "bn-channels",
        lambda: BatchNorm2d(2)(X4, True),
        ValueError,
        BN,
        r"Z must have num_features=2",
    ),
    ("bn-rank", lambda: BatchNorm2d(3)(X4[0], False), ValueError, BN, "Z must have 4 dimensions"),
    (
        "bn-backward-first",
        lambda: BatchNorm2d(3).backward(X4),
        ValueError,
        BN,
        "backward called before",
    ),
    ("p-range", lambda: Dropout2d(1.5), ValueError, DROP, r"p must be a probability in \[0, 1\]"),
    (
        "dropout-rank",
        lambda: Dropout2d()(X4[0], False),
        ValueError,
        DROP,
        "x must have 4 dimensions",
    ),
    (
        "dropout-eval",
        lambda: Dropout2d()(X4, 0),
        TypeError,
        DROP,
        "eval must be True, False or None",
    ),
    (
        "dropout-backward-first",
        lambda: Dropout2d().backward(X4),
        ValueError,
        DROP,
        "backward called",
    ),
    (
        "resblock",
        lambda: ResBlock(3, 0, 3),
        ValueError,
        "Conv2d",
        "out_channels must be a positive",
    ),
]


@pytest.mark.parametrize(
    "call, error, owner, message", [row[1:] for row in BAD_INPUT], ids=[row[0] for row in BAD_INPUT]
)
def test_bad_input_is_refused_in_the_librarys_words(call, error, owner, message):
    with pytest.raises(error, match=rx(owner, message)):
        call()


def test_dropout2d_backward_needs_the_training_forwards_shape():
    drop = Dropout2d(0.5)
    drop(np.ones((2, 3, 2, 2)), False)
    drop(np.ones((1, 3, 2, 2)), True)  # an eval forward leaves the training forward's mask
    with pytest.raises(
        ValueError, match=rx("Dropout2d", r"delta must have the shape .*\(2, 3, 2, 2\)")
    ):
        drop.backward(np.ones((1, 3, 2, 2)))


# ------------------------------------------------------------------ on the session's backend


def test_bonus_layers_on_the_backend(bk64):
    """Dropout2d's masks come from NumPy's generator and move to the input's library and
    device; the batch norm's parameters live on the backend, in float64. (The arithmetic
    around them is portaconv's, checked on every backend by its own tests.)"""
    np.random.seed(7)
    x, delta = np.random.random((3, 2, 2, 2)), np.random.random((3, 2, 2, 2))
    drop = Dropout2d(0.5)
    y = drop(to_backend(x, bk64), False)
    dx = drop.backward(to_backend(delta, bk64))
    np.random.seed(7)
    np.random.random((3, 2, 2, 2)), np.random.random((3, 2, 2, 2))
    mask = t(np.random.binomial(1, 0.5, (3, 2))[:, :, None, None])
    xt = t(x, grad=True)
    yt = xt * mask / 0.5
    yt.backward(t(delta))
    assert_close(y, yt.detach().numpy(), bk64, "forward")
    assert_close(dx, xt.grad.numpy(), bk64, "backward")
    bn = BatchNorm2d(2)
    starts = {"BW": 1.0, "Bb": 0.0, "dLdBW": 0.0, "dLdBb": 0.0, "running_M": 0.0, "running_V": 1.0}
    for name, value in starts.items():
        assert_close(getattr(bn, name), np.full((1, 2, 1, 1), value), bk64, name, "float64")
