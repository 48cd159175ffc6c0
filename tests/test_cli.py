"""The ``portaconv`` command's answers to mistakes: one line on stderr and exit status 2 for a
user's mistake or a damaged file, a traceback for a bug, and the files a run leaves behind.

Oracles: the messages name the option or file and the value; where numbers are concerned
(learning rates, early stopping) they are computed here from the formula, not by the code
under test.
"""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest

from portaconv.cli import main
from portaconv.train import experiment, load_checkpoint

from .test_training import strict_json


def fails(capsys, argv, *expected, command="train"):
    """Run ``portaconv ARGV``: status 2 and one line on stderr containing ``expected``."""
    status = main(argv)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert status == 2, err
    assert len(lines) == 1, err
    assert lines[0].startswith(f"portaconv {command}: error: "), err
    assert lines[0].count("portaconv") == 1, err  # the library's words are not prefixed twice
    for part in expected:
        assert part in lines[0], err
    return lines[0]


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """The test runs in an empty directory (a default run directory would land here)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


# ------------------------------------------------------------------------------- settings


@pytest.mark.parametrize(
    "argv,expected",
    [
        (["--batch-size", "0"], "--batch-size must be a positive integer, got 0"),
        (["--epochs", "0"], "--epochs must be a positive integer, got 0"),
        (["--subset", "0"], "--subset must be a positive integer, got 0"),
        (["--subset", "-5"], "--subset must be a positive integer, got -5"),
        (["--lr", "0"], "--lr must lie in (0, infinity), got 0"),
        (["--lr", "nan"], "--lr must lie in (0, infinity), got nan"),
        (["--momentum", "1.5"], "--momentum must lie in [0, 1), got 1.5"),
        (["--label-smoothing", "-0.1"], "--label-smoothing must lie in [0, 1), got -0.1"),
        (["--val-fraction", "1"], "--val-fraction must lie in [0, 1), got 1"),
        (["--seed", "-1"], "--seed must be an integer >= 0, got -1"),
        (["--warmup-epochs", "3", "--epochs", "3"], "--warmup-epochs 3 must be smaller than"),
        (["--patience", "0"], "--patience must be a positive integer, got 0"),
        (["--patience", "2", "--val-fraction", "0"], "--patience watches the validation"),
    ],
)
def test_bad_settings_are_one_line_and_leave_no_run_directory(in_tmp, capsys, argv, expected):
    fails(capsys, ["train", *argv, "--out", "run"], expected)
    assert not (in_tmp / "run").exists()
    fails(capsys, ["train", *argv], expected)  # the default run directory
    assert not (in_tmp / "runs").exists()


def test_out_that_is_a_file_is_refused(in_tmp, capsys):
    (in_tmp / "taken").write_text("mine")
    fails(capsys, ["train", "--out", "taken"], "--out taken is a file")
    assert (in_tmp / "taken").read_text() == "mine"


@pytest.mark.parametrize("subset", ["3", "12"])
def test_subset_too_small_to_split_says_so(in_tmp, capsys, subset):
    line = fails(capsys, ["train", "--subset", subset, "--out", "run"], "too few")
    assert f"{subset} training images" in line and "use a larger --subset" in line


def test_subset_just_large_enough_trains(bk, in_tmp, capsys):
    # 20 digits: every class of the first 20 has at least two images, so each keeps one in
    # training and gives one to validation, and training batches are never of one image
    assert main(["train", "--subset", "20", "--val-fraction", "0.5", "--epochs", "1",
                 "--out", "run", "--no-progress"]) == 0  # fmt: skip
    capsys.readouterr()


def test_unknown_device_is_one_line(in_tmp, capsys):
    fails(
        capsys,
        ["train", "--backend", "torch", "--device", "bogus", "--out", "run"],
        "--device 'bogus' is not a device the torch backend knows",
    )
    assert not (in_tmp / "run").exists()


def test_a_finished_run_is_not_overwritten(bk, in_tmp, capsys):
    argv = ["train", "--dataset", "iris", "--folds", "1", "--epochs", "1", "--out", "run"]
    assert main([*argv, "--no-progress"]) == 0
    capsys.readouterr()
    before = (in_tmp / "run" / "checkpoint.npz").read_bytes()
    fails(capsys, argv, "--out run already holds a run", "--resume")
    assert (in_tmp / "run" / "checkpoint.npz").read_bytes() == before


def test_a_bug_keeps_its_traceback(monkeypatch):
    def broken(config, log=None, command=None):
        raise TypeError("unsupported format string passed to NoneType.__format__")

    monkeypatch.setattr(experiment, "run_experiment", broken)
    with pytest.raises(TypeError, match="NoneType"):
        main(["train"])


def test_exit_status_and_stderr_of_the_real_command(in_tmp):
    done = subprocess.run(
        [sys.executable, "-m", "portaconv", "train", "--batch-size", "0"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "portaconv train: error: --batch-size must be a positive integer, got 0"
    ]
    assert not (in_tmp / "runs").exists()


def test_a_diverging_run_stops_with_status_3(bk, in_tmp, capsys):
    argv = ["train", "--optimizer", "sgd", "--lr", "1e6", "--subset", "300", "--epochs", "4"]
    assert main([*argv, "--out", "run", "--no-progress"]) == 3
    err = capsys.readouterr().err
    assert "Traceback" not in err and "RuntimeWarning" not in err
    last = err.strip().splitlines()[-1]
    found = re.fullmatch(
        r"portaconv train: stopped: training diverged in epoch (\d): .*nan.* at learning rate "
        r"\S+; (.*)\. Try a smaller learning rate",
        last,
    )
    assert found, last
    diverged, kept = int(found[1]), found[2]
    run = in_tmp / "run"
    if diverged == 1:
        assert kept == "nothing was saved" and not (run / "checkpoint.npz").exists()
    else:
        assert kept == f"run/checkpoint.npz keeps epoch {diverged - 1}, the last finite one"
        state = load_checkpoint(run / "checkpoint.npz")
        assert state["epoch"] == diverged - 1
        assert all(np.isfinite(v).all() for v in state["model"].values())
    assert not (run / "summary.json").exists()
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert [strict_json(line)["epoch"] for line in lines] == list(range(1, diverged))


def test_patience_stops_a_run_early(bk, in_tmp, capsys):
    argv = ["train", "--dataset", "iris", "--folds", "1", "--epochs", "60", "--patience", "3"]
    assert main([*argv, "--out", "run", "--no-progress"]) == 0
    out = capsys.readouterr().out
    summary = strict_json((in_tmp / "run" / "summary.json").read_text())
    records = [strict_json(line) for line in (in_tmp / "run" / "metrics.jsonl").open()]
    accuracies = [r["val_accuracy"] for r in records]
    # oracle: the first best epoch, and the run ends 3 epochs after it
    best_epoch = accuracies.index(max(accuracies)) + 1
    assert summary["stopped_early"] and summary["patience"] == 3
    assert summary["epochs"] == len(records) == best_epoch + 3 < 60
    assert summary["best_epoch"] == best_epoch and summary["best_val_accuracy"] == max(accuracies)
    assert f"stopped early; best validation accuracy at epoch {best_epoch}" in out
    assert load_checkpoint(in_tmp / "run" / "best.npz")["epoch"] == best_epoch
