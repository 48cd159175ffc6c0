"""portaconv.compat.cs189: the CS189 ``neural_networks`` package, tested the course's way.

NumPy's global seed, float64 NHWC arrays, and every layer, activation and loss compared
with PyTorch autograd in float64 (convolutions through ``F.conv2d`` on the permuted arrays,
pooling through ``F.pad`` with zeros then ``F.max_pool2d`` / ``F.avg_pool2d``, which is the
package's pooling of the zero-padded input). The package's own arrays are NumPy, so these
tests are backend independent; ``test_network_step_on_the_backend`` runs one small network
on each backend.
"""

from __future__ import annotations

import math
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from portaconv.backend import to_backend, to_numpy
from portaconv.compat.cs189 import (
    activations,
    datasets,
    layers,
    logs,
    losses,
    models,
    optimizers,
    schedulers,
    utils,
    weights,
)
from portaconv.compat.cs189.utils import AttrDict

from .helpers import assert_close, torch_reference

ROOT = Path(__file__).resolve().parents[1]

TORCH_ACTIVATIONS = {
    "linear": lambda Z: Z,
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "relu": torch.relu,
    "softmax": lambda Z: torch.softmax(Z, dim=-1),
    "arctan": torch.atan,
}


def close(actual, expected, what=""):
    assert isinstance(actual, np.ndarray), f"{what}: {type(actual)} is not a NumPy array"
    assert actual.dtype == np.float64, f"{what}: dtype {actual.dtype}"
    np.testing.assert_allclose(actual, expected, rtol=1e-10, atol=1e-12, err_msg=what)


def nchw(x):
    return x.permute(0, 3, 1, 2)


def nhwc(x):
    return x.permute(0, 2, 3, 1)


# ------------------------------------------------------------------------ activations


@pytest.mark.parametrize("name", list(TORCH_ACTIVATIONS))
def test_activations_match_torch_and_keep_no_state(name):
    np.random.seed(0)
    activation = activations.initialize_activation(name)
    Z, other, dY = np.random.randn(4, 5), np.random.randn(4, 5), np.random.randn(4, 5)
    expected, grads = torch_reference(lambda Z: TORCH_ACTIVATIONS[name](Z), {"Z": Z}, dY)
    close(activation.forward(Z), expected, "forward")
    close(activation(Z), expected, "__call__")
    activation.forward(other)  # a forward in between: backward depends on its arguments alone
    close(activation.backward(Z, dY), grads["Z"], "backward")


# --------------------------------------------------------------------------- layers


@pytest.mark.parametrize("activation", list(TORCH_ACTIVATIONS))
def test_fully_connected_matches_torch(activation):
    np.random.seed(1)
    layer = layers.FullyConnected(n_out=3, activation=activation)
    X, dY = np.random.randn(4, 5), np.random.randn(4, 3)
    out = layer.forward(X)
    W, b = layer.parameters["W"], layer.parameters["b"]
    dX = layer.backward(dY)
    expected, grads = torch_reference(
        lambda X, W, b: TORCH_ACTIVATIONS[activation](X @ W + b), {"X": X, "W": W, "b": b}, dY
    )
    close(out, expected, "out")
    close(dX, grads["X"], "dX")
    close(layer.gradients["W"], grads["W"], "dW")
    close(layer.gradients["b"], grads["b"], "db")


CONV_CASES = [  # kernel_shape, stride, pad, X (N, H, W, C_in), n_out, activation
    ((3, 5), 3, "same", (2, 10, 11, 3), 4, "relu"),
    ((3, 5), 1, "same", (2, 7, 8, 2), 3, "tanh"),
    ((3, 3), 2, "valid", (2, 9, 8, 3), 2, "linear"),
    ((2, 3), 2, 2, (1, 6, 7, 2), 3, "sigmoid"),
    ((4, 4), 1, "same", (2, 6, 6, 1), 2, "arctan"),  # even: one on each side, out = in - 1
    (3, 1, 1, (2, 5, 5, 2), 2, "relu"),  # an int kernel is square
]


