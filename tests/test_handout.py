"""The handout's own way of calling portaconv, and the dtype rule it relies on.

Handout code (11-785 HW2P1, "MyTorch") builds layers with ``weight_init_fn``s returning
NumPy float64, ``np.ones``/``np.zeros`` biases, ``np.random.randn`` inputs, weights from
``np.load(..., allow_pickle=True)`` and attributes assigned directly, on portaconv's defaults
(no PORTACONV_* variable). The rule that makes it work, tested on every backend:

- a parameter takes the floating dtype of the array the user supplies, else the backend's
  default (float32);
- an input of another float dtype than the parameters follows the array API's promotion:
  the output has the promoted dtype, ``dLdA`` has A's dtype, ``dLdP`` has P's.

Every number is compared with PyTorch autograd in float64.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import portaconv
from portaconv import layers as L
from portaconv.backend import to_backend, to_numpy
from portaconv.models import CNN, CNN_DistributedScanningMLP, CNN_SimpleScanningMLP
from portaconv.optim import SGD

from .helpers import assert_close, assert_on_backend, torch_reference
from .layer_specs import SPECS, conv_transpose_twin, conv_twin, linear_twin

HANDOUT_TOL = 1e-10  # the bar: handout float64 code matches torch float64 to 1e-10


@dataclass(frozen=True)
class Spec:
    """A layer with parameters built the handout's way (positional arguments, init fns
    returning NumPy float64), an input shape and its PyTorch twin from tests/layer_specs.py."""

    id: str
    make: Callable[..., Any]  # (weight_init_fn, bias_init_fn) -> layer
    in_shape: tuple[int, ...]
    torch_fn: Callable[..., torch.Tensor]  # (A, W, b) -> Z


# The handout's calls, on the geometries; every layer with parameters, on every row
# of the table, is also checked with mixed dtypes below.
PARAM_SPECS = [
    Spec("Conv1d_stride1", lambda w, b: L.Conv1d_stride1(5, 4, 3, w, b), (2, 5, 20), conv_twin(1)),
    Spec(
        "Conv1d",
        lambda w, b: L.Conv1d(5, 4, 3, stride=2, padding=1, weight_init_fn=w, bias_init_fn=b),
        (2, 5, 19),
        conv_twin(1, stride=2, padding=1),
    ),
    Spec(
        "Conv2d_stride1", lambda w, b: L.Conv2d_stride1(3, 4, 3, w, b), (2, 3, 9, 8), conv_twin(2)
    ),
    Spec(  # 5 input channels: the NumPy row-gather path
        "Conv2d_stride1-rowgather",
        lambda w, b: L.Conv2d_stride1(5, 4, 3, w, b),
        (2, 5, 9, 8),
        conv_twin(2),
    ),
    Spec(
        "Conv2d",
        lambda w, b: L.Conv2d(3, 4, 3, stride=2, padding=1, weight_init_fn=w, bias_init_fn=b),
        (2, 3, 9, 8),
        conv_twin(2, stride=2, padding=1),
    ),
    Spec(
        "ConvTranspose1d",
        lambda w, b: L.ConvTranspose1d(5, 4, 3, 2, w, b),
        (2, 5, 7),
        conv_transpose_twin(1, 3, 2),
    ),
    Spec(
        "ConvTranspose2d",
        lambda w, b: L.ConvTranspose2d(3, 4, 3, 2, w, b),
        (2, 3, 5, 4),
        conv_transpose_twin(2, 3, 2),
    ),
    Spec("Linear", lambda w, b: L.Linear(7, 5, w, b), (4, 7), linear_twin),
]


def _handout_init(*shape: int) -> np.ndarray:
    """The handout's weight_init_fn: NumPy float64 draws."""
    return np.random.normal(0, 1.0, shape)


@pytest.fixture
def defaults():
    """portaconv's defaults, as a new user gets them without any PORTACONV_* variable."""
    with portaconv.use_backend("numpy", None, "float32") as backend:
        yield backend


def _check64(actual: Any, expected: np.ndarray, what: str) -> None:
    assert isinstance(actual, np.ndarray), f"{what}: {type(actual)} is not a NumPy array"
    assert actual.dtype == np.float64, f"{what}: dtype {actual.dtype}, expected float64"
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    np.testing.assert_allclose(actual, expected, rtol=HANDOUT_TOL, atol=HANDOUT_TOL, err_msg=what)


