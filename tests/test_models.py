"""Models against PyTorch float64 oracles: the MLP, the two scanning-MLP CNNs, the CNN.

Every oracle is written here in torch from the model's definition (the scanning MLP is
computed by unfolding the input into windows, never through a convolution), with the test's
own weights; nothing of portaconv is used to compute an expected value.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from portaconv.layers import CrossEntropyLoss, Linear, ReLU, Sigmoid, Tanh
from portaconv.models import CNN, MLP, CNN_DistributedScanningMLP, CNN_SimpleScanningMLP

from .helpers import assert_close, on, rounded, snapshot, torch_reference


def _recording_init(rng, dtype, drawn, scale=1.0):
    """An init function returning random arrays in ``dtype`` (the parameters' dtype) and
    keeping them, as float64, for the oracle."""

    def init(*shape):
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
        value = rounded(rng.standard_normal(shape) * scale / np.sqrt(fan_in), dtype)
        drawn.append(value)
        return value.astype(dtype)

    return init


# ---------------------------------------------------------------------------------------- MLP


def test_mlp_layers_follow_the_handout(bk):
    mlp = MLP([8 * 24, 8, 16, 4])
    kinds = [type(layer) for layer in mlp.layers]
    assert kinds == [Linear, ReLU, Linear, ReLU, Linear]
    sizes = [(layer.in_features, layer.out_features) for layer in mlp.layers[::2]]
    assert sizes == [(192, 8), (8, 16), (16, 4)]
    assert mlp.layers[1] is not mlp.layers[3]


def test_mlp_matches_torch(bk, rng):
    sizes = [7, 5, 6, 3]
    weights, biases = [], []
    mlp = MLP(
        sizes,
        activation=Tanh,
        weight_init_fn=_recording_init(rng, bk.dtype_name, weights),
        bias_init_fn=_recording_init(rng, bk.dtype_name, biases),
    )
    assert [type(layer) for layer in mlp.layers[1::2]] == [Tanh, Tanh]
    A = rounded(rng.standard_normal((4, 7)), bk.dtype_name)
    R = rounded(rng.standard_normal((4, 3)), bk.dtype_name)

    def reference(A, W0, b0, W1, b1, W2, b2):
        h = torch.tanh(F.linear(A, W0, b0))
        h = torch.tanh(F.linear(h, W1, b1))
        return F.linear(h, W2, b2)

    inputs = {"A": A}
    for i, (W, b) in enumerate(zip(weights, biases)):
        inputs[f"W{i}"], inputs[f"b{i}"] = W, b
    expected, grads = torch_reference(reference, inputs, R)

    A_bk = on(bk, A)
    before = snapshot(A_bk)
    assert_close(mlp.forward(A_bk), expected, bk, "Z")
    assert_close(mlp.backward(on(bk, R)), grads["A"], bk, "dLdA")
    np.testing.assert_array_equal(snapshot(A_bk), before, err_msg="forward modified A")
    for i, layer in enumerate(mlp.layers[::2]):
        assert_close(layer.dLdW, grads[f"W{i}"], bk, f"layers[{2 * i}].dLdW")
        assert_close(layer.dLdb, grads[f"b{i}"], bk, f"layers[{2 * i}].dLdb")


def test_mlp_relu_default_matches_torch(bk64, rng):
    weights, biases = [], []
    mlp = MLP(
        [6, 4, 2],
        weight_init_fn=_recording_init(rng, "float64", weights),
        bias_init_fn=_recording_init(rng, "float64", biases),
    )
    A = rng.standard_normal((5, 6))
    R = rng.standard_normal((5, 2))

    def reference(A, W0, b0, W1, b1):
        return F.linear(torch.relu(F.linear(A, W0, b0)), W1, b1)

    params = {"W0": weights[0], "b0": biases[0], "W1": weights[1], "b1": biases[1]}
    expected, grads = torch_reference(reference, {"A": A, **params}, R)
    assert_close(mlp.forward(on(bk64, A)), expected, bk64, "Z")
    assert_close(mlp.backward(on(bk64, R)), grads["A"], bk64, "dLdA")


# ------------------------------------------------------------------------- scanning MLP oracle

N_SCAN = 2


def _scan(A, w1, w2, w3, b1, b2, b3):
    """Scan the MLP over A (N, 24, 128): windows of 8 steps at stride 4, flattened time-major.

    Returns the (N, 31, 4) outputs transposed to (N, 4, 31) and flattened: (N, 124).
    """
    N = A.shape[0]
    win = A.unfold(2, 8, 4)  # (N, 24, 31, 8): win[n, c, j, t] = A[n, c, 4j + t]
    x = win.permute(0, 2, 3, 1).reshape(N, win.shape[2], 8 * 24)  # index t * 24 + c
    h = torch.relu(x @ w1 + b1)
    h = torch.relu(h @ w2 + b2)
    out = h @ w3 + b3  # (N, 31, 4)
    return out.transpose(1, 2).reshape(N, -1)


def _as_conv(grad_w, out_channels, kernel_size, in_channels):
    """An MLP matrix (k * C_in, C_out), rows time-major, as a Conv1d weight (C_out, C_in, k)."""
    return grad_w.T.reshape(out_channels, kernel_size, in_channels).transpose(0, 2, 1)


def test_simple_scanning_mlp_matches_torch_scan(bk, rng):
    dt = bk.dtype_name
    w1 = rounded(rng.standard_normal((192, 8)) / np.sqrt(192), dt)
    w2 = rounded(rng.standard_normal((8, 16)) / np.sqrt(8), dt)
    w3 = rounded(rng.standard_normal((16, 4)) / np.sqrt(16), dt)
    A = rounded(rng.standard_normal((N_SCAN, 24, 128)), dt)
    R = rounded(rng.standard_normal((N_SCAN, 124)), dt)
    zeros = {"b1": np.zeros(8), "b2": np.zeros(16), "b3": np.zeros(4)}
    expected, grads = torch_reference(_scan, {"A": A, "w1": w1, "w2": w2, "w3": w3, **zeros}, R)

    model = CNN_SimpleScanningMLP()
    assert [type(layer).__name__ for layer in model.layers] == [
        "Conv1d",
        "ReLU",
        "Conv1d",
        "ReLU",
        "Conv1d",
        "Flatten",
    ]
    assert model.layers[0] is model.conv1 and model.layers[2] is model.conv2
    assert model.layers[4] is model.conv3
    model.init_weights((w1.astype(dt), w2.astype(dt), w3.astype(dt)))  # NumPy, in bk's dtype
    assert_close(model.forward(on(bk, A)), expected, bk, "Z")
    assert_close(model.backward(on(bk, R)), grads["A"], bk, "dLdA")
    assert_close(model.conv1.dLdW, _as_conv(grads["w1"], 8, 8, 24), bk, "conv1.dLdW")
    assert_close(model.conv2.dLdW, _as_conv(grads["w2"], 16, 1, 8), bk, "conv2.dLdW")
    assert_close(model.conv3.dLdW, _as_conv(grads["w3"], 4, 1, 16), bk, "conv3.dLdW")
    for i, conv in enumerate((model.conv1, model.conv2, model.conv3), start=1):
        assert_close(conv.dLdb, grads[f"b{i}"], bk, f"conv{i}.dLdb")


def test_simple_scanning_mlp_takes_backend_weights(bk, rng):
    dt = bk.dtype_name
    w = [rounded(rng.standard_normal(s), dt) for s in ((192, 8), (8, 16), (16, 4))]
    A = rounded(rng.standard_normal((1, 24, 40)), dt)  # any width >= 8: 9 windows
    expected, _ = torch_reference(
        _scan,
        {
            "A": A,
            "w1": w[0],
            "w2": w[1],
            "w3": w[2],
            "b1": np.zeros(8),
            "b2": np.zeros(16),
            "b3": np.zeros(4),
        },
        None,
    )
    model = CNN_SimpleScanningMLP()
    model.init_weights(tuple(on(bk, x) for x in w))
    Z = model.forward(on(bk, A))
    assert tuple(Z.shape) == (1, 4 * 9)
    assert_close(Z, expected, bk, "Z")


@pytest.mark.parametrize("model_class", [CNN_SimpleScanningMLP, CNN_DistributedScanningMLP])
def test_scanning_mlp_keeps_its_own_weights(bk, rng, model_class):
    """Overwriting the caller's matrices after init_weights does not reach the model (on
    NumPy in float64 the conversion alone would not copy)."""
    shapes = ((192, 8), (8, 16), (16, 4))
    w = [rng.standard_normal(s).astype(bk.dtype_name) for s in shapes]  # bk's dtype
    A = on(bk, rng.standard_normal((1, 24, 16)))
    model = model_class()
    model.init_weights(tuple(w))
    expected = snapshot(model.forward(A))
    for matrix in w:
        matrix[...] = 0.0
    assert_close(model.forward(A), expected, bk, "Z after the caller's matrices changed")


def test_distributed_scanning_mlp_matches_torch_scan(bk, rng):
    dt = bk.dtype_name
    s1 = rounded(rng.standard_normal((48, 2)) / np.sqrt(48), dt)
    s2 = rounded(rng.standard_normal((4, 8)) / np.sqrt(4), dt)
    s3 = rounded(rng.standard_normal((16, 4)) / np.sqrt(16), dt)
    # The full MLP: 4 copies of the first-layer block along the diagonal, 2 of the second.
    w1, w2, w3 = np.kron(np.eye(4), s1), np.kron(np.eye(2), s2), s3
    assert w1.shape == (192, 8) and w2.shape == (8, 16)
    A = rounded(rng.standard_normal((N_SCAN, 24, 128)), dt)
    R = rounded(rng.standard_normal((N_SCAN, 124)), dt)

    def shared_scan(A, s1, s2, s3, b1, b2, b3):
        full1 = torch.block_diag(s1, s1, s1, s1)
        full2 = torch.block_diag(s2, s2)
        return _scan(A, full1, full2, s3, b1.repeat(4), b2.repeat(2), b3)

    zeros = {"b1": np.zeros(2), "b2": np.zeros(8), "b3": np.zeros(4)}
    expected, grads = torch_reference(
        shared_scan, {"A": A, "s1": s1, "s2": s2, "s3": s3, **zeros}, R
    )
    full, _ = torch_reference(
        _scan,
        {
            "A": A,
            "w1": w1,
            "w2": w2,
            "w3": w3,
            "b1": np.zeros(8),
            "b2": np.zeros(16),
            "b3": np.zeros(4),
        },
        None,
    )
    np.testing.assert_allclose(full, expected, rtol=1e-12, atol=1e-12)  # the oracle agrees

    model = CNN_DistributedScanningMLP()
    specs = [
        (c.in_channels, c.out_channels, c.kernel_size, c.stride)
        for c in (model.conv1, model.conv2, model.conv3)
    ]
    assert specs == [(24, 2, 2, 2), (2, 8, 2, 2), (8, 4, 2, 1)]
    model.init_weights((w1.astype(dt), w2.astype(dt), w3.astype(dt)))
    assert_close(model.forward(on(bk, A)), expected, bk, "Z")
    assert_close(model.backward(on(bk, R)), grads["A"], bk, "dLdA")
    assert_close(model.conv1.dLdW, _as_conv(grads["s1"], 2, 2, 24), bk, "conv1.dLdW")
    assert_close(model.conv2.dLdW, _as_conv(grads["s2"], 8, 2, 2), bk, "conv2.dLdW")
    assert_close(model.conv3.dLdW, _as_conv(grads["s3"], 4, 2, 8), bk, "conv3.dLdW")
    for i, conv in enumerate((model.conv1, model.conv2, model.conv3), start=1):
        assert_close(conv.dLdb, grads[f"b{i}"], bk, f"conv{i}.dLdb")


# ---------------------------------------------------------------------------------------- CNN

CNN_CONFIG = dict(
    input_width=32,
    num_input_channels=3,
    num_channels=[4, 6, 5],
    kernel_sizes=[5, 3, 3],
    strides=[2, 1, 2],
    num_linear_neurons=10,
)
TORCH_ACTIVATIONS = [torch.tanh, torch.relu, torch.sigmoid]


def _build_cnn(rng, dtype, lr=0.05):
    conv_w, lin_w, biases = [], [], []
    model = CNN(
        **CNN_CONFIG,
        activations=[Tanh(), ReLU(), Sigmoid()],
        conv_weight_init_fn=_recording_init(rng, dtype, conv_w),
        bias_init_fn=_recording_init(rng, dtype, biases, scale=0.5),
        linear_weight_init_fn=_recording_init(rng, dtype, lin_w),
        criterion=CrossEntropyLoss(),
        lr=lr,
    )
    return model, conv_w, lin_w, biases


def _torch_cnn(labels):
    def network(A, W0, b0, W1, b1, W2, b2, Wl, bl, loss):
        h = A
        for W, b, s, f in zip((W0, W1, W2), (b0, b1, b2), CNN_CONFIG["strides"], TORCH_ACTIVATIONS):
            h = f(F.conv1d(h, W, b, stride=s))
        Z = F.linear(h.flatten(1), Wl, bl)
        return F.cross_entropy(Z, labels) if loss else Z

    return network


@pytest.mark.parametrize("label_kind", ["integer", "one_hot"])
def test_cnn_matches_torch(bk, rng, label_kind):
    dt = bk.dtype_name
    model, conv_w, lin_w, biases = _build_cnn(rng, dt)
    assert model.nlayers == 3 and len(model.convolutional_layers) == 3
    assert (model.linear_layer.in_features, model.linear_layer.out_features) == (25, 10)
    for conv, W, b in zip(model.convolutional_layers, conv_w, biases):
        assert_close(conv.W, W, bk, "conv W from conv_weight_init_fn")
        assert_close(conv.b, b, bk, "conv b from bias_init_fn")
    assert_close(model.linear_layer.W, lin_w[0], bk, "linear W from linear_weight_init_fn")

    N = 4
    A = rounded(rng.standard_normal((N, 3, 32)), dt)
    classes = rng.integers(0, 10, size=N)
    params = {
        "W0": conv_w[0],
        "b0": biases[0],
        "W1": conv_w[1],
        "b1": biases[1],
        "W2": conv_w[2],
        "b2": biases[2],
        "Wl": lin_w[0],
        "bl": biases[3],
    }
    if label_kind == "integer":
        torch_labels = torch.tensor(classes)
        labels = bk.xp.asarray(classes.astype(np.int64), device=bk.device)
    else:
        one_hot = np.eye(10)[classes]
        torch_labels = torch.tensor(one_hot)
        labels = on(bk, one_hot)
    network = _torch_cnn(torch_labels)
    Z_expected, _ = torch_reference(lambda **t: network(**t, loss=False), {"A": A, **params}, None)
    loss_expected, grads = torch_reference(
        lambda **t: network(**t, loss=True), {"A": A, **params}, np.array(1.0)
    )

    assert_close(model.forward(on(bk, A)), Z_expected, bk, "Z")
    assert_close(model.Z, Z_expected, bk, "self.Z")
    dLdA = model.backward(labels)
    assert_close(model.loss, loss_expected, bk, "loss")
    assert_close(dLdA, grads["A"], bk, "dLdA")
    layers = [*model.convolutional_layers, model.linear_layer]
    names = ["0", "1", "2", "l"]
    for layer, n in zip(layers, names):
        assert_close(layer.dLdW, grads[f"W{n}"], bk, f"dLdW {n}")
        assert_close(layer.dLdb, grads[f"b{n}"], bk, f"dLdb {n}")

    model.step()
    for layer, n in zip(layers, names):
        assert_close(layer.W, params[f"W{n}"] - 0.05 * grads[f"W{n}"], bk, f"W {n} after step")
        assert_close(layer.b, params[f"b{n}"] - 0.05 * grads[f"b{n}"], bk, f"b {n} after step")

    model.zero_grads()
    for layer, n in zip(layers, names):
        assert_close(layer.dLdW, np.zeros(params[f"W{n}"].shape), bk, f"dLdW {n} zeroed")
        assert_close(layer.dLdb, np.zeros(params[f"b{n}"].shape), bk, f"dLdb {n} zeroed")


def test_cnn_trains_down(bk64, rng):
    """A few steps on a fixed batch lower the loss (step moves against the gradient)."""
    model, *_ = _build_cnn(rng, "float64", lr=0.5)
    A = on(bk64, rng.standard_normal((8, 3, 32)))
    labels = bk64.xp.asarray(rng.integers(0, 10, size=8), device=bk64.device)
    losses = []
    for _ in range(5):
        model.zero_grads()
        model.forward(A)
        model.backward(labels)
        losses.append(float(model.loss))
        model.step()
    assert losses[-1] < losses[0], losses


# ----------------------------------------------------------------------------------- bad input


def _cnn_args(**changes):
    args = dict(
        CNN_CONFIG,
        activations=[Tanh(), ReLU(), Sigmoid()],
        conv_weight_init_fn=None,
        bias_init_fn=None,
        linear_weight_init_fn=None,
        criterion=CrossEntropyLoss(),
        lr=0.1,
    )
    args.update(changes)
    return args


@pytest.mark.parametrize(
    "changes, error, match",
    [
        ({"kernel_sizes": [5, 3]}, ValueError, r"CNN: .*equal lengths.*kernel_sizes=2"),
        ({"activations": [Tanh(), ReLU()]}, ValueError, r"CNN: .*activations=2"),
        ({"strides": [2, 0, 2]}, ValueError, r"CNN: strides\[1\] must be a positive integer"),
        ({"num_channels": [4, 6.0, 5]}, TypeError, r"CNN: num_channels\[1\] .*float"),
        ({"input_width": 10}, ValueError, r"CNN: conv layer 2 .*kernel_sizes\[2\]=3.*width 1"),
        ({"num_channels": []}, ValueError, r"CNN: num_channels must list at least one"),
        ({"lr": -1.0}, ValueError, r"CNN: lr must be a non-negative number"),
    ],
)
def test_cnn_rejects_bad_configuration(bk64, changes, error, match):
    with pytest.raises(error, match=match):
        CNN(**_cnn_args(**changes))


def test_cnn_rejects_shared_activation_instance(bk64):
    relu = ReLU()
    same = r"CNN: activations\[0\] and activations\[2\] are the same object"
    with pytest.raises(ValueError, match=same):
        CNN(**_cnn_args(activations=[relu, Tanh(), relu]))


def test_cnn_rejects_bad_input(bk64, rng):
    model = CNN(**_cnn_args())
    with pytest.raises(ValueError, match=r"CNN: backward called before forward"):
        model.backward(bk64.xp.asarray([1, 2], device=bk64.device))
    with pytest.raises(ValueError, match=r"CNN: A must have shape \(N, 3, 32\), got \(2, 3, 30\)"):
        model.forward(on(bk64, np.zeros((2, 3, 30))))
    with pytest.raises(ValueError, match=r"CNN: A must have 3 dimensions"):
        model.forward(on(bk64, np.zeros((3, 32))))
    model.forward(on(bk64, rng.standard_normal((2, 3, 32))))
    with pytest.raises(ValueError, match=r"CNN: criterion CrossEntropyLoss\(\): .*labels"):
        model.backward(bk64.xp.asarray([1, 2, 3], device=bk64.device))


def test_mlp_rejects_bad_input(bk64):
    with pytest.raises(ValueError, match=r"MLP: layer_sizes must give at least 2 sizes"):
        MLP([5])
    with pytest.raises(ValueError, match=r"MLP: layer_sizes\[1\] must be a positive integer"):
        MLP([5, 0, 2])
    mlp = MLP([5, 3, 2])
    with pytest.raises(ValueError, match=r"MLP: backward called before forward"):
        mlp.backward(on(bk64, np.zeros((4, 2))))
    with pytest.raises(ValueError, match=r"MLP: A must have 5 features .*got shape \(4, 6\)"):
        mlp.forward(on(bk64, np.zeros((4, 6))))
    with pytest.raises(TypeError, match=r"MLP: A must be an array"):
        mlp.forward([[0.0] * 5])
    mlp.forward(on(bk64, np.zeros((4, 5))))
    with pytest.raises(ValueError, match=r"MLP: dLdZ must have the shape .*\(4, 2\), got \(4, 3\)"):
        mlp.backward(on(bk64, np.zeros((4, 3))))


@pytest.mark.parametrize("model_class", [CNN_SimpleScanningMLP, CNN_DistributedScanningMLP])
def test_scanning_mlp_rejects_bad_input(bk64, model_class):
    name = model_class.__name__
    model = model_class()
    good = (np.zeros((192, 8)), np.zeros((8, 16)), np.zeros((16, 4)))
    with pytest.raises(ValueError, match=rf"{name}: w2 must have shape \(8, 16\).*got \(16, 8\)"):
        model.init_weights((good[0], good[1].T, good[2]))
    with pytest.raises(ValueError, match=rf"{name}: init_weights expects .* got 2"):
        model.init_weights(good[:2])
    model.init_weights(good)
    for shape in [(2, 12, 128), (2, 24, 7)]:
        want = rf"{name}: A must have shape \(N, 24, W\) with W >= 8 .*got {re.escape(str(shape))}"
        with pytest.raises(ValueError, match=want):
            model.forward(on(bk64, np.zeros(shape)))
    with pytest.raises(ValueError, match=rf"{name}: backward called before forward"):
        model.backward(on(bk64, np.zeros((2, 124))))


# ------------------------------------------------------------- a ReLU before a max pooling


@pytest.mark.parametrize("nd", [1, 2])
def test_relu_then_max_pool_runs_pooled_first_with_torchs_results(bk64, rng, nd):
    """A Sequential runs ReLU -> max pooling as pooling -> ReLU (the ReLU then sees the pooled
    values only): outputs and gradients still PyTorch's, windows with no positive value (the
    gradient must vanish there) and overlapping windows included; with a NaN, the NaN
    propagates in both directions as in PyTorch."""
    from portaconv.layers import Conv1d, Conv2d, Flatten, MaxPool1d, MaxPool2d
    from portaconv.models import Sequential

    conv_fn, pool_fn = (F.conv1d, F.max_pool1d) if nd == 1 else (F.conv2d, F.max_pool2d)
    size = (9,) if nd == 1 else (9, 7)
    A = rng.standard_normal((3, 2, *size))
    W = rng.standard_normal((4, 2) + (3,) * nd) * 0.5
    b = rng.standard_normal(4) * 0.1
    b[0] = -50.0  # channel 0: every window of the ReLU's input is negative
    conv = (Conv1d if nd == 1 else Conv2d)(2, 4, 3, padding=1)
    conv.W, conv.b = on(bk64, W), on(bk64, b)
    relu, pool = ReLU(), (MaxPool1d if nd == 1 else MaxPool2d)(3, 2)  # overlapping windows
    model = Sequential(conv, relu, pool, Flatten())
    Z = model.forward(on(bk64, A))
    assert relu.A.shape == pool._out_shape, "the ReLU ran on the pooled values"
    dLdZ = rng.standard_normal(tuple(Z.shape))
    dLdA = model.backward(on(bk64, dLdZ))

    def torch_fn(A, W, b):
        return torch.flatten(pool_fn(F.relu(conv_fn(A, W, b, padding=1)), 3, 2), 1)

    Z_ref, grads = torch_reference(torch_fn, {"A": A, "W": W, "b": b}, dLdZ)
    assert grads["b"][0] == 0.0 and grads["b"][1:].all()  # the cases the test means to cover
    assert_close(Z, Z_ref, bk64, "Z")
    assert_close(dLdA, grads["A"], bk64, "dLdA")
    assert_close(conv.dLdW, grads["W"], bk64, "dLdW")
    assert_close(conv.dLdb, grads["b"], bk64, "dLdb")

    A_nan = np.array(A)
    A_nan[1, 0, 4] = np.nan  # one NaN reaches a few windows of every channel
    Z = snapshot(model.forward(on(bk64, A_nan)))
    dLdA = snapshot(model.backward(on(bk64, dLdZ)))
    Z_ref, grads = torch_reference(torch_fn, {"A": A_nan, "W": W, "b": b}, dLdZ)
    np.testing.assert_array_equal(np.isnan(Z), np.isnan(Z_ref))
    np.testing.assert_array_equal(np.isnan(dLdA), np.isnan(grads["A"]))
    finite = ~np.isnan(Z_ref)
    np.testing.assert_allclose(Z[finite], Z_ref[finite], atol=1e-10)
