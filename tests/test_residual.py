"""Residual (portaconv.models) and the zoo's residual networks, against PyTorch.

Oracle: a twin written here in torch.nn modules (a ``TorchResidual`` adds its body's output
to its shortcut's, or to its input), given the same weights, run in float64 with autograd;
its parameter names are torch's own, so they check portaconv's dotted names too. The
network holds an identity block, a projection block (1x1 stride-2 convolution and
BatchNorm), a Residual inside a Residual, BatchNorm in training mode throughout, and a
single layer as a shortcut. For a resumed or compiled run the uninterrupted eager run is
the oracle, as in test_training.py and test_compiled_step.py.
"""

from __future__ import annotations

import logging
import re

import numpy as np
import pytest
import torch
from array_api_compat import array_namespace

import portaconv
from portaconv.backend import execution_plan, fast_paths, to_numpy
from portaconv.data import DataLoader
from portaconv.distributed import sync_batch_norm
from portaconv.layers import (
    BatchNorm2d,
    Conv2d,
    Flatten,
    GlobalAvgPool2d,
    Linear,
    MaxPool2d,
    ReLU,
)
from portaconv.models import Residual, Sequential, build_model
from portaconv.optim import Adam
from portaconv.train import Trainer

from . import test_distributed
from .helpers import assert_close, assert_same_weights, on, rounded, snapshot

# ------------------------------------------------------------------ the network and its twin


def _network() -> Sequential:
    """Every convolution that feeds a BatchNorm has no bias (the normalisation removes it, so
    its gradient is zero, and a float32 sum of cancelling terms meets no absolute
    tolerance); the last shortcut keeps one."""
    return Sequential(
        Residual(  # identity shortcut
            Sequential(
                Conv2d(2, 3, 3, padding=1, bias=False),
                BatchNorm2d(3),
                ReLU(),
                Conv2d(3, 2, 3, padding=1, bias=False),
                BatchNorm2d(2),
            )
        ),
        ReLU(),
        Residual(  # projection shortcut: the body halves the image and widens it
            Sequential(
                Conv2d(2, 4, 3, stride=2, padding=1, bias=False),
                BatchNorm2d(4),
                ReLU(),
                Conv2d(4, 4, 3, padding=1, bias=False),
                BatchNorm2d(4),
            ),
            Sequential(Conv2d(2, 4, 1, stride=2, bias=False), BatchNorm2d(4)),
        ),
        ReLU(),
        Residual(  # a Residual inside a Residual; a single layer as the shortcut
            Sequential(
                Residual(Sequential(Conv2d(4, 4, 3, padding=1, bias=False), BatchNorm2d(4))), ReLU()
            ),
            Conv2d(4, 4, 1),
        ),
        GlobalAvgPool2d(),
        Linear(4, 3),
    )


class TorchResidual(torch.nn.Module):
    def __init__(self, body: torch.nn.Module, shortcut: torch.nn.Module | None = None) -> None:
        super().__init__()
        self.body, self.shortcut = body, shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + (x if self.shortcut is None else self.shortcut(x))


def _torch_network() -> torch.nn.Module:
    nn = torch.nn
    return nn.Sequential(
        TorchResidual(
            nn.Sequential(
                nn.Conv2d(2, 3, 3, padding=1, bias=False),
                nn.BatchNorm2d(3),
                nn.ReLU(),
                nn.Conv2d(3, 2, 3, padding=1, bias=False),
                nn.BatchNorm2d(2),
            )
        ),
        nn.ReLU(),
        TorchResidual(
            nn.Sequential(
                nn.Conv2d(2, 4, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(4),
                nn.ReLU(),
                nn.Conv2d(4, 4, 3, padding=1, bias=False),
                nn.BatchNorm2d(4),
            ),
            nn.Sequential(nn.Conv2d(2, 4, 1, stride=2, bias=False), nn.BatchNorm2d(4)),
        ),
        nn.ReLU(),
        TorchResidual(
            nn.Sequential(
                TorchResidual(
                    nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4))
                ),
                nn.ReLU(),
            ),
            nn.Conv2d(4, 4, 1),
        ),
        nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()),
        nn.Linear(4, 3),
    ).double()


