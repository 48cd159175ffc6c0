"""portaconv.interop against the real tools: PyTorch modules, the safetensors library, ONNX
files run by onnxruntime, and the ``portaconv export`` command.

Oracles: torch modules built by hand (or the twin to_torch builds, which then computes with
torch's own kernels) run on the same random inputs as the portaconv model; safetensors
files are read back by ``safetensors.numpy``; ONNX files are run by onnxruntime. Every test
is backend independent (the NumPy session runs them): the conversions go through the host.
"""

from __future__ import annotations

import re
import sys

import ndonnx  # noqa: F401  (the interop extra: every one of these must be installed)
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import safetensors.numpy as safetensors_numpy
import torch

import portaconv
from portaconv import layers as L
from portaconv.cli import main
from portaconv.interop import (
    MissingDependencyError,
    export_onnx,
    from_torch,
    load_safetensors,
    save_safetensors,
    to_torch,
    torch_name,
)
from portaconv.interop.torch_modules import Residual as TorchResidual
from portaconv.models import Residual, Sequential, build_model
from portaconv.train import Trainer

nn = torch.nn


#: Every zoo network, at the smallest sizes its builder takes (tracing costs per layer).
ZOO = [
    ("two-layer", (4,), {}),
    ("mlp", (1, 4, 4), {"hidden": (8,)}),
    ("lenet", (1, 28, 28), {}),
    ("cnn", (1, 8, 8), {"widths": (4, 8), "hidden": 8}),
    ("resnet", (1, 8, 8), {"widths": (4, 8)}),
    ("mobilenet", (3, 8, 8), {"widths": (4, 8), "strides": (1, 2), "blocks": 1, "head": 8}),
]


def forward(model, x):
    """The portaconv model's output for the NumPy input ``x``, as NumPy."""
    return portaconv.to_numpy(model.forward(portaconv.to_backend(x, dtype=x.dtype)))


def torch_forward(module, x):
    with torch.no_grad():
        return module(torch.from_numpy(x)).numpy()


def assert_close(got, expected, rtol=1e-5):
    scale = max(float(np.max(np.abs(expected))), 1.0)
    np.testing.assert_allclose(got, expected, rtol=0, atol=rtol * scale)


def many_layers():
    """A portaconv network with most layer kinds and options, and a residual block."""
    portaconv.manual_seed(1)
    block = Residual(
        Sequential(L.Conv2d(6, 6, 3, padding="same", bias=False), L.GroupNorm(3, 6), L.SiLU()),
    )
    return Sequential(
        L.Conv2d(2, 6, (3, 2), stride=(1, 2), padding=(1, 0), dilation=(2, 1)),
        L.BatchNorm2d(6),
        L.LeakyReLU(0.2),
        block,
        L.Conv2d(6, 6, 3, padding=1, groups=3),
        L.Hardswish(),
        L.MaxPool2d(3, 2, padding=1),
        L.AvgPool2d(2, 1, padding=1, count_include_pad=False),
        L.MeanPool2d(2),
        L.AdaptiveAvgPool2d((2, 1)),
        L.Dropout2d(0.3),
        L.Flatten(),
        L.Linear(6 * 2 * 1, 10),
        L.LayerNorm(10),
        L.GELU("tanh"),
        L.Dropout(0.5),
        L.Linear(10, 4),
        L.Softmax(),
    )


def trained_statistics(model, rng, shape):
    """Move BatchNorm's running statistics away from (0, 1): a few training forwards."""
    model.train()
    for _ in range(2):
        model.forward(portaconv.to_backend(rng.standard_normal(shape)))
    return model.eval()


# -------------------------------------------------------------------------------- to_torch


def test_to_torch_gives_the_models_outputs_names_and_values(rng):
    model = trained_statistics(many_layers(), rng, (8, 2, 10, 12))
    module = to_torch(model)
    assert not module.training
    x = rng.standard_normal((5, 2, 10, 12)).astype(np.float32)
    assert_close(torch_forward(module, x), forward(model, x))
    state = module.state_dict()
    for name, value in model.state_dict().items():  # the same bits under PyTorch's names
        np.testing.assert_array_equal(state[torch_name(name)].numpy(), portaconv.to_numpy(value))
    assert isinstance(module[3], TorchResidual) and isinstance(module[3].shortcut, nn.Identity)
    assert "3.body.0.weight" in state and "1.running_var" in state