# ------------------------------------------------------------------ the handout's way


def test_defaults_are_numpy_float32_and_run_handout_code():
    """In a fresh process with no PORTACONV_* variable: the issue's first example."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PORTACONV_")}
    script = textwrap.dedent(
        """
        import numpy as np
        import portaconv
        from portaconv.layers import Conv1d_stride1
        backend = portaconv.get_backend()
        assert (backend.name, backend.dtype_name) == ("numpy", "float32"), backend
        np.random.seed(11785)
        layer = Conv1d_stride1(5, 4, 3, lambda *s: np.random.normal(0, 1, s), np.ones)
        Z = layer.forward(np.random.randn(2, 5, 20))
        dLdA = layer.backward(np.random.randn(*Z.shape))
        print(Z.dtype, Z.shape, dLdA.dtype, layer.W.dtype, layer.dLdW.dtype, layer.dLdb.dtype)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [
        "float64",
        "(2,",
        "4,",
        "18)",
        "float64",
        "float64",
        "float64",
        "float64",
    ]


@pytest.mark.parametrize("spec", PARAM_SPECS, ids=lambda s: s.id)
def test_handout_layer_matches_torch(defaults, spec):
    np.random.seed(11785)
    layer = spec.make(_handout_init, lambda n: np.random.randn(n))
    assert layer.W.dtype == np.float64 and layer.b.dtype == np.float64
    W, b = np.array(layer.W), np.array(layer.b)
    A = np.random.randn(*spec.in_shape)
    Z = layer.forward(A)
    expected_Z, _ = torch_reference(spec.torch_fn, {"A": A, "W": W, "b": b}, None)
    _check64(Z, expected_Z, "Z")
    dLdZ = np.random.randn(*Z.shape)
    _, grads = torch_reference(spec.torch_fn, {"A": A, "W": W, "b": b}, dLdZ)
    _check64(layer.backward(dLdZ), grads["A"], "dLdA")
    _check64(layer.dLdW, grads["W"], "dLdW")
    _check64(layer.dLdb, grads["b"], "dLdb")


@pytest.mark.parametrize("bias_fn", [np.zeros, np.ones], ids=["zeros", "ones"])
def test_handout_numpy_bias_fns(defaults, bias_fn):
    """``np.zeros`` / ``np.ones`` passed as bias_init_fn, as the handout does."""
    np.random.seed(0)
    layer = L.Conv1d(5, 4, 3, 2, 0, _handout_init, bias_fn)
    assert layer.b.dtype == np.float64
    np.testing.assert_array_equal(layer.b, bias_fn(4))


def test_linear_column_bias(defaults):
    """The handout's Linear keeps b as a column (out, 1): from bias_init_fn or assigned, the
    output is (N, out) and dLdb has the bias's shape."""
    np.random.seed(1)
    layer = L.Linear(7, 5, _handout_init, lambda n: np.random.randn(n, 1))
    assert layer.b.shape == (5, 1)
    A, W, b = np.random.randn(4, 7), np.array(layer.W), np.array(layer.b)
    Z = layer.forward(A)
    dLdZ = np.random.randn(4, 5)
    expected_Z, grads = torch_reference(
        lambda A, W, b: F.linear(A, W, b.reshape(-1)), {"A": A, "W": W, "b": b}, dLdZ
    )
    _check64(Z, expected_Z, "Z")
    _check64(layer.backward(dLdZ), grads["A"], "dLdA")
    _check64(layer.dLdb, grads["b"], "dLdb (5, 1)")

    layer.b = np.zeros(5).reshape(-1, 1)  # assigned after construction
    _check64(layer.forward(A), A @ W.T, "Z with an assigned column bias")
    layer.backward(dLdZ)
    assert layer.dLdb.shape == (5, 1)
    layer.b = np.zeros((1, 5))
    with pytest.raises(ValueError, match=r"^Linear: b must have shape \(5,\) or \(5, 1\), got"):
        layer.forward(A)