def expected_pad(kernel, pad):
    """The package's rule, written out: "same" (k - 1) // 2, "valid" 0, an int itself."""
    if pad == "same":
        return tuple((k - 1) // 2 for k in kernel)
    return (0, 0) if pad == "valid" else (pad, pad)


@pytest.mark.parametrize(("kernel", "stride", "pad", "shape", "n_out", "activation"), CONV_CASES)
def test_conv2d_matches_torch(kernel, stride, pad, shape, n_out, activation):
    np.random.seed(2)
    layer = layers.Conv2D(n_out, kernel, activation, stride=stride, pad=pad)
    X = np.random.randn(*shape)
    out = layer.forward(X)
    kernel = kernel if isinstance(kernel, tuple) else (kernel, kernel)
    padding = expected_pad(kernel, pad)
    assert layer.pad == padding
    W, b = layer.parameters["W"], layer.parameters["b"]
    assert W.shape == (*kernel, shape[3], n_out) and b.shape == (1, n_out)
    dY = np.random.randn(*out.shape)
    dX = layer.backward(dY)

    def conv(X, W, b):
        Z = F.conv2d(nchw(X), W.permute(3, 2, 0, 1), b[0], stride=stride, padding=padding)
        return TORCH_ACTIVATIONS[activation](nhwc(Z))

    expected, grads = torch_reference(conv, {"X": X, "W": W, "b": b}, dY)
    close(out, expected, "out")
    close(dX, grads["X"], "dX")
    close(layer.gradients["W"], grads["W"], "dW")
    close(layer.gradients["b"], grads["b"], "db")


POOL_CASES = [  # kernel_shape, mode, stride, pad, X (N, H, W, C)
    ((2, 2), "max", 2, 0, (2, 6, 6, 3)),
    ((3, 3), "max", 2, 1, (2, 7, 6, 2)),
    (2, "max", 2, 2, (2, 5, 5, 2)),  # padding beyond half the kernel: windows of zeros only
    ((3, 2), "max", 1, "same", (1, 5, 6, 2)),
    ((2, 2), "average", 2, 2, (2, 5, 5, 2)),
    ((3, 3), "average", 3, 1, (2, 7, 8, 3)),
    ((3, 5), "average", 1, "valid", (1, 6, 7, 2)),
]


@pytest.mark.parametrize(("kernel", "mode", "stride", "pad", "shape"), POOL_CASES)
@pytest.mark.parametrize("negative", [False, True], ids=["randn", "negative"])
def test_pool2d_pools_the_zero_padded_input_as_torch(kernel, mode, stride, pad, shape, negative):
    np.random.seed(3)
    layer = layers.Pool2D(kernel, mode=mode, stride=stride, pad=pad)
    X = np.random.randn(*shape)
    if negative:  # every window's maximum over the padded input is then a padding zero
        X = -np.abs(X) - 0.1
    out = layer.forward(X)
    dY = np.random.randn(*out.shape)
    dX = layer.backward(dY)
    kernel = kernel if isinstance(kernel, tuple) else (kernel, kernel)
    rows, cols = expected_pad(kernel, pad)
    pool = F.max_pool2d if mode == "max" else F.avg_pool2d

    def reference(X):
        padded = F.pad(nchw(X), (cols, cols, rows, rows), value=0.0)
        return nhwc(pool(padded, kernel, stride))

    expected, grads = torch_reference(reference, {"X": X}, dY)
    close(out, expected, "out")
    close(dX, grads["X"], "dX")
    if negative and mode == "max" and (rows or cols):  # a padding zero wins, never -inf
        assert np.max(out) == 0.0 and np.all(np.isfinite(out))


@pytest.mark.parametrize(
    ("keep_dim", "shape"), [("first", (2, 12)), ("last", (24, 1)), (-1, (1, 24))]
)
def test_flatten_matches_torch_reshape(keep_dim, shape):
    np.random.seed(4)
    X = np.random.randn(2, 3, 4, 1)
    layer = layers.Flatten(keep_dim=keep_dim)
    out = layer.forward(X)
    dY = np.random.randn(*shape)
    expected, grads = torch_reference(lambda X: X.reshape(shape), {"X": X}, dY)
    close(out, expected, "out")
    close(layer.backward(dY), grads["X"], "dX")


def test_lazy_initialisation_shapes_and_zero_gradients():
    np.random.seed(5)
    fc = layers.FullyConnected(n_out=6, activation="relu")
    assert fc.n_in is None and fc.parameters == {} and fc.gradients == {}
    X = np.random.randn(4, 5)
    out = fc.forward(X)
    assert fc.n_in == 5 and list(fc.parameters) == ["W", "b"] == list(fc.gradients)
    assert fc.parameters["W"].shape == (5, 6) and fc.parameters["b"].shape == (1, 6)
    assert not np.any(fc.parameters["b"])
    for key, grad in fc.gradients.items():
        assert grad.shape == fc.parameters[key].shape and not np.any(grad), key
    assert fc.cache["X"] is X and fc.cache["Z"].shape == (4, 6)
    fc.backward(np.ones_like(out))
    assert np.any(fc.gradients["W"])
    fc.clear_gradients()
    assert not np.any(fc.gradients["W"]) and fc.cache == {"Z": [], "X": []}

    conv = layers.Conv2D(n_out=4, kernel_shape=(3, 5), activation="relu", stride=3)
    assert conv.n_in is None and conv.pad == "same"
    conv._init_parameters((2, 10, 11, 3))  # as the course's harness calls it, by shape
    assert conv.n_in == 3 and conv.pad == (1, 2)
    assert conv.parameters["W"].shape == (3, 5, 3, 4) and conv.parameters["b"].shape == (1, 4)
    assert all(not np.any(g) for g in conv.gradients.values())
    assert conv.parameters["W"].dtype == np.float64

    fc32 = layers.FullyConnected(n_out=2, activation="linear")
    assert fc32.forward(np.ones((3, 4), dtype=np.float32)).dtype == np.float32
    assert fc32.parameters["W"].dtype == np.float32  # the first input's dtype


def test_parameters_are_read_afresh_in_place_or_replaced():
    np.random.seed(6)
    layer = layers.FullyConnected(n_out=2, activation="linear")
    X = np.random.randn(3, 4)
    layer.forward(X)
    layer.parameters["W"] -= 1.0  # the package's update, in place
    W, b = layer.parameters["W"], layer.parameters["b"]
    close(layer.forward(X), X @ W + b, "after an in-place update")
    replaced = np.random.randn(4, 2)
    close(layer.forward_with_param("W", X)(replaced), X @ replaced + b, "forward_with_param")

    conv = layers.Conv2D(n_out=2, kernel_shape=1, activation="linear")  # parameters set by hand
    conv.n_in, conv.parameters = 3, {"W": np.random.randn(1, 1, 3, 2), "b": np.ones((1, 2))}
    X = np.random.randn(2, 4, 5, 3)
    close(conv.forward(X), X @ conv.parameters["W"][0, 0] + 1.0, "Conv2D given its parameters")


# ---------------------------------------------------------------------- loss, model


def test_cross_entropy_on_probabilities_matches_torch():
    np.random.seed(7)
    Y = np.eye(4)[np.random.randint(0, 4, 6)]
    Y_hat = np.random.dirichlet(np.ones(4), size=6)
    loss = losses.initialize_loss("cross_entropy")
    eps = np.finfo(float).eps
    target = torch.tensor(Y)
    expected, grads = torch_reference(
        lambda P: -(target * torch.log(P + eps)).sum() / 6, {"P": Y_hat}, np.array(1.0)
    )
    value = loss.forward(Y, Y_hat)
    assert isinstance(value, float) and loss(Y, Y_hat) == value
    assert value == pytest.approx(float(expected), rel=1e-12)
    np.testing.assert_allclose(loss.backward(Y, Y_hat), grads["P"], rtol=1e-12)


FFNN = [
    AttrDict(name="fully_connected", activation="relu", weight_init="xavier_uniform", n_out=6),
    AttrDict(
        name="fully_connected", activation="softmax", weight_init="xavier_uniform", n_out=None
    ),
]


def test_two_training_steps_match_torch():
    """forward, backward (the loss), update: SGD with momentum, clipping each gradient."""
    np.random.seed(8)
    lr, momentum, clip = 0.05, 0.9, 0.5
    optimizer = AttrDict(
        name="SGD", lr=lr, lr_scheduler="constant", momentum=momentum, clip_norm=clip
    )
    model = models.initialize_model("ffnn", "cross_entropy", FFNN, optimizer)
    X, Y = np.random.randn(8, 4), np.eye(3)[np.random.randint(0, 3, 8)]
    model.train(datasets.Dataset(X, Y, batch_size=8, validation_set=X, validation_labels=Y), 0)
    assert len(model.layers) == 2 and model.layers[1].n_out == 3  # train adds the output layer
    model.forward(X)  # draws the weights
    params = [torch.tensor(p.copy(), requires_grad=True) for layer in model.layers
              for p in layer.parameters.values()]  # fmt: skip
    steps = [torch.zeros_like(p) for p in params]
    for epoch in range(2):
        loss = model.backward(Y, model.forward(X))
        model.update(epoch)
        W1, b1, W2, b2 = params
        probs = torch.softmax(torch.relu(torch.tensor(X) @ W1 + b1) @ W2 + b2, dim=1)
        expected = -(torch.tensor(Y) * torch.log(probs + np.finfo(float).eps)).sum() / 8
        assert loss == pytest.approx(expected.item(), rel=1e-12)
        grads = torch.autograd.grad(expected, params)
        with torch.no_grad():
            for i, (p, g) in enumerate(zip(params, grads)):
                g = g * min(1.0, clip / g.norm().item())
                steps[i] = momentum * steps[i] + lr * g
                p -= steps[i]
    got = [p for layer in model.layers for p in layer.parameters.values()]
    for name, p, want in zip(["W1", "b1", "W2", "b2"], got, params):
        close(p, want.detach().numpy(), name)


def test_network_learns_iris_through_the_package_api(capsys):
    np.random.seed(0)
    optimizer = AttrDict(name="SGD", lr=0.01, lr_scheduler="constant", momentum=0.9, clip_norm=1.0)
    layer_args = [dict(FFNN[0], n_out=10), FFNN[1]]
    model = models.initialize_model("feed_forward", "cross_entropy", layer_args, optimizer)
    dataset = datasets.initialize_dataset("iris", batch_size=25)
    model.train(dataset, epochs=40)
    log = model.test(dataset)
    printed = capsys.readouterr().out
    assert "Example target: " in printed and "Example prediction: [" in printed
    assert "Epoch 39 Training Loss: " in printed and " Val Accuracy: " in printed
    assert printed.strip().splitlines()[-1].startswith("Test Loss: ")
    accuracy = 1 - np.mean(log["error"])
    assert accuracy >= 0.9, f"Iris test accuracy {accuracy}"


# ------------------------------------------------------ optimizer, schedules, weights


def test_sgd_clips_then_adds_momentum_per_parameter_name():
    sgd = optimizers.initialize_optimizer(
        "SGD", lr=0.1, lr_scheduler="exponential", momentum=0.9, clip_norm=1.0,
        lr_decay=0.5, stage_length=2, staircase=True,
    )  # fmt: skip
    W = np.zeros((1, 2))
    first = sgd.update("W0", W, np.array([[3.0, 4.0]]), 0)  # norm 5 -> 1
    np.testing.assert_allclose(first, [[0.06, 0.08]], rtol=1e-15)
    second = sgd.update("W0", W, np.array([[0.1, 0.0]]), 3)  # within the norm; lr 0.1 0.5**1.5
    np.testing.assert_allclose(second, 0.9 * first + 0.1 * 0.5**1.5 * np.array([[0.1, 0.0]]))
    np.testing.assert_allclose(sgd.update("W1", W, np.array([[0.1, 0.0]]), 0), [[0.01, 0.0]])


def test_schedules():
    assert schedulers.Constant(lr=0.3)(100) == 0.3
    stairs = schedulers.Exponential(lr=1.0, decay=0.5, stage_length=2, staircase=True)
    assert [stairs(e) for e in (0, 1, 2, 3, 4)] == [1.0, 1.0, 0.5, 0.5, 0.25]
    smooth = schedulers.initialize_scheduler(
        "exponential", lr=1.0, decay=0.5, stage_length=2, staircase=True
    )  # the package's factory leaves staircase out
    assert smooth(3) == pytest.approx(0.5**1.5)


def test_initialisers_draw_what_the_package_draws():
    def drawn(name, shape, activation=None, **kwargs):
        np.random.seed(9)
        return weights.initialize_weights(name, activation=activation, **kwargs)(shape)

    def reference(draw):
        np.random.seed(9)
        return draw()

    a = math.sqrt(3) * math.sqrt(2) * math.sqrt(2 / (5 + 7))  # relu gain, fans 5 and 7
    want = reference(lambda: np.random.uniform(-a, a, (5, 7)))
    np.testing.assert_array_equal(drawn("xavier_uniform", (5, 7), "relu"), want)
    a = math.sqrt(2 / (3 + 4))  # a Conv2D kernel (3, 5, 2, 4): the package's fans are 3 and 4
    want = reference(lambda: np.random.normal(0, a, (3, 5, 2, 4)))
    np.testing.assert_array_equal(drawn("xavier_normal", (3, 5, 2, 4), "linear"), want)
    std = 5 / 3 / math.sqrt(6)  # tanh gain, fan_out
    want = reference(lambda: np.random.normal(0, std, (4, 6)))
    np.testing.assert_array_equal(drawn("he_normal", (4, 6), "tanh", mode="fan_out"), want)
    a = math.sqrt(3) / math.sqrt(4)
    want = reference(lambda: np.random.uniform(-a, a, (4, 6)))
    np.testing.assert_array_equal(drawn("he_uniform", (4, 6), "sigmoid"), want)
    np.testing.assert_array_equal(drawn("identity", (3, 3)), np.eye(3))
    np.testing.assert_array_equal(drawn("constant", (2, 2)), np.full((2, 2), 0.5))
    assert not np.any(drawn("zeros", (2, 3))) and np.all(drawn("ones", (2, 3)) == 1)
    sparse = drawn("sparse", (25, 6))
    assert list(np.sum(sparse == 0, axis=0)) == [3] * 6  # ceil(0.1 * 25) per column
    assert np.std(sparse[sparse != 0]) < 0.02


# ------------------------------------------------------------- data, utils, errors


def write_course_files(root, name, X, Y):
    folder = root / "datasets" / name
    folder.mkdir(parents=True)
    for split, (data, labels) in {"train": (X, Y), "val": (X[:4], Y[:4]),
                                  "test": (X[4:], Y[4:])}.items():  # fmt: skip
        np.save(folder / f"{name}_{split}_data.npy", data)
        np.save(folder / f"{name}_{split}_labels.npy", labels)


def test_dataset_reads_the_course_files_and_samples_batches(tmp_path, monkeypatch):
    X = np.arange(10 * 6, dtype=np.float64).reshape(10, 6)
    Y = np.eye(3)[np.arange(10) % 3]
    write_course_files(tmp_path, "toy", X, Y)
    monkeypatch.chdir(tmp_path)
    np.random.seed(10)
    dataset = datasets.initialize_dataset("toy", batch_size=4)
    assert dataset.out_dim == 3 and dataset.n_training == 10 and dataset.n_validation == 4
    assert dataset.train.samples_per_epoch == 3
    batches = [dataset.train.sample() for _ in range(3)]
    assert [b[0].shape[0] for b in batches] == [4, 4, 2]
    rows = np.concatenate([b[0] for b in batches])
    labels = np.concatenate([b[1] for b in batches])
    assert sorted(rows[:, 0]) == list(X[:, 0]) and not np.array_equal(rows, X)  # shuffled
    np.testing.assert_array_equal(labels, Y[(rows[:, 0] // 6).astype(int)])  # rows keep labels
    np.testing.assert_array_equal(dataset.test.data_.shape, (6, 6))


def test_portaconv_iris_split():
    dataset = datasets.initialize_dataset("iris", batch_size=25)
    sizes = [dataset.train.n_samples, dataset.validate.n_samples, dataset.test.n_samples]
    assert sizes == [96, 24, 30] and dataset.out_dim == 3
    assert np.all(dataset.train.labels.sum(axis=1) == 1)


def test_utils_against_torch():
    np.random.seed(11)
    labels = np.array([2, 0, 1, 2])
    one_hot = F.one_hot(torch.tensor(labels), 4).numpy().astype(np.float64)
    np.testing.assert_array_equal(utils.integers_to_one_hot(labels, max_val=3), one_hot)
    X = np.random.randn(5, 3) * 4 + 2
    t = torch.tensor(X)
    want = ((t - t.mean(0)) / (t.std(0, unbiased=False) + 1e-10)).numpy()
    np.testing.assert_allclose(utils.standardize(X), want, rtol=1e-12)
    np.testing.assert_allclose(utils.center(X), (t - t.mean(0)).numpy(), atol=1e-12)

    layer = layers.FullyConnected(n_out=3, activation="tanh")
    Xs, dY = np.random.randn(4, 5), np.random.randn(4, 3)
    layer.forward(Xs)
    layer.backward(dY)
    fn, W = layer.forward_with_param("W", Xs), layer.parameters["W"]
    assert utils.check_gradients(fn, layer.gradients["W"], W, dY) < 1e-7
    assert utils.check_gradients(fn, 2 * layer.gradients["W"], W, dY) > 0.3


ERRORS = [  # (make, the factory, what it says it does not know)
    (lambda: activations.initialize_activation("swish"), "activation 'swish'"),
    (lambda: layers.initialize_layer("dense"), "layer type 'dense'"),
    (lambda: losses.initialize_loss("l1"), "loss 'l1'"),
    (lambda: optimizers.initialize_optimizer("Adam", lr=0.1), "optimizer 'Adam'"),
    (lambda: weights.initialize_weights("glorot"), "weight initialisation 'glorot'"),
    (lambda: schedulers.initialize_scheduler("cosine", lr=1.0), "scheduler 'cosine'"),
    (lambda: datasets.initialize_dataset("nope"), "data set"),
]


@pytest.mark.parametrize(("make", "message"), ERRORS, ids=[m.split()[0] for _, m in ERRORS])
def test_unknown_names_are_value_errors_and_the_packages_not_implemented(make, message):
    with pytest.raises(ValueError, match=r"^initialize_\w+: unknown " + message) as info:
        make()
    assert isinstance(info.value, NotImplementedError) and "valid names are" in str(info.value)


def backward_after(layer, X_shape, dLdY_shape):
    layer.forward(np.random.randn(*X_shape))
    return layer.backward(np.ones(dLdY_shape))


BAD = [
    (lambda: layers.Conv2D(2, (3, 3), "relu", pad="full"), ValueError,
     r"^Conv2D: pad must be 'same', 'valid' or an integer >= 0, got 'full'"),
    (lambda: layers.Pool2D(2, mode="median"), ValueError,
     r"^Pool2D: mode must be 'max' or 'average', got 'median'"),
    (lambda: layers.Conv2D(2, (3, 3, 3), "relu"), ValueError,
     r"^Conv2D: kernel_shape must be an integer or a pair"),
    (lambda: layers.Conv2D(2, 3, "relu").forward(np.ones((2, 5, 5))), ValueError,
     r"^Conv2D: X must have 4 dimensions \(N, H, W, C\)"),
    (lambda: layers.FullyConnected(2, "relu").backward(np.ones((2, 2))), ValueError,
     r"^FullyConnected: backward called before forward"),
    (lambda: layers.Pool2D(5, pad=1).forward(np.ones((1, 2, 2, 1))), ValueError,
     r"^Pool2D: kernel_shape=\(5, 5\) is larger than the padded input"),
    (lambda: layers.FullyConnected(2, "relu").forward(np.ones((2, 3), dtype=np.int64)), TypeError,
     r"^FullyConnected: X must be a real floating-point array"),
    (lambda: losses.CrossEntropy("cross_entropy").forward(np.ones((2, 3)), np.ones((2, 4))),
     ValueError, r"^CrossEntropy: Y and Y_hat must have the same shape"),
    (lambda: layers.Flatten(keep_dim="middle"), ValueError, r"^Flatten: keep_dim must be"),
    (lambda: backward_after(layers.Pool2D(2, stride=2), (2, 4, 4, 3), (2, 2, 3, 2)), ValueError,
     r"^Pool2D: dLdY must have the forward output's shape \(2, 2, 2, 3\), got \(2, 2, 3, 2\)"),
    (lambda: backward_after(layers.Conv2D(2, 3, "relu"), (2, 4, 4, 3), (2, 4, 4, 3)), ValueError,
     r"^Conv2D: dLdY must have the forward output's shape \(2, 4, 4, 2\)"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("make", "error", "message"),
    BAD,
    ids=[f"{m[1:].split(':')[0]}-{i}" for i, (_, _, m) in enumerate(BAD)],
)
def test_bad_input_is_refused_in_the_layers_words(make, error, message):
    with pytest.raises(error, match=message):
        make()


def test_fully_connected_refuses_a_second_width():
    layer = layers.FullyConnected(2, "relu")
    layer.forward(np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"^FullyConnected: X must have n_in=3 columns"):
        layer.forward(np.ones((2, 4)))


# --------------------------------------------------------------------------- drop-in

TRAIN_FFNN = """
from neural_networks.utils import AttrDict

fc1 = AttrDict({"name": "fully_connected", "activation": "relu",
                "weight_init": "xavier_uniform", "n_out": 5})
fc_out = AttrDict({"name": "fully_connected", "activation": "softmax",
                   "weight_init": "xavier_uniform", "n_out": None})
layer_args = [fc1, fc_out]
optimizer_args = AttrDict({"name": "SGD", "lr": 0.01, "lr_scheduler": "exponential",
                           "lr_decay": 0.99, "stage_length": 1000, "staircase": True,
                           "clip_norm": 1.0, "momentum": 0.9})
model_args = AttrDict({"name": "feed_forward", "loss": "cross_entropy",
                       "layer_args": layer_args, "optimizer_args": optimizer_args, "seed": 0})
data_args = AttrDict({"name": "iris", "batch_size": 4})
log_args = AttrDict({"save": True, "plot": False, "save_dir": "experiments/"})

import numpy as np

np.random.seed(model_args.seed)
model_name = "{}_{}layers_{}-lr{}_mom{}_seed{}".format(
    model_args.name, len(layer_args), fc1["n_out"], optimizer_args.lr,
    optimizer_args.momentum, model_args.seed)

from neural_networks.models import initialize_model
from neural_networks.datasets import initialize_dataset
from neural_networks.logs import Logger

logger = Logger(model_name=model_name, model_args=model_args, data_args=data_args,
                save=log_args.save, plot=log_args.plot, save_dir=log_args.save_dir)
model = initialize_model(name=model_args.name, loss=model_args.loss,
                         layer_args=model_args.layer_args,
                         optimizer_args=model_args.optimizer_args, logger=logger)
dataset = initialize_dataset(name=data_args.name, batch_size=data_args.batch_size)
epochs = 2
print("Training {} neural network on {} with {} for {} epochs...".format(
    model_args.name, data_args.name, optimizer_args.name, epochs))
print("Optimizer:")
print(optimizer_args)
model.train(dataset, epochs=epochs)
model.test(dataset)
model.save_parameters(epochs)
"""

TRAIN_CONV = """
from neural_networks.utils import AttrDict

conv1 = AttrDict({"name": "conv2d", "activation": "relu", "weight_init": "he_uniform",
                  "n_out": 3, "kernel_shape": (3, 5), "stride": 1, "pad": "same"})
pool1 = AttrDict({"name": "pool2d", "kernel_shape": (2, 2), "mode": "max", "stride": 2})
conv2 = AttrDict({"name": "conv2d", "activation": "tanh", "weight_init": "xavier_uniform",
                  "n_out": 2, "kernel_shape": (2, 2), "stride": 1, "pad": 1})
pool2 = AttrDict({"name": "pool2d", "kernel_shape": (2, 2), "mode": "average", "stride": 2,
                  "pad": 1})
flatten = AttrDict({"name": "flatten"})
fc_out = AttrDict({"name": "fully_connected", "activation": "softmax",
                   "weight_init": "xavier_uniform", "n_out": None})
layer_args = [conv1, pool1, conv2, pool2, flatten, fc_out]
optimizer_args = AttrDict({"name": "SGD", "lr": 0.01, "lr_scheduler": "constant",
                           "clip_norm": 1.0, "momentum": 0.9})
model_args = AttrDict({"name": "conv", "loss": "cross_entropy", "layer_args": layer_args,
                       "optimizer_args": optimizer_args, "seed": 0})
data_args = AttrDict({"name": "shapes", "batch_size": 4})

import numpy as np

np.random.seed(model_args.seed)

from neural_networks.models import initialize_model
from neural_networks.datasets import initialize_dataset
from neural_networks.logs import Logger

logger = Logger(model_name="conv_seed0", model_args=model_args, data_args=data_args)
model = initialize_model(name=model_args.name, loss=model_args.loss,
                         layer_args=model_args.layer_args,
                         optimizer_args=model_args.optimizer_args, logger=logger)
dataset = initialize_dataset(name=data_args.name, batch_size=data_args.batch_size)
model.train(dataset, epochs=2)
model.test(dataset)
"""

MODULES = ("activations", "datasets", "layers", "logs", "losses", "models", "optimizers",
           "schedulers", "utils", "weights")  # fmt: skip


def test_course_scripts_run_unchanged_on_re_exporting_modules(tmp_path):
    package = tmp_path / "neural_networks"
    package.mkdir()
    (package / "__init__.py").write_text("")
    for module in MODULES:
        (package / f"{module}.py").write_text(f"from portaconv.compat.cs189.{module} import *\n")
    rng = np.random.default_rng(12)
    write_course_files(tmp_path, "iris", rng.normal(size=(12, 4)), np.eye(3)[np.arange(12) % 3])
    images = rng.random((12, 6, 7, 1))  # NHWC, as the course saves its images
    write_course_files(tmp_path, "shapes", images, np.eye(2)[np.arange(12) % 2])
    (tmp_path / "train_ffnn.py").write_text(textwrap.dedent(TRAIN_FFNN))
    (tmp_path / "train_conv.py").write_text(textwrap.dedent(TRAIN_CONV))
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "PORTACONV_BACKEND": "numpy"}
    for script in ("train_ffnn.py", "train_conv.py"):
        run = subprocess.run(
            [sys.executable, script], cwd=tmp_path, env=env, capture_output=True, text=True
        )
        assert run.returncode == 0, f"{script}:\n{run.stdout}\n{run.stderr}"
        assert "Epoch 1 Training Loss: " in run.stdout and "Test Loss: " in run.stdout, run.stdout
    run_dir = tmp_path / "experiments" / "feed_forward_2layers_5-lr0.01_mom0.9_seed0"
    for name in ("model_args", "data_args", "log"):
        assert (run_dir / name).is_file(), name
    log = pickle.loads((run_dir / "log").read_bytes())
    assert len(log["loss"]["train"]) == 2 == len(log["error"]["validate"])
    saved = pickle.loads((run_dir / "parameters_epoch2").read_bytes())
    assert saved[0]["W"].shape == (4, 5) and saved[1]["W"].shape == (5, 3)


def test_logger_saves_and_plots(tmp_path):
    logger = logs.Logger("run", {"lr": 0.1}, {"name": "iris"}, save=True, plot=True,
                         save_dir=f"{tmp_path}/")  # fmt: skip
    for epoch in range(2):
        logger.push({"loss": {"train": 1.0 / (epoch + 1), "validate": 2.0},
                     "error": {"train": 0.5, "validate": 0.25}})  # fmt: skip
    saved = pickle.loads((tmp_path / "run" / "log").read_bytes())
    assert saved == {"loss": {"train": [1.0, 0.5], "validate": [2.0, 2.0]},
                     "error": {"train": [0.5, 0.5], "validate": [0.25, 0.25]}}  # fmt: skip
    assert pickle.loads((tmp_path / "run" / "model_args").read_bytes()) == {"lr": 0.1}
    for figure in ("loss.png", "error.png"):
        assert (tmp_path / "run" / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", figure


# ----------------------------------------------------------------------- backends


def test_network_step_on_the_backend(bk64):
    """Conv2D, Pool2D, Flatten and FullyConnected, forward, backward and one SGD step with
    clipping, on the backend's arrays; compared with PyTorch."""
    np.random.seed(13)
    X, Y = np.random.randn(2, 6, 7, 2), np.eye(3)[[0, 2]]
    net = [
        layers.Conv2D(3, (3, 5), "relu", stride=2, pad="same"),
        layers.Pool2D(2, mode="max", stride=1, pad=1),
        layers.Flatten(),
        layers.FullyConnected(3, "softmax"),
    ]
    model = models.NeuralNetwork("cross_entropy", [{}], AttrDict(name="SGD", lr=0.1, clip_norm=0.5))
    model.layers = net
    X_b, Y_b = to_backend(X, bk64), to_backend(Y, bk64)
    out = model.forward(X_b)
    params = [torch.tensor(to_numpy(p), requires_grad=True)
              for i in (0, 3) for p in net[i].parameters.values()]  # fmt: skip
    loss = model.backward(Y_b, out)
    model.update(0)

    def reference(X, W1, b1, W2, b2):
        Z = torch.relu(
            nhwc(F.conv2d(nchw(X), W1.permute(3, 2, 0, 1), b1[0], stride=2, padding=(1, 2)))
        )
        pooled = nhwc(F.max_pool2d(F.pad(nchw(Z), (1, 1, 1, 1)), 2, 1))
        return torch.softmax(pooled.reshape(2, -1) @ W2 + b2, dim=1)

    X_t = torch.tensor(X, requires_grad=True)
    probs = reference(X_t, *params)
    expected = -(torch.tensor(Y) * torch.log(probs + np.finfo(float).eps)).sum() / 2
    assert loss == pytest.approx(expected.item(), rel=1e-10)
    assert_close(out, probs.detach().numpy(), bk64, "out", dtype="float64")
    grads = torch.autograd.grad(expected, params)
    for (i, key), p, g in zip([(0, "W"), (0, "b"), (3, "W"), (3, "b")], params, grads):
        step = 0.1 * g * min(1.0, 0.5 / g.norm().item())
        want = (p - step).detach().numpy()
        assert_close(net[i].parameters[key], want, bk64, f"layer {i} {key}", dtype="float64")