#: portaconv's attribute names -> torch's
TORCH_NAMES = {
    "W": "weight",
    "b": "bias",
    "BW": "weight",
    "Bb": "bias",
    "running_M": "running_mean",
    "running_V": "running_var",
}


def torch_name(name: str) -> str:
    owner, attribute = name.rsplit(".", 1)
    return f"{owner}.{TORCH_NAMES[attribute]}"


def _same_weights(net: Sequential, twin: torch.nn.Module, rng, dtype: str) -> None:
    """Random weights and running statistics (variances positive), in ``dtype``, on both."""
    state = {}
    for name, value in net.state_dict().items():
        shape = tuple(value.shape)
        if name.endswith("running_V"):
            drawn = rng.uniform(0.5, 1.5, shape)
        else:
            drawn = rng.normal(size=shape) * (0.5 if name.endswith(".W") else 1.0)
        state[name] = rounded(drawn, dtype)
    net.load_state_dict(state)
    full = twin.state_dict()  # num_batches_tracked, which portaconv does not keep
    full.update({torch_name(k): torch.tensor(v) for k, v in state.items()})
    twin.load_state_dict(full)


def _check_against_torch(bk, rng, net: Sequential, running: bool = True) -> None:
    """``net`` (built by :func:`_network`) in training mode against the torch twin: output,
    input gradient, every parameter's gradient and (``running``) the running statistics;
    then the Trainer's backward (``input_grad=False``) gives the same parameter gradients."""
    dtype = bk.dtype_name
    twin = _torch_network().train()
    _same_weights(net, twin, rng, dtype)
    A = rounded(rng.standard_normal((4, 2, 6, 6)), dtype)
    R = rounded(rng.standard_normal((4, 3)), dtype)

    A_t = torch.tensor(A, requires_grad=True)
    Z_t = twin(A_t)
    Z_t.backward(torch.tensor(R))
    expected = {name: p.grad.numpy() for name, p in twin.named_parameters()}
    buffers = dict(twin.named_buffers())

    A_bk = on(bk, A)
    before = snapshot(A_bk)
    assert_close(net.forward(A_bk), Z_t.detach().numpy(), bk, "Z")
    assert_close(net.backward(on(bk, R)), A_t.grad.numpy(), bk, "dLdA")
    np.testing.assert_array_equal(snapshot(A_bk), before, err_msg="forward modified A")
    for name, grad in net.gradients().items():
        assert_close(grad, expected[torch_name(name)], bk, name)
    for name, value in net.state_dict().items():
        if running and "running" in name:
            assert_close(value, buffers[torch_name(name)].numpy(), bk, name)

    net.zero_grad()
    net.forward(A_bk)  # training mode: the running statistics do not change the output
    assert net.backward(on(bk, R), input_grad=False) is None
    for name, grad in net.gradients().items():
        assert_close(grad, expected[torch_name(name)], bk, f"{name}, input_grad=False")


# -------------------------------------------------------------------------- against torch


def test_residual_network_matches_torch(bk, rng):
    _check_against_torch(bk, rng, _network())


def test_residual_network_on_the_reference_half_matches_torch(bk, rng):
    """Under ``fast_paths("never")`` (collected on NumPy and torch, the backends with a
    fast half: conftest.ONLY_WHERE); with the fast paths on, BatchNorm and the ReLU after
    it run fused inside the bodies (on NumPy), off they run one by one."""
    with fast_paths("never"):
        net = _network()
        _check_against_torch(bk, rng, net)
        body = net[0].body
        assert len(execution_plan(body.layers).steps) == len(body.layers)
    if bk.name == "numpy":
        assert len(execution_plan(body.layers).steps) == len(body.layers) - 1


