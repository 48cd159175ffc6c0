"""A training step on every backend: every optimizer changes every parameter (no library may
silently do nothing, as ``p -= ...`` does on JAX's immutable arrays), and the step reads no
value back from the device (forward, loss, backward, optimizer step, Dropout's masks)."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest

import portaconv
import portaconv.optim as optim
from portaconv import layers as L
from portaconv.models import Sequential
from portaconv.train.trainer import _correct

from .helpers import assert_on_backend, on, rx, snapshot

OPTIMIZERS = [
    ("SGD", {"lr": 0.1}),
    ("SGD", {"lr": 0.05, "momentum": 0.9}),
    ("SGD", {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-3}),
    ("Adam", {"lr": 0.01}),
    ("Adam", {"lr": 0.01, "amsgrad": True, "weight_decay": 1e-3}),
    ("AdamW", {"lr": 0.01}),
]


def _tiny_net():
    """Every kind of parameter and both Dropout draws: conv, batch norm, linear."""
    return Sequential(
        L.Conv2d(2, 4, 3, padding=1),
        L.ReLU(),
        L.BatchNorm2d(4),  # after the ReLU: before it, it would cancel the conv's bias
        L.Dropout2d(0.2),
        L.MaxPool2d(2),
        L.Flatten(),
        L.Linear(4 * 3 * 3, 8),
        L.ReLU(),
        L.Dropout(0.2),
        L.Linear(8, 3),
    )


def _batch(backend, n=24):
    """Three classes told apart by the mean of the first channel: something to learn."""
    gen = np.random.default_rng(0)
    y = np.arange(n) % 3
    X = gen.standard_normal((n, 2, 6, 6)) * 0.5
    X[:, 0] += (y - 1)[:, None, None]
    return on(backend, X), portaconv.to_backend(y, backend, backend.xp.int64)


def _step(model, criterion, optimizer, X, y):
    """One training step as Trainer._train_epoch runs it (and its running totals)."""
    Z = model.forward(X)
    loss = criterion.forward(Z, y)
    optimizer.zero_grad()
    model.backward(criterion.backward(), input_grad=False)
    optimizer.step()
    return loss * X.shape[0], _correct(Z, y)


def _eval_loss(model, criterion, X, y) -> float:
    model.eval()
    loss = float(criterion.forward(model.forward(X), y))
    model.train()
    return loss


@pytest.mark.parametrize("name, kwargs", OPTIMIZERS, ids=lambda v: str(v))
def test_training_changes_every_parameter_and_lowers_the_loss(bk, name, kwargs):
    portaconv.manual_seed(0)
    model, criterion = _tiny_net(), L.CrossEntropyLoss()
    optimizer = getattr(optim, name)(model, **kwargs)
    X, y = _batch(bk)
    before = {k: snapshot(v) for k, v in model.parameters().items()}
    loss_before = _eval_loss(model, criterion, X, y)
    for _ in range(8):
        _step(model, criterion, optimizer, X, y)
    loss_after = _eval_loss(model, criterion, X, y)
    assert loss_after < loss_before - 0.05, f"{name}: loss {loss_before:.4f} -> {loss_after:.4f}"
    for key, value in model.parameters().items():
        assert_on_backend(value, bk, key)
        changed = np.abs(snapshot(value) - before[key]) > 0
        assert changed.mean() > 0.9, f"{name}: {key}: {np.sum(~changed)} values did not change"
    for key, buffers in optimizer.state.items():
        for buffer, value in buffers.items():
            if buffer != "step":
                assert np.any(snapshot(value) != 0), f"{name}: state[{key!r}][{buffer!r}] is 0"


def test_immutable_parameters_need_set_parameter():
    """A model whose parameters cannot change in place (here a read-only NumPy array, as a
    JAX one) and that has no set_parameter is refused, not silently left untrained."""

    class Frozen:
        def __init__(self):
            self.W = np.ones(3)
            self.W.flags.writeable = False

        def parameters(self):
            return {"W": self.W}

        def gradients(self):
            return {"W": np.ones(3)}

    with pytest.raises(
        TypeError,
        match=rx(
            "SGD",
            r"the parameter 'W' cannot change in place .* must have a "
            r"set_parameter\(name, value\) method .*; Frozen has none",
        ),
    ):
        optim.SGD(Frozen(), lr=0.1)
    model = Frozen()
    model.set_parameter = lambda name, value: setattr(model, name, value)
    optimizer = optim.SGD(model, lr=0.1, momentum=0.5)
    optimizer.step()
    optimizer.step()
    np.testing.assert_allclose(model.W, 1 - 0.1 - 0.1 * 1.5)


def test_set_parameter_checks_name_shape_and_dtype(bk):
    model = Sequential(L.Linear(3, 2))
    W = model.parameters()["0.W"]
    with pytest.raises(ValueError, match=rx("Sequential", r"set_parameter: no parameter '0\.V'")):
        model.set_parameter("0.V", W)
    with pytest.raises(ValueError, match=rx("Linear", r"set_parameter\('W'\): expected shape")):
        model.set_parameter("0.W", W[:1, ...])
    model.set_parameter("0.W", W * 2)
    np.testing.assert_array_equal(snapshot(model.parameters()["0.W"]), snapshot(W) * 2)


# ------------------------------------------------------------------ no reads from the device


@contextlib.contextmanager
def _torch_reads_fail():
    """Fail on every read of a tensor's values on the host: ``.item()``, ``float()``,
    ``int()``, ``bool()`` (aten._local_scalar_dense), ``.numpy()``, ``.tolist()``."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    class NoScalarReads(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func is torch.ops.aten._local_scalar_dense.default:
                raise AssertionError("a training step read a value from the device")
            return func(*args, **(kwargs or {}))

    def refuse(*args, **kwargs):
        raise AssertionError("a training step copied a tensor to NumPy or a list")

    with pytest.MonkeyPatch.context() as patch, NoScalarReads():
        patch.setattr(torch.Tensor, "numpy", refuse)
        patch.setattr(torch.Tensor, "tolist", refuse)
        yield


