"""Trainer(compile=True): the training step as one compiled function (torch.compile on the
torch backend, jax.jit on JAX) gives the eager step's results, in one graph; the other
backends refuse it. One tiny network, so that compiling stays a few seconds of CI time.

On torch the tests compile with ``aot_eager`` (PORTACONV_TORCH_COMPILER): the graph, its
breaks and its functionalised updates are dynamo's and AOTAutograd's, as with inductor, but
no C++ kernels are built (inductor takes minutes with a cold cache on a 2-core machine; it
is what benchmarks/compiled_step.py runs). With eager kernels the compiled Dropout draws the
very masks the eager step draws, so the whole step compares."""

from __future__ import annotations

import contextlib
import logging
import re
import warnings

import numpy as np
import pytest

import portaconv
from portaconv.backend import COMPILING_BACKENDS, to_numpy
from portaconv.backend._compile import quiet_compiler
from portaconv.data import DataLoader
from portaconv.layers import BatchNorm2d, Conv2d, Dropout, Flatten, Linear, MaxPool2d, ReLU
from portaconv.models import Sequential, build_model
from portaconv.optim import SGD, Adam, CosineAnnealingLR
from portaconv.train import Trainer

from .helpers import assert_same_weights


def _compiles(bk) -> bool:
    return bk.name in COMPILING_BACKENDS


def _tiny_trainer(compile: bool, log=None) -> Trainer:
    portaconv.manual_seed(0)
    model = Sequential(
        BatchNorm2d(1),  # first: a bias just before a BatchNorm has no gradient to follow
        Conv2d(1, 4, 3, padding=1),
        ReLU(),
        MaxPool2d(2),
        Flatten(),
        Dropout(0.25),
        Linear(4 * 4 * 4, 3),
    )
    optimizer = Adam(model, 0.02)
    scheduler = CosineAnnealingLR(optimizer, 3)  # a new learning rate every epoch
    return Trainer(
        model,
        optimizer,
        scheduler=scheduler,
        progress=False,
        log=log or (lambda line: None),
        compile=compile,
    )


def test_compiled_steps_give_the_eager_steps_results_in_one_graph(bk, rng, caplog, monkeypatch):
    monkeypatch.setenv("PORTACONV_TORCH_COMPILER", "aot_eager")
    # torch's compile-time trace log at DEBUG, captured by pytest, takes minutes to format
    caplog.set_level(logging.INFO, logger="torch.__trace")
    # collected on the compiling backends in float32 only (conftest.ONLY_WHERE): one dtype
    # is enough to compare, and each compiles anew
    X = rng.standard_normal((32, 1, 8, 8)).astype(np.float32)
    y = rng.integers(0, 3, 32)

    def loader():
        return DataLoader(X, y, batch_size=8, shuffle=True, seed=1)

    eager = _tiny_trainer(compile=False)
    eager.fit(loader(), epochs=3)
    lines = []
    compiled = _tiny_trainer(compile=True, log=lines.append)
    if bk.name == "torch":  # dynamo warns once a process: again for this test
        import torch._dynamo.utils

        torch._dynamo.utils.warn_once_cache.clear()
    with _compile_counters(bk) as counters, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        compiled.fit(loader(), epochs=3)
    if bk.name == "torch":
        assert dict(counters["graph_break"]) == {}
        # 11 compiled steps over 3 learning rates: no graph per rate. The eager first step
        # leaves its gradients in the native bodies' strides (zero_grad reads them), the
        # compiled steps in the compiler's: at most one graph more, once.
        assert counters["stats"]["unique_graphs"] <= 2
    else:  # one trace
        assert compiled.compiled_step._compiled._cache_size() == 1

    for key, want in eager.model.state_dict().items():
        got = to_numpy(compiled.model.state_dict()[key])
        np.testing.assert_allclose(got, to_numpy(want), rtol=1e-4, atol=1e-5, err_msg=key)
    want_state, got_state = eager.optimizer.state_dict(), compiled.optimizer.state_dict()
    assert got_state["step"] == want_state["step"] == 12 and got_state["lr"] == want_state["lr"]
    for name, buffers in want_state["state"].items():
        assert got_state["state"][name]["step"] == buffers["step"] == 12
        for key in ("exp_avg", "exp_avg_sq"):
            np.testing.assert_allclose(
                to_numpy(got_state["state"][name][key]),
                to_numpy(buffers[key]),
                rtol=1e-4,
                atol=1e-6,
                err_msg=f"{name} {key}",
            )
    for want, got in zip(eager.history, compiled.history, strict=True):
        assert got["train_loss"] == pytest.approx(want["train_loss"], rel=1e-5)
        assert got["train_accuracy"] == want["train_accuracy"]
        assert got["lr"] == want["lr"]  # the host's learning rate, not a rounded copy
    _check_compile_reports(bk, lines, compiled, caught)