def test_synchronised_batch_norm_reaches_the_nested_layers(rng):
    """``sync_batch_norm`` finds every BatchNorm in the blocks; on two ranks holding the same
    batch (a communicator that sums two identical copies) the network still computes the
    single process's numbers: the global statistics run inside the bodies."""

    class TwoIdenticalRanks:
        size = 2

        def allgather(self, array):
            return array_namespace(array).stack([array, array])

        def allreduce_arrays(self, *arrays):
            return [2 * a for a in arrays]

    comm = TwoIdenticalRanks()
    with portaconv.use_backend("numpy", None, "float64") as backend:
        net = _network()
        assert sync_batch_norm(net, None) == 0
        assert sync_batch_norm(net, comm) == 6
        synced = [net[0].body[1], net[2].shortcut[1], net[4].body[0].body[1]]
        assert all(layer.sync is comm for layer in synced)
        # the running variances differ: unbiased over the global batch, twice the size
        _check_against_torch(backend, rng, net, running=False)


# ------------------------------------------------------------------------- the protocol


def test_names_state_dict_modes_and_set_parameter(bk, rng):
    net = _network()
    # torch's names for the same network are the oracle of the dotted names
    twin_names = {k for k in _torch_network().state_dict() if "num_batches" not in k}
    assert {torch_name(k) for k in net.state_dict()} == twin_names
    params = net.parameters()
    assert "4.body.0.body.0.W" in params and "2.shortcut.1.running_V" not in params
    assert sorted(net.gradients()) == sorted(net.parameters())

    A = on(bk, rng.standard_normal((4, 2, 6, 6)))
    net.forward(A)  # moves the running statistics away from their initial values
    twin = _network()
    twin.load_state_dict({k: to_numpy(v) for k, v in net.state_dict().items()})
    net.eval()
    assert not any(layer.training for layer in (net[0], net[0].body[1], net[4].body[0].body[1]))
    twin.eval()
    np.testing.assert_array_equal(to_numpy(twin.forward(A)), to_numpy(net.forward(A)))
    net.train()
    assert net[4].body[0].body[1].training and net[2].shortcut[1].training

    # how an optimizer hands back a parameter that cannot change in place (JAX)
    W = net.parameters()["4.body.0.body.0.W"]
    net.set_parameter("4.body.0.body.0.W", W + 1)
    assert_close(net[4].body[0].body[0].W, to_numpy(W) + 1, bk, "set_parameter")
    with pytest.raises(ValueError, match=r"Sequential: set_parameter: no parameter '4.body.W'"):
        net.set_parameter("4.body.W", W)

    state = {k: to_numpy(v) for k, v in net.state_dict().items()}
    with pytest.raises(ValueError, match=re.escape("missing ['2.shortcut.0.W']")):
        net.load_state_dict({k: v for k, v in state.items() if k != "2.shortcut.0.W"})


@pytest.fixture
def on_numpy():
    """NumPy in float32 whatever PORTACONV_BACKEND says: for the tests that make NumPy
    arrays themselves (run once, in the NumPy session: conftest's backend_independent)."""
    with portaconv.use_backend("numpy", None, "float32"):
        yield


def test_residual_refuses_what_it_cannot_add(on_numpy, rng):
    with pytest.raises(TypeError, match="Residual: body must have forward and backward methods"):
        Residual("relu")
    with pytest.raises(TypeError, match="Residual: shortcut must have forward and backward"):
        Residual(ReLU(), 3)
    relu = ReLU()
    with pytest.raises(ValueError, match="Residual: body and shortcut are the same object"):
        Residual(relu, relu)

    A = rng.standard_normal((2, 2, 4, 4)).astype(np.float32)
    block = Residual(Conv2d(2, 3, 3, padding=1))
    message = (
        r"Residual: the body's output has shape \(2, 3, 4, 4\) but the input's \(the "
        r"identity\) has \(2, 2, 4, 4\)"
    )
    with pytest.raises(ValueError, match=message):
        block.forward(A)
    projection = Residual(Conv2d(2, 3, 3, stride=2, padding=1), Conv2d(2, 3, 1))
    message = r"body's output has shape \(2, 3, 2, 2\) but the shortcut's has \(2, 3, 4, 4\)"
    with pytest.raises(ValueError, match=message):
        projection.forward(A)

    block = Residual(Sequential(Conv2d(2, 2, 3, padding=1), ReLU()))
    with pytest.raises(ValueError, match="Residual: backward called before forward"):
        block.backward(A)
    Z = block.forward(A)
    with pytest.raises(ValueError, match=r"Residual: dLdZ must have the shape .* \(2, 2, 4, 4\)"):
        block.backward(Z[:1])
    with pytest.raises(TypeError, match="Residual: dLdZ has dtype float64 but forward ran in"):
        block.backward(Z.astype(np.float64))
    message = r"Sequential: layers\[0\] Residual: Residual: body: Sequential: layers\[0\] Conv2d"
    with pytest.raises(ValueError, match=message):
        Sequential(block).forward(A[:, :1])
    assert repr(block) == (
        "Residual(\n  (body): Sequential(\n    (0): Conv2d(2, 2, kernel_size=3, stride=1, "
        "padding=1)\n    (1): ReLU()\n  )\n  (shortcut): identity\n)"
    )


