"""The reference half where a fast half exists, and the native bodies: each against PyTorch,
and the operation count of a training step.

The layer tests (tests/test_layers.py) run every layer with the fast paths on ("auto"):
NumPy's engines and torch's native bodies (strided views, scatter-adds). Here the same
PyTorch-oracle tests run again on NumPy and torch with them off (``fast_paths("never")``),
so the reference half is tested on every backend. The operation count is deterministic (a
count, not a timing): one LeNet training step through portaconv's torch backend dispatches
at most twice the aten operations of the same step in plain PyTorch.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import portaconv.layers as L
from portaconv.backend import fast_paths
from portaconv.backend._arrays import scaled_add, shared_zeros, updates_in_place
from portaconv.backend._windows import col2im, im2col, window_max, window_max_grad

from . import test_layers as layer_tests
from .helpers import assert_close, on, snapshot

ENGINES = Path(__file__).resolve().parents[1] / "benchmarks" / "engines.py"


def _needs_native(bk) -> None:
    # tests/conftest.py collects these tests on these backends alone
    assert bk.name in ("numpy", "torch"), f"{bk.name} has no fast half"


# ------------------------------------------------------- the portable bodies, on torch too


def test_portable_bodies_match_torch(bk, rng):
    """tests/test_layers.py's oracle test of every row of the layer table, with the fast
    paths off: the reference half alone, on the backends that have a fast half."""
    _needs_native(bk)
    with fast_paths("never"):
        for case in layer_tests.CASES:
            try:
                layer_tests.test_forward_backward_match_torch(case, bk, rng)
            except AssertionError as exc:
                raise AssertionError(f"{case.id}: {exc}") from exc


def test_portable_conv_and_pool_any_geometry_match_torch(bk64):
    _needs_native(bk64)
    with fast_paths("never"):
        layer_tests.test_conv_any_geometry_matches_torch(bk64=bk64)
        layer_tests.test_pool_any_geometry_matches_torch(bk64=bk64)


def test_portable_maxpool_ties_and_nan_match_torch(bk, rng):
    _needs_native(bk)
    with fast_paths("never"):
        for cls, nd in [(L.MaxPool1d, 1), (L.MaxPool2d, 2)]:
            layer_tests.test_maxpool_ties_match_torch(bk, rng, cls, nd)
        layer_tests.test_maxpool_propagates_nan(bk)


def test_native_paths_switch_chooses_the_engine(bk):
    _needs_native(bk)
    layer = L.Conv2d(2, 3, 3)
    A = on(bk, np.ones((1, 2, 5, 5)))
    layer.forward(A)
    fast = {"torch": "StridedConv", "numpy": "NCHWConv2d"}[bk.name]
    assert type(layer._engine).__name__ == fast
    with fast_paths("never"):
        layer.forward(A)
        assert type(layer._engine).__name__ == "ReferenceConv"


# ------------------------------------------------- native bodies against float64 loops


@pytest.mark.parametrize("kernel,stride,size", [(3, 1, 7), (2, 2, 8), (3, 2, 8), (4, 3, 11)])
def test_im2col_and_col2im_match_loops(bk64, rng, kernel, stride, size):
    """im2col against a loop over output positions; col2im against its adjoint identity
    <im2col(x), c> == <x, col2im(c)>, on whichever bodies the backend takes."""
    out = (size - kernel) // stride + 1
    x = rng.standard_normal((2, 3, size, size))  # (C, N, H, W)
    cols = snapshot(im2col(on(bk64, x), (kernel,) * 2, (stride,) * 2, (out,) * 2))
    expected = np.zeros((2, kernel * kernel, 3, out, out))
    for i in range(out):
        for j in range(out):
            patch = x[:, :, i * stride : i * stride + kernel, j * stride : j * stride + kernel]
            expected[:, :, :, i, j] = patch.reshape(2, 3, -1).swapaxes(1, 2)
    np.testing.assert_allclose(cols, expected, rtol=0, atol=0)
    c = rng.standard_normal(expected.shape)
    back = snapshot(col2im(on(bk64, c), x.shape, (kernel,) * 2, (stride,) * 2, (out,) * 2))
    np.testing.assert_allclose(np.sum(expected * c), np.sum(x * back), rtol=1e-12)


def test_window_max_and_grad_first_maximum_first_nan(bk64):
    """Ties go to the first offset in row-major order, a NaN wins over any number (the first
    NaN over a later one); the gradient lands on that one input, exactly 0 elsewhere."""
    x = np.array([[[[1.0, 3.0, 3.0, np.nan], [2.0, 3.0, np.nan, 7.0]]]])  # (1, 1, 2, 4)
    Z, argmax = window_max(on(bk64, x), (2, 2), (2, 2), (1, 2))
    np.testing.assert_array_equal(snapshot(argmax).reshape(-1), [1, 1])
    np.testing.assert_array_equal(np.isnan(snapshot(Z)).reshape(-1), [False, True])
    dLdZ = on(bk64, np.array([[[[5.0, np.inf]]]]))
    dLdA = snapshot(window_max_grad(dLdZ, argmax, x.shape, (2, 2), (2, 2), (1, 2)))
    expected = np.zeros(x.shape)
    expected[0, 0, 0, 1], expected[0, 0, 0, 3] = 5.0, np.inf
    np.testing.assert_array_equal(dLdA, expected)


# ------------------------------------------------------------- updates and zero gradients


def test_scaled_add_updates_in_place_or_rebinds(bk, rng):
    """The optimizers' one update: into y itself where the library allows it, else (JAX) a
    new array handed to the owner's setter; x=None scales alone."""
    y0, x0 = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    y, x = on(bk, y0.copy()), on(bk, x0.copy())  # on() may share memory with its input
    held = []
    result = scaled_add(y, x, -0.25, scale=0.5, rebind=held.append)
    assert_close(result, 0.5 * y0 - 0.25 * x0, bk, "scale * y + alpha * x")
    assert_close(x, x0, bk, "x untouched")
    if updates_in_place(y):
        assert result is y and held == []  # no new array, nothing to rebind
    else:
        assert result is not y and held == [result]
        assert_close(y, y0, bk, "an immutable y untouched")
    doubled = scaled_add(result, None, 0.0, scale=2.0)
    assert_close(doubled, y0 - 0.5 * x0, bk, "scale alone")