@contextlib.contextmanager
def _jax_reads_fail():
    """Fail on every read of a JAX array's value on the host: float(), int(), bool(),
    .tolist() go through ArrayImpl._value; .item() is replaced. (jax.transfer_guard cannot tell on a
    CPU, where reading is no transfer; NumPy's np.asarray of a CPU array takes the buffer
    protocol, which nothing here can intercept: the torch guard covers that case.)"""
    from jax._src.array import ArrayImpl

    def refuse(self, *args):
        raise AssertionError("a training step read a value from the device")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ArrayImpl, "_value", property(refuse))
        patch.setattr(ArrayImpl, "item", refuse)  # it reads through np.asarray
        yield


@pytest.mark.parametrize("name, kwargs", [OPTIMIZERS[2], OPTIMIZERS[4]], ids=["SGD", "Adam"])
def test_a_training_step_reads_nothing_from_the_device(bk, name, kwargs):
    # collected on torch and jax only (conftest.ONLY_WHERE): NumPy and array-api-strict
    # arrays live in host memory, where reading one waits for no device
    guards = {"torch": _torch_reads_fail, "jax": _jax_reads_fail}
    portaconv.manual_seed(0)
    model, criterion = _tiny_net(), L.CrossEntropyLoss()
    optimizer = getattr(optim, name)(model, **kwargs)
    X, y = _batch(bk)
    _step(model, criterion, optimizer, X, y)  # the first step creates the optimizer's state
    before = {k: snapshot(v) for k, v in model.parameters().items()}
    with guards[bk.name]():
        total_loss, correct = _step(model, criterion, optimizer, X, y)
        total_loss, correct = total_loss + _step(model, criterion, optimizer, X, y)[0], correct
    assert np.isfinite(float(total_loss)) and 0 <= int(correct) <= X.shape[0]
    for key, value in model.parameters().items():
        assert np.any(snapshot(value) != before[key]), f"{key} did not change"


def test_the_read_guards_catch_a_read(bk):
    """The guards above can fail: a float() of a loss inside them is caught."""
    guards = {"torch": _torch_reads_fail, "jax": _jax_reads_fail}  # conftest.ONLY_WHERE
    total = bk.xp.sum(on(bk, np.ones(3)))
    reads = [float, int, bool, lambda a: a.item(), lambda a: a.tolist()]
    if bk.name == "torch":
        reads.append(np.asarray)
    for read in reads:
        with pytest.raises(AssertionError, match="training step"), guards[bk.name]():
            read(total)
