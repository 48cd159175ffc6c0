"""Predicting: ``model.predict``, ``model.summary``, ``num_parameters``, ``zero_grads`` and the
``portaconv predict`` command.

Oracles: PyTorch in float64 (torch.nn.functional with the model's own weights, softmax of
its logits; the same architecture built of torch.nn modules for parameter counts and output
shapes; ``F.interpolate(antialias=True)`` for Pillow's bilinear resizing). The command's
messages are checked to name the file and what the model takes.
"""

from __future__ import annotations

import re
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from array_api_compat import array_namespace
from PIL import Image

from portaconv.backend import to_numpy
from portaconv.cli import main
from portaconv.layers import (
    BatchNorm1d,
    BatchNorm2d,
    Conv2d,
    CrossEntropyLoss,
    Dropout,
    Flatten,
    Linear,
    ReLU,
)
from portaconv.models import MLP, Residual, Sequential, build_model
from portaconv.train import load_checkpoint
from portaconv.train.prediction import read_inputs

from .helpers import assert_close, on
from .test_cli import fails

# ------------------------------------------------------------------------- model.predict


def _torch_forward(state, X, layout):
    """The network ``layout`` describes, in float64 torch.nn.functional, evaluation mode."""
    t = {k: torch.tensor(np.asarray(v, dtype=np.float64)) for k, v in state.items()}
    Z = torch.tensor(np.asarray(X, dtype=np.float64))
    for kind, i in layout:
        if kind == "conv":
            Z = F.conv2d(Z, t[f"{i}.W"], t[f"{i}.b"], padding=1)
        elif kind == "bn":
            Z = F.batch_norm(Z, t[f"{i}.running_M"], t[f"{i}.running_V"], t[f"{i}.BW"],
                             t[f"{i}.Bb"], training=False, eps=1e-5)  # fmt: skip
        elif kind == "relu":
            Z = F.relu(Z)
        elif kind == "pool":
            Z = F.max_pool2d(Z, 2, 2)
        elif kind == "flatten":
            Z = Z.flatten(1)
        elif kind == "linear":
            Z = F.linear(Z, t[f"{i}.W"], t[f"{i}.b"])
    return Z


def test_predict_gives_eval_mode_probabilities_in_batches_and_restores_modes(bk, rng):
    # Linear layers, not convolutions: predict's own code is the same, and JAX compiles less
    net = Sequential(Linear(6, 8), BatchNorm1d(8), ReLU(), Dropout(0.5), Linear(8, 3))
    state = {k: to_numpy(v) for k, v in net.state_dict().items()}
    state["1.running_M"] = rng.normal(size=8)  # running statistics unlike a batch's own
    state["1.running_V"] = rng.uniform(0.5, 2.0, size=8)
    net.load_state_dict(state)
    net.layers[1].eval()  # one layer's own mode, which predict must give back
    X = rng.normal(size=(5, 6))
    probabilities = net.predict(on(bk, X), batch_size=2)
    t = {k: torch.tensor(np.asarray(v, dtype=np.float64)) for k, v in state.items()}
    Z = F.linear(torch.tensor(X), t["0.W"], t["0.b"])
    Z = F.batch_norm(Z, t["1.running_M"], t["1.running_V"], t["1.BW"], t["1.Bb"], eps=1e-5)
    expected = torch.softmax(F.linear(F.relu(Z), t["4.W"], t["4.b"]), dim=1).numpy()
    assert_close(probabilities, expected, bk, "predict")
    assert array_namespace(probabilities) is array_namespace(on(bk, X))
    modes = [net.training, *(layer.training for layer in net.layers)]
    assert modes == [True, True, False, True, True, True]
    # a batch that fails: the error names the layer, and the modes come back all the same
    with pytest.raises(ValueError, match=r"Sequential: layers\[0\] Linear\(6, 8\)"):
        net.predict(on(bk, rng.normal(size=(3, 7))))
    assert [net.training, *(layer.training for layer in net.layers)] == modes


