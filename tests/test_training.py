"""Sequential and the model protocol, the Trainer, checkpoints and resume, the command line.

Oracles: PyTorch autograd for Sequential; for training, an uninterrupted run is the oracle of
a resumed one, and a checkpoint written before a failed write is the oracle of what must
survive it.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch.nn.functional as F

import portaconv
from portaconv.backend import to_numpy
from portaconv.cli import main
from portaconv.data import DataLoader, sources
from portaconv.layers import (
    BatchNorm2d,
    Conv2d,
    CrossEntropyLoss,
    Dropout,
    Flatten,
    Linear,
    MaxPool2d,
    ReLU,
)
from portaconv.models import CNN, MLP, CNN_SimpleScanningMLP, Sequential, build_model
from portaconv.optim import SGD, Adam, CosineAnnealingLR
from portaconv.train import Trainer, TrainingDivergedError, load_checkpoint, save_checkpoint
from portaconv.train import checkpoint as checkpoint_module

from .helpers import assert_close, on, rounded, torch_reference

# ------------------------------------------------------------------ Sequential and the protocol


def _small_convnet() -> Sequential:
    return Sequential(
        Conv2d(2, 4, 3, padding=1),
        BatchNorm2d(4),
        ReLU(),
        MaxPool2d(2),
        Flatten(),
        Linear(4 * 3 * 3, 5),
    )


def test_sequential_forward_backward_match_torch(bk, rng):
    net = _small_convnet()
    A = rounded(rng.standard_normal((6, 2, 6, 6)), bk.dtype_name)
    params = {k: rounded(to_numpy(v), bk.dtype_name) for k, v in net.parameters().items()}
    net.load_state_dict({**net.state_dict(), **params})
    grad_out = rng.standard_normal((6, 5))

    def reference(A, W0, b0, BW, Bb, W5, b5):
        Z = F.conv2d(A, W0, b0, padding=1)
        Z = F.batch_norm(Z, None, None, BW, Bb, training=True, eps=1e-5)
        Z = F.max_pool2d(F.relu(Z), 2)
        return F.linear(Z.flatten(1), W5, b5)

    names = {"W0": "0.W", "b0": "0.b", "BW": "1.BW", "Bb": "1.Bb", "W5": "5.W", "b5": "5.b"}
    inputs = {"A": A, **{arg: params[key] for arg, key in names.items()}}
    expected, grads = torch_reference(reference, inputs, grad_out)

    Z = net.forward(on(bk, A))
    assert_close(Z, expected, bk, "Z")
    dLdA = net.backward(on(bk, grad_out))
    assert_close(dLdA, grads["A"], bk, "dLdA")
    got = net.gradients()
    for arg, key in names.items():
        assert_close(got[key], grads[arg], bk, key)


def test_protocol_names_state_dict_and_modes(bk, rng):
    net = Sequential(Linear(3, 8), ReLU(), Dropout(0.5), Linear(8, 2))
    conv = _small_convnet()
    assert sorted(net.parameters()) == ["0.W", "0.b", "3.W", "3.b"]
    assert sorted(conv.gradients()) == sorted(conv.parameters())
    assert {"1.running_M", "1.running_V"} <= set(conv.state_dict())

    # state_dict holds copies: changing them leaves the model alone.
    state = conv.state_dict()
    before = to_numpy(conv.parameters()["0.W"]).copy()
    state["0.W"] += 1
    np.testing.assert_array_equal(to_numpy(conv.parameters()["0.W"]), before)

    # Loading into a fresh model reproduces its outputs (eval mode: running statistics).
    A = on(bk, rng.standard_normal((4, 2, 6, 6)))
    conv.forward(A)  # updates the running statistics
    twin = _small_convnet()
    twin.load_state_dict({k: to_numpy(v) for k, v in conv.state_dict().items()})
    conv.eval()
    twin.eval()
    np.testing.assert_array_equal(to_numpy(twin.forward(A)), to_numpy(conv.forward(A)))

    # Modes reach every layer.
    net.eval()
    assert not net.training and not any(layer.training for layer in net.layers)
    net.train()
    assert all(layer.training for layer in net.layers)


def test_load_state_dict_refuses_mismatches(bk):
    net = _small_convnet()
    state = {k: to_numpy(v) for k, v in net.state_dict().items()}
    with pytest.raises(ValueError, match=r"missing \['0.b'\]"):
        net.load_state_dict({k: v for k, v in state.items() if k != "0.b"})
    with pytest.raises(ValueError, match=r"unexpected \['9.W'\]"):
        net.load_state_dict({**state, "9.W": state["0.W"]})
    with pytest.raises(ValueError, match=r"Sequential: 0: Conv2d: .*shape \(4, 2, 3, 3\)"):
        net.load_state_dict({**state, "0.W": np.zeros((4, 2, 5, 5))})
    with pytest.raises(TypeError, match="mapping"):
        net.load_state_dict([1, 2])


def test_sequential_rejects_non_layers():
    with pytest.raises(TypeError, match="Sequential: layer 1 must have forward and backward"):
        Sequential(Linear(2, 2), "relu")


def test_spec_models_follow_the_protocol(bk):
    models = [
        MLP([6, 5, 3]),
        CNN_SimpleScanningMLP(),
        CNN(
            20,
            3,
            [4, 2],
            [3, 3],
            [1, 2],
            5,
            [ReLU(), ReLU()],
            None,
            None,
            None,
            CrossEntropyLoss(),
            0.1,
        ),
    ]
    for model in models:
        params, grads = model.parameters(), model.gradients()
        assert params and sorted(params) == sorted(grads)
        twin_state = {k: to_numpy(v) + 1 for k, v in model.state_dict().items()}
        model.load_state_dict(twin_state)
        for k, v in model.state_dict().items():
            np.testing.assert_array_equal(to_numpy(v), twin_state[k].astype(to_numpy(v).dtype))


# -------------------------------------------------------------------------------- training


def _blobs(rng, n=300, classes=3):
    centres = np.array([[0.0, 3.0], [3.0, -2.0], [-3.0, -2.0]])[:classes]
    y = rng.integers(0, classes, n)
    X = centres[y] + rng.standard_normal((n, 2))
    return X.astype(np.float32), y


def test_training_solves_a_synthetic_problem(bk, rng):
    portaconv.manual_seed(0)
    X, y = _blobs(rng)
    model = build_model("two-layer", (2,), 3, hidden=16)
    trainer = Trainer(model, Adam(model, 0.05), progress=False, log=lambda line: None)
    history = trainer.fit(DataLoader(X[:240], y[:240], 32, shuffle=True), epochs=15)
    assert len(history) == 15 and history[-1]["train_loss"] < history[0]["train_loss"]
    result = trainer.evaluate(DataLoader(X[240:], y[240:], 64), num_classes=3)
    assert result["accuracy"] >= 0.95
    assert result["confusion"].sum() == 60 and result["confusion"].shape == (3, 3)


class _Interrupting:
    """A loader that raises KeyboardInterrupt in epoch ``stop_epoch`` after two batches."""

    def __init__(self, loader, stop_epoch):
        self.loader, self.stop_epoch, self.epoch = loader, stop_epoch, 0

    def set_epoch(self, epoch):
        self.epoch = epoch
        self.loader.set_epoch(epoch)

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        for i, batch in enumerate(self.loader):
            if self.epoch == self.stop_epoch and i == 2:
                raise KeyboardInterrupt
            yield batch


def _resume_setup(out_dir, seed):
    portaconv.manual_seed(seed)
    model = build_model("cnn", (1, 8, 8), 4, widths=(4, 8), hidden=16, dropout=0.3)
    optimizer = SGD(model, 0.05, momentum=0.9, weight_decay=1e-4)
    scheduler = CosineAnnealingLR(optimizer, 4, warmup_epochs=1)
    return Trainer(
        model,
        optimizer,
        scheduler=scheduler,
        out_dir=out_dir,
        progress=False,
        log=lambda line: None,
    )


def test_resume_gives_exactly_the_uninterrupted_weights(bk, rng, tmp_path):
    X = rng.random((96, 1, 8, 8)).astype(np.float32)
    y = rng.integers(0, 4, 96)

    def loader():
        return DataLoader(X, y, batch_size=16, shuffle=True, seed=3)

    whole = _resume_setup(tmp_path / "whole", seed=0)
    whole.fit(loader(), loader(), epochs=4)

    cut = _resume_setup(tmp_path / "cut", seed=0)
    with pytest.raises(KeyboardInterrupt):
        cut.fit(_Interrupting(loader(), stop_epoch=2), loader(), epochs=4)
    assert load_checkpoint(tmp_path / "cut" / "checkpoint.npz")["epoch"] == 2

    # A new process would start from other weights and another random state.
    resumed = _resume_setup(tmp_path / "cut", seed=123)
    resumed.fit(loader(), loader(), epochs=4, resume=True)

    exact = "cuda" not in str(bk.device) and bk.name != "cupy"
    for key, value in whole.model.state_dict().items():
        got, want = to_numpy(resumed.model.state_dict()[key]), to_numpy(value)
        if exact:
            np.testing.assert_array_equal(got, want, err_msg=key)
        else:  # GPU reductions may reorder sums
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=key)
    assert [r["train_loss"] for r in resumed.history] == pytest.approx(
        [r["train_loss"] for r in whole.history], rel=0 if exact else 1e-5
    )
    lines = (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3, 4]


def test_trainer_refuses_bad_arguments(bk):
    model = build_model("two-layer", (2,), 3)
    with pytest.raises(TypeError, match="Trainer: model must follow"):
        Trainer(object(), SGD(model, 0.1))
    with pytest.raises(TypeError, match="Trainer: optimizer must be"):
        Trainer(model, object())
    with pytest.raises(ValueError, match="Trainer: fit needs an optimizer"):
        Trainer(model).fit([], epochs=1)
    with pytest.raises(ValueError, match="Trainer: epochs must be a non-negative integer"):
        Trainer(model, SGD(model, 0.1)).fit([], epochs=-1)
    with pytest.raises(ValueError, match="Trainer: resume=True needs out_dir"):
        Trainer(model, SGD(model, 0.1)).fit([], epochs=1, resume=True)
    with pytest.raises(ValueError, match="Trainer: patience must be a positive integer, got 0"):
        Trainer(model, SGD(model, 0.1), patience=0)
    with pytest.raises(ValueError, match="Trainer: patience watches the validation accuracy"):
        Trainer(model, SGD(model, 0.1), patience=2).fit([], epochs=1)


def _stop_epoch(val_accuracies, patience):
    """Oracle of early stopping: the number of epochs a run with ``patience`` trains, given
    the validation accuracies of the run without it."""
    best, best_epoch = -1.0, 0
    for epoch, accuracy in enumerate(val_accuracies, start=1):
        if epoch - 1 - best_epoch >= patience and best_epoch > 0:
            return epoch - 1
        if accuracy > best:
            best, best_epoch = accuracy, epoch
    return len(val_accuracies)


@pytest.mark.parametrize("patience", [1, 2, 3])
def test_patience_stops_after_that_many_epochs_without_progress(bk, rng, tmp_path, patience):
    X, y = _blobs(rng, n=120)
    X[:, 0] += rng.normal(0, 1.5, len(X)).astype(np.float32)  # overlap: accuracy plateaus

    def fit(patience, out, resume=False):
        portaconv.manual_seed(0)
        model = build_model("two-layer", (2,), 3, hidden=8)
        trainer = Trainer(
            model, SGD(model, 0.05), out_dir=out, progress=False, log=lambda _: 0,
            patience=patience,
        )  # fmt: skip
        train, val = DataLoader(X[:90], y[:90], 16, shuffle=True), DataLoader(X[90:], y[90:], 64)
        trainer.fit(train, val, epochs=25, resume=resume)
        return trainer

    def numbers(history):  # the records without their timings
        return [{k: v for k, v in r.items() if k not in ("seconds", "images_per_second")}
                for r in history]  # fmt: skip

    whole = fit(None, tmp_path / "whole")
    accuracies = [r["val_accuracy"] for r in whole.history]
    expected = _stop_epoch(accuracies, patience)
    assert expected < 25, accuracies  # the case stops early, or the test could not fail
    early = fit(patience, tmp_path / "early")
    assert early.stopped_early and not whole.stopped_early
    assert early.epoch == len(early.history) == expected
    assert numbers(early.history) == numbers(whole.history[:expected])  # the run, cut short
    best = max(accuracies[:expected])
    assert early.best_epoch == accuracies.index(best) + 1 and early.best_val_accuracy == best
    assert early.epoch - early.best_epoch == patience
    assert load_checkpoint(tmp_path / "early" / "best.npz")["epoch"] == early.best_epoch

    # A resumed run that had stopped does not train on; with more patience it does, as far
    # as the run without early stopping says it would.
    again = fit(patience, tmp_path / "early", resume=True)
    assert again.stopped_early and again.epoch == expected
    longer = _stop_epoch(accuracies, patience + 3)
    more = fit(patience + 3, tmp_path / "early", resume=True)
    assert more.epoch == longer > expected
    assert numbers(more.history) == numbers(whole.history[:longer])


class _Poisoned:
    """A loader whose batches turn to NaN from epoch ``epoch`` (0-based) on."""

    def __init__(self, loader, epoch):
        self.loader, self.poison_from, self.epoch = loader, epoch, 0

    def set_epoch(self, epoch):
        self.epoch = epoch
        self.loader.set_epoch(epoch)

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        for X, y in self.loader:
            yield (X * float("nan") if self.epoch >= self.poison_from else X), y


def strict_json(text):
    """Parse ``text`` as RFC 8259 JSON: NaN, Infinity and -Infinity are refused."""

    def refuse(constant):
        raise AssertionError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def test_divergence_stops_the_run_and_keeps_the_last_finite_checkpoint(bk, rng, tmp_path):
    X, y = _blobs(rng, n=64)
    portaconv.manual_seed(0)
    model = build_model("two-layer", (2,), 3, hidden=8)
    trainer = Trainer(model, SGD(model, 0.1), out_dir=tmp_path, progress=False, log=lambda _: 0)
    loader = _Poisoned(DataLoader(X, y, 16, shuffle=True), epoch=1)
    with pytest.raises(TrainingDivergedError) as info:
        trainer.fit(loader, DataLoader(X, y, 16), epochs=4)
    message = str(info.value)
    assert message.startswith("training diverged in epoch 2: train loss nan")
    assert f"{tmp_path / 'checkpoint.npz'} keeps epoch 1, the last finite one" in message
    state = load_checkpoint(tmp_path / "checkpoint.npz")
    assert state["epoch"] == 1
    assert all(np.isfinite(v).all() for v in state["model"].values())
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [strict_json(line)["epoch"] for line in lines] == [1]


def test_divergence_in_the_first_epoch_saves_nothing(bk, rng, tmp_path):
    X, y = _blobs(rng, n=32)
    model = build_model("two-layer", (2,), 3, hidden=8)
    trainer = Trainer(model, SGD(model, 0.1), out_dir=tmp_path, progress=False, log=lambda _: 0)
    with pytest.raises(TrainingDivergedError, match="epoch 1: .*; nothing was saved"):
        trainer.fit(_Poisoned(DataLoader(X, y, 16), epoch=0), epochs=2)
    assert not (tmp_path / "checkpoint.npz").exists()


def test_json_files_are_strict():
    from portaconv.train._json import dumps

    value = {"a": float("nan"), "b": [np.float32("inf"), -math.inf, 1.5], "c": (np.int64(2),)}
    assert dumps(value) == '{"a": null, "b": [null, null, 1.5], "c": [2]}'
    assert strict_json(dumps(value)) == {"a": None, "b": [None, None, 1.5], "c": [2]}


# ----------------------------------------------------------------------------- checkpoints


def _state(value):
    return {
        "epoch": value,
        "model": {"0.W": np.full((3, 2), value, np.float32), "0.b": np.arange(3.0)},
        "rng": np.random.default_rng(value).bit_generator.state,
        "history": [{"loss": 0.5, "acc": None}],
    }


def test_checkpoint_round_trip(tmp_path):
    path = save_checkpoint(tmp_path / "c.npz", _state(7))
    got = load_checkpoint(path)
    assert got["epoch"] == 7 and got["history"] == [{"loss": 0.5, "acc": None}]
    assert got["rng"] == np.random.default_rng(7).bit_generator.state
    np.testing.assert_array_equal(got["model"]["0.W"], np.full((3, 2), 7, np.float32))
    assert got["model"]["0.W"].dtype == np.float32


def test_failed_checkpoint_write_keeps_the_previous_one(tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / "c.npz", _state(1))

    def half_then_fail(f, **arrays):
        f.write(b"PK\x03\x04 partial")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint_module.np, "savez", half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, _state(2))
    assert load_checkpoint(path)["epoch"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.npz"]


_KILL_HALFWAY = textwrap.dedent(
    """
    import os, sys
    import numpy as np
    from portaconv.train import checkpoint, save_checkpoint

    def killed_halfway(f, **arrays):
        f.write(b"PK\\x03\\x04" + bytes(1000))
        f.flush()
        os._exit(9)  # the process dies mid-write: no cleanup, no exception handlers

    checkpoint.np.savez = killed_halfway
    save_checkpoint(sys.argv[1], {"epoch": 2, "w": np.ones(3)})
    """
)


def test_process_killed_while_writing_leaves_previous_checkpoint(tmp_path):
    path = save_checkpoint(tmp_path / "c.npz", _state(1))
    done = subprocess.run([sys.executable, "-c", _KILL_HALFWAY, str(path)], timeout=120)
    assert done.returncode == 9
    assert load_checkpoint(path)["epoch"] == 1


_WRITE_FOREVER = textwrap.dedent(
    """
    import sys
    import numpy as np
    from portaconv.train import save_checkpoint

    big = np.random.default_rng(0).random(2_000_000)
    epoch = 0
    while True:
        epoch += 1
        save_checkpoint(sys.argv[1], {"epoch": epoch, "w": big + epoch})
        print(epoch, flush=True)
    """
)


def test_sigkill_during_checkpoint_loop_leaves_a_whole_checkpoint(tmp_path):
    path = tmp_path / "c.npz"
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRITE_FOREVER, str(path)], stdout=subprocess.PIPE, text=True
    )
    try:
        for _ in range(2):  # let it finish two writes, then kill it during the following ones
            assert proc.stdout.readline()
        time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    state = load_checkpoint(path)
    np.testing.assert_array_equal(
        state["w"], np.random.default_rng(0).random(2_000_000) + state["epoch"]
    )


_KILLED_BEFORE_BEST = textwrap.dedent(
    """
    import os, sys
    import numpy as np
    import portaconv
    from portaconv.data import DataLoader
    from portaconv.models import build_model
    from portaconv.optim import SGD
    from portaconv.train import Trainer, checkpoint

    savez, best_writes = checkpoint.np.savez, []

    def killed_writing_the_second_best(f, **arrays):
        if ".best.npz." in f.name:
            best_writes.append(f.name)
            if len(best_writes) == 2:  # the first improvement after epoch 1
                f.write(b"PK\\x03\\x04" + bytes(100))
                f.flush()
                os._exit(9)  # killed: checkpoint.npz is written, best.npz is not
        savez(f, **arrays)

    checkpoint.np.savez = killed_writing_the_second_best
    rng = np.random.default_rng(0)
    X = rng.standard_normal((120, 2)).astype(np.float32)
    y = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(np.int64)
    portaconv.manual_seed(0)
    model = build_model("two-layer", (2,), 2, hidden=4)
    trainer = Trainer(model, SGD(model, 0.02), out_dir=sys.argv[1], progress=False)
    trainer.fit(DataLoader(X[:80], y[:80], 16), DataLoader(X[80:], y[80:], 64), epochs=30)
    """
)


def test_kill_between_checkpoint_and_best_is_repaired_on_resume(tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", _KILLED_BEFORE_BEST, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PORTACONV_BACKEND": "numpy", "PORTACONV_DEVICE": ""},
    )
    assert done.returncode == 9, done.stderr  # 0: no second improvement, nothing tested
    state = load_checkpoint(tmp_path / "checkpoint.npz")
    assert state["best_epoch"] == state["epoch"] > load_checkpoint(tmp_path / "best.npz")["epoch"]
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert len(leftovers) == 1 and leftovers[0].startswith(".best.npz.")

    lines = []
    with portaconv.use_backend("numpy"):
        model = build_model("two-layer", (2,), 2, hidden=4)
        trainer = Trainer(model, SGD(model, 0.02), out_dir=tmp_path, progress=False,
                          log=lines.append)  # fmt: skip
        trainer.fit([], [], epochs=state["epoch"], resume=True)  # nothing left to train
    best = load_checkpoint(tmp_path / "best.npz")
    assert best["epoch"] == state["epoch"]
    for key, value in state["model"].items():
        np.testing.assert_array_equal(best["model"][key], value)
    assert not any(p.name.endswith(".tmp") for p in tmp_path.iterdir())
    assert any(line.startswith("removed ") and ".best.npz." in line for line in lines)


def test_temporaries_of_running_writers_are_kept(tmp_path):
    from portaconv.train.checkpoint import remove_stale_temporaries

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    stale = tmp_path / f".checkpoint.npz.{int(dead.stdout)}.tmp"
    mine = tmp_path / f".best.npz.{os.getpid()}.tmp"
    running = tmp_path / f".checkpoint.npz.{os.getppid()}.tmp"  # a process that runs
    other = tmp_path / ".notes.tmp"  # not a checkpoint's temporary
    for path in (stale, mine, running, other):
        path.write_bytes(b"partial")
    removed = remove_stale_temporaries(tmp_path)
    assert sorted(removed) == sorted([stale, mine])
    assert running.exists() and other.exists()


def test_corrupt_or_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(tmp_path / "none.npz")
    path = save_checkpoint(tmp_path / "c.npz", _state(1))
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match="c.npz is damaged or not a portaconv checkpoint"):
        load_checkpoint(path)


def _trained(out_dir, epochs=1):
    """A Trainer of the two-layer network fitted ``epochs`` epochs, checkpoints in out_dir."""
    rng = np.random.default_rng(0)
    X, y = _blobs(rng, n=64)
    portaconv.manual_seed(0)
    model = build_model("two-layer", (2,), 3, hidden=8)
    trainer = Trainer(model, SGD(model, 0.1), out_dir=out_dir, progress=False, log=lambda _: 0)
    trainer.fit(DataLoader(X[:48], y[:48], 16), DataLoader(X[48:], y[48:], 16), epochs=epochs)
    return trainer


def _central_directory(path):
    """Offsets of each member's central-directory record in the zip file ``path``."""
    import struct
    import zipfile

    data = path.read_bytes()
    with zipfile.ZipFile(path) as archive:
        offset, count = archive.start_dir, len(archive.infolist())
    records = []
    for _ in range(count):
        assert data[offset : offset + 4] == b"PK\x01\x02"
        name, extra, comment = struct.unpack("<HHH", data[offset + 28 : offset + 34])
        records.append(offset)
        offset += 46 + name + extra + comment
    return records


