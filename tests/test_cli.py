"""The ``portaconv`` command's answers to mistakes: one line on stderr and exit status 2 for a
user's mistake or a damaged file, a traceback for a bug, and the files a run leaves behind.

Oracles: the messages name the option or file and the value; where numbers are concerned
(learning rates, early stopping) they are computed here from the formula, not by the code
under test. Tests of the command's behaviour run on the default backend (PORTACONV_BACKEND,
as each nox session sets it); divergence, whose detection reads arrays, runs on every one.
"""

from __future__ import annotations

import gzip
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from portaconv.backend import COMPILING_BACKENDS, get_backend
from portaconv.cli import main
from portaconv.train import experiment, load_checkpoint, save_checkpoint

from .test_training import ZIP_EDITS, damaged_copy, strict_json


def fails(capsys, argv, *expected, command="train"):
    """Run ``portaconv ARGV``: status 2 and one line on stderr containing ``expected``."""
    status = main(argv)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert status == 2, err
    assert len(lines) == 1, err
    assert lines[0].startswith(f"portaconv {command}: error: "), err
    prefix = f"portaconv {command}: error: "
    assert not lines[0].removeprefix(prefix).startswith("portaconv"), err  # not prefixed twice
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
    "argv,command,expected",
    [
        (["train", "--model", "nosuch"], "train", "argument --model: invalid choice: 'nosuch'"),
        (["train", "--epochs", "x"], "train", "argument --epochs: invalid int value: 'x'"),
        (["train", "--bogus"], None, "unrecognized arguments: --bogus"),
        (["nosuch"], None, "argument command: invalid choice: 'nosuch'"),
    ],
)
def test_argparse_mistakes_are_one_line_too(in_tmp, capsys, argv, command, expected):
    """What argparse itself rejects (a choice, a type, an unknown option or command) is one
    line and status 2 as well, without the usage text, and starts no run."""
    if command is None:
        status = main(argv)
        lines = capsys.readouterr().err.strip().splitlines()
        assert status == 2 and len(lines) == 1, lines
        assert lines[0].startswith("portaconv: error: ") and expected in lines[0], lines
    else:
        fails(capsys, argv, expected, command=command)
    assert not (in_tmp / "runs").exists()


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
        (["--compile", "--backend", "numpy"], "--compile compiles the training step on the"),
    ],
)
def test_bad_settings_are_one_line_and_leave_no_run_directory(in_tmp, capsys, argv, expected):
    fails(capsys, ["train", *argv, "--out", "run"], expected)
    assert not (in_tmp / "run").exists()
    fails(capsys, ["train", *argv], expected)  # the default run directory
    assert not (in_tmp / "runs").exists()


@pytest.mark.parametrize("value", ["abc", "0", "-1"])
def test_bad_thread_count_in_the_environment_is_one_line_before_any_file(
    in_tmp, capsys, monkeypatch, value
):
    """PORTACONV_NUM_THREADS is read when the settings are, not at the first convolution
    (which left a run directory with a config and no epoch behind)."""
    import portaconv.backend.fast.threads as threads

    monkeypatch.setenv("PORTACONV_NUM_THREADS", value)
    monkeypatch.setattr(threads, "_env_read", False)
    monkeypatch.setattr(threads, "_requested", None)
    fails(
        capsys,
        ["train", "--out", "run"],
        f"PORTACONV_NUM_THREADS must be a positive integer, got {value!r}",
    )
    assert not (in_tmp / "run").exists()


def test_out_that_is_a_file_is_refused(in_tmp, capsys):
    (in_tmp / "taken").write_text("mine")
    fails(capsys, ["train", "--out", "taken"], "--out taken is a file")
    assert (in_tmp / "taken").read_text() == "mine"


@pytest.mark.parametrize("subset", ["3", "12"])
def test_subset_too_small_to_split_says_so(in_tmp, capsys, subset):
    line = fails(capsys, ["train", "--subset", subset, "--out", "run"], "too few")
    assert f"{subset} training images" in line and "use a larger --subset" in line


