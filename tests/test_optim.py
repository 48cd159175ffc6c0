"""Optimizers, learning-rate schedules and initialisers against PyTorch, on every backend.

The oracle is ``torch.optim`` / ``torch.optim.lr_scheduler`` / ``torch.nn.init`` in float64:
both sides start from the same parameters and see the same gradients (rounded to the test
dtype first); the parameters must agree after every step. Schedules are compared epoch by
epoch; initialisers by PyTorch's fans, gains, bounds and standard deviations.
"""

from __future__ import annotations

import json
import math
from functools import partial
from typing import Any

import numpy as np
import pytest
import torch
from array_api_compat import array_namespace

import portaconv
import portaconv.optim as optim
from portaconv.backend._arrays import to_numpy, updates_in_place
from portaconv.layers import Conv2d, Linear, ReLU
from portaconv.optim import init

from .helpers import (
    assert_close,
    assert_on_backend,
    floats,
    on,
    other_library,
    rounded,
    rx,
    snapshot,
)

STEPS = 5


class TwoParams:
    """A container-style model: two parameters named like a Sequential's, gradients by hand."""

    def __init__(self, backend, values: dict[str, np.ndarray]) -> None:
        self.params = {name: on(backend, v) for name, v in values.items()}
        self.grads: dict[str, Any] = {name: None for name in values}

    def parameters(self):
        return dict(self.params)

    def gradients(self):
        return dict(self.grads)

    def zero_grad(self):
        self.grads = {n: array_namespace(p).zeros_like(p) for n, p in self.params.items()}

    def set_parameter(self, name, value):
        self.params[name] = value


def torch_twin(model) -> dict[str, torch.Tensor]:
    """float64 torch leaves holding the model's current parameter values."""
    return {
        name: torch.tensor(to_numpy(p).astype(np.float64), requires_grad=True)
        for name, p in model.parameters().items()
    }


def draw_gradients(model, rng, dtype: str, steps: int = STEPS) -> list[dict[str, np.ndarray]]:
    """One gradient per parameter per step, rounded to ``dtype``, as float64 NumPy."""
    shapes = {name: tuple(p.shape) for name, p in model.parameters().items()}
    return [
        {name: rounded(rng.standard_normal(shape), dtype) for name, shape in shapes.items()}
        for _ in range(steps)
    ]


def set_gradients(model, grads: dict[str, np.ndarray], backend) -> None:
    """Put ``grads`` where ``model.gradients()`` finds them (``dLdW``, ``dLdb`` on a layer)."""
    if isinstance(model, TwoParams):
        model.grads = {name: on(backend, g) for name, g in grads.items()}
    else:
        for name, g in grads.items():
            setattr(model, "dLd" + name, on(backend, g))


def set_torch_gradients(leaves: dict[str, torch.Tensor], grads: dict[str, np.ndarray]) -> None:
    for name, g in grads.items():
        leaves[name].grad = torch.tensor(g)


def assert_params_match(model, leaves, backend, what: str) -> None:
    for name, p in model.parameters().items():
        assert_close(p, leaves[name].detach().numpy(), backend, f"{name} {what}")


# ------------------------------------------------------------------------------ optimizers

# (class name, keyword arguments): the same names and meanings in portaconv and torch.optim.
OPTIMIZER_CASES = [
    ("SGD", {"lr": 0.1}),
    ("SGD", {"lr": 0.1, "momentum": 0.9}),
    ("SGD", {"lr": 0.05, "momentum": 0.9, "dampening": 0.3}),
    ("SGD", {"lr": 0.05, "momentum": 0.8, "nesterov": True}),
    ("SGD", {"lr": 0.1, "weight_decay": 0.05}),
    ("SGD", {"lr": 0.05, "momentum": 0.9, "weight_decay": 0.1, "nesterov": True}),
    ("Adam", {}),
    ("Adam", {"lr": 0.01, "amsgrad": True}),
    ("Adam", {"lr": 0.01, "weight_decay": 0.1}),
    ("Adam", {"lr": 0.02, "betas": (0.8, 0.99), "eps": 1e-6, "weight_decay": 0.05}),
    ("AdamW", {}),
    ("AdamW", {"lr": 0.01, "weight_decay": 0.1, "amsgrad": True}),
    ("AdamW", {"lr": 0.03, "betas": (0.5, 0.9), "weight_decay": 0.2}),
]


def case_id(case) -> str:
    name, kwargs = case
    return name + "".join(f"-{k}={v}" for k, v in kwargs.items())


def make_pair(case, model):
    """The portaconv optimizer on ``model`` and torch's on its float64 twin."""
    name, kwargs = case
    leaves = torch_twin(model)
    ours = getattr(optim, name)(model, **kwargs)
    theirs = getattr(torch.optim, name)(list(leaves.values()), **kwargs)
    return ours, theirs, leaves


@pytest.mark.parametrize("case", OPTIMIZER_CASES, ids=case_id)
def test_optimizer_matches_torch(case, bk, rng):
    model = Linear(4, 3)
    ours, theirs, leaves = make_pair(case, model)
    for step, grads in enumerate(draw_gradients(model, rng, bk.dtype_name), start=1):
        set_gradients(model, grads, bk)
        set_torch_gradients(leaves, grads)
        ours.step()
        theirs.step()
        assert_params_match(model, leaves, bk, f"after step {step} of {case_id(case)}")
    assert ours.step_count == STEPS


class Plain:
    """NumPy parameters and gradients by name (no set_parameter: every update in place)."""

    def __init__(self, params):
        self.params, self.grads = params, {}

    def parameters(self):
        return dict(self.params)

    def gradients(self):
        return dict(self.grads)