def test_assigned_parameters_keep_their_dtype(defaults):
    """A float64 array assigned to W and b of a layer built in float32 takes over."""
    layer = L.Conv1d(2, 3, 3)
    assert layer.W.dtype == np.float32
    np.random.seed(2)
    layer.W, layer.b = np.random.randn(3, 2, 3), np.random.randn(3)
    A = np.random.randn(2, 2, 9)
    Z = layer.forward(A)
    dLdZ = np.random.randn(*Z.shape)
    expected, grads = torch_reference(conv_twin(1), {"A": A, "W": layer.W, "b": layer.b}, dLdZ)
    _check64(Z, expected, "Z")
    _check64(layer.backward(dLdZ), grads["A"], "dLdA")
    _check64(layer.dLdW, grads["W"], "dLdW")


def _mlp_scan(A, w1, w2, w3, window=8, stride=4):
    """The scanning MLP itself: the MLP applied to each window of 8 time steps (flattened
    time-major), outputs channel-major (N, 4 * out_width) as the handout's CNNs give them."""
    N, C, width = A.shape
    starts = range(0, width - window + 1, stride)
    windows = torch.stack([A[:, :, t : t + window] for t in starts], dim=1)  # (N, T, C, 8)
    x = windows.transpose(2, 3).reshape(N, len(starts), window * C)  # time-major
    h = torch.relu(x @ w1)
    h = torch.relu(h @ w2)
    return (h @ w3).transpose(1, 2).reshape(N, -1)


def _object_array(matrices: list[np.ndarray], tmp_path) -> np.ndarray:
    """What ``np.load("mlp_weights_part_b.npy", allow_pickle=True)`` hands over."""
    packed = np.empty(len(matrices), dtype=object)
    for i, m in enumerate(matrices):
        packed[i] = m
    path = tmp_path / "mlp_weights.npy"
    np.save(path, packed, allow_pickle=True)
    return np.load(path, allow_pickle=True)


@pytest.mark.parametrize("container", ["object_array", "list"])
@pytest.mark.parametrize("model_class", [CNN_SimpleScanningMLP, CNN_DistributedScanningMLP])
def test_scanning_cnns_take_the_handout_weights(defaults, tmp_path, container, model_class):
    np.random.seed(3)
    if model_class is CNN_SimpleScanningMLP:
        w = [np.random.randn(192, 8), np.random.randn(8, 16), np.random.randn(16, 4)]
    else:  # shared blocks on the diagonal, as the distributed MLP's weights are
        s1, s2, s3 = np.random.randn(48, 2), np.random.randn(4, 8), np.random.randn(16, 4)
        w = [np.kron(np.eye(4), s1), np.kron(np.eye(2), s2), s3]
    weights = _object_array(w, tmp_path) if container == "object_array" else list(w)
    if container == "object_array":
        assert weights.dtype == object and weights.shape == (3,)
    model = model_class()
    model.init_weights(weights)
    A = np.random.randn(2, 24, 128)
    Z = model.forward(A)
    expected, grads = torch_reference(
        lambda A, w1, w2, w3: _mlp_scan(A, w1, w2, w3),
        {"A": A, "w1": w[0], "w2": w[1], "w3": w[2]},
        np.random.randn(2, 124),
    )
    _check64(Z, expected, "Z")
    dLdZ = np.random.randn(2, 124)
    _, grads = torch_reference(
        lambda A, w1, w2, w3: _mlp_scan(A, w1, w2, w3),
        {"A": A, "w1": w[0], "w2": w[1], "w3": w[2]},
        dLdZ,
    )
    _check64(model.backward(dLdZ), grads["A"], "dLdA")


def test_scanning_cnn_rejects_a_numeric_array(defaults):
    with pytest.raises(TypeError, match=r"^CNN_SimpleScanningMLP: init_weights expects a sequence"):
        CNN_SimpleScanningMLP().init_weights(np.zeros((3, 8, 8)))