def test_predict_refuses_bad_arguments():
    net = MLP([3, 2])
    with pytest.raises(ValueError, match=r"MLP.predict: X holds no inputs \(shape \(0, 3\)\)"):
        net.predict(np.zeros((0, 3)))
    with pytest.raises(ValueError, match="MLP.predict: batch_size must be a positive integer"):
        net.predict(np.zeros((2, 3)), batch_size=0)
    with pytest.raises(TypeError, match="MLP.predict: X must be an array"):
        net.predict([[1.0, 2.0, 3.0]])


# ----------------------------------------------------------- num_parameters, summary, zero_grads


def _torch_cnn():
    """The zoo's ``cnn`` for (1, 8, 8) inputs and 10 classes, in torch.nn."""
    nn = torch.nn
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(256, 128), nn.BatchNorm1d(128), nn.ReLU(), nn.Dropout(0.3),
        nn.Linear(128, 10),
    )  # fmt: skip


def _torch_count(module):
    return sum(p.numel() for p in module.parameters())


def test_summary_rows_match_torch_shapes_and_counts():
    model = build_model("cnn", (1, 8, 8), 10)
    twin = _torch_cnn().eval()
    assert model.num_parameters() == _torch_count(twin)
    table = model.summary((1, 8, 8)).splitlines()
    assert table[0] == "Sequential, input (N, 1, 8, 8)"
    assert table[-1] == f"total: {_torch_count(twin):,} parameters"
    rows = table[3:-2]
    assert len(rows) == len(twin)
    Z = torch.zeros(1, 1, 8, 8)
    for i, (row, module) in enumerate(zip(rows, twin)):
        Z = module(Z)
        shape = "(N, " + ", ".join(str(n) for n in Z.shape[1:]) + ")"
        assert row.startswith(f"{i} ") and shape in row, row
        assert row.endswith(f" {_torch_count(module):,}"), row
    assert model.training  # summary ran in eval mode and gave the mode back


