"""The training step does only the work someone reads: a network's input is data, so the
first layer's dL/dA is skipped in training, while ``backward`` still returns it when asked.
Compared with PyTorch autograd in float64."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from portaconv import layers as L
from portaconv.models import Sequential

from .helpers import assert_close, on, rounded, snapshot, torch_reference


def _conv_net():
    return Sequential(
        L.Conv2d(2, 3, 3, padding=1), L.ReLU(), L.Flatten(), L.Linear(3 * 6 * 6, 4)
    ), (2, 6, 6)


def _mlp_net():  # a parameterless first layer: Flatten
    return Sequential(L.Flatten(), L.Linear(2 * 6 * 6, 5), L.Tanh(), L.Linear(5, 4)), (2, 6, 6)


def _torch_conv(A, W0, b0, W3, b3):
    return F.linear(torch.relu(F.conv2d(A, W0, b0, padding=1)).flatten(1), W3, b3)


def _torch_mlp(A, W1, b1, W3, b3):
    return F.linear(torch.tanh(F.linear(A.flatten(1), W1, b1)), W3, b3)


class _Spy:
    """Records, for each backward call of a layer, its needs_input_grad and what it returned."""

    def __init__(self, layer):
        self.calls = []
        original = layer.backward

        def backward(grad):
            result = original(grad)
            self.calls.append((layer.needs_input_grad, result is None))
            return result

        layer.backward = backward


@pytest.mark.parametrize(
    "build, torch_fn",
    [(_conv_net, _torch_conv), (_mlp_net, _torch_mlp)],
    ids=["conv-first", "flatten-first"],
)
def test_backward_without_input_grad(bk, rng, build, torch_fn):
    model, in_shape = build()
    trained = [(i, layer) for i, layer in enumerate(model) if layer.param_names]
    params = {}
    for i, layer in trained:
        params[f"W{i}"] = snapshot(layer.W).astype(np.float64)
        params[f"b{i}"] = snapshot(layer.b).astype(np.float64)
    A = rounded(rng.standard_normal((3, *in_shape)), bk.dtype_name)
    Z = model.forward(on(bk, A))
    R = rounded(rng.standard_normal(tuple(Z.shape)), bk.dtype_name)
    _, grads = torch_reference(torch_fn, {"A": A, **params}, R)

    # asked for (the default, the API's promise): dL/dA as PyTorch's
    assert_close(model.backward(on(bk, R)), grads["A"], bk, "dLdA")

    first = trained[0][1]
    spy = _Spy(first)
    model.forward(on(bk, A))
    assert model.backward(on(bk, R), input_grad=False) is None
    assert spy.calls == [(False, True)], "the first layer with parameters skipped its dL/dA"
    assert first.needs_input_grad is True, "the flag is restored after the call"
    for i, layer in trained:  # every parameter's gradient as before
        assert_close(layer.dLdW, grads[f"W{i}"], bk, f"dLdW {i}")
        assert_close(layer.dLdb, grads[f"b{i}"], bk, f"dLdb {i}")


def test_backward_without_input_grad_of_a_parameterless_chain(bk, rng):
    model = Sequential(L.ReLU(), L.Flatten())
    model.forward(on(bk, rng.standard_normal((2, 3, 4))))
    assert model.backward(on(bk, np.ones((2, 12))), input_grad=False) is None


def test_trainer_skips_the_first_layers_input_gradient(bk, rng):
    """Trainer.fit: every step's first convolution runs backward without dL/dA; the weights
    still train (the loss falls, every parameter moves)."""
    from portaconv.data import DataLoader
    from portaconv.optim import SGD
    from portaconv.train import Trainer

    model, in_shape = _conv_net()
    spy = _Spy(model[0])
    X = rng.standard_normal((32, *in_shape))
    y = (X[:, 0, 0, 0] > 0).astype(np.int64)
    before = {k: snapshot(v) for k, v in model.parameters().items()}
    trainer = Trainer(model, SGD(model, lr=0.05), progress=False, log=lambda line: None)
    history = trainer.fit(DataLoader(X, y, batch_size=8, shuffle=True), epochs=3)
    assert len(spy.calls) == 3 * 4
    assert set(spy.calls) == {(False, True)}
    assert model[0].needs_input_grad is True
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    for name, value in model.parameters().items():
        assert not np.array_equal(snapshot(value), before[name]), f"{name} did not change"