def test_section9_cnn_with_column_bias(defaults):
    """The section-9 CNN built the handout's way, its linear bias assigned as a column."""
    np.random.seed(4)
    model = CNN(
        input_width=128,
        num_input_channels=24,
        num_channels=[56, 28, 14],
        kernel_sizes=[5, 6, 2],
        strides=[1, 2, 2],
        num_linear_neurons=10,
        activations=[L.Tanh(), L.ReLU(), L.Sigmoid()],
        conv_weight_init_fn=_handout_init,
        bias_init_fn=np.zeros,
        linear_weight_init_fn=_handout_init,
        criterion=L.CrossEntropyLoss(),
        lr=1e-3,
    )
    model.linear_layer.b = np.zeros(10).reshape(-1, 1)
    A = np.random.randn(3, 24, 128)
    labels = np.eye(10)[np.random.randint(0, 10, size=3)]
    convs = model.convolutional_layers
    params = {f"W{i}": np.array(c.W) for i, c in enumerate(convs)}
    params.update({f"b{i}": np.array(c.b) for i, c in enumerate(convs)})
    params.update(Wl=np.array(model.linear_layer.W), bl=np.zeros(10))
    activations = [torch.tanh, torch.relu, torch.sigmoid]

    def network(A, W0, b0, W1, b1, W2, b2, Wl, bl, loss=True):
        h = A
        for i, f in enumerate(activations):
            h = f(F.conv1d(h, locals()[f"W{i}"], locals()[f"b{i}"], stride=[1, 2, 2][i]))
        Z = F.linear(h.flatten(1), Wl, bl)
        return F.cross_entropy(Z, torch.tensor(labels)) if loss else Z

    Z = model.forward(A)
    expected_Z, _ = torch_reference(lambda **t: network(**t, loss=False), {"A": A, **params}, None)
    _check64(Z, expected_Z, "Z (3, 10)")
    expected_loss, grads = torch_reference(network, {"A": A, **params}, np.array(1.0))
    dLdA = model.backward(labels)
    _check64(np.asarray(model.loss), expected_loss, "loss")
    _check64(dLdA, grads["A"], "dLdA")
    for i, conv in enumerate(convs):
        _check64(conv.dLdW, grads[f"W{i}"], f"conv {i} dLdW")
        _check64(conv.dLdb, grads[f"b{i}"], f"conv {i} dLdb")
    _check64(model.linear_layer.dLdW, grads["Wl"], "linear dLdW")
    _check64(model.linear_layer.dLdb, grads["bl"].reshape(-1, 1), "linear dLdb (10, 1)")
    model.step()
    assert model.linear_layer.b.shape == (10, 1) and model.linear_layer.b.dtype == np.float64


# --------------------------------------------------------- mixed dtypes, every backend

MIXED = [("float32", "float64"), ("float64", "float32")]  # (the layer's, the input's)


def _on(bk, x: np.ndarray, dtype: str) -> Any:
    return to_backend(x, bk, getattr(bk.xp, dtype))


@pytest.mark.parametrize("layer_dtype, input_dtype", MIXED)
@pytest.mark.parametrize("spec", [s for s in SPECS if s.params], ids=lambda s: s.id)
def test_mixed_dtypes_promote(backend_choice, spec, layer_dtype, input_dtype, rng):
    """A float32 layer with a float64 input, and the reverse: forward computes in float64
    (the promotion), dLdA comes back in the input's dtype and each dLdP in P's; an
    optimizer step keeps every parameter's dtype."""
    name, dev = backend_choice
    with portaconv.use_backend(name, dev, layer_dtype) as bk:
        layer = spec.make()
        values = {p: to_numpy(getattr(layer, p)).astype(np.float64) for p in spec.params}
        if spec.init_fns:  # drawn values are small: use larger ones
            values = {p: rng.standard_normal(v.shape) for p, v in values.items()}
            for p, v in values.items():
                setattr(layer, p, _on(bk, v, layer_dtype))
            values = {p: to_numpy(getattr(layer, p)).astype(np.float64) for p in spec.params}
        A = np.asarray(rng.standard_normal(spec.in_shape), dtype=input_dtype)
        Z = layer.forward(_on(bk, A, input_dtype))
        expected_Z, _ = torch_reference(spec.torch_fn, {"A": A, **values}, None)
        # every value is exact in float64, so the promoted forward meets float64's bar
        assert_close(Z, expected_Z, bk, "Z", dtype="float64")
        dLdZ = rng.standard_normal(expected_Z.shape)
        _, grads = torch_reference(spec.torch_fn, {"A": A, **values}, dLdZ)
        dLdA = layer.backward(_on(bk, dLdZ, "float64"))
        assert_close(dLdA, grads["A"], bk, "dLdA", dtype=input_dtype)
        for p in spec.params:
            assert_close(getattr(layer, "dLd" + p), grads[p], bk, "dLd" + p, dtype=layer_dtype)

        before = {p: to_numpy(getattr(layer, p)).copy() for p in spec.params}
        SGD(layer, lr=0.1).step()
        for p in spec.params:
            assert_on_backend(getattr(layer, p), bk, f"{p} after a step", dtype=layer_dtype)
            assert not np.array_equal(to_numpy(getattr(layer, p)), before[p]), f"{p} unchanged"