def test_residual_counts_and_nested_rows_match_torch():
    block = Residual(
        Sequential(Conv2d(4, 8, 3, 2, 1, bias=False), BatchNorm2d(8), ReLU()),
        Sequential(Conv2d(4, 8, 1, 2, bias=False), BatchNorm2d(8)),
    )
    net = Sequential(Conv2d(1, 4, 3, padding=1), block, Flatten(), Linear(8 * 3 * 3, 5))
    nn = torch.nn
    body = nn.Sequential(nn.Conv2d(4, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
    shortcut = nn.Sequential(nn.Conv2d(4, 8, 1, 2, bias=False), nn.BatchNorm2d(8))
    assert net.num_parameters() == sum(
        map(_torch_count, [nn.Conv2d(1, 4, 3), body, shortcut, nn.Linear(72, 5)])
    )
    rows = {line.split()[0]: line for line in net.summary((1, 5, 5)).splitlines()[3:-2]}
    assert list(rows) == ["0", "1", "1.body", "1.body.0", "1.body.1", "1.body.2",
                          "1.shortcut", "1.shortcut.0", "1.shortcut.1", "2", "3"]  # fmt: skip
    assert "(N, 8, 3, 3)" in rows["1.shortcut.0"] and rows["1"].endswith(
        f" {_torch_count(body) + _torch_count(shortcut):,}"
    )
    assert "(N, 72)" in rows["2"]
    with pytest.raises(ValueError, match=r"Sequential.summary: the model cannot run an input "
                       r"of shape \(N, 1, 8, 8\): .*Linear\(72, 5\)"):  # fmt: skip
        net.summary((1, 8, 8))
    with pytest.raises(TypeError, match="Sequential.summary: input_shape must be the shape"):
        net.summary("1, 5, 5")


def test_zero_grad_and_zero_grads_on_every_model(rng):
    net = MLP([4, 3])
    loss = CrossEntropyLoss()
    loss.forward(net.forward(rng.normal(size=(2, 4))), np.array([0, 2]))
    net.backward(loss.backward())
    assert np.any(net.gradients()["layers.0.W"] != 0)
    net.zero_grads()
    assert all(np.all(g == 0) for g in net.gradients().values())
    assert callable(build_model("cnn", (1, 8, 8), 10).zero_grads)


# ------------------------------------------------------------------------ portaconv predict


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A digits/cnn checkpoint, trained one epoch on 300 images."""
    out = tmp_path_factory.mktemp("predict") / "run"
    argv = ["train", "--subset", "300", "--epochs", "1", "--no-progress", "--out", str(out)]
    assert main(argv) == 0
    return out


def _expected(run, X):
    """Probabilities for images ``X`` (N, 1, 8, 8) in [0, 1], by torch from the checkpoint."""
    state = load_checkpoint(run / "checkpoint.npz")
    norm = state["meta"]["normalisation"]
    X = (np.asarray(X, dtype=np.float64) - norm["mean"][0]) / norm["std"][0]
    layout = [("conv", 0), ("bn", 1), ("relu", 2), ("pool", 3), ("conv", 4), ("bn", 5),
              ("relu", 6), ("pool", 7), ("flatten", 8), ("linear", 9)]  # fmt: skip
    Z = _torch_forward(state["model"], X, layout)
    t = {k: torch.tensor(np.asarray(v, dtype=np.float64)) for k, v in state["model"].items()}
    Z = F.batch_norm(Z, t["10.running_M"], t["10.running_V"], t["10.BW"], t["10.Bb"],
                     training=False, eps=1e-5)  # fmt: skip
    Z = F.linear(F.relu(Z), t["13.W"], t["13.b"])
    return torch.softmax(Z, dim=1).numpy()


LINE = re.compile(r"(\S+)  (\d+)  (.*)")
CLASS = re.compile(r"class (\d+) \((\d\.\d{3})\)")


def test_predict_command_matches_torch_on_npy_and_images(run, tmp_path, capsys, rng):
    X = rng.uniform(size=(4, 1, 8, 8)).astype(np.float32)
    np.save(tmp_path / "nchw.npy", X)
    np.save(tmp_path / "nhwc_uint8.npy", np.round(X[:2, 0, :, :, None] * 255).astype(np.uint8))
    big = rng.uniform(size=(20, 13))  # resized to 8x8 by Pillow
    Image.fromarray(np.round(big * 255).astype(np.uint8)).save(tmp_path / "grey.png")
    pixels = np.round(X[3, 0] * 255).astype(np.uint8)
    Image.fromarray(np.stack([pixels] * 3, axis=-1)).save(tmp_path / "rgb_grey.png")
    big8 = np.round(big * 255) / 255
    resized = F.interpolate(torch.tensor(big8)[None, None], size=(8, 8), mode="bilinear",
                            antialias=True, align_corners=False)  # fmt: skip
    expected = np.concatenate([
        _expected(run, X),
        _expected(run, np.round(X[:2] * 255) / 255),
        _expected(run, resized.numpy()),
        _expected(run, pixels[None, None] / 255),
    ])  # fmt: skip
    files = [str(tmp_path / name) for name in
             ("nchw.npy", "nhwc_uint8.npy", "grey.png", "rgb_grey.png")]  # fmt: skip
    assert main(["predict", "--checkpoint", str(run / "checkpoint.npz"), *files,
                 "--top", "3", "--batch-size", "3"]) == 0  # fmt: skip
    lines = capsys.readouterr().out.splitlines()
    where = [(f, i) for f, n in zip(files, (4, 2, 1, 1)) for i in range(n)]
    assert len(lines) == len(where) == len(expected)
    for line, (file, index), probabilities in zip(lines, where, expected):
        name, shown_index, classes = LINE.fullmatch(line).groups()
        assert (name, int(shown_index)) == (file, index)
        shown = [(int(k), float(p)) for k, p in CLASS.findall(classes)]
        top = np.argsort(-probabilities)[:3]
        assert [k for k, _ in shown] == list(top), (line, probabilities)
        np.testing.assert_allclose([p for _, p in shown], probabilities[top], atol=6e-4)


def _predict_fails(capsys, run, file, *expected):
    return fails(capsys, ["predict", "--checkpoint", str(run / "checkpoint.npz"), str(file)],
                 str(file), *expected, command="predict")  # fmt: skip


@pytest.mark.parametrize(
    "name,content,expected",
    [
        ("size.npy", np.zeros((2, 1, 9, 8)), ["shape (2, 1, 9, 8)", "8x8 images with 1 channel",
                                              "(N, 1, 8, 8)"]),
        ("channels.npy", np.zeros((2, 3, 8, 8)), ["shape (2, 3, 8, 8)", "(N, 8, 8, 1)"]),
        ("ints.npy", np.zeros((8, 8), dtype=np.int64), ["int64 values", "uint8 pixels"]),
        ("nan.npy", np.full((8, 8), np.nan), ["not finite"]),
        ("empty.npy", np.zeros((0, 8, 8)), ["holds no inputs"]),
        ("colour.png", "colour", ["colour image (RGB)", "takes grey images (1 channel)"]),
        ("text.png", b"not an image", ["neither a .npy array nor an image Pillow can read"]),
        ("cut.npy", b"\x93NUMPY\x01\x00", ["not a readable .npy array"]),
        ("missing.png", None, ["does not exist"]),
    ],
)  # fmt: skip
def test_predict_command_refuses_bad_files_in_one_line(run, tmp_path, capsys, name, content,
                                                       expected):  # fmt: skip
    path = tmp_path / name
    if isinstance(content, np.ndarray):
        np.save(path, content)
    elif content == "colour":
        colour = np.zeros((8, 8, 3), dtype=np.uint8)
        colour[..., 0] = 200
        Image.fromarray(colour).save(path)
    elif content is not None:
        path.write_bytes(content)
    _predict_fails(capsys, run, path, *expected)


def test_predict_command_mistakes_in_options(run, tmp_path, capsys):
    np.save(tmp_path / "x.npy", np.zeros((1, 1, 8, 8)))
    argv = ["predict", "--checkpoint", str(run / "checkpoint.npz"), str(tmp_path / "x.npy")]
    fails(capsys, [*argv, "--top", "11"], "--top 11 is more than the model's 10 classes",
          command="predict")  # fmt: skip
    fails(capsys, [*argv, "--top", "0"], "--top must be a positive integer, got 0",
          command="predict")  # fmt: skip
    fails(capsys, ["predict", "--checkpoint", str(tmp_path / "x.npy"), str(tmp_path / "x.npy")],
          "is not a portaconv checkpoint", command="predict")  # fmt: skip


def test_images_without_pillow_name_the_extra_and_npy_needs_none(run, tmp_path, capsys,
                                                                  monkeypatch):  # fmt: skip
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(tmp_path / "a.png")
    np.save(tmp_path / "a.npy", np.zeros((8, 8), dtype=np.float32))
    monkeypatch.setitem(sys.modules, "PIL", None)  # `import PIL` raises ImportError
    _predict_fails(capsys, run, tmp_path / "a.png", "needs Pillow",
                   "pip install 'portaconv[images]'")  # fmt: skip
    assert main(["predict", "--checkpoint", str(run / "checkpoint.npz"),
                 str(tmp_path / "a.npy")]) == 0  # fmt: skip
    assert capsys.readouterr().out.startswith(f"{tmp_path / 'a.npy'}  0  class ")


def test_feature_models_take_npy_rows_only(tmp_path):
    np.save(tmp_path / "rows.npy", np.arange(12, dtype=np.int64).reshape(3, 4))
    np.testing.assert_array_equal(
        read_inputs(tmp_path / "rows.npy", (4,)), np.arange(12.0).reshape(3, 4)
    )
    Image.fromarray(np.zeros((4, 4), dtype=np.uint8)).save(tmp_path / "a.png")
    message = r"a.png is not a .npy array, and the model takes 4 features, not images: give"
    with pytest.raises(ValueError, match=message + r" a .npy array of shape \(4,\) or \(N, 4\)"):
        read_inputs(tmp_path / "a.png", (4,))