def test_to_torch_of_zoo_networks_and_its_train_mode(rng):
    for name, shape, options in [row for row in ZOO if row[0] in ("mlp", "resnet", "mobilenet")]:
        model = trained_statistics(build_model(name, shape, 3, **options), rng, (6, *shape))
        x = rng.standard_normal((3, *shape)).astype(np.float32)
        assert_close(torch_forward(to_torch(model), x), forward(model, x))
    model = build_model("resnet", (1, 8, 8), 3, widths=(4, 8))  # training: batch statistics
    module = to_torch(model)
    assert module.training
    x = rng.standard_normal((4, 1, 8, 8)).astype(np.float32)
    assert_close(torch_forward(module, x), forward(model, x))


def test_to_torch_refuses_a_layer_without_a_twin():
    model = Sequential(L.Linear(4, 4), L.Upsample1d(2))
    with pytest.raises(TypeError, match=r"to_torch: model\[1\] is Upsample1d.*no PyTorch"):
        to_torch(model)


# ------------------------------------------------------------------------------ from_torch


def torch_network():
    """A torch network of the layers portaconv has, built by hand."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(8, eps=1e-3, momentum=0.2),
        nn.ReLU6(),
        TorchResidual(nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.Tanh())),
        nn.Sequential(nn.MaxPool2d(2), nn.GroupNorm(2, 8)),
        nn.AdaptiveAvgPool2d((3, 2)),
        nn.Flatten(),
        nn.Linear(48, 16),
        nn.BatchNorm1d(16),
        nn.Sigmoid(),
        nn.Identity(),
        nn.Linear(16, 5),
    )


def test_from_torch_gives_the_modules_outputs_in_train_and_eval(rng):
    module = torch_network()
    x = rng.standard_normal((6, 3, 13, 11)).astype(np.float32)
    model = from_torch(module)
    assert model.training
    assert_close(forward(model, x), torch_forward(module, x))  # batch statistics
    for name, value in model.state_dict().items():  # both moved their running statistics
        np.testing.assert_allclose(
            portaconv.to_numpy(value), module.state_dict()[torch_name(name)].numpy(), rtol=1e-5
        )
    module.eval()
    model = from_torch(module)
    assert not model.training
    assert_close(forward(model, x), torch_forward(module, x))


def test_from_torch_of_1d_layers_in_float64(rng):
    torch.manual_seed(1)
    module = nn.Sequential(
        nn.Conv1d(2, 4, 3, padding="same", dilation=2),
        nn.BatchNorm1d(4),
        nn.GELU(),
        nn.AvgPool1d(3, 2, padding=1),
        nn.LayerNorm(3),
        nn.Dropout(0.0),
        nn.Conv1d(4, 4, 1),
        nn.MaxPool1d(3),
        nn.Flatten(),
        nn.Softmax(dim=1),
    ).double()
    model = from_torch(module)
    x = rng.standard_normal((3, 2, 6))
    assert model.state_dict()["0.W"].dtype == portaconv.to_backend(x, dtype=x.dtype).dtype
    np.testing.assert_allclose(forward(model, x), torch_forward(module, x), rtol=1e-12)


@pytest.mark.parametrize(
    "module,where,why",
    [
        (nn.Conv2d(1, 1, 3, padding_mode="reflect"), "module", "pads with zeros only"),
        (nn.Sequential(nn.ReLU(), nn.LSTM(2, 2)), r"module\[1\]", "LSTM.*has no layer"),
        (
            nn.Sequential(nn.Sequential(nn.MaxPool2d(2, ceil_mode=True))),
            r"module\[0\]\[0\]",
            "no ceil_mode",
        ),
        (nn.BatchNorm2d(3, affine=False), "module", "affine=True"),
        (nn.Flatten(0), "module", "keeps axis 0"),
    ],
)
def test_from_torch_refuses_what_portaconv_lacks_naming_it(module, where, why):
    with pytest.raises(TypeError, match=rf"from_torch: {where} is .*{why}"):
        from_torch(module)


def test_from_torch_refuses_what_is_not_a_module():
    with pytest.raises(TypeError, match="from_torch: module must be a torch.nn.Module, got list"):
        from_torch([nn.ReLU()])


# ----------------------------------------------------------------------------- safetensors


def test_safetensors_round_trip_is_bitwise_and_readable_by_the_library(tmp_path, rng):
    model = trained_statistics(build_model("cnn", (1, 8, 8), 3), rng, (4, 1, 8, 8))
    path = tmp_path / "cnn.safetensors"
    save_safetensors(model, path)
    stored = safetensors_numpy.load_file(str(path))
    state = {name: portaconv.to_numpy(value) for name, value in model.state_dict().items()}
    assert sorted(stored) == sorted(state)
    for name, value in state.items():
        assert stored[name].dtype == value.dtype
        np.testing.assert_array_equal(stored[name], value)
    fresh = build_model("cnn", (1, 8, 8), 3)
    load_safetensors(fresh, path)
    for name, value in fresh.state_dict().items():
        np.testing.assert_array_equal(portaconv.to_numpy(value), state[name])


def test_load_safetensors_refuses_other_names_shapes_and_files(tmp_path):
    model = build_model("two-layer", (4,), 3)
    path = tmp_path / "other.safetensors"
    save_safetensors(build_model("two-layer", (4,), 3, hidden=8), path)
    with pytest.raises(ValueError, match=r"tensor '0.W' has shape \(8, 4\), but the model's"):
        load_safetensors(model, path)
    save_safetensors(build_model("mlp", (4,), 3, hidden=(5,)), path)
    with pytest.raises(ValueError, match=r"does not hold this model's tensors: missing \[\]"):
        load_safetensors(Sequential(L.Linear(4, 5)), path)
    safetensors_numpy.save_file({"0.W": np.zeros((32, 4), np.int32)}, str(path))
    with pytest.raises(ValueError, match="missing"):
        load_safetensors(model, path)
    (tmp_path / "junk.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(ValueError, match="junk.safetensors is not a readable safetensors file"):
        load_safetensors(model, tmp_path / "junk.safetensors")
    with pytest.raises(TypeError, match="save_safetensors: model must be a portaconv model"):
        save_safetensors({"W": np.zeros(2)}, path)


def test_load_safetensors_refuses_integer_tensors(tmp_path):
    model = Sequential(L.Linear(2, 3))
    path = tmp_path / "ints.safetensors"
    safetensors_numpy.save_file(
        {"0.W": np.zeros((3, 2), np.int64), "0.b": np.zeros(3, np.float32)}, str(path)
    )
    with pytest.raises(ValueError, match="tensor '0.W' has dtype int64, not a floating one"):
        load_safetensors(model, path)


# ------------------------------------------------------------------------------------ ONNX


@pytest.mark.parametrize("name,shape,options", ZOO, ids=[z[0] for z in ZOO])
def test_export_onnx_runs_in_onnxruntime_as_the_model(tmp_path, rng, name, shape, options):
    model = trained_statistics(build_model(name, shape, 3, **options), rng, (4, *shape))
    path = tmp_path / f"{name}.onnx"
    info = export_onnx(model, path, shape, check=False)
    proto = onnx.load(str(path))
    (graph_input,) = proto.graph.input
    assert graph_input.type.tensor_type.shape.dim[0].dim_param == "N"  # dynamic batch axis
    assert sorted(t.name for t in proto.graph.initializer) == sorted(model.state_dict())
    (opset,) = [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")]
    assert info["opset"] == opset >= 21 and "MatMul" in info["operators"]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (1, 5):
        x = rng.standard_normal((batch, *shape)).astype(np.float32)
        (got,) = session.run(["output"], {"input": x})
        assert_close(got, forward(model, x), rtol=1e-4)
    assert model.training is False  # trained_statistics left it so; export copies it


def test_export_onnx_of_a_float64_network_in_training_mode(tmp_path, rng):
    with portaconv.use_backend(dtype="float64"):
        model = many_layers()
    export_onnx(model, tmp_path / "net.onnx", (2, 10, 12))  # checks with onnxruntime itself
    assert model.training  # the model is left as it was; the graph is its eval forward
    x = rng.standard_normal((2, 2, 10, 12))
    session = ort.InferenceSession(str(tmp_path / "net.onnx"), providers=["CPUExecutionProvider"])
    (got,) = session.run(["output"], {"input": x})
    np.testing.assert_allclose(got, forward(model.eval(), x), rtol=1e-10)


def test_export_onnx_refuses_shapes_the_model_does_not_take(tmp_path):
    model = build_model("two-layer", (4,), 3)
    with pytest.raises(
        ValueError, match=r"export_onnx: tracing .* shape \(N, 5\) failed: .*in_features=4"
    ):
        export_onnx(model, tmp_path / "x.onnx", (5,))
    with pytest.raises(TypeError, match="input_shape must be one sample's shape"):
        export_onnx(model, tmp_path / "x.onnx", 4)
    with pytest.raises(ValueError, match="export_onnx: input_shape must be a positive integer"):
        export_onnx(model, tmp_path / "x.onnx", (0,))
    assert not (tmp_path / "x.onnx").exists()


# ------------------------------------------------------------------------------------- CLI


@pytest.fixture(scope="module")
def iris_checkpoint(tmp_path_factory):
    """A checkpoint of a one-epoch two-layer run on Iris, and its model rebuilt by hand."""
    run = tmp_path_factory.mktemp("export") / "run"
    argv = ["train", "--dataset", "iris", "--folds", "1", "--epochs", "1", "--out", str(run)]
    with pytest.MonkeyPatch.context() as patch:  # the plots are test_cli.py's business
        patch.setattr(Trainer, "write_plots", lambda self, *args, **kwargs: [])
        assert main([*argv, "--no-progress"]) == 0
    model = build_model("two-layer", (4,), 3)
    from portaconv.train import load_checkpoint

    model.load_state_dict(load_checkpoint(run / "best.npz")["model"])
    return run / "best.npz", model.eval()


def test_cli_export_writes_each_format(iris_checkpoint, tmp_path, monkeypatch, capsys, rng):
    checkpoint, model = iris_checkpoint
    monkeypatch.chdir(tmp_path)
    x = rng.standard_normal((7, 4)).astype(np.float32)
    expected = forward(model, x)
    for fmt, out in (("onnx", "m.onnx"), ("safetensors", "m.safetensors"), ("torch", "m.pt2")):
        assert main(["export", "--checkpoint", str(checkpoint), "--format", fmt, "--out", out]) == 0
        assert f'"format": "{fmt}"' in capsys.readouterr().out
    session = ort.InferenceSession("m.onnx", providers=["CPUExecutionProvider"])
    assert_close(session.run(["output"], {"input": x})[0], expected)
    stored = safetensors_numpy.load_file("m.safetensors")
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(stored[name], portaconv.to_numpy(value))
    program = torch.export.load("m.pt2").module()
    with torch.no_grad():
        assert_close(program(torch.from_numpy(x)).numpy(), expected)


@pytest.mark.parametrize(
    "argv,expected",
    [
        (["--format", "onnx", "--out", "m.onnx", "--checkpoint", "nosuch.npz"], "nosuch.npz"),
        (
            ["--format", "torch", "--out", "m.pt", "--checkpoint", "x.npz"],
            "end in .pt2; got --out m.pt",
        ),
        (["--format", "keras", "--out", "m", "--checkpoint", "x.npz"], "invalid choice: 'keras'"),
    ],
)
def test_cli_export_mistakes_are_one_line(tmp_path, monkeypatch, capsys, argv, expected):
    monkeypatch.chdir(tmp_path)
    assert main(["export", *argv]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("portaconv export: error: "), lines
    assert re.search(re.escape(expected), lines[0]), lines


# --------------------------------------------------------------------- optional packages


def test_a_missing_package_names_its_extra(iris_checkpoint, monkeypatch, tmp_path, capsys):
    model = build_model("two-layer", (4,), 3)
    monkeypatch.setitem(sys.modules, "safetensors.numpy", None)  # import fails as if absent
    with pytest.raises(
        MissingDependencyError,
        match=r"save_safetensors needs the package 'safetensors', which is not installed: "
        r"pip install 'portaconv\[safetensors\]'",
    ):
        save_safetensors(model, tmp_path / "m.safetensors")
    monkeypatch.setitem(sys.modules, "ndonnx", None)
    with pytest.raises(ImportError, match=r"'ndonnx'.*portaconv\[onnx\].*portaconv\[interop\]"):
        export_onnx(model, tmp_path / "m.onnx", (4,))
    out = str(tmp_path / "m.onnx")
    argv = ["export", "--checkpoint", str(iris_checkpoint[0]), "--format", "onnx", "--out", out]
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "portaconv[onnx]" in lines[0], lines
