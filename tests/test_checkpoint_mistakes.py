"""Checkpoints whose metadata or weights were altered (issue 26): ``portaconv evaluate`` and
``portaconv train --resume`` refuse them in one line on stderr and exit status 2, naming the
file and the entry, before a model is built from the metadata or its weights are scored.

Each test alters one entry of a real run's checkpoint and runs both commands on it. The
oracles are the runs' own data: iris has inputs of shape [4] and 3 classes, the embedded
digits [1, 8, 8] and 10. These tests run on the default backend: they read files, not arrays.
"""

from __future__ import annotations

import contextlib
import io
import shutil

import numpy as np
import pytest

from portaconv.backend import to_numpy
from portaconv.cli import main
from portaconv.models import build_model
from portaconv.optim import SGD
from portaconv.train import Trainer, load_checkpoint, save_checkpoint

EVALUATE = ["evaluate", "--checkpoint", "run/checkpoint.npz"]
RESUME = ["train", "--resume", "--out", "run", "--epochs", "2", "--no-progress"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Finished one-epoch runs: iris/two-layer (SGD) and a digits/cnn on 200 images (Adam)."""
    root = tmp_path_factory.mktemp("runs")
    argvs = {
        "iris": ["--dataset", "iris", "--folds", "1"],
        "digits": ["--dataset", "digits", "--subset", "200"],
    }
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        for name, argv in argvs.items():
            err = io.StringIO()
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                status = main(["train", *argv, "--epochs", "1", "--out", name, "--no-progress"])
            assert status == 0, err.getvalue()
    return root


@pytest.fixture
def alter(runs, tmp_path, monkeypatch):
    """``alter(dataset, edit)``: ./run, a copy of that run whose checkpoint ``edit`` changed."""
    monkeypatch.chdir(tmp_path)

    def copy(dataset, edit):
        run = tmp_path / "run"
        shutil.copytree(runs / dataset, run)
        state = load_checkpoint(run / "checkpoint.npz")
        edit(state)
        save_checkpoint(run / "checkpoint.npz", state)
        return run

    return copy


def refused(capsys, argv, *expected):
    """``portaconv ARGV`` ends with status 2 and one line that names the checkpoint."""
    command = argv[0]
    status = main(argv)
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert status == 2, captured.err
    assert len(lines) == 1, captured.err
    assert lines[0].startswith(f"portaconv {command}: error: checkpoint run/checkpoint.npz: ")
    assert captured.out == ""  # no result of a model built from the damaged file
    for part in expected:
        assert part in lines[0], lines[0]
    return lines[0]


def refused_by_both(capsys, run, *expected):
    """``evaluate`` and ``train --resume`` refuse the run's checkpoint alike; the resume
    writes nothing into the run."""
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    line = refused(capsys, EVALUATE, *expected)
    refused(capsys, RESUME, *expected)
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
    return line


def put(entry, value):
    """An edit that sets the checkpoint's ``entry`` (a dotted path) to ``value``."""

    def edit(state):
        *parents, last = entry.split(".")
        for key in parents:
            state = state[key]
        state[last] = value

    return edit


# ------------------------------------------------------------------------------ input shape


def test_the_reported_input_shape_is_one_line_not_a_memory_error(alter, capsys):
    """Issue 26: a checkpoint naming input shape (512, 10000000000) made evaluate allocate
    the first layer's weights for it (a NumPy ArrayMemoryError traceback)."""
    run = alter("iris", put("meta.model.input_shape", [512, 10_000_000_000]))
    refused_by_both(capsys, run, "model.input_shape is [512, 10000000000]")


@pytest.mark.parametrize(
    "dataset,shape,expected",
    [
        # as many channels as the normalisation has, but images of 10^10 pixels
        ("iris", [4, 100_000, 100_000], "the iris inputs are [4]"),
        ("digits", [1, 100_000, 100_000], "the digits inputs are [1, 8, 8]"),
        ("digits", [1, 8, 9], "the digits inputs are [1, 8, 8]"),
        # other channel counts than the normalisation's
        ("iris", [5], "its normalisation has 4 channels"),
        ("digits", [3, 8, 8], "its normalisation has 1 channel"),
        # not a shape at all
        ("iris", [-4], "expected a non-empty list of positive integers"),
        ("iris", [4.0], "expected a non-empty list of positive integers"),
        ("iris", [], "expected a non-empty list of positive integers"),
        ("iris", "4", "expected a non-empty list of positive integers"),
    ],
)
def test_an_input_shape_unlike_the_data_is_refused(alter, capsys, dataset, shape, expected):
    run = alter(dataset, put("meta.model.input_shape", shape))
    refused_by_both(capsys, run, f"model.input_shape is {shape!r}", expected)


# ------------------------------------------------------------------------------ class count


@pytest.mark.parametrize(
    "edit,expected",
    [
        (put("meta.model.classes", 10_000_000_000), "model.classes is 10000000000"),
        (put("meta.model.classes", 7), "its classes name 3"),
        (put("meta.model.classes", 1), "model.classes is 1, expected an integer of at least 2"),
        (put("meta.model.classes", True), "model.classes is True, expected an integer"),
        (put("meta.classes", "abc"), "classes is 'abc', expected a list of class names"),
        (put("meta.classes", [1, 2, 3]), "expected a list of class names"),
    ],
)
def test_a_class_count_unlike_the_class_names_is_refused(alter, capsys, edit, expected):
    refused_by_both(capsys, alter("iris", edit), expected)


def test_a_class_count_unlike_the_datas_is_refused(alter, capsys):
    def seven(state):
        state["meta"]["model"]["classes"] = 7
        state["meta"]["classes"] = [f"class {i}" for i in range(7)]

    refused_by_both(capsys, alter("iris", seven), "model.classes is 7", "iris has 3 classes")


# ---------------------------------------------------------------------- non-finite weights


def _scaled(group, name, factor):
    def edit(state):
        state[group][name] = state[group][name] * np.float32(factor)

    return edit


def _momentum_nan(state):
    buffer = state["optimizer"]["state"]["2.W"]["momentum_buffer"]
    buffer[0, 0] = np.nan


@pytest.mark.parametrize(
    "dataset,edit,expected",
    [
        # the case: every weight NaN evaluated to chance accuracy with a null loss
        ("iris", _scaled("model", "0.W", np.nan), "its weights 0.W hold 128 non-finite values"),
        ("iris", _scaled("model", "2.b", np.inf), "its weights 2.b hold 3 non-finite values"),
        # a buffer: batch normalisation's running variance
        ("digits", _scaled("model", "5.running_V", -np.inf), "its weights 5.running_V hold 64"),
        # what a resumed run would go on from
        ("iris", _momentum_nan, "its optimizer state state.2.W.momentum_buffer holds 1 non-"),
    ],
)
def test_non_finite_weights_are_refused(alter, capsys, dataset, edit, expected):
    line = refused_by_both(capsys, alter(dataset, edit), expected)
    assert "NaN or infinity" in line


def test_the_trainer_itself_refuses_non_finite_weights(alter):
    """The check is the trainer's (Trainer.restore), so a library user's resume has it too,
    and the trainer is left as it was."""
    run = alter("iris", _scaled("model", "2.W", np.nan))
    model = build_model("two-layer", (4,), 3)
    trainer = Trainer(model, SGD(model, 0.1), out_dir=run, progress=False)
    before = {name: to_numpy(value).copy() for name, value in model.state_dict().items()}
    with pytest.raises(ValueError, match=r"run/checkpoint\.npz: its weights 2\.W hold 96 non-"):
        trainer.resume()
    assert trainer.epoch == 0
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(to_numpy(value), before[name])


def test_a_nan_weight_no_longer_scores_at_chance(alter, capsys):
    """Resuming a NaN checkpoint was a divergence (status 3) in the next epoch; evaluating
    it was status 0 with the accuracy of a constant prediction."""
    alter("digits", _scaled("model", "0.W", np.nan))
    refused(capsys, EVALUATE, "its weights 0.W hold 288 non-finite values")
    assert main(RESUME) == 2
    assert "diverged" not in capsys.readouterr().err


# ------------------------------------------------------------------ the run's other settings


@pytest.mark.parametrize(
    "edit,expected",
    [
        (put("meta.config.lr", None), "config.lr is None, expected the run's setting"),
        (put("meta.config.epochs", "x"), "config.epochs is 'x': --epochs must be an integer"),
        (put("meta.config.batch_size", -1), "config.batch_size is -1: --batch-size must be a"),
        (put("meta.config.momentum", 2.0), "config.momentum is 2.0: --momentum must lie in"),
        (put("meta.config.optimizer", "nope"), "config.optimizer is 'nope': unknown --optimizer"),
        (put("meta.config.model", "cnn"), "config.model is 'cnn' but its model.name is"),
        # not a name at all (a list was a TypeError traceback: unhashable in a dict lookup)
        (put("meta.config.dataset", ["iris"]), "config.dataset is ['iris'], expected one of"),
        (put("meta.model.name", ["cnn"]), "model.name is ['cnn'], expected one of"),
        (put("meta.config.data_dir", 5), "config.data_dir is 5, expected null or a directory"),
        (put("meta.config.backend", "nope"), "config.backend is 'nope', expected null or one of"),
        (put("meta.config.dtype", "float8"), "config.dtype is 'float8', expected null or one of"),
        (put("meta.fold", [7, 2]), "fold is [7, 2], expected null or [index, k]"),
        (put("meta.fold", [0, 3]), "fold is [0, 3] but its config.folds is 1"),
        (put("meta.normalisation.std", [1.0, 0.0, 1.0, 1.0]), "normalisation.std is [1.0, 0.0"),
    ],
)
def test_damaged_settings_are_refused(alter, capsys, edit, expected):
    refused_by_both(capsys, alter("iris", edit), expected)


def test_an_unaltered_run_still_evaluates_and_resumes(alter, capsys):
    alter("iris", lambda state: None)
    assert main(EVALUATE) == 0
    assert main(RESUME) == 0
    assert load_checkpoint("run/checkpoint.npz")["epoch"] == 2