def _check_compile_reports(bk, lines, trainer, caught):
    """The log says before the first step that the step compiles, then how long it took;
    those steps' seconds and images are left out of the epochs' time and images/s; torch's
    compiler warned nothing the user sees."""
    assert lines[0] == (
        f"compiling the training step for {bk.name} "
        f"({'torch.compile, aot_eager' if bk.name == 'torch' else 'jax.jit'}), "
        "batches of shape (8, 1, 8, 8) ..."
    )
    said = [line for line in lines if line.startswith("compil")]  # not the epochs' lines
    assert lines[0] == said[0]
    done = [re.fullmatch(r"compiled the training step( again)? in (\d+\.\d) s", line)
            for line in said[1:]]  # fmt: skip
    assert done and all(done), said
    assert sum(float(m[2]) for m in done) == pytest.approx(
        trainer.compile_seconds, abs=0.05 * len(done)
    )
    history = trainer.history
    assert sum(r["compile_seconds"] for r in history) == pytest.approx(trainer.compile_seconds)
    assert history[0]["seconds"] < history[0]["compile_seconds"]
    # 4 batches of 8 an epoch; the eager first step and each step that compiled not timed
    timed = 3 * 32 - 8 * (1 + len(done))
    assert sum(r["images_per_second"] * r["seconds"] for r in history) == pytest.approx(timed)
    assert trainer.train_images == timed
    compiler = [w for w in caught if re.search(r"torch[/\\]_(dynamo|inductor)", w.filename)]
    assert not compiler, [str(w.message)[:200] for w in compiler]


def test_quiet_compiler_hides_the_compilers_warnings_only():
    """Around a compiling call, a warning raised in torch's compiler modules is not shown;
    one raised anywhere else (the user's own code) still is."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with quiet_compiler():
            for module in ("torch._dynamo.variables.functions", "torch._inductor.compile_fx",
                           "mine", "torch.nn.modules.module", "torch._dynamo_like"):  # fmt: skip
                warnings.warn_explicit(f"from {module}", UserWarning, "f.py", 1, module=module)
        warnings.warn_explicit("after", UserWarning, "f.py", 1, module="torch._dynamo.utils")
    shown = [str(w.message) for w in caught]
    assert shown == [
        "from mine",
        "from torch.nn.modules.module",
        "from torch._dynamo_like",
        "after",
    ]


@contextlib.contextmanager
def _compile_counters(bk):
    """torch's dynamo counters, cleared first (graph breaks, graphs compiled); None on JAX."""
    if bk.name != "torch":
        yield None
        return
    from torch._dynamo.utils import counters

    counters.clear()
    yield counters


def test_compile_is_refused_where_the_backend_does_not_compile(bk):
    model = build_model("two-layer", (2,), 3)
    if _compiles(bk):
        trainer = Trainer(model, SGD(model, 0.1), compile=True)
        assert trainer.compiled_step is not None
    else:
        with pytest.raises(ValueError, match=r"compile=True .* torch and jax backends only"):
            Trainer(model, SGD(model, 0.1), compile=True)
    assert Trainer(model, SGD(model, 0.1)).compiled_step is None
    with pytest.raises(TypeError, match="Trainer: compile must be True or False, got 1"):
        Trainer(model, SGD(model, 0.1), compile=1)
    with pytest.raises(ValueError, match="Trainer: compile=True .* communicator"):
        Trainer(model, SGD(model, 0.1), compile=True, comm=object())


def test_a_resumed_compiled_run_gives_the_uninterrupted_weights(bk, rng, tmp_path, monkeypatch):
    """A compiled run resumed from its checkpoint (optimizer counters back as Python numbers,
    Dropout's stream state saved) ends with the uninterrupted run's weights, bit for bit."""
    # collected on the compiling backends in float32 only (conftest.ONLY_WHERE)
    monkeypatch.setenv("PORTACONV_TORCH_COMPILER", "aot_eager")
    X = rng.standard_normal((16, 1, 8, 8)).astype(np.float32)
    y = rng.integers(0, 3, 16)

    def fit(out_dir, epochs, resume=False):
        trainer = _tiny_trainer(compile=True)
        trainer.out_dir = out_dir
        trainer.fit(DataLoader(X, y, batch_size=8, shuffle=True, seed=1), epochs=epochs,
                    resume=resume)  # fmt: skip
        return trainer

    whole = fit(tmp_path / "whole", 2)
    fit(tmp_path / "cut", 1)
    resumed = fit(tmp_path / "cut", 2, resume=True)
    assert_same_weights(whole, resumed)