# Byte edits of a member's central-directory record that zipfile answers with something other
# than BadZipFile: (offset in the record, new byte, what zipfile raises).
ZIP_EDITS = {
    "version-needed": (6, 0xFF, "NotImplementedError"),
    "encrypted-flag": (8, 0x01, "RuntimeError"),
    "patched-data-flag": (8, 0x20, "NotImplementedError"),
    "strong-encryption-flag": (8, 0x40, "NotImplementedError"),
    "compression-method": (10, 0x63, "NotImplementedError"),
}


def damaged_copy(path, edit, member=0):
    offset, value, _ = ZIP_EDITS[edit]
    data = bytearray(path.read_bytes())
    data[_central_directory(path)[member] + offset] = value
    copy = path.with_name(f"{edit}-{member}.npz")
    copy.write_bytes(bytes(data))
    return copy


@pytest.mark.parametrize("edit", sorted(ZIP_EDITS))
def test_damaged_zip_headers_are_a_value_error(tmp_path, edit):
    path = _trained(tmp_path).out_dir / "checkpoint.npz"
    raised = {"RuntimeError": RuntimeError, "NotImplementedError": NotImplementedError}
    for member in (0, -1):  # the first array and the metadata (written last)
        damaged = damaged_copy(path, edit, member)
        with pytest.raises(raised[ZIP_EDITS[edit][2]]):  # what NumPy alone would raise
            with np.load(damaged, allow_pickle=False) as data:
                [data[key] for key in data.files]
        with pytest.raises(ValueError, match=rf"checkpoint .*{edit}-.*\.npz is damaged"):
            load_checkpoint(damaged)