def test_zero_grad_shares_read_only_zeros_that_backward_replaces(bk, rng):
    layer = L.Linear(3, 2)
    A = on(bk, rng.standard_normal((4, 3)))
    layer.backward(layer.forward(A))
    layer.zero_grad()
    first = layer.dLdW
    assert_close(first, np.zeros((2, 3)), bk, "dLdW zeroed")
    layer.backward(layer.forward(A))
    assert float(bk.xp.max(bk.xp.abs(layer.dLdW))) > 0  # replaced, not added into the zeros
    layer.zero_grad()
    assert layer.dLdW is first  # made once
    assert_close(shared_zeros(A), np.zeros((4, 3)), bk, "shared zeros")


# ------------------------------------------------------------------- operation count


def test_lenet_step_dispatches_at_most_twice_plain_pytorch(backend_choice, tmp_path):
    """``benchmarks/engines.py --count-ops``: one LeNet-5 training step (forward, loss,
    backward, SGD) through portaconv's torch backend dispatches at most twice the aten
    operations of the same step in plain PyTorch (a count, not a timing)."""
    out = tmp_path / "ops.json"
    command = [sys.executable, str(ENGINES), "--backend", "torch", "--count-ops", "--quick"]
    command += ["--cases", "lenet_train_step", "--json", str(out)]
    subprocess.run(command, check=True, capture_output=True, text=True, timeout=600)
    (case,) = json.loads(out.read_text())["cases"]
    ours, theirs = case["variants"]["auto"]["ops"], case["variants"]["torch"]["ops"]
    assert 0 < ours <= 2 * theirs, (ours, theirs)