@pytest.mark.parametrize("name", ["Adam", "AdamW"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_numpy_adam_fused_pass_is_the_portable_update(name, dtype, monkeypatch):
    """NumPy's Adam takes its parameters through one chunked pass (backend/fast/update.py),
    whatever portaconv's thread count (1-3): the same bits as the portable per-parameter
    update after 3 steps, with a parameter across chunk boundaries and a transposed
    gradient; a parameter that is not contiguous is left to the portable update. torch's
    float64 Adam within float rounding."""
    import portaconv.backend.fast.threads as threads
    import portaconv.backend.fast.update as update
    from portaconv.backend import fast_paths

    real_update = update.adam_update
    monkeypatch.setattr(threads, "_env_read", True)
    rng = np.random.default_rng(7)
    shapes = {"big": (3, update.CHUNK + 1001), "odd": (77, 5), "t": (40, 60), "f": (9, 11)}
    start = {k: rng.standard_normal(s).astype(dtype) for k, s in shapes.items()}
    steps = [{k: rng.standard_normal(s).astype(dtype) for k, s in shapes.items()} for _ in range(3)]
    kwargs = {"lr": 0.01, "weight_decay": 0.1} if name == "AdamW" else {"lr": 0.01}

    def run(threads_count, fused):
        monkeypatch.setattr(threads, "_requested", threads_count)
        seen = []

        def spy(items, *args):
            seen.append(sorted(p.size for p, *_ in items))
            return real_update(items, *args)

        monkeypatch.setattr(update, "adam_update", spy)
        params = {k: v.copy() for k, v in start.items()}
        params["f"] = np.asfortranarray(params["f"])
        model = Plain(params)
        opt = getattr(optim, name)(model, **kwargs)
        with fast_paths("auto" if fused else "never"):  # "never": the portable update
            for g in steps:
                model.grads = dict(g, t=np.ascontiguousarray(g["t"].T).T)
                opt.step()
        return params, seen

    portable, seen = run(1, fused=False)
    assert seen == []  # nothing to fuse: the fused pass is not called
    leaves = {k: torch.tensor(v.astype(np.float64), requires_grad=True) for k, v in start.items()}
    theirs = getattr(torch.optim, name)(list(leaves.values()), **kwargs)
    for g in steps:
        for k, leaf in leaves.items():
            leaf.grad = torch.tensor(g[k].astype(np.float64))
        theirs.step()
    tol = 1e-5 if dtype == np.float32 else 1e-12
    for count in (1, 2, 3):
        fused, seen = run(count, fused=True)
        assert seen == [[385, 2400, 3 * (update.CHUNK + 1001)]] * 3  # all but "f"
        for k in shapes:
            assert fused[k].dtype == dtype
            np.testing.assert_array_equal(fused[k], portable[k], err_msg=f"{k} on {count}")
            np.testing.assert_allclose(fused[k], leaves[k].detach().numpy(), rtol=tol, atol=tol)


@pytest.mark.parametrize(
    "case",
    [
        ("SGD", {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 0.01}),
        ("Adam", {"lr": 0.01, "amsgrad": True}),
        ("AdamW", {"lr": 0.01}),
    ],
    ids=case_id,
)
def test_container_model_matches_torch(case, bk, rng):
    """Parameters named like a container's ("layers.0.W"), of rank 4 and 1."""
    values = {
        "layers.0.W": rng.standard_normal((3, 2, 2, 2)),
        "layers.1.b": rng.standard_normal(5),
    }
    model = TwoParams(bk, values)
    ours, theirs, leaves = make_pair(case, model)
    for step, grads in enumerate(draw_gradients(model, rng, bk.dtype_name), start=1):
        set_gradients(model, grads, bk)
        set_torch_gradients(leaves, grads)
        ours.step()
        theirs.step()
        assert_params_match(model, leaves, bk, f"after step {step}")
    assert set(ours.state_dict()["state"]) == set(values)


@pytest.mark.parametrize(
    "case",
    [("SGD", {"lr": 0.1, "momentum": 0.9}), ("Adam", {"amsgrad": True}), ("AdamW", {})],
    ids=case_id,
)
def test_step_updates_in_place_and_keeps_dtype(case, bk, rng):
    """Same parameter arrays after a step where the library updates in place, else (JAX)
    new ones in the layer; gradients untouched; state on the backend."""
    model = Linear(5, 2)
    ours = getattr(optim, case[0])(model, **case[1])
    before = model.parameters()
    for grads in draw_gradients(model, rng, bk.dtype_name, steps=2):
        set_gradients(model, grads, bk)
        kept = {name: snapshot(g) for name, g in model.gradients().items()}
        ours.step()
        for name, g in model.gradients().items():
            np.testing.assert_array_equal(snapshot(g), kept[name], err_msg=f"dLd{name} changed")
    after = model.parameters()
    for name in before:
        if updates_in_place(before[name]):
            assert after[name] is before[name], f"{name} was replaced, not updated in place"
        else:
            assert after[name] is not before[name], f"{name} was not replaced"
        assert_on_backend(after[name], bk, name)
    for name, buffers in ours.state.items():
        for key, value in buffers.items():
            if key != "step":
                assert_on_backend(value, bk, f"state[{name!r}][{key!r}]")


def test_replaced_parameter_is_the_one_updated(bk, rng):
    """Parameters are looked up by name on every step: load_state_dict between steps."""
    model = Linear(3, 2)
    case = ("SGD", {"lr": 0.1, "momentum": 0.9})
    ours, theirs, leaves = make_pair(case, model)
    first, second = draw_gradients(model, rng, bk.dtype_name, steps=2)
    set_gradients(model, first, bk)
    set_torch_gradients(leaves, first)
    ours.step()
    theirs.step()
    fresh = {name: rounded(rng.standard_normal(tuple(p.shape)), bk.dtype_name)
             for name, p in model.parameters().items()}  # fmt: skip
    model.load_state_dict(fresh)
    with torch.no_grad():
        for name, value in fresh.items():
            leaves[name].copy_(torch.tensor(value))
    set_gradients(model, second, bk)
    set_torch_gradients(leaves, second)
    ours.step()
    theirs.step()
    assert_params_match(model, leaves, bk, "after replacing the parameters")


def test_zero_grad_calls_the_model(bk, rng):
    model = Linear(3, 2)
    ours = optim.SGD(model, lr=0.1)
    set_gradients(model, draw_gradients(model, rng, bk.dtype_name, steps=1)[0], bk)
    ours.zero_grad()
    for name, g in model.gradients().items():
        assert_close(g, np.zeros(tuple(g.shape)), bk, f"dLd{name}")


# ------------------------------------------------------------------------ state_dict


def to_checkpoint(state: dict[str, Any]) -> dict[str, Any]:
    """What a checkpoint file gives back: JSON for the settings, NumPy for the arrays."""
    settings = json.loads(json.dumps({k: v for k, v in state.items() if k != "state"}))
    arrays = {
        name: {k: v if isinstance(v, int) else np.array(to_numpy(v)) for k, v in buffers.items()}
        for name, buffers in state["state"].items()
    }
    return {**settings, "state": arrays}


@pytest.mark.parametrize("case", OPTIMIZER_CASES, ids=case_id)
def test_state_dict_round_trip(case, bk, rng):
    """3 steps, save, fresh model and optimizer, load, 2 steps == 5 uninterrupted steps."""
    name, kwargs = case
    portaconv.manual_seed(0)
    model = Linear(4, 3)
    start = {n: np.array(to_numpy(p)) for n, p in model.parameters().items()}
    gradients = draw_gradients(model, rng, bk.dtype_name)

    whole = Linear(4, 3)
    whole.load_state_dict(start)
    uninterrupted = getattr(optim, name)(whole, **kwargs)
    for grads in gradients:
        set_gradients(whole, grads, bk)
        uninterrupted.step()

    first = getattr(optim, name)(model, **kwargs)
    for grads in gradients[:3]:
        set_gradients(model, grads, bk)
        first.step()
    saved = first.state_dict()
    assert saved["step"] == 3 and saved["lr"] == first.lr
    checkpoint = to_checkpoint(saved)
    saved_arrays = {n: {k: snapshot(v) for k, v in b.items() if k != "step"}
                    for n, b in saved["state"].items()}  # fmt: skip

    resumed_model = Linear(4, 3)
    resumed_model.load_state_dict(model.state_dict())
    # Built with another learning rate: load_state_dict restores the saved one.
    resumed = getattr(optim, name)(resumed_model, **{**kwargs, "lr": 0.5})
    resumed.load_state_dict(checkpoint)
    assert resumed.lr == first.lr and resumed.step_count == 3
    for n, buffers in resumed.state.items():
        for k, v in buffers.items():
            if k != "step":
                assert_on_backend(v, bk, f"loaded state[{n!r}][{k!r}]")
    for grads in gradients[3:]:
        set_gradients(resumed_model, grads, bk)
        resumed.step()
        set_gradients(model, grads, bk)
        first.step()
    for n, p in resumed_model.parameters().items():
        assert_close(p, to_numpy(whole.parameters()[n]).astype(np.float64), bk, f"resumed {n}")
    # The saved arrays are copies: two more steps on the original left them alone.
    for n, buffers in saved_arrays.items():
        for k, v in buffers.items():
            np.testing.assert_array_equal(snapshot(saved["state"][n][k]), v, err_msg=k)


def test_state_dict_settings_are_plain_python(bk):
    model = Linear(2, 2)
    state = optim.Adam(model, lr=0.01, betas=(0.8, 0.9), amsgrad=True).state_dict()
    settings = {k: v for k, v in state.items() if k != "state"}
    assert json.loads(json.dumps(settings)) == {
        "type": "Adam",
        "lr": 0.01,
        "betas": [0.8, 0.9],
        "eps": 1e-8,
        "weight_decay": 0.0,
        "amsgrad": True,
        "step": 0,
    }
    state = optim.SGD(model, lr=0.1, momentum=0.5, nesterov=True).state_dict()
    assert {k: v for k, v in state.items() if k != "state"} == {
        "type": "SGD",
        "lr": 0.1,
        "momentum": 0.5,
        "dampening": 0.0,
        "weight_decay": 0.0,
        "nesterov": True,
        "step": 0,
    }


# -------------------------------------------------------------------------- schedulers

SCHEDULER_CASES = [
    ("StepLR", {"step_size": 3, "gamma": 0.5}),
    ("StepLR", {"step_size": 1}),
    ("ExponentialLR", {"gamma": 0.9}),
    ("CosineAnnealingLR", {"T_max": 10}),
    ("CosineAnnealingLR", {"T_max": 8, "eta_min": 0.01}),
    ("CosineAnnealingLR", {"T_max": 10, "warmup_epochs": 3}),
    (
        "CosineAnnealingLR",
        {"T_max": 12, "eta_min": 0.02, "warmup_epochs": 4, "warmup_start_factor": 0.25},
    ),
    ("CosineAnnealingLR", {"T_max": 2, "warmup_epochs": 1, "warmup_start_factor": 1.0}),
]
EPOCHS = 20


def torch_scheduler(name: str, kwargs: dict[str, Any], optimizer):
    """torch's scheduler for a case; warm-up is LinearLR followed by cosine annealing."""
    lr_scheduler = torch.optim.lr_scheduler
    warmup = kwargs.get("warmup_epochs", 0)
    if name != "CosineAnnealingLR" or warmup == 0:
        return getattr(lr_scheduler, name)(optimizer, **kwargs)
    factor = kwargs.get("warmup_start_factor", 0.1)
    eta_min = kwargs.get("eta_min", 0.0)
    return lr_scheduler.SequentialLR(
        optimizer,
        [
            lr_scheduler.LinearLR(optimizer, start_factor=factor, total_iters=warmup),
            lr_scheduler.CosineAnnealingLR(
                optimizer, T_max=kwargs["T_max"] - warmup, eta_min=eta_min
            ),
        ],
        milestones=[warmup],
    )


@pytest.mark.parametrize("case", SCHEDULER_CASES, ids=case_id)
def test_scheduler_matches_torch(case, bk):
    name, kwargs = case
    ours_opt = optim.SGD(Linear(2, 2), lr=0.5)
    leaf = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    theirs_opt = torch.optim.SGD([leaf], lr=0.5)
    ours = getattr(optim, name)(ours_opt, **kwargs)
    theirs = torch_scheduler(name, kwargs, theirs_opt)
    assert ours.base_lr == 0.5
    for epoch in range(EPOCHS):
        expected = theirs.get_last_lr()
        assert ours.last_epoch == epoch
        assert ours.get_last_lr() == pytest.approx(expected, rel=1e-12, abs=1e-15), epoch
        assert ours_opt.lr == pytest.approx(theirs_opt.param_groups[0]["lr"], rel=1e-12, abs=1e-15)
        theirs_opt.step()  # torch warns about a scheduler stepped before its optimizer
        theirs.step()
        ours.step()


def test_scheduler_drives_optimizer_like_torch(bk, rng):
    """SGD with momentum under StepLR, one step per epoch: parameters match torch's."""
    model = Linear(3, 2)
    case = ("SGD", {"lr": 0.2, "momentum": 0.9})
    ours, theirs, leaves = make_pair(case, model)
    ours_schedule = optim.StepLR(ours, step_size=2, gamma=0.5)
    theirs_schedule = torch.optim.lr_scheduler.StepLR(theirs, step_size=2, gamma=0.5)
    for epoch, grads in enumerate(draw_gradients(model, rng, bk.dtype_name, steps=6)):
        set_gradients(model, grads, bk)
        set_torch_gradients(leaves, grads)
        ours.step()
        theirs.step()
        assert_params_match(model, leaves, bk, f"in epoch {epoch}")
        ours_schedule.step()
        theirs_schedule.step()


@pytest.mark.parametrize("case", SCHEDULER_CASES, ids=case_id)
def test_scheduler_state_dict_round_trip(case, bk):
    """3 epochs, save (through JSON), fresh optimizer and scheduler, load, 2 more epochs."""
    name, kwargs = case
    whole = getattr(optim, name)(optim.SGD(Linear(2, 2), lr=0.3), **kwargs)
    expected = [whole.get_last_lr()[0]]
    for _ in range(5):
        whole.step()
        expected.append(whole.get_last_lr()[0])

    first_opt = optim.SGD(Linear(2, 2), lr=0.3)
    first = getattr(optim, name)(first_opt, **kwargs)
    for _ in range(3):
        first.step()
    saved_opt = to_checkpoint(first_opt.state_dict())
    saved = json.loads(json.dumps(first.state_dict()))
    assert saved["last_epoch"] == 3 and saved["base_lr"] == 0.3

    resumed_opt = optim.SGD(Linear(2, 2), lr=0.7)
    resumed_opt.load_state_dict(saved_opt)
    resumed = getattr(optim, name)(resumed_opt, **kwargs)  # reads lr 0.7 / its epoch-3 value
    resumed.load_state_dict(saved)
    got = [resumed.get_last_lr()[0]]
    assert resumed_opt.lr == got[0]
    for _ in range(2):
        resumed.step()
        got.append(resumed.get_last_lr()[0])
    assert got == pytest.approx(expected[3:], rel=1e-14)
    assert resumed_opt.lr == got[-1] and resumed.last_epoch == 5


# ------------------------------------------------------------------------- initialisers

FAN_SHAPES = [(3, 4), (8, 3, 5, 5), (2, 6, 3), (4, 2, 3, 3, 3), (1, 1)]


@pytest.mark.parametrize("shape", FAN_SHAPES, ids=str)
def test_fans_match_torch(shape):
    expected = torch.nn.init._calculate_fan_in_and_fan_out(torch.empty(shape))
    assert init.fan_in_and_fan_out(shape) == expected


GAINS = [
    ("linear", None),
    ("conv2d", None),
    ("conv_transpose3d", None),
    ("sigmoid", None),
    ("tanh", None),
    ("relu", None),
    ("leaky_relu", None),
    ("leaky_relu", 0.2),
    ("leaky_relu", 0),
    ("leaky_relu", 3),
    ("selu", None),
]


@pytest.mark.parametrize(("nonlinearity", "param"), GAINS)
def test_calculate_gain_matches_torch(nonlinearity, param):
    expected = torch.nn.init.calculate_gain(nonlinearity, param)
    assert init.calculate_gain(nonlinearity, param) == pytest.approx(expected, rel=1e-15)


def torch_fans(shape):
    return torch.nn.init._calculate_fan_in_and_fan_out(torch.empty(shape))


def torch_kaiming_std(shape, a=0.0, mode="fan_in", nonlinearity="leaky_relu"):
    fan_in, fan_out = torch_fans(shape)
    fan = fan_in if mode == "fan_in" else fan_out
    return torch.nn.init.calculate_gain(nonlinearity, a) / math.sqrt(fan)


def torch_xavier_std(shape, gain=1.0):
    fan_in, fan_out = torch_fans(shape)
    return gain * math.sqrt(2.0 / (fan_in + fan_out))


BIG = (96, 64, 3, 3)  # 55296 draws: the sample std is within ~0.3% of the true one

# (ours, torch's in-place initialiser, keyword arguments, std from PyTorch's documented formula)
UNIFORM_CASES = [
    (init.xavier_uniform, torch.nn.init.xavier_uniform_, {}, torch_xavier_std),
    (init.xavier_uniform, torch.nn.init.xavier_uniform_, {"gain": 5 / 3}, torch_xavier_std),
    (init.kaiming_uniform, torch.nn.init.kaiming_uniform_, {}, torch_kaiming_std),
    (
        init.kaiming_uniform,
        torch.nn.init.kaiming_uniform_,
        {"mode": "fan_out", "nonlinearity": "relu"},
        torch_kaiming_std,
    ),
    (init.kaiming_uniform, torch.nn.init.kaiming_uniform_, {"a": math.sqrt(5)}, torch_kaiming_std),
]
NORMAL_CASES = [
    (init.xavier_normal, torch.nn.init.xavier_normal_, {}, torch_xavier_std),
    (init.xavier_normal, torch.nn.init.xavier_normal_, {"gain": 2.0}, torch_xavier_std),
    (init.kaiming_normal, torch.nn.init.kaiming_normal_, {}, torch_kaiming_std),
    (
        init.kaiming_normal,
        torch.nn.init.kaiming_normal_,
        {"mode": "fan_out", "nonlinearity": "relu"},
        torch_kaiming_std,
    ),
    (
        init.kaiming_normal,
        torch.nn.init.kaiming_normal_,
        {"a": 0.2, "mode": "fan_in", "nonlinearity": "leaky_relu"},
        torch_kaiming_std,
    ),
]


def init_id(case) -> str:
    ours, _, kwargs, _ = case
    return ours.__name__ + "".join(f"-{k}={v:.3g}" if isinstance(v, float) else f"-{k}={v}"
                                   for k, v in kwargs.items())  # fmt: skip


@pytest.mark.parametrize("case", UNIFORM_CASES, ids=init_id)
def test_uniform_initialisers_fill_torch_bound(case, bk):
    ours, theirs, kwargs, std_formula = case
    bound = math.sqrt(3.0) * std_formula(BIG, **kwargs)
    # The formula is torch's: its own draws fill exactly this interval.
    reference = theirs(torch.empty(BIG, dtype=torch.float64), **kwargs).numpy()
    assert np.max(np.abs(reference)) <= bound and np.max(np.abs(reference)) > 0.999 * bound
    portaconv.manual_seed(1)
    W = ours(*BIG, **kwargs)
    assert_on_backend(W, bk, ours.__name__)
    values = to_numpy(W).astype(np.float64)
    assert values.shape == BIG
    assert np.max(np.abs(values)) <= bound * (1 + 1e-6)
    assert np.max(values) > 0.999 * bound and np.min(values) < -0.999 * bound
    assert abs(np.mean(values)) < 5 * bound / math.sqrt(3 * values.size)


@pytest.mark.parametrize("case", NORMAL_CASES, ids=init_id)
def test_normal_initialisers_have_torch_std(case, bk):
    ours, theirs, kwargs, std_formula = case
    std = std_formula(BIG, **kwargs)
    reference = theirs(torch.empty(BIG, dtype=torch.float64), **kwargs).numpy()
    assert np.std(reference) == pytest.approx(std, rel=0.02)
    portaconv.manual_seed(2)
    W = ours(*BIG, **kwargs)
    assert_on_backend(W, bk, ours.__name__)
    values = to_numpy(W).astype(np.float64)
    assert values.shape == BIG
    assert np.std(values) == pytest.approx(std, rel=0.02)
    assert abs(np.mean(values)) < 5 * std / math.sqrt(values.size)


def test_plain_distributions_and_constants(bk):
    portaconv.manual_seed(3)
    draws = to_numpy(init.normal(200, 300, mean=2.0, std=0.5)).astype(np.float64)
    assert np.mean(draws) == pytest.approx(2.0, abs=0.01)
    assert np.std(draws) == pytest.approx(0.5, rel=0.02)
    draws = to_numpy(init.uniform(200, 300, a=-1.0, b=3.0)).astype(np.float64)
    assert -1.0 <= np.min(draws) < -0.99 and 2.99 < np.max(draws) <= 3.0
    assert np.mean(draws) == pytest.approx(1.0, abs=0.02)
    assert_close(init.zeros(4, 2), np.zeros((4, 2)), bk, "zeros")
    assert_close(init.ones(3), np.ones(3), bk, "ones")
    assert_close(init.constant(2, 3, value=0.25), np.full((2, 3), 0.25), bk, "constant")
    assert_close(init.constant(value=-1.5), np.asarray(-1.5), bk, "0-d constant")


ALL_INITIALISERS = [
    init.xavier_uniform,
    init.xavier_normal,
    init.kaiming_uniform,
    init.kaiming_normal,
    init.zeros,
    init.ones,
    partial(init.constant, value=0.5),
    init.normal,
    init.uniform,
]


@pytest.mark.parametrize("fn", ALL_INITIALISERS, ids=lambda f: getattr(f, "__name__", "constant"))
def test_initialiser_result_and_seed(fn, bk):
    """On the backend in its dtype; the same seed gives the same values on every backend."""
    shape = (5, 3, 2)
    portaconv.manual_seed(7)
    first = fn(*shape)
    assert_on_backend(first, bk, "initialiser result")
    assert tuple(first.shape) == shape
    portaconv.manual_seed(7)
    assert_close(fn(*shape), to_numpy(first).astype(np.float64), bk, "same seed, same draw")
    with portaconv.use_backend("numpy", dtype="float64"):
        portaconv.manual_seed(7)
        host = fn(*shape)
    assert_close(first, rounded(host, bk.dtype_name), bk, "same seed as on NumPy float64")
    assert tuple(fn(shape).shape) == shape  # a tuple is accepted too


def test_initialisers_as_layer_init_functions(bk):
    portaconv.manual_seed(4)
    linear = Linear(20, 30, weight_init_fn=init.xavier_uniform, bias_init_fn=init.zeros)
    bound = math.sqrt(6.0 / (20 + 30))
    assert_on_backend(linear.W, bk, "Linear W")
    assert tuple(linear.W.shape) == (30, 20)
    assert np.max(np.abs(to_numpy(linear.W))) <= bound * (1 + 1e-6)
    assert_close(linear.b, np.zeros(30), bk, "Linear b")

    conv = Conv2d(
        3,
        8,
        3,
        weight_init_fn=partial(init.kaiming_normal, mode="fan_out", nonlinearity="relu"),
        bias_init_fn=partial(init.constant, value=0.1),
    )
    assert_on_backend(conv.W, bk, "Conv2d W")
    assert tuple(conv.W.shape) == (8, 3, 3, 3)
    assert_close(conv.b, np.full(8, 0.1), bk, "Conv2d b")
    conv = Conv2d(3, 8, 3, weight_init_fn=init.he_uniform, bias_init_fn=init.uniform)
    bound = torch_kaiming_std((8, 3, 3, 3)) * math.sqrt(3.0)
    assert np.max(np.abs(to_numpy(conv.W))) <= bound * (1 + 1e-6)


def test_aliases_and_zero_size():
    assert init.glorot_uniform is init.xavier_uniform
    assert init.glorot_normal is init.xavier_normal
    assert init.he_uniform is init.kaiming_uniform
    assert init.he_normal is init.kaiming_normal
    assert optim.xavier_uniform is init.xavier_uniform
    for fn in (init.xavier_uniform, init.kaiming_normal):
        assert tuple(fn(0, 3).shape) == (0, 3)


# ------------------------------------------------------------------------------ errors


def linear():
    return Linear(2, 2)


OPTIMIZER_ERRORS = [
    (
        lambda: optim.SGD(linear(), lr=-0.1),
        ValueError,
        rx("SGD", "lr must be >= 0, got -0.1", literal=True),
    ),
    (
        lambda: optim.SGD(linear(), lr=0.1, momentum=-0.5),
        ValueError,
        rx("SGD", "momentum must be >= 0, got -0.5", literal=True),
    ),
    (
        lambda: optim.SGD(linear(), lr=0.1, dampening=-1),
        ValueError,
        rx("SGD", "dampening must", literal=True),
    ),
    (
        lambda: optim.SGD(linear(), 0.1, weight_decay=-1),
        ValueError,
        rx("SGD", "weight_decay", literal=True),
    ),
    (
        lambda: optim.SGD(linear(), lr=float("nan")),
        ValueError,
        rx("SGD", "lr must be >= 0", literal=True),
    ),
    (
        lambda: optim.SGD(linear(), lr="0.1"),
        TypeError,
        rx("SGD", "lr must be a real number", literal=True),
    ),
    (lambda: optim.SGD(linear()), TypeError, "lr"),
    (
        lambda: optim.SGD(linear(), lr=0.1, nesterov=True),
        ValueError,
        rx("SGD", "nesterov momentum requires momentum > 0 and dampening == 0", literal=True),
    ),
    (
        lambda: optim.SGD(linear(), lr=0.1, momentum=0.9, dampening=0.1, nesterov=True),
        ValueError,
        rx("SGD", "nesterov momentum requires", literal=True),
    ),
    (
        lambda: optim.SGD(linear(), 0.1, nesterov=1),
        TypeError,
        rx("SGD", "nesterov must be True", literal=True),
    ),
    (
        lambda: optim.Adam(linear(), betas=(1.0, 0.999)),
        ValueError,
        rx("Adam", "betas[0] must be in [0, 1), got 1.0", literal=True),
    ),
    (
        lambda: optim.Adam(linear(), betas=(0.9, -0.1)),
        ValueError,
        rx("Adam", "betas[1] must be in [0, 1)", literal=True),
    ),
    (
        lambda: optim.Adam(linear(), betas=0.9),
        TypeError,
        rx("Adam", "betas must be a pair", literal=True),
    ),
    (
        lambda: optim.Adam(linear(), eps=-1e-8),
        ValueError,
        rx("Adam", "eps must be >= 0", literal=True),
    ),
    (lambda: optim.Adam(linear(), lr=-1), ValueError, rx("Adam", "lr must be >= 0", literal=True)),
    (
        lambda: optim.AdamW(linear(), weight_decay=-0.01),
        ValueError,
        rx("AdamW", "weight_decay must be >= 0", literal=True),
    ),
    (
        lambda: optim.AdamW(linear(), amsgrad="yes"),
        TypeError,
        rx("AdamW", "amsgrad must be", literal=True),
    ),
    (
        lambda: optim.SGD(object(), lr=0.1),
        TypeError,
        rx("SGD", "model must have parameters() and gradients() methods", literal=True),
    ),
    (
        lambda: optim.Adam(ReLU()),
        ValueError,
        rx("Adam", "the model has no parameters", literal=True),
    ),
]


@pytest.mark.parametrize(("make", "exc", "pattern"), OPTIMIZER_ERRORS)
def test_optimizer_argument_errors(make, exc, pattern, bk):
    with pytest.raises(exc, match=pattern):
        make()


def test_lr_attribute_is_checked(bk):
    opt = optim.SGD(linear(), lr=0.1)
    with pytest.raises(ValueError, match=rx("SGD", "lr must be >= 0, got -1", literal=True)):
        opt.lr = -1
    assert opt.lr == 0.1
    opt.lr = 1
    assert opt.lr == 1.0 and type(opt.lr) is float
    opt.lr = np.float64(0.5)  # a NumPy scalar would promote float32 parameters to float64
    assert type(opt.lr) is float


@pytest.mark.parametrize("problem", ["missing", "shape", "dtype", "library"])
def test_step_refuses_bad_gradients_and_changes_nothing(problem, bk, rng):
    values = {"layers.0.W": rng.standard_normal((3, 2)), "layers.1.b": rng.standard_normal(3)}
    model = TwoParams(bk, values)
    model.zero_grad()
    opt = optim.Adam(model, lr=0.1)
    before = {n: snapshot(p) for n, p in model.params.items()}
    name, other = "layers.1.b", bk.xp.float32 if bk.dtype_name == "float64" else bk.xp.float64
    bad = {
        "missing": None,
        "shape": bk.xp.zeros((4,), dtype=bk.dtype, device=bk.device),
        "dtype": bk.xp.zeros((3,), dtype=other, device=bk.device),
        "library": floats((3,), bk.dtype_name)(other_library(bk)),  # right shape and dtype
    }[problem]
    model.grads[name] = bad
    expected = {
        "missing": (
            ValueError,
            "parameter 'layers.1.b' has no gradient; call backward before step",
        ),
        "shape": (ValueError, "the gradient of 'layers.1.b' has shape (4,) but the parameter"),
        "dtype": (TypeError, "the gradient of 'layers.1.b' has dtype"),
        "library": (TypeError, "the gradient of 'layers.1.b' is a "),
    }[problem]
    with pytest.raises(expected[0], match=rx("Adam", expected[1], literal=True)):
        opt.step()
    for n, p in model.params.items():
        np.testing.assert_array_equal(snapshot(p), before[n], err_msg=f"{n} changed")
    assert opt.state == {} and opt.step_count == 0


def test_zero_grad_needs_the_method(bk):
    class NoZeroGrad:
        def parameters(self):
            return {"w": on(bk, np.ones(2))}

        def gradients(self):
            return {"w": on(bk, np.ones(2))}

        def set_parameter(self, name, value):
            pass

    with pytest.raises(TypeError, match=rx("SGD", "zero_grad needs the model", literal=True)):
        optim.SGD(NoZeroGrad(), lr=0.1).zero_grad()


def saved_sgd_state(bk, rng):
    model = Linear(2, 3)
    opt = optim.SGD(model, lr=0.1, momentum=0.9)
    set_gradients(model, draw_gradients(model, rng, bk.dtype_name, steps=1)[0], bk)
    opt.step()
    return model, opt.state_dict()


LOAD_ERRORS = [
    (lambda s: optim.Adam(Linear(2, 3)).load_state_dict(s), ValueError,
     rx("Adam", "load_state_dict got the state of a SGD optimizer", literal=True)),
    (lambda s: optim.SGD(Linear(2, 3), 0.1).load_state_dict({**s, "state": {"V": {}}}), ValueError,
     rx("SGD", "state_dict['state']['V'] names no parameter of the model", literal=True)),
    (lambda s: optim.SGD(Linear(3, 3), 0.1).load_state_dict(s), ValueError,
     rx("SGD", "state_dict['state']['W']['momentum_buffer'] must have the parameter's shape",
        literal=True)),
    (lambda s: optim.SGD(Linear(2, 3), 0.1).load_state_dict({"lr": 0.1}), ValueError,
     rx("SGD", "load_state_dict is missing the keys", literal=True)),
    (lambda s: optim.SGD(Linear(2, 3), 0.1).load_state_dict({**s, "momentum": -1}), ValueError,
     rx("SGD", "momentum must be >= 0", literal=True)),
    (lambda s: optim.SGD(Linear(2, 3), 0.1).load_state_dict([1]), TypeError,
     rx("SGD", "load_state_dict expects a dict", literal=True)),
    (lambda s: optim.SGD(Linear(2, 3), 0.1).load_state_dict(
        {**s, "state": {"W": {"momentum_buffer": [[1.0, 2.0]] * 3}}}), TypeError,
     rx("SGD", "state_dict['state']['W']['momentum_buffer'] must be an array", literal=True)),
    (lambda s: optim.SGD(Linear(2, 3), 0.1).load_state_dict(
        {**s, "state": {"W": {"velocity": s["state"]["W"]["momentum_buffer"]}}}), ValueError,
     rx("SGD", "state_dict['state']['W'] has an unknown buffer 'velocity'", literal=True)),
]  # fmt: skip


@pytest.mark.parametrize(("load", "exc", "pattern"), LOAD_ERRORS)
def test_load_state_dict_errors(load, exc, pattern, bk, rng):
    _, state = saved_sgd_state(bk, rng)
    with pytest.raises(exc, match=pattern):
        load(state)


def sgd():
    return optim.SGD(linear(), lr=0.1)


SCHEDULER_ERRORS = [
    (lambda: optim.StepLR(sgd(), step_size=0), ValueError,
     rx("StepLR", "step_size must be a positive integer, got 0", literal=True)),
    (lambda: optim.StepLR(sgd(), step_size=1.5), TypeError,
     rx("StepLR", "step_size must be an integer", literal=True)),
    (lambda: optim.StepLR(sgd(), 2, gamma=0), ValueError,
     rx("StepLR", "gamma must be > 0", literal=True)),
    (lambda: optim.ExponentialLR(sgd(), gamma=-0.5), ValueError,
     rx("ExponentialLR", "gamma must be > 0, got -0.5", literal=True)),
    (lambda: optim.ExponentialLR(sgd(), gamma="0.5"), TypeError,
     rx("ExponentialLR", "gamma must be a real number", literal=True)),
    (lambda: optim.CosineAnnealingLR(sgd(), T_max=0), ValueError,
     rx("CosineAnnealingLR", "T_max must be a positive integer", literal=True)),
    (lambda: optim.CosineAnnealingLR(sgd(), T_max=5, eta_min=-0.1), ValueError,
     rx("CosineAnnealingLR", "eta_min must be >= 0", literal=True)),
    (lambda: optim.CosineAnnealingLR(sgd(), T_max=5, warmup_epochs=5), ValueError,
     rx("CosineAnnealingLR", "warmup_epochs must be smaller than T_max", literal=True)),
    (lambda: optim.CosineAnnealingLR(sgd(), T_max=5, warmup_epochs=-1), ValueError,
     rx("CosineAnnealingLR", "warmup_epochs must be an integer >= 0", literal=True)),
    (lambda: optim.CosineAnnealingLR(sgd(), 5, warmup_epochs=2, warmup_start_factor=0),
     ValueError, rx("CosineAnnealingLR", "warmup_start_factor must be > 0", literal=True)),
    (lambda: optim.CosineAnnealingLR(sgd(), 5, warmup_epochs=2, warmup_start_factor=1.5),
     ValueError, rx("CosineAnnealingLR", "warmup_start_factor must be in (0, 1]", literal=True)),
    (lambda: optim.StepLR(object(), step_size=2), TypeError,
     rx("StepLR", "optimizer must have a numeric lr attribute", literal=True)),
    (lambda: optim.StepLR(sgd(), 2).load_state_dict(optim.ExponentialLR(sgd(), 0.5).state_dict()),
     ValueError, rx("StepLR", "load_state_dict got the state of a ExponentialLR", literal=True)),
    (lambda: optim.StepLR(sgd(), 2).load_state_dict({"base_lr": 0.1}), ValueError,
     rx("StepLR", "load_state_dict is missing the keys", literal=True)),
    (lambda: optim.StepLR(sgd(), 2).load_state_dict(
        {**optim.StepLR(sgd(), 2).state_dict(), "last_epoch": -1}), ValueError,
     rx("StepLR", "last_epoch must be an integer >= 0", literal=True)),
]  # fmt: skip


@pytest.mark.parametrize(("make", "exc", "pattern"), SCHEDULER_ERRORS)
def test_scheduler_argument_errors(make, exc, pattern, bk):
    with pytest.raises(exc, match=pattern):
        make()


INIT_ERRORS = [
    (lambda: init.xavier_uniform(5), ValueError,
     rx("xavier_uniform", "fan_in and fan_out need a shape with at least 2 dimensions",
        literal=True)),
    (lambda: init.xavier_normal(), ValueError,
     rx("xavier_normal", "fan_in and fan_out need", literal=True)),
    (lambda: init.kaiming_uniform(5), ValueError,
     rx("kaiming_uniform", "fan_in and fan_out", literal=True)),
    (lambda: init.he_normal(5), ValueError,
     rx("kaiming_normal", "fan_in and fan_out", literal=True)),
    (lambda: init.kaiming_normal(3, 4, mode="fan_avg"), ValueError,
     rx("kaiming_normal", "mode must be 'fan_in' or 'fan_out', got 'fan_avg'", literal=True)),
    (lambda: init.kaiming_uniform(3, 4, nonlinearity="swish"), ValueError,
     rx("kaiming_uniform", "unsupported nonlinearity 'swish'", literal=True)),
    (lambda: init.kaiming_uniform(3, 4, a="0.1"), TypeError,
     rx("kaiming_uniform", "a (the", literal=True)),
    (lambda: init.xavier_uniform(3, 4, gain=-1.0), ValueError,
     rx("xavier_uniform", "gain must be >= 0", literal=True)),
    (lambda: init.zeros(3, -1), ValueError,
     rx("zeros", "shape[1] must be an integer >= 0", literal=True)),
    (lambda: init.normal(2.5), TypeError,
     rx("normal", "shape[0] must be an integer", literal=True)),
    (lambda: init.normal(3, std=-1.0), ValueError, rx("normal", "std must be >= 0", literal=True)),
    (lambda: init.normal(3, mean=float("inf")), ValueError,
     rx("normal", "mean must be a finite real number", literal=True)),
    (lambda: init.uniform(3, a=1.0, b=0.0), ValueError,
     rx("uniform", "a must be <= b", literal=True)),
    (lambda: init.constant(3, value="x"), TypeError,
     rx("constant", "value must be a real", literal=True)),
    (lambda: init.calculate_gain("swish"), ValueError,
     rx("calculate_gain", "unsupported nonlinearity 'swish'", literal=True)),
    (lambda: init.calculate_gain("leaky_relu", "0.1"), ValueError,
     rx("calculate_gain", "the leaky_relu negative slope must be a number", literal=True)),
]  # fmt: skip


@pytest.mark.parametrize(("make", "exc", "pattern"), INIT_ERRORS)
def test_initialiser_errors(make, exc, pattern, bk):
    with pytest.raises(exc, match=pattern):
        make()


def test_torch_refuses_what_we_refuse():
    """The refusals mirror torch.nn.init's (fans of a 1-d tensor, unknown names)."""
    with pytest.raises(ValueError):
        torch.nn.init.xavier_uniform_(torch.empty(5))
    with pytest.raises(ValueError):
        torch.nn.init.kaiming_normal_(torch.empty(3, 4), mode="fan_avg")
    with pytest.raises(ValueError):
        torch.nn.init.calculate_gain("swish")