# --------------------------------------------------------------------- training it


def _small_residual_net() -> Sequential:
    return Sequential(
        # first: a block whose input (the data) needs no gradient; the BatchNorm before the
        # convolution, not after: a bias just before a BatchNorm has no gradient to follow
        # (Adam would scale its rounding noise into steps)
        Residual(Sequential(BatchNorm2d(1), Conv2d(1, 2, 3, padding=1), ReLU()), Conv2d(1, 2, 1)),
        ReLU(),
        MaxPool2d(2),
        Flatten(),
        Linear(2 * 4 * 4, 3),
    )


def test_compiled_steps_give_the_eager_steps_results(bk, rng, caplog, monkeypatch):
    """Collected on torch and JAX in float32 (conftest.ONLY_WHERE), as test_compiled_step:
    the compiled step lifts the parameters, gradients and running statistics of the
    nested layers in and out; on torch in one graph."""
    monkeypatch.setenv("PORTACONV_TORCH_COMPILER", "aot_eager")
    caplog.set_level(logging.INFO, logger="torch.__trace")
    X = rng.standard_normal((16, 1, 8, 8)).astype(np.float32)
    y = rng.integers(0, 3, 16)

    def fit(compile):
        portaconv.manual_seed(0)
        model = _small_residual_net()
        trainer = Trainer(
            model, Adam(model, 0.02), progress=False, log=lambda line: None, compile=compile
        )
        trainer.fit(DataLoader(X, y, batch_size=8, shuffle=True, seed=1), epochs=2)
        return trainer

    eager = fit(False)
    if bk.name == "torch":
        from torch._dynamo.utils import counters

        counters.clear()
    compiled = fit(True)
    if bk.name == "torch":
        assert dict(counters["graph_break"]) == {}
    for key, want in eager.model.state_dict().items():
        got = to_numpy(compiled.model.state_dict()[key])
        np.testing.assert_allclose(got, to_numpy(want), rtol=1e-4, atol=1e-5, err_msg=key)


def test_a_resumed_run_gives_the_uninterrupted_weights(bk, rng, tmp_path):
    """A resumed run (the checkpoint holds the nested names; Adam's state; JAX's parameters
    handed back through set_parameter) ends with the uninterrupted run's weights; float64
    on NumPy only (conftest.ONLY_WHERE), as the training tests. The compiled test's shapes:
    JAX compiles each operation once for both."""
    X = rng.standard_normal((16, 1, 8, 8)).astype(np.float32)
    y = rng.integers(0, 3, 16)

    def fit(out_dir, epochs, resume=False):
        portaconv.manual_seed(0)
        model = _small_residual_net()
        trainer = Trainer(model, Adam(model, 0.01), out_dir=out_dir, progress=False,
                          log=lambda line: None)  # fmt: skip
        trainer.fit(DataLoader(X, y, batch_size=8, shuffle=True, seed=1), epochs=epochs,
                    resume=resume)  # fmt: skip
        return trainer

    whole = fit(tmp_path / "whole", 2)
    fit(tmp_path / "cut", 1)
    resumed = fit(tmp_path / "cut", 2, resume=True)
    assert_same_weights(whole, resumed)