def test_subset_just_large_enough_trains(in_tmp, capsys):
    # 20 digits: every class of the first 20 has at least two images, so each keeps one in
    # training and gives one to validation, and training batches are never of one image
    assert main(["train", "--subset", "20", "--val-fraction", "0.5", "--epochs", "1",
                 "--out", "run", "--no-progress"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert ", 1 epoch, " in out and "(20 images)" in out, out  # not "1 epochs"


def test_compile_trains_where_the_backend_compiles(in_tmp, capsys, monkeypatch):
    """--compile on the backend under test: a run of compiled steps (aot_eager on torch, see
    test_compiled_step), or the one-line refusal naming the backends that compile."""
    monkeypatch.setenv("PORTACONV_TORCH_COMPILER", "aot_eager")
    argv = ["train", "--subset", "20", "--val-fraction", "0.5", "--epochs", "1",
            "--batch-size", "4", "--compile", "--out", "run", "--no-progress"]  # fmt: skip
    bk = get_backend()
    if bk.name not in COMPILING_BACKENDS:
        fails(capsys, argv, "compile=True compiles the training step on the torch and jax")
        return
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "compiled steps" in captured.err
    # said before it compiles (the first batch is of 4 digits, 8x8), and timed apart
    shape = "batches of shape (4, 1, 8, 8) ..."
    assert re.search(rf"^compiling the training step for {bk.name} \(.*\), {re.escape(shape)}$",
                     captured.err, re.MULTILINE), captured.err  # fmt: skip
    assert re.search(r"^compiled the training step in \d+\.\d s$", captured.err, re.MULTILINE)
    summary = json.loads((in_tmp / "run" / "summary.json").read_text())
    assert summary["compile"] is True
    assert summary["train_seconds"] < summary["compile_seconds"]  # compiling costs far more
    assert f" s training + {summary['compile_seconds']:.1f} s compiling, " in captured.out


def test_unknown_device_is_one_line(in_tmp, capsys):
    fails(
        capsys,
        ["train", "--backend", "torch", "--device", "bogus", "--out", "run"],
        "--device 'bogus' is not a device the torch backend knows",
    )
    assert not (in_tmp / "run").exists()


def test_a_finished_run_is_not_overwritten(in_tmp, capsys):
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
        r"portaconv train: stopped: training diverged in epoch (\d): .*(?:nan|not finite).* at "
        r"learning rate \S+; (.*)\. Try a smaller learning rate, and check that the labels .*",
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


def test_patience_stops_a_run_early(in_tmp, capsys):
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


# ----------------------------------------------------------------------------------- resume

RUN = ["train", "--subset", "300", "--batch-size", "16", "--augment", "flip", "--out", "run"]


@pytest.fixture
def finished_run(in_tmp, capsys):
    """A finished 2-epoch digits/cnn run in ./run, with settings unlike the recipe's."""
    assert main([*RUN, "--epochs", "2", "--no-progress"]) == 0
    capsys.readouterr()
    return in_tmp / "run"


def cosine(base, epoch, epochs):
    """Oracle: the cosine schedule's learning rate at ``epoch`` (0-based) of ``epochs``."""
    return base * (1 + math.cos(math.pi * epoch / epochs)) / 2


def test_resume_continues_with_the_runs_settings_and_replans_more_epochs(finished_run, capsys):
    assert main(["train", "--resume", "--out", "run", "--epochs", "4", "--no-progress"]) == 0
    assert "learning-rate schedule re-planned for 4 epochs" in capsys.readouterr().err
    summary = strict_json((finished_run / "summary.json").read_text())
    assert (summary["batch_size"], summary["epochs"], summary["lr"]) == (16, 4, 2e-3)
    settings = load_checkpoint(finished_run / "checkpoint.npz")["meta"]["config"]
    assert (settings["augment"], settings["subset"], settings["epochs"]) == ("flip", 300, 4)
    lrs = [strict_json(line)["lr"] for line in (finished_run / "metrics.jsonl").open()]
    # epochs 1-2 on the 2-epoch plan, 3-4 on the 4-epoch one: never 0 (a wrapped schedule)
    expected = [cosine(2e-3, 0, 2), cosine(2e-3, 1, 2), cosine(2e-3, 2, 4), cosine(2e-3, 3, 4)]
    assert lrs == pytest.approx(expected, rel=1e-12)
    assert min(lrs) > 0


def test_resume_with_a_new_peak_learning_rate_honours_it(finished_run, capsys):
    argv = ["train", "--resume", "--out", "run", "--epochs", "3", "--lr", "5e-4"]
    assert main([*argv, "--no-progress"]) == 0
    lrs = [strict_json(line)["lr"] for line in (finished_run / "metrics.jsonl").open()]
    assert lrs[2] == pytest.approx(cosine(5e-4, 2, 3), rel=1e-12)
    assert strict_json((finished_run / "summary.json").read_text())["lr"] == 5e-4


def test_resume_refuses_other_settings_and_says_what_differs(finished_run, capsys):
    before = (finished_run / "checkpoint.npz").read_bytes()
    for option, value, runs in [
        ("--dataset", "iris", "digits"),
        ("--model", "mlp", "cnn"),
        ("--augment", "shift", "flip"),
        ("--subset", "200", "300"),
        ("--seed", "1", "0"),
        ("--batch-size", "32", "16"),
        ("--val-fraction", "0.2", "0.1"),
        ("--optimizer", "sgd", "adam"),
        ("--folds", "3", "1"),
    ]:
        fails(
            capsys,
            ["train", "--resume", "--out", "run", option, value],
            "--resume: the run in run is digits/cnn; it cannot continue with ",
            f"{option} {value} (the run's: {runs})",
        )
    fails(capsys, ["train", "--resume", "--out", "run", "--epochs", "1"],
          "run has trained 2 epochs already; give --epochs 2 or more")  # fmt: skip
    assert (finished_run / "checkpoint.npz").read_bytes() == before


def _write_idx(path, array):
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(n).to_bytes(4, "big") for n in array.shape
    )
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def _idx_files(directory, seed):
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", 60), ("t10k", 20)):
        _write_idx(directory / f"{split}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(directory / f"{split}-labels-idx1-ubyte.gz", np.arange(n) % 10)


def test_resume_refuses_other_images_or_another_dataset(in_tmp, capsys, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(in_tmp / "cache"))
    _idx_files(in_tmp / "data", seed=0)
    argv = ["train", "--dataset", "fashion-mnist", "--model", "mlp", "--data-dir", "data"]
    assert main([*argv, "--epochs", "1", "--out", "run", "--no-progress", "--no-download"]) == 0
    capsys.readouterr()
    fails(
        capsys,
        ["train", "--resume", "--out", "run", "--dataset", "mnist"],
        "the run in run is fashion-mnist/mlp",
        "--dataset mnist (the run's: fashion-mnist)",
    )
    _idx_files(in_tmp / "data", seed=1)  # the files changed under the run
    fails(capsys, ["train", "--resume", "--out", "run", "--epochs", "2"],
          "training images whose per-channel mean and standard deviation differ")  # fmt: skip


# ------------------------------------------------------------- help, config.json, plots, evaluate


def test_every_option_has_help_that_shows_its_default():
    from portaconv.cli import _parser

    subcommands = _parser()._subparsers._group_actions[0].choices
    for name in ("train", "evaluate"):
        for action in subcommands[name]._actions:
            if action.dest == "help":
                continue
            option = action.option_strings[0]
            assert action.help, f"{name} {option} has no help"
            assert "default" in action.help or action.required, f"{name} {option}: {action.help}"
    assert "(required)" in subcommands["evaluate"]._option_string_actions["--checkpoint"].help
    for option in ("--epochs", "--batch-size", "--lr", "--optimizer"):
        assert "digits" in subcommands["train"]._option_string_actions[option].help  # recipes
    assert "default: 0" in subcommands["train"]._option_string_actions["--seed"].help
    assert "default: cosine" in subcommands["train"]._option_string_actions["--scheduler"].help


def test_config_json_holds_the_resolved_settings_from_the_start(in_tmp, capsys):
    bk = get_backend()  # the command's default, PORTACONV_BACKEND's
    argv = ["train", "--optimizer", "sgd", "--lr", "1e6", "--subset", "300", "--epochs", "4"]
    assert main([*argv, "--out", "run", "--no-progress"]) == 3  # diverges: config.json stays
    config = strict_json((in_tmp / "run" / "config.json").read_text())
    expected = {
        "dataset": "digits",
        "model": "cnn",  # the recipe's
        "epochs": 4,
        "batch_size": 32,  # the recipe's
        "lr": 1e6,
        "optimizer": "sgd",
        "momentum": 0.9,  # the default
        "scheduler": "cosine",
        "seed": 0,
        "subset": 300,
        "backend": bk.name,
        "device": str(bk.device),
        "dtype": bk.dtype_name,
        "command": "portaconv " + " ".join([*argv, "--out", "run", "--no-progress"]),
    }
    assert {key: config[key] for key in expected} == expected
    assert config["portaconv"] and config["started"]


def test_plots_are_titled_and_include_the_learning_rate(in_tmp, capsys, monkeypatch):
    import matplotlib.figure

    saved, ticks = {}, {}
    original = matplotlib.figure.Figure.savefig

    def recording(fig, path, *args, **kwargs):
        ax = fig.axes[0]
        saved[Path(path).name] = (ax.get_title(), [list(line.get_ydata()) for line in ax.lines])
        low, high = ax.get_xlim()
        ticks[Path(path).name] = [t for t in ax.get_xticks() if low <= t <= high]
        return original(fig, path, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", recording)
    bk = get_backend()
    argv = ["train", "--dataset", "iris", "--folds", "1", "--epochs", "3", "--out", "run"]
    assert main([*argv, "--no-progress"]) == 0
    title = f"iris, two-layer, {bk.name} on {bk.device} ({bk.dtype_name})"
    assert sorted(saved) == ["accuracy.png", "confusion_matrix.png", "loss.png", "lr.png"]
    for name, (heading, _) in saved.items():
        assert heading.startswith(title), (name, heading)
    lrs = [strict_json(line)["lr"] for line in (in_tmp / "run" / "metrics.jsonl").open()]
    assert saved["lr.png"][1] == [lrs]
    assert lrs == pytest.approx([cosine(0.05, epoch, 3) for epoch in range(3)], rel=1e-12)
    assert (in_tmp / "run" / "lr.png").read_bytes()[:4] == b"\x89PNG"
    for name in ("loss.png", "accuracy.png", "lr.png"):  # epochs: whole numbers only
        assert ticks[name] == [1, 2, 3], (name, ticks[name])


def test_evaluate_tests_a_subset_run_on_its_subset(finished_run, capsys):
    summary = strict_json((finished_run / "summary.json").read_text())
    assert main(["evaluate", "--checkpoint", "run/checkpoint.npz"]) == 0
    result = strict_json(capsys.readouterr().out)
    assert (result["subset"], result["test_images"]) == (300, 300) == (300, summary["test_images"])
    assert result["test_accuracy"] == summary["test_accuracy"]
    fails(capsys, ["evaluate", "--checkpoint", "run/checkpoint.npz", "--subset", "0"],
          "--subset must be a positive integer, got 0", command="evaluate")  # fmt: skip


# ------------------------------------------------------------------------ damaged checkpoints


@pytest.fixture
def iris_run(in_tmp, capsys):
    argv = ["train", "--dataset", "iris", "--folds", "1", "--epochs", "1", "--out", "run"]
    assert main([*argv, "--no-progress"]) == 0
    capsys.readouterr()
    return in_tmp / "run"


def test_evaluate_refuses_what_is_not_a_checkpoint(iris_run, capsys):
    (iris_run.parent / "random.npz").write_bytes(np.random.default_rng(0).bytes(3000))
    line = fails(capsys, ["evaluate", "--checkpoint", "random.npz"],
                 "random.npz is not a portaconv checkpoint: not an .npz (zip) file",
                 command="evaluate")  # fmt: skip
    assert "pickle" not in line
    fails(capsys, ["evaluate", "--checkpoint", "run"],
          "checkpoint run is a directory, not a checkpoint file holding best.npz, "
          "checkpoint.npz", command="evaluate")  # fmt: skip
    fails(capsys, ["evaluate", "--checkpoint", "none.npz"], "checkpoint none.npz does not exist",
          command="evaluate")  # fmt: skip


@pytest.mark.parametrize("edit", sorted(ZIP_EDITS))
def test_evaluate_of_a_checkpoint_with_damaged_zip_headers(iris_run, capsys, edit):
    for member in (0, -1):
        damaged = damaged_copy(iris_run / "checkpoint.npz", edit, member)
        fails(capsys, ["evaluate", "--checkpoint", str(damaged)], "is damaged",
              command="evaluate")  # fmt: skip


def _edited(iris_run, edit):
    state = load_checkpoint(iris_run / "checkpoint.npz")
    edit(state)
    return save_checkpoint(iris_run / "edited.npz", state)


@pytest.mark.parametrize(
    "edit,message",
    [
        (lambda s: s.pop("epoch"), "the checkpoint lacks epoch"),
        (lambda s: s.pop("model"), "the checkpoint lacks model"),
        (lambda s: s.pop("meta"), "the checkpoint lacks meta"),
        (lambda s: s["meta"].pop("normalisation"), "its metadata lacks normalisation"),
        (lambda s: s["meta"]["normalisation"].pop("std"), "lacks normalisation.std"),
        (lambda s: s["meta"]["config"].pop("dataset"), "its metadata lacks config.dataset"),
        (lambda s: s["meta"]["model"].pop("name"), "its metadata lacks model.name"),
        (lambda s: s["meta"]["model"].update(classes="3"), "model.classes is '3', expected an"),
        (lambda s: s["model"].pop("0.W"), "weights are not those of the two-layer its"),
    ],
)
def test_evaluate_of_a_checkpoint_missing_an_entry(iris_run, capsys, edit, message):
    path = _edited(iris_run, edit)
    fails(capsys, ["evaluate", "--checkpoint", str(path)], message, command="evaluate")


def test_evaluate_of_a_checkpoint_missing_an_array(iris_run, capsys):
    import zipfile

    cut = iris_run / "cut.npz"
    with zipfile.ZipFile(iris_run / "checkpoint.npz") as source, zipfile.ZipFile(cut, "w") as out:
        for info in source.infolist():
            if info.filename != "model/0.W.npy":
                out.writestr(info, source.read(info))
    fails(capsys, ["evaluate", "--checkpoint", str(cut)], "lacks the array 'model/0.W'",
          command="evaluate")  # fmt: skip


def test_resume_of_a_damaged_run_is_one_line(iris_run, capsys):
    resume = ["train", "--resume", "--out", "run", "--epochs", "2"]
    state = load_checkpoint(iris_run / "checkpoint.npz")
    del state["meta"]["normalisation"]
    save_checkpoint(iris_run / "checkpoint.npz", state)
    fails(capsys, resume, "run/checkpoint.npz: its metadata lacks normalisation")
    del state["epoch"]
    save_checkpoint(iris_run / "checkpoint.npz", state)
    fails(capsys, resume, "run/checkpoint.npz: the checkpoint lacks epoch")
    damaged_copy(iris_run / "checkpoint.npz", "encrypted-flag").replace(iris_run / "checkpoint.npz")
    fails(capsys, resume, "run/checkpoint.npz is damaged")
    (iris_run / "checkpoint.npz").unlink()
    (iris_run / "checkpoint.npz").mkdir()  # a directory where the checkpoint should be
    fails(capsys, resume, "checkpoint run/checkpoint.npz is a directory")


def test_every_train_option_is_a_config_field():
    """`portaconv train` builds its TrainConfig from the options by name: each field has an
    option (with its dest named as the field) and each option a field."""
    import dataclasses

    from portaconv.cli import _parser
    from portaconv.train.config import TrainConfig

    args = _parser().parse_args(["train"])
    options = set(vars(args)) - {"command", "run", "argv"}
    assert options == {f.name for f in dataclasses.fields(TrainConfig)}


def test_recipes_per_dataset_and_model():
    """A model other than the dataset's own takes its (dataset, model) recipe over the
    dataset's; an explicit setting beats both; an unlisted pair keeps the dataset's."""
    from portaconv.train.config import RECIPES, TrainConfig

    cnn = TrainConfig(dataset="fashion-mnist", out="x").resolved()
    assert (cnn.model, cnn.augment, cnn.lr, cnn.epochs) == ("cnn", "flip-shift", 2e-3, 25)
    mlp = TrainConfig(dataset="fashion-mnist", model="mlp", out="x").resolved()
    assert (mlp.augment, mlp.lr, mlp.epochs, mlp.optimizer) == ("none", 1e-3, 20, "adam")
    lenet = TrainConfig(dataset="fashion-mnist", model="lenet", out="x").resolved()
    assert (lenet.augment, lenet.lr, lenet.epochs) == ("none", 2e-3, 15)
    chosen = TrainConfig(dataset="fashion-mnist", model="mlp", augment="flip", out="x")
    assert chosen.resolved().augment == "flip"
    digits_mlp = TrainConfig(dataset="digits", model="mlp", out="x").resolved()
    expected = {**RECIPES["digits"], "model": "mlp"}
    assert {k: getattr(digits_mlp, k) for k in expected} == expected