@pytest.mark.parametrize("layer_dtype, input_dtype", MIXED)
def test_mixed_dtype_buffers_keep_their_dtype(backend_choice, layer_dtype, input_dtype, rng):
    """BatchNorm's running statistics stay in the layer's dtype whatever the input's."""
    name, dev = backend_choice
    with portaconv.use_backend(name, dev, layer_dtype) as bk:
        layer = L.BatchNorm2d(3)
        layer.forward(_on(bk, rng.standard_normal((4, 3, 2, 2)), input_dtype))
        assert_on_backend(layer.running_M, bk, "running_M", dtype=layer_dtype)
        assert_on_backend(layer.running_V, bk, "running_V", dtype=layer_dtype)
        Z = layer.eval().forward(_on(bk, rng.standard_normal((4, 3, 2, 2)), input_dtype))
        assert_on_backend(Z, bk, "eval output", dtype="float64")


@pytest.mark.parametrize("a_dtype, y_dtype", MIXED)
@pytest.mark.parametrize("loss_name", ["MSELoss", "CrossEntropyLoss"])
def test_losses_promote_targets(backend_choice, loss_name, a_dtype, y_dtype, rng):
    name, dev = backend_choice
    with portaconv.use_backend(name, dev, "float32") as bk:
        A = np.asarray(rng.standard_normal((5, 4)), dtype=a_dtype)
        if loss_name == "MSELoss":
            Y = np.asarray(rng.standard_normal((5, 4)), dtype=y_dtype)
            fn = F.mse_loss
        else:
            Y = np.asarray(rng.dirichlet(np.ones(4), size=5), dtype=y_dtype)
            fn = F.cross_entropy
        loss = getattr(L, loss_name)()
        value = loss.forward(_on(bk, A, a_dtype), _on(bk, Y, y_dtype))
        expected, grads = torch_reference(
            lambda A: fn(A, torch.tensor(Y, dtype=torch.float64)), {"A": A}, np.array(1.0)
        )
        assert_close(value, expected, bk, "loss", dtype="float64")
        assert_close(loss.backward(), grads["A"], bk, "dLdA", dtype=a_dtype)


@pytest.mark.parametrize("loss_name", ["MSELoss", "CrossEntropyLoss"])
def test_float32_losses_stay_float32(bk, loss_name, rng):
    """The loss of float32 arrays is float32 (NumPy 1.x would turn sum / N into float64)."""
    A = _on(bk, rng.standard_normal((5, 4)), bk.dtype_name)
    Y = _on(bk, np.eye(4)[rng.integers(0, 4, size=5)], bk.dtype_name)
    loss = getattr(L, loss_name)()
    assert_on_backend(loss.forward(A, Y), bk, "loss")
    assert_on_backend(loss.backward(), bk, "dLdA")


def test_cross_entropy_is_finite_at_minus_infinity(bk):
    """A -inf logit on a class without target mass: finite, as PyTorch's (0 * -inf would be
    NaN)."""
    A = np.array([[2.0, -np.inf, 0.5], [-np.inf, 1.0, -np.inf]])
    labels = np.array([0, 1])
    loss = L.CrossEntropyLoss()
    value = loss.forward(_on(bk, A, bk.dtype_name), bk.xp.asarray(labels, device=bk.device))
    expected, grads = torch_reference(
        lambda A: F.cross_entropy(A, torch.tensor(labels)), {"A": A}, np.array(1.0)
    )
    assert np.isfinite(expected) and np.all(np.isfinite(grads["A"]))
    assert_close(value, expected, bk, "loss")
    assert_close(loss.backward(), grads["A"], bk, "dLdA")