def test_checkpoint_that_is_no_zip_or_a_directory_is_a_value_error(tmp_path):
    path = tmp_path / "random.npz"
    path.write_bytes(np.random.default_rng(0).bytes(3000))
    with pytest.raises(ValueError, match=r"not an \.npz \(zip\) file") as info:
        load_checkpoint(path)
    assert "pickle" not in str(info.value)  # no advice to unpickle an untrusted file
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "best.npz").write_bytes(b"")
    with pytest.raises(ValueError, match=r"run is a directory, not a checkpoint file .*best\.npz"):
        load_checkpoint(tmp_path / "run")


def test_checkpoint_missing_a_member_names_it(tmp_path):
    import zipfile

    path = _trained(tmp_path).out_dir / "checkpoint.npz"
    cut = tmp_path / "cut.npz"
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(cut, "w") as target:
        for info in source.infolist():
            if info.filename != "model/0.W.npy":
                target.writestr(info, source.read(info))
    with pytest.raises(ValueError, match=r"lacks the array 'model/0\.W'"):
        load_checkpoint(cut)


@pytest.mark.parametrize(
    "entry,value,message",
    [
        ("epoch", None, "lacks epoch"),
        ("model", None, "lacks model"),
        ("history", None, "lacks history"),
        ("epoch", "2", "epoch is str '2', expected int"),
        ("epoch", 5, "epoch 5 does not match its history of 2 epochs"),
        ("rng", {"bit_generator": "nope"}, "random state rng is not usable"),
        ("format", "other", "not a portaconv training checkpoint"),
    ],
)
def test_restore_checks_the_whole_state_first(tmp_path, entry, value, message):
    trainer = _trained(tmp_path, epochs=2)
    state = load_checkpoint(tmp_path / "checkpoint.npz")
    if value is None:
        del state[entry]
    else:
        state[entry] = value
    save_checkpoint(tmp_path / "checkpoint.npz", state)
    fresh = _trained(tmp_path / "other", epochs=1)
    before = {k: to_numpy(v).copy() for k, v in fresh.model.state_dict().items()}
    with pytest.raises(ValueError, match=message):
        fresh.restore(state)
    assert fresh.epoch == 1  # untouched
    for key, value in fresh.model.state_dict().items():
        np.testing.assert_array_equal(to_numpy(value), before[key])
    with pytest.raises(ValueError, match=rf"checkpoint {tmp_path / 'checkpoint.npz'}: .*{message}"):
        trainer.resume()