# ------------------------------------------------------------------------------- the zoo


def test_zoo_resnet_shapes_and_blocks(on_numpy):
    portaconv.manual_seed(0)
    for shape in ((1, 8, 8), (3, 32, 32), (1, 28, 28), (1, 5, 7)):
        net = build_model("resnet", shape, 10)
        Z = net.forward(np.zeros((2, *shape), np.float32))
        assert tuple(Z.shape) == (2, 10), shape
    net = build_model("resnet", (1, 8, 8), 10, blocks=(1, 2, 1))
    blocks = [layer for layer in net if isinstance(layer, Residual)]
    assert len(blocks) == 4
    # a 1x1 stride-2 projection where a stage begins, the identity inside a stage
    assert [block.shortcut is None for block in blocks] == [True, False, True, False]
    assert net.parameters()["5.shortcut.0.W"].shape == (32, 16, 1, 1)  # stem, BN, ReLU, block, ReLU

    message = r"build_model: resnet with 3 stages needs images of at least 5x5 .* got 4x4"
    with pytest.raises(ValueError, match=message):
        build_model("resnet", (1, 4, 4), 10)
    with pytest.raises(ValueError, match="build_model: resnet needs image input"):
        build_model("resnet", (64,), 10)
    with pytest.raises(ValueError, match="one block count per stage"):
        build_model("resnet", (1, 8, 8), 10, blocks=(1, 2))
    with pytest.raises(ValueError, match="build_model: resnet blocks must be a positive"):
        build_model("resnet", (1, 8, 8), 10, blocks=0)


@test_distributed.needs_mpi
def test_two_ranks_with_synchronised_batch_norm_follow_one_process(tmp_path):
    """``portaconv train --model resnet --sync-bn`` on two MPI ranks (NumPy, float64) ends
    with the single process's weights and running statistics: every BatchNorm inside the
    blocks normalises over the global batch (without --sync-bn they differ by tenths)."""
    small = ("--model", "resnet", "--subset", "300", "--batch-size", "32", "--epochs", "1")
    on = {"backend": test_distributed.ORCHESTRATION}
    test_distributed.train(0, tmp_path / "one", *small, **on)
    test_distributed.train(2, tmp_path / "two", *small, "--sync-bn", **on)
    one, two = (tmp_path / name / "checkpoint.npz" for name in ("one", "two"))
    test_distributed.assert_same_weights(one, two, tol=1e-9)


def test_zoo_mobilenet_shapes_and_blocks(on_numpy):
    portaconv.manual_seed(0)
    for shape in ((1, 8, 8), (3, 32, 32), (1, 5, 7)):
        net = build_model("mobilenet", shape, 10)
        Z = net.forward(np.zeros((2, *shape), np.float32))
        assert tuple(Z.shape) == (2, 10), shape
    # stem, BN, ReLU6, then the blocks (1, 2, 2, 1 a stage): a Residual where the stride is
    # 1 and the width stays, a plain Sequential where a stage begins
    blocks = list(net)[3:9]
    assert [type(block).__name__ for block in blocks] == [
        "Residual", "Sequential", "Residual", "Sequential", "Residual", "Sequential",
    ]  # fmt: skip
    depthwise = blocks[2].body[3]  # expand 1x1, BN, ReLU6, then the 3x3 filter per channel
    assert (depthwise.groups, depthwise.in_channels, depthwise.out_channels) == (96, 96, 96)
    assert not any(name.endswith(".b") for name in net.parameters() if name != "13.b")
    assert type(blocks[0].body[0]) is Conv2d and blocks[0].body[0].groups == 16  # expansion 1

    message = r"build_model: mobilenet with strides \(1, 2, 2, 1\) needs images of at least 5x5"
    with pytest.raises(ValueError, match=message + r" .* got 4x4"):
        build_model("mobilenet", (1, 4, 4), 10)
    with pytest.raises(ValueError, match="one stride and one block count per stage"):
        build_model("mobilenet", (1, 8, 8), 10, strides=(1, 2))