def test_resume_onto_a_directory_named_checkpoint_is_a_value_error(tmp_path):
    (tmp_path / "checkpoint.npz").mkdir()
    trainer = Trainer(build_model("two-layer", (2,), 3), None, out_dir=tmp_path)
    with pytest.raises(ValueError, match="checkpoint.npz is a directory"):
        trainer.resume()


# ---------------------------------------------------------------------------- command line


def _png(path):
    return path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_train_evaluate_resume_end_to_end(bk, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--epochs", "1", "--subset", "300", "--out", str(out), "--no-progress"]
    assert main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    for key in (
        "dataset",
        "model",
        "backend",
        "device",
        "epochs",
        "test_accuracy",
        "train_seconds",
        "images_per_second",
    ):
        assert key in summary, key
    assert (summary["dataset"], summary["model"], summary["epochs"]) == ("digits", "cnn", 1)
    assert summary["backend"] == bk.name and summary["dtype"] == bk.dtype_name
    assert 0.0 <= summary["test_accuracy"] <= 1.0 and summary["images_per_second"] > 0
    for name in ("loss.png", "accuracy.png", "confusion_matrix.png"):
        assert _png(out / name), name
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1
    assert "test accuracy" in capsys.readouterr().out

    assert main(["evaluate", "--checkpoint", str(out / "checkpoint.npz"), "--subset", "300"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["test_accuracy"] == pytest.approx(summary["test_accuracy"], abs=1e-12)

    assert main([*args[:2], "2", *args[3:], "--resume"]) == 0
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]
    assert json.loads((out / "summary.json").read_text())["epochs"] == 2


def test_cli_cross_validation_tests_every_sample_once(bk, tmp_path, capsys):
    out = tmp_path / "cv"
    argv = ["train", "--dataset", "iris", "--folds", "3", "--epochs", "2", "--out", str(out)]
    assert main([*argv, "--no-progress"]) == 0
    assert "out-of-fold over 3 folds" in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["folds"], summary["test_images"], summary["epochs"]) == (3, 150, 2)
    folds = [json.loads((out / f"fold-{i}" / "summary.json").read_text()) for i in range(3)]
    assert [f["fold"] for f in folds] == [[0, 3], [1, 3], [2, 3]]
    assert [f["test_images"] for f in folds] == summary["fold_test_images"] == [50, 50, 50]
    assert summary["fold_test_accuracy"] == [f["test_accuracy"] for f in folds]
    correct = sum(f["test_accuracy"] * f["test_images"] for f in folds)
    assert summary["test_accuracy"] == pytest.approx(correct / 150, abs=1e-12)
    assert json.loads((out / "config.json").read_text())["folds"] == 3
    assert json.loads((out / "fold-2" / "config.json").read_text())["fold"] == [2, 3]
    confusion = np.array(json.loads((out / "confusion_matrix.json").read_text()))
    np.testing.assert_array_equal(confusion.sum(1), [50, 50, 50])  # every flower, once
    assert _png(out / "confusion_matrix.png")
    for i in range(3):
        assert (out / f"fold-{i}" / "checkpoint.npz").is_file() and _png(
            out / f"fold-{i}" / "loss.png"
        )

    # A fold's checkpoint is evaluated on that fold, not on the default test split.
    assert main(["evaluate", "--checkpoint", str(out / "fold-1" / "checkpoint.npz")]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert (evaluated["fold"], evaluated["test_images"]) == ([1, 3], 50)
    assert evaluated["test_accuracy"] == pytest.approx(folds[1]["test_accuracy"], abs=1e-12)

    assert main(["train", "--dataset", "fashion-mnist", "--folds", "3"]) == 2
    assert "cross-validates only the data sets without an official test split" in (
        capsys.readouterr().err
    )
    assert main(["train", "--dataset", "iris", "--folds", "0"]) == 2
    assert "folds must be a positive integer, got 0" in capsys.readouterr().err


def _write_idx(path, array):
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(n).to_bytes(4, "big") for n in array.shape
    )
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_cli_trains_from_idx_files_in_data_dir(bk, tmp_path, rng):
    data = tmp_path / "data"
    data.mkdir()
    for split, n in (("train", 120), ("t10k", 40)):
        labels = rng.integers(0, 10, n)
        images = rng.integers(0, 50, (n, 28, 28))
        images[np.arange(n), labels, :] = 255  # a learnable pattern: a bright row per class
        _write_idx(data / f"{split}-images-idx3-ubyte.gz", images)
        _write_idx(data / f"{split}-labels-idx1-ubyte.gz", labels)
    out = tmp_path / "run"
    argv = [
        "train",
        "--dataset",
        "fashion-mnist",
        "--model",
        "mlp",
        "--epochs",
        "2",
        "--data-dir",
        str(data),
        "--no-download",
        "--out",
        str(out),
        "--no-progress",
    ]
    assert main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dataset"] == "fashion-mnist" and summary["test_images"] == 40


def test_cli_errors_are_one_clear_line(bk, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sources, "SYSTEM_DIRS", {})
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("PORTACONV_DATA", raising=False)
    assert main(["train", "--resume"]) == 2
    assert "--resume needs --out" in capsys.readouterr().err
    assert main(["evaluate", "--checkpoint", str(tmp_path / "none.npz")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["train", "--dataset", "nope"]) == 2  # argparse's own mistake: one line too
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "argument --dataset: invalid choice: 'nope'" in err
    assert (
        main(
            [
                "train",
                "--dataset",
                "fashion-mnist",
                "--data-dir",
                str(tmp_path),
                "--no-download",
                "--out",
                str(tmp_path / "r"),
            ]
        )
        == 2
    )
    assert "apt-get install dataset-fashion-mnist" in capsys.readouterr().err


def test_cli_info_as_a_console_command():
    done = subprocess.run(
        [sys.executable, "-m", "portaconv", "info", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PORTACONV_BACKEND": "numpy", "PORTACONV_DEVICE": ""},
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["active"]["backend"] == "numpy"
    assert report["backends"]["numpy"].startswith("available")
    for name in ("jax", "jaxlib"):  # as the installed distributions say (None: not installed)
        assert report["versions"][name] == _installed_version(name), name


def _installed_version(distribution: str) -> str | None:
    import importlib.metadata

    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def test_resume_rewrites_metrics_from_the_checkpoint(bk, rng, tmp_path):
    X, y = _blobs(rng, n=64)

    def trainer():
        portaconv.manual_seed(0)
        model = build_model("two-layer", (2,), 3, hidden=8)
        return Trainer(model, SGD(model, 0.1), out_dir=tmp_path, progress=False, log=print)

    trainer().fit(DataLoader(X, y, 16), epochs=2)
    metrics = tmp_path / "metrics.jsonl"
    # killed after logging epoch 3 but before its checkpoint was written
    metrics.write_text(metrics.read_text() + json.dumps({"epoch": 3, "train_loss": -1}) + "\n")
    trainer().fit(DataLoader(X, y, 16), epochs=3, resume=True)
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3] and records[-1]["train_loss"] > 0
