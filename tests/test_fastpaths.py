"""The fast paths that the layer tests do not reach, each against an independent oracle.

``portaconv.backend`` has NumPy-only fast paths beside its portable ones: im2row/row2im in
two memory layouts chosen by channel count, the row-gather stride-1 convolution and the
threads it splits its chunks between, the max-pool window maximum and its backward,
in-place slice updates, reused scratch blocks; and the convolutions split the batch into
chunks when their gathered matrix outgrows a workspace budget. The layer tests use few
channels and small batches, so here: channel counts on both sides of each threshold, a
budget small enough to force several chunks (a forward that keeps nothing and a backward
that gathers again), odd sizes, strides, padding, non-contiguous inputs, float32 and
float64, NaN and ties, one to three threads.

Every check compares with PyTorch (``torch.nn.functional`` + autograd, float64) or a
float64 NumPy loop written here, never the fast path with the portable one alone.
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import portaconv.backend.fast.blas as ops
import portaconv.backend.fast.nchw as nchw
import portaconv.backend.fast.numpy_ops as numpy_ops
import portaconv.backend.fast.rowgather as rowconv
import portaconv.backend.fast.threads as threads
import portaconv.layers as L
from portaconv.backend import execution_plan, fast_paths, use_backend
from portaconv.backend._arrays import slice_add
from portaconv.backend._conv import ReferenceConv
from portaconv.backend._windows import pad_spatial, window_max, window_max_grad
from portaconv.backend.fast.blas import Scratch, batch_chunks, matmul
from portaconv.backend.fast.im2row import (
    Im2RowConv,
    channels_first_matrix,
    im2row,
    row2im,
    set_batch,
    to_channels_last,
)
from portaconv.backend.fast.nchw import NCHWConv2d
from portaconv.backend.fast.strided import StridedConv
from portaconv.backend.fast.transposed import TransposedConv

from .helpers import assert_close, assert_same_result, on, rounded, snapshot, torch_reference

# Channel counts on both sides of the layout choices (W_out >= K C and W_out >= C select
# the transposed gather and scatter on NumPy) for the geometries below.
CHANNELS = [1, 2, 3, 4, 8, 24, 32]


def _set_workspace(monkeypatch, budget: int) -> None:
    for kind in ops.WORKSPACE_BYTES:
        monkeypatch.setitem(ops.WORKSPACE_BYTES, kind, budget)


def _without_nchw(monkeypatch) -> None:
    """The NCHW engine off: 2-d convolutions take the im2row or the row-gather engine, 1-d
    ones the im2row engine."""
    monkeypatch.setattr(nchw, "MAX_CHANNELS", 0)
    monkeypatch.setattr(nchw, "MAX_WINDOW", 0)
    monkeypatch.setattr(nchw, "MIN_POSITIONS", 10**9)
    monkeypatch.setattr(nchw, "MIN_POSITIONS_1D", 10**9)


@pytest.fixture
def tiny_workspace(monkeypatch):
    """A 64-byte im2row budget: every convolution runs one sample per chunk."""
    _set_workspace(monkeypatch, 64)


# ------------------------------------------------------------------ im2row and row2im


def _im2row_reference(x: np.ndarray, kernel: int, stride: int, out: int) -> np.ndarray:
    """Float64 loop over the output positions: x (n, H, W, C) -> (n * out^2, K^2 * C)."""
    n, C = x.shape[0], x.shape[-1]
    rows = np.zeros((n, out, out, kernel, kernel, C))
    for i in range(out):
        for j in range(out):
            patch = x[:, i * stride : i * stride + kernel, j * stride : j * stride + kernel, :]
            rows[:, i, j] = patch
    return rows.reshape(n * out * out, kernel * kernel * C)


@pytest.mark.parametrize("channels", CHANNELS)
@pytest.mark.parametrize("kernel,stride,size", [(3, 1, 7), (2, 2, 9), (3, 2, 8), (1, 1, 5)])
@pytest.mark.parametrize("use_block", [False, True])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_numpy_im2row_matches_loop(channels, kernel, stride, size, use_block, dtype):
    rng = np.random.default_rng(channels * 100 + kernel * 10 + stride)
    A = rng.standard_normal((3, channels, size, size)).astype(dtype)
    out = (size - kernel) // stride + 1
    scratch = Scratch(A)
    padded = (3, size, size, channels)
    geometry = ((kernel, kernel), (out, out))
    A_last = to_channels_last(A, (0, 0), *geometry, scratch("A", padded) if use_block else None)
    np.testing.assert_array_equal(A_last, np.moveaxis(A, 1, -1))
    shape = (3 * out * out, kernel * kernel * channels)
    rows = im2row(A_last, (kernel, kernel), (stride, stride), (out, out), scratch("r", shape))
    assert rows.shape == shape and rows.dtype == A.dtype
    expected = _im2row_reference(np.moveaxis(A, 1, -1).astype(np.float64), kernel, stride, out)
    np.testing.assert_array_equal(rows, expected)  # a gather: exact


@pytest.mark.parametrize(
    "channels,kernel,width,transposed",
    [(3, 3, 12, True), (4, 3, 12, False), (20, 1, 6, True), (2, 5, 20, True), (8, 5, 20, False)],
)
def test_numpy_im2row_layout_follows_run_length(channels, kernel, width, transposed):
    """Transposed when an output row (W_out values) is at least a window row (K C values),
    or for a 1x1 kernel; row-major otherwise."""
    x = np.ones((2, channels, 6, width), dtype=np.float32)
    out = (6 - kernel + 1, width - kernel + 1)
    scratch = Scratch(x)
    last = to_channels_last(x, (0, 0), (kernel, kernel), out, scratch("A", (2, 6, width, channels)))
    shape = (2 * out[0] * out[1], kernel * kernel * channels)
    rows = im2row(last, (kernel, kernel), (1, 1), out, scratch("r", shape))
    assert rows.T.flags.c_contiguous is transposed
    assert rows.flags.c_contiguous is not transposed


@pytest.mark.parametrize("channels", CHANNELS)
@pytest.mark.parametrize("kernel,stride,size", [(3, 1, 7), (2, 2, 9), (3, 2, 8), (4, 3, 11)])
@pytest.mark.parametrize("order", ["C", "F"])
def test_numpy_row2im_is_the_adjoint_of_the_gather(channels, kernel, stride, size, order):
    """<im2row(x), R> == <x, row2im(R)> for every layout of R, in float64 to 1e-12."""
    rng = np.random.default_rng(channels + 7 * kernel + stride)
    out = (size - kernel) // stride + 1
    x = rng.standard_normal((2, size, size, channels))
    shape = (2 * out * out, kernel * kernel * channels)
    scratch = Scratch(x)
    R = scratch("R", shape, order)
    R[...] = rng.standard_normal(shape)
    back = row2im(R, x.shape, (kernel, kernel), (stride, stride), (out, out), scratch("x", x.shape))
    assert back.shape == x.shape
    lhs = float(np.sum(_im2row_reference(x, kernel, stride, out) * R))
    np.testing.assert_allclose(lhs, float(np.sum(x * back)), rtol=1e-12)
    # a second call reuses the block: it must start from zero again
    again = row2im(
        R, x.shape, (kernel, kernel), (stride, stride), (out, out), scratch("x", x.shape)
    )
    np.testing.assert_array_equal(again, back)


# ---------------------------------------------------------------- convolution, chunked


def _conv_case(nd, cin, cout, size, k, stride, padding, n):
    layer_cls, conv = (L.Conv1d, F.conv1d) if nd == 1 else (L.Conv2d, F.conv2d)
    return layer_cls, conv, (n, cin, *(size,) * nd), (cout, cin, *(k,) * nd)


@pytest.mark.parametrize(
    "nd,cin,cout,size,k,stride,padding,n",
    [
        (2, 1, 4, 9, 3, 1, 1, 5),  # NumPy: transposed gather and scatter
        (2, 3, 5, 8, 3, 2, 1, 4),
        (2, 4, 3, 7, 2, 1, 0, 3),  # row-major gather, transposed scatter
        (2, 24, 6, 6, 3, 1, 1, 3),  # row-major both ways
        (2, 29, 7, 7, 3, 3, 2, 3),
        (2, 40, 5, 6, 1, 1, 0, 3),  # 1x1: no copy to gather, none to scatter
        (2, 5, 4, 11, 5, 1, 2, 4),  # odd size, 5x5
        (2, 30, 8, 5, 1, 1, 0, 4),  # 1x1
        (1, 2, 3, 13, 3, 2, 1, 5),
        (1, 28, 4, 10, 4, 1, 3, 3),
    ],
)
@pytest.mark.parametrize("per_chunk,keep", [(None, True), (1, False), (2, False), (2, True)])
def test_conv_matches_torch_whole_batch_and_in_chunks(
    monkeypatch, bk, nd, cin, cout, size, k, stride, padding, n, per_chunk, keep
):
    """Forward and all gradients as PyTorch, with the batch in one chunk, or one or two
    samples per chunk, forward's matrices kept for backward (NumPy only) or gathered again
    (the last chunk is then smaller than the reused scratch blocks), and a second backward
    the same bits. On a library with native bodies (torch: the strided engine) also with
    them turned off (the portable im2row engine)."""
    monkeypatch.setattr(rowconv, "MIN_CHANNELS", 10**9)  # im2row; the row gather: below
    _without_nchw(monkeypatch)  # and the NCHW engine: below
    out = (size + 2 * padding - k) // stride + 1
    itemsize = 4 if bk.dtype_name == "float32" else 8
    if per_chunk is not None:
        _set_workspace(monkeypatch, per_chunk * itemsize * cin * k**nd * out**nd)
    monkeypatch.setitem(ops.KEEP_BYTES, "numpy", 2**30 if keep else 0)
    layer_cls, conv, a_shape, w_shape = _conv_case(nd, cin, cout, size, k, stride, padding, n)
    rng = np.random.default_rng(cin * 1000 + size * 10 + k)
    W = rounded(rng.uniform(-0.5, 0.5, w_shape), bk.dtype_name)
    b = rounded(rng.uniform(-0.5, 0.5, cout), bk.dtype_name)
    A = rounded(rng.standard_normal(a_shape), bk.dtype_name)
    W_in, b_in = W.astype(bk.dtype_name), b.astype(bk.dtype_name)  # parameters in bk's dtype
    inits = {"weight_init_fn": lambda *_: W_in, "bias_init_fn": lambda *_: b_in}

    def check() -> None:
        layer = layer_cls(cin, cout, k, stride, padding, **inits)
        A_bk = on(bk, A)
        before = snapshot(A_bk)
        Z = layer.forward(A_bk)
        # on NumPy each of the threads gets its share of the budget, and the chunk count is a
        # multiple of the thread count (one more chunk each rather than an idle thread), at most
        # one chunk per sample
        if not isinstance(layer._engine, ReferenceConv):  # the reference keeps no chunks
            workers = threads.num_threads() if bk.name == "numpy" else 1
            chunks = 1 if per_chunk is None else -(-n // max(1, per_chunk // workers))
            assert len(layer._engine._chunks) == min(n, -(-chunks // workers) * workers)
            kept = (keep and bk.name == "numpy") or per_chunk is None
            kept_name = "_cols" if isinstance(layer._engine, StridedConv) else "_rows"
            assert (getattr(layer._engine, kept_name) is not None) is kept

        def torch_fn(A, W, b):
            return conv(A, W, b, stride=stride, padding=padding)

        dLdZ = rounded(rng.standard_normal(tuple(Z.shape)), bk.dtype_name)
        Z_ref, grads = torch_reference(torch_fn, {"A": A, "W": W, "b": b}, dLdZ)
        assert_close(Z, Z_ref, bk, "Z")
        first = [layer.backward(on(bk, dLdZ)), layer.dLdW, layer.dLdb]
        assert_close(first[0], grads["A"], bk, "dLdA")
        assert_close(first[1], grads["W"], bk, "dLdW")
        assert_close(first[2], grads["b"], bk, "dLdb")
        np.testing.assert_array_equal(snapshot(A_bk), before)  # the input is not modified
        # the first backward wrote dL/dA's rows over the kept ones: a second gathers again
        second = [layer.backward(on(bk, dLdZ)), layer.dLdW, layer.dLdb]
        for a, b_ in zip(first, second):
            assert_same_result(snapshot(a), snapshot(b_), bk)

    # NumPy and torch: their fast engine, then the reference; elsewhere the reference alone
    for mode in ["auto", "never"] if bk.name in ("numpy", "torch") else ["auto"]:
        with fast_paths(mode):
            check()


@pytest.mark.parametrize("cin", [2, 25])
@pytest.mark.parametrize("min_channels", [1, 10**9], ids=["rowgather", "im2row"])
@pytest.mark.parametrize("stride", [1, 2])
def test_numpy_conv_non_contiguous_input_in_chunks(
    monkeypatch, tiny_workspace, cin, min_channels, stride
):
    """A strided, transposed NumPy view as input: same results as its contiguous copy's
    float64 PyTorch oracle, on both NumPy paths."""
    monkeypatch.setattr(rowconv, "MIN_CHANNELS", min_channels)
    _without_nchw(monkeypatch)
    rng = np.random.default_rng(cin)
    base = rng.standard_normal((9, 4, cin, 3)).astype(np.float32)
    A = np.transpose(base, (3, 2, 0, 1))[..., ::2, :]  # (3, cin, 5, 4), no unit stride
    assert not A.flags.c_contiguous
    W = rng.uniform(-0.5, 0.5, (5, cin, 2, 2)).astype(np.float32)
    b = rng.uniform(-0.5, 0.5, 5).astype(np.float32)

    with use_backend("numpy", None, "float32") as bk:
        layer = L.Conv2d(
            cin, 5, 2, stride, 1, weight_init_fn=lambda *_: W, bias_init_fn=lambda *_: b
        )
        Z = layer.forward(A)
        assert isinstance(layer._engine, rowconv.RowGatherConv2d) is (cin >= min_channels)
        dLdZ = rng.standard_normal(Z.shape).astype(np.float32)
        dLdA = layer.backward(dLdZ)

        def torch_fn(A, W, b):
            return F.conv2d(A, W, b, stride=stride, padding=1)

        Z_ref, grads = torch_reference(torch_fn, {"A": A, "W": W, "b": b}, dLdZ)
        assert_close(Z, Z_ref, bk, "Z")
        assert_close(dLdA, grads["A"], bk, "dLdA")
        assert_close(layer.dLdW, grads["W"], bk, "dLdW")


# ------------------------------------------------------- row-gather convolution (NumPy)


@pytest.fixture
def thread_count(monkeypatch):
    """``set(n)`` fixes portaconv's thread count for one test; the setting is restored."""
    monkeypatch.setattr(threads, "_requested", None)
    monkeypatch.setattr(threads, "_env_read", True)
    return threads.set_num_threads


ROW_CASES = [  # cin, cout, (H, W), k, stride, padding, n
    (4, 3, (7, 9), 2, 1, 0, 5),  # the fewest channels it takes; not square
    (5, 4, (11, 11), 5, 1, 2, 4),  # odd size, 5x5, "same" padding
    (8, 6, (6, 6), 3, 1, 1, 7),
    (16, 8, (12, 10), 3, 1, 2, 3),  # padding past the kernel's half
    (6, 16, (14, 14), 5, 1, 0, 9),  # LeNet-5's second layer
    # stride 2: R's rows in two parity classes, the odd class one row shorter or not
    (4, 5, (9, 10), 3, 2, 1, 3),
    (5, 3, (8, 7), 2, 2, 0, 4),  # K = stride: each class read by one kernel row
    (6, 4, (11, 12), 5, 2, 2, 1),  # batch 1
    (4, 3, (7, 9), 4, 2, 3, 2),  # padding past the kernel's half, even K
]


@pytest.mark.parametrize("workers", [1, 2])
def test_row_conv_without_input_gradient(monkeypatch, thread_count, workers):
    """``needs_input_grad = False``: no dL/dA (None), dL/dW and dL/db still PyTorch's."""
    thread_count(workers)
    _set_workspace(monkeypatch, 2**14)  # several chunks
    rng = np.random.default_rng(3)
    A = rng.standard_normal((6, 8, 9, 9)).astype(np.float32)
    with use_backend("numpy", None, "float32") as bk:
        layer = L.Conv2d(8, 5, 3, 1, 1)
        layer.needs_input_grad = False
        Z = layer.forward(A)
        assert isinstance(layer._engine, rowconv.RowGatherConv2d) and len(layer._engine._chunks) > 1
        dLdZ = rng.standard_normal(Z.shape).astype(np.float32)
        assert layer.backward(dLdZ) is None
        _, grads = torch_reference(
            lambda A, W, b: F.conv2d(A, W, b, padding=1),
            {"A": A, "W": snapshot(layer.W), "b": snapshot(layer.b)},
            dLdZ,
        )
        assert_close(layer.dLdW, grads["W"], bk, "dLdW")
        assert_close(layer.dLdb, grads["b"], bk, "dLdb")


@pytest.mark.parametrize("nhwc", [True, False], ids=["nhwc", "nchw"])
@pytest.mark.parametrize("cin,cout,size,k,stride,padding,n", ROW_CASES[:2] + ROW_CASES[5:7])
def test_row_conv_forward_pass_either_way(
    monkeypatch, thread_count, nhwc, cin, cout, size, k, stride, padding, n
):
    """The forward's pass to NCHW with Z seen as NHWC (``NHWC_PASS_MIN_CHANNELS`` at 1)
    and as it is: PyTorch's Z (float64, chunks of two samples between two threads)."""
    thread_count(2)
    _, per_sample = _force_engine(monkeypatch, "rowgather", cin, size, k, stride, padding, 8)
    _set_workspace(monkeypatch, 2 * per_sample * 2)
    monkeypatch.setattr(rowconv, "NHWC_PASS_MIN_CHANNELS", 1 if nhwc else 10**9)
    rng = np.random.default_rng(cout * 10 + k)
    W, b = rng.standard_normal((cout, cin, k, k)), rng.standard_normal(cout)
    A = rng.standard_normal((n, cin, *size))
    with use_backend("numpy", None, "float64") as bk:
        layer = L.Conv2d(cin, cout, k, stride, padding, lambda *_: W, lambda *_: b)
        Z = layer.forward(A)
        assert isinstance(layer._engine, rowconv.RowGatherConv2d)
        Z_ref = F.conv2d(*(torch.from_numpy(x) for x in (A, W, b)), stride=stride, padding=padding)
        assert_close(Z, Z_ref.numpy(), bk, "Z")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("stride,size", [(1, (14, 15)), (2, (14, 30))])
@pytest.mark.parametrize("keep", [True, False])
def test_row_conv_input_gradient_rows_4kib_apart(
    monkeypatch, thread_count, dtype, stride, size, keep
):
    """Chunks whose dR^T rows would be a multiple of 4 KiB apart (2x2 kernel, padding 1:
    16 rows of R by 16 outputs a sample, chunks of 4 samples) take rows one cache line
    further apart in R's memory: Z and the gradients are still PyTorch's (float64)."""
    thread_count(1)
    cin, cout, k, padding, n, per_chunk = 4, 3, 2, 1, 8, 4
    itemsize = np.dtype(dtype).itemsize
    _, per_sample = _force_engine(monkeypatch, "rowgather", cin, size, k, stride, padding, itemsize)
    _set_workspace(monkeypatch, per_chunk * per_sample)
    monkeypatch.setitem(ops.KEEP_BYTES, "numpy", 2**30 if keep else 0)
    length = 16 * per_chunk * 16  # R's rows in a chunk: (stride * H_q) * n * W_out
    assert (length * itemsize) % 4096 == 0 and rowconv._pitch(length, itemsize) > length
    rng = np.random.default_rng(stride)
    W = rng.standard_normal((cout, cin, k, k)).astype(dtype)
    b = rng.standard_normal(cout).astype(dtype)
    A = rng.standard_normal((n, cin, *size)).astype(dtype)
    with use_backend("numpy", None, dtype) as bk:
        layer = L.Conv2d(cin, cout, k, stride, padding, lambda *_: W, lambda *_: b)
        before = snapshot(A)
        Z = layer.forward(A)
        assert isinstance(layer._engine, rowconv.RowGatherConv2d)
        assert [c.stop - c.start for c in layer._engine._chunks] == [per_chunk, per_chunk]
        dLdZ = rng.standard_normal(Z.shape).astype(dtype)
        Z_ref, grads = torch_reference(
            lambda A, W, b: F.conv2d(A, W, b, stride=stride, padding=padding),
            {"A": A, "W": W, "b": b},
            dLdZ,
        )
        _check_layer_against(layer, A, before, Z, dLdZ, Z_ref, grads, bk, dtype)


@pytest.mark.parametrize(
    "engine,shape,conv,workspace",
    [
        ("RowGatherConv2d", (24, 8, 10, 10), (8, 6, 3, 1, 1), 2**15),
        ("RowGatherConv2d", (24, 8, 10, 10), (8, 6, 3, 2, 1), 2**14),
        ("NCHWConv2d", (24, 1, 28, 28), (1, 6, 5, 1, 2), 2**13),
    ],
)
def test_engine_threads_give_the_same_numbers_every_time(
    monkeypatch, thread_count, engine, shape, conv, workspace
):
    """Chunks go to whichever thread is free, but each chunk's numbers do not depend on the
    thread and dL/dW is summed in chunk order: repeated calls agree bit for bit."""
    thread_count(2)
    _set_workspace(monkeypatch, workspace)  # many chunks
    monkeypatch.setattr(nchw, "MIN_POSITIONS", 10**9)  # the strided case: the row gather
    rng = np.random.default_rng(11)
    A = rng.standard_normal(shape).astype(np.float32)
    with use_backend("numpy", None, "float32"):
        layer = L.Conv2d(*conv)
        runs = []
        for _ in range(4):
            Z = layer.forward(A)
            dA = layer.backward(np.ones_like(Z))
            runs.append((Z, dA, layer.dLdW, layer.dLdb))
        assert type(layer._engine).__name__ == engine and len(layer._engine._chunks) >= 6
    for run in runs[1:]:
        for a, b in zip(run, runs[0]):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("workers", [1, 2, 3])
@pytest.mark.parametrize("nd, stride, padding", [(2, 2, 1), (2, 1, 0), (1, 3, 2)])
def test_im2row_threads_match_torch_every_time(
    monkeypatch, thread_count, workers, nd, stride, padding
):
    """The im2row engine's chunks shared between 1-3 threads: PyTorch's numbers, and the
    same bits on every call however the chunks fall to the threads."""
    thread_count(workers)
    monkeypatch.setattr(rowconv, "MIN_CHANNELS", 10**9)  # im2row even for stride 1
    _without_nchw(monkeypatch)
    _set_workspace(monkeypatch, 2**8)  # many chunks
    rng = np.random.default_rng(workers * 10 + nd)
    shape = (13, 3, *(9,) * nd)
    A = rng.standard_normal(shape).astype(np.float32)
    conv = F.conv2d if nd == 2 else F.conv1d
    with use_backend("numpy", None, "float32") as bk:
        layer = (L.Conv2d if nd == 2 else L.Conv1d)(3, 5, 3, stride, padding)
        runs = []
        for _ in range(3):
            Z = layer.forward(A)
            dLdZ = np.ones_like(Z) + np.arange(Z.size, dtype=np.float32).reshape(Z.shape) / Z.size
            runs.append((Z, layer.backward(dLdZ), layer.dLdW, layer.dLdb))
        assert isinstance(layer._engine, Im2RowConv)
        assert len(layer._engine._chunks) >= 2 * workers
        Z_ref, grads = torch_reference(
            lambda A, W, b: conv(A, W, b, stride=stride, padding=padding),
            {"A": A, "W": snapshot(layer.W), "b": snapshot(layer.b)},
            dLdZ,
        )
        for got, expected, what in zip(
            runs[0], (Z_ref, grads["A"], grads["W"], grads["b"]), ("Z", "dLdA", "dLdW", "dLdb")
        ):
            assert_close(got, expected, bk, what)
    for run in runs[1:]:
        for a, b in zip(run, runs[0]):
            np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------ NCHW convolution (NumPy)

NCHW_CASES = [  # cin, cout, (H, W), k, stride, padding, n
    (1, 6, (13, 11), 5, 1, 2, 5),  # LeNet-5's first layer, odd and not square
    (1, 4, (9, 9), 3, 2, 1, 1),  # batch 1, strided
    (2, 3, (7, 10), 2, 3, 0, 4),  # stride past the kernel: input columns never read
    (3, 5, (8, 8), 3, 1, 4, 3),  # padding past the kernel
    (8, 6, (10, 10), 1, 1, 0, 4),  # 1x1: the input is the window matrix, no copy
    (6, 4, (21, 20), 3, 2, 1, 3),  # many channels, strided
    (5, 3, (11, 11), 1, 2, 1, 3),  # 1x1, strided and padded: gathered
    (3, 4, (17,), 3, 1, 1, 5),  # 1-d (Conv1d): a 2-d convolution of height 1
    (16, 6, (40,), 5, 2, 0, 3),  # 1-d strided, the last input column unread
    (2, 5, (9,), 4, 3, 2, 1),  # 1-d, batch 1, stride past the kernel, padding
    (4, 3, (7,), 1, 1, 0, 4),  # 1-d pointwise: the input is the window matrix
]


def _force_engine(monkeypatch, engine, cin, size, k, stride, padding, itemsize):
    """Make convolutions take ``engine`` ("rowgather" or "nchw") whatever the shape;
    returns its class and the bytes one sample's gathered matrix takes in it."""
    out = [(m + 2 * padding - k) // stride + 1 for m in size]
    if engine == "nchw":
        monkeypatch.setattr(nchw, "MAX_CHANNELS", 10**9)
        monkeypatch.setattr(nchw, "MIN_POSITIONS_1D", 0)
        return NCHWConv2d, itemsize * cin * k ** len(size) * math.prod(out)
    _without_nchw(monkeypatch)
    rows = -(-(size[0] + 2 * padding) // stride) * stride  # the padded height, rounded up
    return rowconv.RowGatherConv2d, itemsize * rows * out[1] * k * cin


@pytest.mark.parametrize(
    "engine,cin,cout,size,k,stride,padding,n",
    [("rowgather", *case) for case in ROW_CASES] + [("nchw", *case) for case in NCHW_CASES],
)
@pytest.mark.parametrize("workers", [1, 2, 3])
@pytest.mark.parametrize("per_chunk,keep", [(None, True), (1, False), (2, True)])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_numpy_engine_matches_torch(
    monkeypatch,
    thread_count,
    engine,
    cin,
    cout,
    size,
    k,
    stride,
    padding,
    n,
    workers,
    per_chunk,
    keep,
    dtype,
):
    """The row-gather and NCHW NumPy engines (the NCHW one in 1-d too) against float64
    PyTorch: Z, dL/dA, dL/dW, dL/db, with the batch in one chunk or in chunks of one or two
    samples (the last one smaller, the chunks dealt to 1-3 threads), forward's matrices kept
    for backward or gathered again; a second backward gives the same bits; dtype kept,
    input untouched."""
    thread_count(workers)
    itemsize = np.dtype(dtype).itemsize
    engine_cls, per_sample = _force_engine(
        monkeypatch, engine, cin, size, k, stride, padding, itemsize
    )
    if per_chunk is not None:  # the budget is split between the threads
        _set_workspace(monkeypatch, per_chunk * per_sample * workers)
    monkeypatch.setitem(ops.KEEP_BYTES, "numpy", 2**30 if keep else 0)
    rng = np.random.default_rng(cin * 100 + k * 10 + stride)
    nd = len(size)
    layer_cls, conv = (L.Conv1d, F.conv1d) if nd == 1 else (L.Conv2d, F.conv2d)
    W = rng.uniform(-0.5, 0.5, (cout, cin, *(k,) * nd)).astype(dtype)
    b = rng.uniform(-0.5, 0.5, cout).astype(dtype)
    A = rng.standard_normal((n, cin, *size)).astype(dtype)
    with use_backend("numpy", None, dtype) as bk:
        layer = layer_cls(cin, cout, k, stride, padding, lambda *_: W, lambda *_: b)
        before = snapshot(A)
        Z = layer.forward(A)
        assert isinstance(layer._engine, engine_cls)
        chunks = layer._engine._chunks
        fewest = 1 if per_chunk is None else -(-n // per_chunk)  # within the budget
        # ... rounded up to the same number for every thread, as far as the batch allows
        assert len(chunks) == min(n, -(-fewest // workers) * workers)
        assert [c.start for c in chunks] == [0, *(c.stop for c in chunks[:-1])]
        dLdZ = rng.standard_normal(Z.shape).astype(dtype)
        Z_ref, grads = torch_reference(
            lambda A, W, b: conv(A, W, b, stride=stride, padding=padding),
            {"A": A, "W": W, "b": b},
            dLdZ,
        )
        _check_layer_against(layer, A, before, Z, dLdZ, Z_ref, grads, bk, dtype)


def _check_layer_against(layer, A, before, Z, dLdZ, Z_ref, grads, bk, dtype) -> list:
    """Z and the gradients of one backward against PyTorch's, each in ``dtype``; a second
    backward gives the same bits; the input is as it was (``before``). Returns the first
    backward's [dL/dA, dL/dW, dL/db]."""
    assert_close(Z, Z_ref, bk, "Z")
    assert Z.dtype == np.dtype(dtype)
    first = [layer.backward(dLdZ), layer.dLdW, layer.dLdb]
    for got, name in zip(first, "AWb"):
        assert got.dtype == np.dtype(dtype)
        assert_close(got, grads[name], bk, "dLd" + name)
    second = [layer.backward(dLdZ), layer.dLdW, layer.dLdb]
    for a, b_ in zip(first, second):
        np.testing.assert_array_equal(a, b_)
    np.testing.assert_array_equal(A, before)
    return first


@pytest.mark.parametrize(
    "cin,cout,size,k,stride,padding,n", [case for case in NCHW_CASES if case[4] > 1]
)
def test_nchw_strided_input_gradient(monkeypatch, cin, cout, size, k, stride, padding, n):
    """Strided dL/dA (by parity planes in 2-d): PyTorch's (float64), in chunks of two
    samples."""
    _force_engine(monkeypatch, "nchw", cin, size, k, stride, padding, 8)
    nd = len(size)
    _set_workspace(monkeypatch, 2 * 8 * cin * k**nd * math.prod(size))
    layer_cls, conv = (L.Conv1d, F.conv1d) if nd == 1 else (L.Conv2d, F.conv2d)
    rng = np.random.default_rng(k * 10 + stride)
    W = rng.standard_normal((cout, cin, *(k,) * nd))
    b = rng.standard_normal(cout)
    A = rng.standard_normal((n, cin, *size))
    with use_backend("numpy", None, "float64") as bk:
        layer = layer_cls(cin, cout, k, stride, padding, lambda *_: W, lambda *_: b)
        dLdZ = rng.standard_normal(layer.forward(A).shape)
        _, grads = torch_reference(
            lambda A, W, b: conv(A, W, b, stride=stride, padding=padding),
            {"A": A, "W": W, "b": b},
            dLdZ,
        )
        layer.forward(A)
        assert_close(layer.backward(dLdZ), grads["A"], bk, "dLdA")


@pytest.mark.parametrize(
    "cin,cout,size,k,stride",
    [(1, 12, (9, 8), 3, 1), (3, 5, (7, 7), 3, 2), (6, 8, (5, 6), 1, 1), (4, 3, (11,), 3, 1)],
)
def test_nchw_weight_gradient_either_way(monkeypatch, cin, cout, size, k, stride):
    """dL/dW (with dL/db) as ``X @ dZ^T`` where X has more rows than dZ, else as
    ``dZ @ X^T``: PyTorch's numbers (float64), the cases on both sides of the rule."""
    _force_engine(monkeypatch, "nchw", cin, size, k, stride, 0, 8)
    nd = len(size)
    layer_cls, conv = (L.Conv1d, F.conv1d) if nd == 1 else (L.Conv2d, F.conv2d)
    rng = np.random.default_rng(cin + cout)
    W, b = rng.standard_normal((cout, cin, *(k,) * nd)), rng.standard_normal(cout)
    A = rng.standard_normal((3, cin, *size))
    with use_backend("numpy", None, "float64") as bk:
        layer = layer_cls(cin, cout, k, stride, 0, lambda *_: W, lambda *_: b)
        dLdZ = rng.standard_normal(layer.forward(A).shape)
        _, grads = torch_reference(
            lambda A, W, b: conv(A, W, b, stride=stride), {"A": A, "W": W, "b": b}, dLdZ
        )
        assert_close(layer.backward(dLdZ), grads["A"], bk, "dLdA")
        assert_close(layer.dLdW, grads["W"], bk, "dLdW")
        assert_close(layer.dLdb, grads["b"], bk, "dLdb")


@pytest.mark.parametrize("cap_samples", [2, 3])
def test_nchw_keeps_windows_up_to_its_own_cap(monkeypatch, cap_samples):
    """The NCHW engine keeps its window matrices for backward only up to MAX_KEEP_BYTES
    (below the library-wide KEEP_BYTES): a batch of 3 whose windows exceed a cap of 2
    samples' worth is gathered again in backward, one within the cap of 3 is kept; both
    give PyTorch's gradients (float64)."""
    monkeypatch.setitem(ops.KEEP_BYTES, "numpy", 2**30)
    per_sample = 8 * 1 * 3 * 3 * 6 * 6  # float64, C K K windows of 6x6 outputs
    monkeypatch.setattr(nchw, "MAX_KEEP_BYTES", cap_samples * per_sample)
    rng = np.random.default_rng(cap_samples)
    A = rng.standard_normal((3, 1, 6, 6))
    W, b = rng.standard_normal((4, 1, 3, 3)), rng.standard_normal(4)
    with use_backend("numpy", None, "float64") as bk:
        layer = L.Conv2d(1, 4, 3, 1, 1, lambda *_: W, lambda *_: b)
        Z = layer.forward(A)
        assert isinstance(layer._engine, NCHWConv2d)
        assert bool(layer._engine._kept) == (cap_samples >= 3)
        dLdZ = rng.standard_normal(Z.shape)
        Z_ref, grads = torch_reference(
            lambda A, W, b: F.conv2d(A, W, b, padding=1), {"A": A, "W": W, "b": b}, dLdZ
        )
        assert_close(Z, Z_ref, bk, "Z")
        assert_close(layer.backward(dLdZ), grads["A"], bk, "dLdA")
        assert_close(layer.dLdW, grads["W"], bk, "dLdW")
        assert_close(layer.dLdb, grads["b"], bk, "dLdb")


@pytest.mark.parametrize("k,stride,padding", [(5, 1, 2), (1, 1, 0), (3, 2, 1)])
@pytest.mark.parametrize("workers", [1, 2])
def test_nchw_conv_non_contiguous_input_and_gradient(
    monkeypatch, thread_count, k, stride, padding, workers
):
    """Strided, transposed NumPy views as input and as dL/dZ, in several chunks: PyTorch's
    numbers; without dL/dA (the first layer in training) dL/dW and dL/db are the same."""
    thread_count(workers)
    monkeypatch.setattr(nchw, "MAX_CHANNELS", 10**9)
    _set_workspace(monkeypatch, 2**10)
    rng = np.random.default_rng(k * 10 + stride)
    base = rng.standard_normal((18, 9, 2, 7)).astype(np.float32)
    A = np.transpose(base, (3, 2, 0, 1))[..., ::2, :]  # (7, 2, 9, 9), no unit stride
    assert not A.flags.c_contiguous
    with use_backend("numpy", None, "float32") as bk:
        layer = L.Conv2d(2, 5, k, stride, padding)
        Z = layer.forward(A)
        assert isinstance(layer._engine, NCHWConv2d) and len(layer._engine._chunks) > 1
        dLdZ = rng.standard_normal(Z.shape[::-1]).astype(np.float32).transpose(3, 2, 1, 0)
        assert not dLdZ.flags.c_contiguous
        Z_ref, grads = torch_reference(
            lambda A, W, b: F.conv2d(A, W, b, stride=stride, padding=padding),
            {"A": A, "W": snapshot(layer.W), "b": snapshot(layer.b)},
            dLdZ,
        )
        assert_close(Z, Z_ref, bk, "Z")
        assert_close(layer.backward(dLdZ), grads["A"], bk, "dLdA")
        assert_close(layer.dLdW, grads["W"], bk, "dLdW")
        layer.needs_input_grad = False
        layer.forward(A)
        assert layer.backward(dLdZ) is None
        assert_close(layer.dLdW, grads["W"], bk, "dLdW without dL/dA")
        assert_close(layer.dLdb, grads["b"], bk, "dLdb without dL/dA")


@pytest.mark.parametrize(
    "cin,k,stride,size,engine",
    [
        (8, 3, 1, 8, rowconv.RowGatherConv2d),  # 72 values a window: past MAX_WINDOW
        (7, 3, 1, 8, NCHWConv2d),  # 63: NCHW
        (16, 2, 1, 8, NCHWConv2d),  # 64
        (4, 5, 1, 8, rowconv.RowGatherConv2d),  # 100, and the fewest channels it takes
        (3, 5, 1, 8, NCHWConv2d),  # fewer: NCHW, whatever the size
        (3, 3, 1, 8, NCHWConv2d),
        (1, 1, 1, 3, NCHWConv2d),
        (8, 1, 1, 10, NCHWConv2d),  # 1x1 with 100 output positions
        (8, 1, 1, 9, Im2RowConv),  # 81: too few
        (8, 3, 2, 21, NCHWConv2d),  # strided with 100 output positions
        (8, 3, 2, 20, rowconv.RowGatherConv2d),  # fewer: stride 2 takes the row gather
        (8, 2, 2, 18, rowconv.RowGatherConv2d),
        (8, 3, 3, 20, Im2RowConv),  # stride 3 with too few outputs
        (8, 1, 2, 17, Im2RowConv),  # 1x1, stride 2, too few outputs
    ],
)
def test_each_numpy_engine_where_it_pays(cin, k, stride, size, engine):
    """NCHW for fewer than MAX_CHANNELS input channels, stride 1 with at most MAX_WINDOW
    values a window (K > 1), or strided or 1x1 with at least MIN_POSITIONS outputs; else
    the row gather for stride 1 or 2 (K > 1, K >= stride); else im2row."""
    assert rowconv.MIN_CHANNELS == nchw.MAX_CHANNELS == 4 and nchw.MIN_POSITIONS == 100
    assert nchw.MAX_WINDOW == 64
    assert rowconv.MAX_STRIDE == 2
    A = np.ones((2, cin, size, size), np.float32)
    with use_backend("numpy", None, "float32"):
        layer = L.Conv2d(cin, 2, k, stride)
        layer.forward(A)
        assert type(layer._engine) is engine


# ------------------------------------------------------ transposed convolution (NumPy)

TRANSPOSED_CASES = [  # cin, cout, in size, K, upsampling factor, n
    (5, 3, (6, 7), 3, 2, 4),  # not square
    (4, 6, (5, 5), 4, 3, 3),  # factor 3, even K
    (3, 2, (4, 6), 2, 3, 1),  # batch 1, factor past the kernel: zero rows in Z
    (2, 4, (5, 4), 3, 1, 3),  # factor 1: a "full" convolution
    (6, 5, (4, 4), 1, 2, 3),  # 1x1: Z has zero rows and columns between the values
    (3, 4, (9,), 3, 2, 5),  # 1-d
    (4, 2, (7,), 5, 3, 2),
    (2, 3, (8,), 1, 1, 3),  # 1-d 1x1, factor 1: pointwise
]


@pytest.mark.parametrize("cin,cout,size,K,k,n", TRANSPOSED_CASES)
@pytest.mark.parametrize("workers", [1, 2, 3])
@pytest.mark.parametrize("per_chunk", [None, 1, 2])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_transposed_engine_matches_torch(
    monkeypatch, thread_count, cin, cout, size, K, k, n, workers, per_chunk, dtype
):
    """The NumPy transposed-convolution engine against float64 PyTorch
    (``conv_transpose{1,2}d`` with the handout's weights flipped and swapped): Z, dL/dA,
    dL/dW, dL/db, with the batch in one chunk or in chunks of one or two samples on 1-3
    threads, input and gradient non-contiguous; a second backward gives the same bits;
    without dL/dA the same dL/dW and dL/db."""
    thread_count(workers)
    nd = len(size)
    itemsize = np.dtype(dtype).itemsize
    if per_chunk is not None:  # the window matrix of one sample: C_out K^d x (input positions)
        _set_workspace(monkeypatch, per_chunk * itemsize * cout * K**nd * math.prod(size) * workers)
    layer_cls = L.ConvTranspose1d if nd == 1 else L.ConvTranspose2d
    torch_fn = F.conv_transpose1d if nd == 1 else F.conv_transpose2d
    spatial = tuple(range(2, nd + 2))
    rng = np.random.default_rng(cin * 100 + K * 10 + k)
    W = rng.uniform(-0.5, 0.5, (cout, cin, *(K,) * nd)).astype(dtype)
    b = rng.uniform(-0.5, 0.5, cout).astype(dtype)
    A = np.swapaxes(rng.standard_normal((cin, n, *size)).astype(dtype), 0, 1)  # non-contiguous
    with use_backend("numpy", None, dtype) as bk:
        layer = layer_cls(cin, cout, K, k, lambda *_: W, lambda *_: b)
        before = snapshot(A)
        Z = layer.forward(A)
        assert isinstance(layer._engine, TransposedConv)
        chunks = layer._engine._conv._chunks
        fewest = 1 if per_chunk is None else -(-n // per_chunk)
        assert len(chunks) == min(n, -(-fewest // workers) * workers)
        dLdZ = np.swapaxes(rng.standard_normal((Z.shape[1], *Z.shape[:1], *Z.shape[2:])), 0, 1)
        dLdZ = dLdZ.astype(dtype)

        def reference(A, W, b):
            V = torch.flip(W, spatial).transpose(0, 1)
            return torch_fn(A, V, b, stride=k, padding=K - 1)

        Z_ref, grads = torch_reference(reference, {"A": A, "W": W, "b": b}, dLdZ)
        first = _check_layer_against(layer, A, before, Z, dLdZ, Z_ref, grads, bk, dtype)
        layer.needs_input_grad = False
        layer.forward(A)
        assert layer.backward(dLdZ) is None
        np.testing.assert_array_equal(layer.dLdW, first[1])
        np.testing.assert_array_equal(layer.dLdb, first[2])


# ------------------------------------------------------------------------------ threads

needs_blas_control = pytest.mark.skipif(
    not threads.blas_thread_control(),
    reason="NumPy's bundled OpenBLAS was not found (another BLAS or a source build): "
    "portaconv cannot set its thread count and runs its chunks in one thread",
)


@needs_blas_control
def test_run_threaded_runs_tasks_on_threads_with_single_threaded_blas():
    """Results in order; the tasks run on different threads while OpenBLAS is at 1 thread;
    its count is restored after, also when a task raises."""
    import threading

    get_count = threads._blas()[0]
    start = get_count()
    together = threading.Barrier(3, timeout=10)  # passes only if all three run at once

    def task(i):
        together.wait()
        return i, threading.get_ident(), get_count()

    results = threads.run_threaded([lambda i=i: task(i) for i in range(3)])
    assert [r[0] for r in results] == [0, 1, 2]
    assert results[0][1] == threading.get_ident()  # the caller runs the first
    assert len({r[1] for r in results}) == 3
    assert {r[2] for r in results} == {1}
    assert get_count() == start

    def fails():
        raise RuntimeError("task failed")

    with pytest.raises(RuntimeError, match="task failed"):
        threads.run_threaded([fails, lambda: None])
    with pytest.raises(RuntimeError, match="task failed"):
        threads.run_threaded([lambda: None, fails])
    assert get_count() == start


@needs_blas_control
def test_overlapping_threaded_calls_restore_the_blas_thread_count():
    """Two user threads whose threaded calls overlap: the count is 1 while either runs and
    the original once both have ended (not the 1 the second one saw when it began)."""
    import threading

    get_count = threads._blas()[0]
    start = get_count()
    first_inside, second_done = threading.Event(), threading.Event()
    seen = []

    def long_call():
        def task():
            first_inside.set()
            second_done.wait(10)
            seen.append(get_count())

        threads.run_threaded([task, lambda: None])

    def short_call():
        first_inside.wait(10)
        threads.run_threaded([lambda: seen.append(get_count()), lambda: None])
        seen.append(get_count())  # the first call still runs: still 1
        second_done.set()

    workers = [threading.Thread(target=long_call), threading.Thread(target=short_call)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(20)
    assert seen == [1, 1, 1]
    assert get_count() == start


@needs_blas_control
def test_a_blas_count_set_during_a_threaded_call_is_kept():
    """The program (threadpoolctl, say) sets OpenBLAS's count while a threaded call runs:
    the call's end leaves that count, not the one from before the call."""
    get_count, set_count, _, _ = threads._blas()
    start = get_count()
    wanted = 3 if start != 3 else 2
    try:
        threads.run_threaded([lambda: set_count(wanted), lambda: None])
        assert get_count() == wanted
        threads.run_threaded([lambda: None, lambda: None])  # an ordinary call restores it
        assert get_count() == wanted
    finally:
        set_count(start)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "m, k, n",
    [(128, 3136, 128), (128, 128, 3136), (131, 257, 63), (3, 700, 900), (16, 8, 8)],
)
def test_split_matmul_is_the_product(thread_count, monkeypatch, m, k, n, dtype):
    """Rows shared between 1-3 threads while OpenBLAS is held (or, small, not split; or
    not held: OpenBLAS's threads): float64's product within float rounding, the operands'
    dtype, transposed views as operands, and the same bits from call to call."""
    monkeypatch.setattr(ops, "SPLIT_MATMUL_MIN", 1 << 16)
    rng = np.random.default_rng(m + k + n)
    a = rng.uniform(-1, 1, (m, k)).astype(dtype)
    b_t = rng.uniform(-1, 1, (n, k)).astype(dtype)
    expected = a.astype(np.float64) @ b_t.T.astype(np.float64)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    for count, held in [(1, True), (2, True), (3, True), (2, False)]:
        thread_count(count)
        with threads.single_threaded_blas() if held else contextlib.nullcontext():
            out = ops.split_matmul(a, b_t.T)  # b a transposed view, as Linear's W^T
            assert out.dtype == dtype and out.shape == (m, n)
            np.testing.assert_allclose(out, expected, rtol=tol, atol=tol * np.sqrt(k))
            np.testing.assert_array_equal(ops.split_matmul(a, b_t.T), out)


@needs_blas_control
def test_split_matmul_shares_large_products_only(thread_count, monkeypatch):
    """While OpenBLAS is held, a product of SPLIT_MATMUL_MIN multiply-adds or more goes to
    ``run_threaded`` as one task per thread; a smaller one, one inside a task already, or
    one while OpenBLAS is not held (its own threads serve then) is a single product."""
    calls = []
    real = ops.run_threaded
    monkeypatch.setattr(ops, "run_threaded", lambda tasks: calls.append(len(tasks)) or real(tasks))
    thread_count(2)
    monkeypatch.setattr(ops, "SPLIT_MATMUL_MIN", 64 * 256 * 64)
    big = np.ones((64, 256), np.float32), np.ones((256, 64), np.float32)
    small = np.ones((64, 255), np.float32), np.ones((255, 64), np.float32)
    ops.split_matmul(*big)
    assert calls == []
    with threads.single_threaded_blas():
        np.testing.assert_array_equal(ops.split_matmul(*big), np.full((64, 64), 256, np.float32))
        assert calls == [2]
        ops.split_matmul(*small)
        assert calls == [2]
    task = lambda: ops.split_matmul(*big)  # noqa: E731
    inner = threads.run_threaded([task, task])
    assert calls == [2] and all(np.array_equal(r, inner[0]) for r in inner)


@needs_blas_control
def test_a_model_holds_openblas_at_one_thread_while_its_layers_run(thread_count, monkeypatch):
    """Sequential's forward and backward on NumPy, with a layer that threads its own work
    (a convolution, also inside nested Residual blocks), run with OpenBLAS at 1 thread (its
    idle threads would otherwise spin beside portaconv's), its count back afterwards. An
    MLP, or one portaconv thread, changes nothing."""
    from portaconv.models import Residual, Sequential

    get_count = threads._blas()[0]
    start = get_count()
    seen = []

    real_forward, real_backward = L.Identity.forward, L.Identity.backward

    def forward(self, A):  # a layer of portaconv's, recording the count it runs with
        seen.append(("forward", get_count(), threads.num_threads()))
        return real_forward(self, A)

    def backward(self, dLdZ):
        seen.append(("backward", get_count(), threads.num_threads()))
        return real_backward(self, dLdZ)

    monkeypatch.setattr(L.Identity, "forward", forward)
    monkeypatch.setattr(L.Identity, "backward", backward)

    thread_count(2)
    with use_backend("numpy", None, "float32"):
        model = Sequential(L.Conv1d(3, 4, 1), L.Identity())
        mlp = Sequential(L.Linear(300, 200), L.Identity())
        # the convolution inside a block inside a block: the holds nest
        nested = Sequential(Residual(Sequential(Residual(L.Conv1d(3, 3, 1)), L.Identity())))
    A = np.ones((64, 3, 100), np.float32)
    Z = model.forward(A)
    model.backward(np.ones(Z.shape, np.float32))
    assert seen == [("forward", 1, 2), ("backward", 1, 2)]
    assert get_count() == start
    seen.clear()
    nested.backward(nested.forward(A))
    assert seen == [("forward", 1, 2), ("backward", 1, 2)]
    assert get_count() == start
    thread_count(1)
    seen.clear()
    model.forward(A)
    assert seen == [("forward", start, 1)]
    thread_count(2)
    seen.clear()
    mlp.forward(np.ones((64, 300), np.float32))
    assert seen == [("forward", start, 2)]
    with fast_paths("never"):  # the reference half shares no work between threads
        seen.clear()
        model.forward(A)
        assert seen == [("forward", start, 2)]
    with use_backend("numpy", None, "float32"):
        assert execution_plan([L.Conv2d(1, 2, 3), L.Flatten()]).threads_own_work
        assert execution_plan([Residual(Sequential(L.Conv2d(1, 1, 3, padding=1)))]).threads_own_work
        assert not execution_plan([L.Flatten(), L.Linear(4, 2), L.ReLU()]).threads_own_work


@needs_blas_control
@pytest.mark.parametrize("wanted", [1, 3])
def test_a_count_a_layer_of_the_program_sets_inside_a_model_is_kept(thread_count, wanted):
    """A layer that is not portaconv's, inside a model that holds OpenBLAS at one thread,
    sees the program's count and sets another through threadpoolctl: after the model, the
    count is the one it set, 1 included (which the hold's own 1 used to hide)."""
    from threadpoolctl import threadpool_limits

    from portaconv.models import Sequential

    get_count = threads._blas()[0]
    start = get_count()
    seen = []

    class SetsTheCount:
        def forward(self, A):
            seen.append(get_count())
            threadpool_limits(wanted, user_api="blas")
            return A

        def backward(self, dLdZ):
            return dLdZ

    thread_count(2)
    try:
        threads._blas()[1](2)
        with use_backend("numpy", None, "float32"):
            model = Sequential(L.Conv1d(3, 4, 1), SetsTheCount(), L.Conv1d(4, 2, 1))
        model.forward(np.ones((64, 3, 100), np.float32))
        assert seen == [2]  # the program's count, not the hold's 1
        assert get_count() == wanted
    finally:
        threads._blas()[1](start)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(128, 6, 28, 28), (3, 70001), (5, 7)])
def test_relu_layer_threaded_is_torchs(thread_count, monkeypatch, shape, dtype):
    """ReLU's forward and backward on NumPy (parts on 1-3 threads for large arrays, sizes
    not a multiple of the zero row) are torch's relu and its gradient, bit for bit, with
    NaN, +-0 and +-inf among the inputs; so is a non-contiguous input."""
    monkeypatch.setattr(numpy_ops, "SPLIT_ELEMENTWISE_MIN", 1 << 16)
    rng = np.random.default_rng(sum(shape))
    Z = rng.standard_normal(shape).astype(dtype)
    flat = Z.reshape(-1)
    flat[:6] = [np.nan, -0.0, 0.0, np.inf, -np.inf, 1e-40]
    dA = rng.standard_normal(shape).astype(dtype)
    Zt = torch.from_numpy(Z.copy()).requires_grad_()
    At = torch.relu(Zt)
    At.backward(torch.from_numpy(dA))
    for count in (1, 2, 3):
        thread_count(count)
        layer = L.ReLU()
        np.testing.assert_array_equal(layer.forward(Z), At.detach().numpy())
        np.testing.assert_array_equal(layer.backward(dA), Zt.grad.numpy())
    strided = np.asfortranarray(Z)
    np.testing.assert_array_equal(L.ReLU().forward(strided), At.detach().numpy())


@pytest.mark.parametrize("nan", [False, True])
@pytest.mark.parametrize("kernel, stride", [(2, 2), (3, 2), (3, 1)])
def test_max_pool_shared_between_threads_is_torchs(thread_count, monkeypatch, kernel, stride, nan):
    """MaxPool2d and MaxPool1d on NumPy with the batch shared between 1-3 threads (5 and
    7 samples: uneven parts): torch's output and gradient; windows that overlap add up; a
    NaN in one sample sends the whole call to the portable loop, still torch's result."""
    import portaconv.backend.fast.numpy_ops as ops_module

    monkeypatch.setattr(ops_module, "SPLIT_POOL_MIN", 64)
    rng = np.random.default_rng(kernel * 10 + stride)
    for layer_cls, shape, pool in [
        (L.MaxPool2d, (5, 3, 9, 8), F.max_pool2d),
        (L.MaxPool1d, (7, 4, 21), F.max_pool1d),
    ]:
        A = rng.standard_normal(shape)
        if nan:
            A.reshape(-1)[A.size // 2] = np.nan
        At = torch.from_numpy(A.copy()).requires_grad_()
        Zt = pool(At, kernel, stride)
        dZ = rng.standard_normal(tuple(Zt.shape))
        Zt.backward(torch.from_numpy(dZ))
        for count in (1, 2, 3):
            thread_count(count)
            layer = layer_cls(kernel, stride)
            np.testing.assert_array_equal(layer.forward(A), Zt.detach().numpy())
            np.testing.assert_allclose(layer.backward(dZ), At.grad.numpy(), rtol=1e-12, atol=0)


@needs_blas_control
def test_a_call_while_another_thread_has_the_pool_runs_its_tasks_in_turn():
    """While one thread of the program is inside a threaded call, another's call runs its
    tasks one after another on its own thread: results in order, nothing waits on the first
    call; afterwards the pool serves calls again."""
    import threading

    inside, release = threading.Event(), threading.Event()
    holder = threading.Thread(
        target=lambda: threads.run_threaded([lambda: release.wait(10), inside.set])
    )
    holder.start()
    try:
        assert inside.wait(10)
        results = threads.run_threaded([lambda i=i: (i, threading.get_ident()) for i in range(3)])
        assert results == [(i, threading.get_ident()) for i in range(3)]
    finally:
        release.set()
        holder.join(10)
    results = threads.run_threaded([lambda: threading.get_ident()] * 3)
    assert len(set(results)) == 3


@needs_blas_control
def test_an_interrupted_wait_leaves_the_pool_to_new_threads(monkeypatch):
    """A wait for a worker that ends in an exception (an interrupt, say) raises it and gives
    up those threads (one may still run its task): the next call starts new ones."""
    import threading

    class Interrupted(BaseException):
        pass

    threads.run_threaded([lambda: None, lambda: None])
    before = list(threads._workers)

    def interrupted(self):
        raise Interrupted

    with monkeypatch.context() as patch:
        patch.setattr(threads._Worker, "wait", interrupted)
        with pytest.raises(Interrupted):
            threads.run_threaded([lambda: None, lambda: None])
    ids = threads.run_threaded([lambda: threading.get_ident()] * 2)
    assert not set(threads._workers) & set(before)
    assert len(set(ids)) == 2


_FORK_CHILD = """
import os, threading
import portaconv.backend.fast.threads as threads

threads.run_threaded([lambda: None, lambda: None])
read, write = os.pipe()
child = os.fork()
if child == 0:
    try:
        ids = threads.run_threaded([lambda: threading.get_ident()] * 3)
        os.write(write, f"{len(set(ids))} {threads._workers_pid == os.getpid()}".encode())
    finally:
        os._exit(0)
os.close(write)
print(os.read(read, 100).decode())
os.waitpid(child, 0)
"""


@needs_blas_control
@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX-only")
def test_a_forked_child_starts_its_own_pool():
    """A child forked after the parent used the pool (whose threads it does not inherit)
    runs threaded calls on threads of its own. In a fresh interpreter: this one may hold
    libraries (JAX) that must not be forked."""
    done = subprocess.run(
        [sys.executable, "-c", _FORK_CHILD], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "3 True"


@needs_blas_control
def test_threads_with_other_batch_sizes_convolve_concurrently(thread_count):
    """Four user threads, each its own Conv2d and batch size (2-5, so each asks the shared
    pool for another number of threads), four portaconv threads: no error, and every output
    is float64 PyTorch's."""
    import threading

    thread_count(4)
    rng = np.random.default_rng(5)
    W = rng.uniform(-0.5, 0.5, (3, 4, 3, 3))
    b = rng.uniform(-0.5, 0.5, 3)
    inputs = {n: rng.standard_normal((n, 4, 7, 7)) for n in (2, 3, 4, 5)}
    with use_backend("numpy", None, "float64"):
        layers = {n: L.Conv2d(4, 3, 3, 1, 1, lambda *_: W, lambda *_: b) for n in inputs}
    start = threading.Barrier(len(inputs), timeout=30)
    outputs, errors = {}, []

    def convolve(n):
        try:
            start.wait()
            outputs[n] = [layers[n].forward(inputs[n]) for _ in range(30)]
        except Exception as exc:  # reported below, with the batch size
            errors.append(f"batch {n}: {exc!r}")

    workers = [threading.Thread(target=convolve, args=(n,)) for n in inputs]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
    assert errors == []
    for n, A in inputs.items():
        expected = F.conv2d(torch.tensor(A), torch.tensor(W), torch.tensor(b), padding=1).numpy()
        for Z in outputs[n]:
            np.testing.assert_allclose(Z, expected, rtol=1e-12, atol=1e-12)


def test_num_threads_settings(monkeypatch, thread_count):
    thread_count(3)
    assert threads.num_threads() == 3
    thread_count(None)  # back to BLAS's own count (1 where BLAS cannot be controlled)
    expected = threads._blas()[0]() if threads.blas_thread_control() else 1
    assert threads.num_threads() == expected
    for bad, error in [(0, ValueError), (-2, ValueError), (2.0, TypeError), ("2", TypeError)]:
        with pytest.raises(error, match="set_num_threads"):
            threads.set_num_threads(bad)
    monkeypatch.setattr(threads, "_env_read", False)
    monkeypatch.setenv("PORTACONV_NUM_THREADS", "two")
    with pytest.raises(ValueError, match="PORTACONV_NUM_THREADS must be a positive integer"):
        threads.num_threads()
    monkeypatch.setenv("PORTACONV_NUM_THREADS", " 5 ")
    assert threads.num_threads() == 5


# -------------------------------------------------------------------------- max pooling


def _window_max_reference(x: np.ndarray, kernel: int, stride: int):
    """Float64 loop: the maximum of each window and the first row-major offset holding it
    (the first NaN if any)."""
    N, C, H, W = x.shape
    out_h, out_w = (H - kernel) // stride + 1, (W - kernel) // stride + 1
    Z = np.zeros((N, C, out_h, out_w))
    idx = np.zeros((N, C, out_h, out_w), dtype=np.int64)
    for i in range(out_h):
        for j in range(out_w):
            window = x[:, :, i * stride : i * stride + kernel, j * stride : j * stride + kernel]
            flat = window.reshape(N, C, -1)
            first = np.argmax(flat, axis=-1)  # NumPy: first maximum, first NaN
            idx[:, :, i, j] = first
            Z[:, :, i, j] = np.take_along_axis(flat, first[..., None], -1)[..., 0]
    return Z, idx


@pytest.mark.parametrize("kernel,stride,size", [(2, 2, 8), (3, 2, 9), (3, 1, 6), (2, 3, 10)])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("data", ["random", "ties", "nan"])
def test_numpy_window_max_first_maximum(kernel, stride, size, dtype, data):
    rng = np.random.default_rng(kernel * 10 + stride)
    if data == "ties":
        x = rng.integers(0, 3, (2, 3, size, size)).astype(dtype)  # many equal maxima
    else:
        x = rng.standard_normal((2, 3, size, size)).astype(dtype)
    if data == "nan":
        x[0, 1, 1, 1] = np.nan
        x[1, 2, -1, -2:] = np.nan  # two NaN in one window: the first one counts
    out = (size - kernel) // stride + 1
    Z, argmax = window_max(x, (kernel, kernel), (stride, stride), (out, out))
    Z_ref, idx_ref = _window_max_reference(x.astype(np.float64), kernel, stride)
    assert Z.dtype == x.dtype
    np.testing.assert_array_equal(Z, Z_ref.astype(dtype))  # NaN == NaN here
    np.testing.assert_array_equal(argmax, idx_ref)
    if data == "random":  # and the values agree with PyTorch
        torch_Z = F.max_pool2d(torch.from_numpy(x.astype(np.float64)), kernel, stride)
        np.testing.assert_array_equal(Z, torch_Z.numpy().astype(dtype))


@pytest.mark.parametrize(
    "kernel,stride,size", [(2, 2, 8), (2, 2, 9), (3, 2, 9), (3, 1, 6), (2, 3, 10)]
)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("grad", ["random", "non_contiguous", "inf_nan"])
def test_numpy_window_max_grad_matches_torch(kernel, stride, size, dtype, grad):
    """Tiled, non-overlapping with leftovers, and overlapping windows; a gradient with inf
    and NaN must reach only the chosen inputs (PyTorch's rule), not leak as 0 * inf."""
    rng = np.random.default_rng(size * 10 + kernel)
    x = rng.standard_normal((2, 3, size, size)).astype(dtype)
    out = (size - kernel) // stride + 1
    Z, argmax = window_max(x, (kernel, kernel), (stride, stride), (out, out))
    dLdZ = rng.standard_normal((2, 3, 2 * out, out)).astype(dtype)[:, :, ::2]
    if grad != "non_contiguous":
        dLdZ = np.ascontiguousarray(dLdZ)
    if grad == "inf_nan":
        dLdZ[0, 0, 0, 0], dLdZ[1, 2, -1, -1] = np.inf, np.nan
    dLdA = window_max_grad(dLdZ, argmax, x.shape, (kernel, kernel), (stride, stride), (out, out))
    x_t = torch.tensor(x.astype(np.float64), requires_grad=True)
    F.max_pool2d(x_t, kernel, stride).backward(torch.from_numpy(dLdZ.astype(np.float64)))
    assert dLdA.dtype == x.dtype and dLdA.shape == x.shape
    np.testing.assert_allclose(dLdA, x_t.grad.numpy(), rtol=1e-6 if dtype == "float32" else 1e-12)


@pytest.mark.parametrize("cls", [L.MaxPool2d, L.MeanPool2d])
@pytest.mark.parametrize("kernel,stride,size", [(2, 2, 9), (3, 2, 8), (2, 1, 5), (2, 3, 10)])
def test_pool_non_contiguous_numpy_input(cls, kernel, stride, size):
    """A NumPy view with negative and non-unit strides, forward and backward, against
    PyTorch in float64 (masked slice assignment for stride >= kernel, adds otherwise)."""
    rng = np.random.default_rng(size + kernel)
    base = rng.standard_normal((2, 3, size, 2 * size))
    A = base[:, ::-1, :, ::2]
    assert not A.flags.c_contiguous
    torch_pool = F.max_pool2d if cls is L.MaxPool2d else F.avg_pool2d
    with use_backend("numpy", None, "float64") as bk:
        layer = cls(kernel, stride)
        Z = layer.forward(A)
        dLdZ = rng.standard_normal(Z.shape)
        Z_ref, grads = torch_reference(
            lambda A: torch_pool(A, kernel, stride), {"A": np.ascontiguousarray(A)}, dLdZ
        )
        assert_close(Z, Z_ref, bk, "Z")
        assert_close(layer.backward(dLdZ), grads["A"], bk, "dLdA")


# ------------------------------------------------------------------- small helpers


def test_slice_add_on_read_only_numpy_array_returns_a_new_array():
    x = np.broadcast_to(np.zeros(4), (3, 4))  # read-only: the portable path copies
    y = slice_add(x, (slice(None), slice(1, 3)), np.ones((3, 2)))
    assert y is not x and np.all(x == 0)
    np.testing.assert_array_equal(y, np.array([[0.0, 1, 1, 0]] * 3))


def test_pad_spatial_matches_numpy_pad():
    x = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    np.testing.assert_array_equal(
        pad_spatial(x, (1, 2)), np.pad(x, [(0, 0), (0, 0), (1, 1), (2, 2)])
    )
    assert pad_spatial(x, (0, 0)) is x


@pytest.mark.parametrize("order", ["C", "F"])
def test_matmul_into_block_of_either_order(order):
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((5, 7)), rng.standard_normal((7, 3))
    block = Scratch(a)("out", (5, 3), order)
    result = matmul(a, b, block)
    np.testing.assert_allclose(result, a.astype(np.float64) @ b, rtol=1e-12)
    assert np.shares_memory(result, block)


def test_set_batch_and_channels_first_matrix():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 2, 3, 5))  # (C, n, H, W)
    bias = rng.standard_normal(4)
    out = np.zeros((6, 4, 3, 5))
    set_batch(out, slice(2, 4), x, (1, 0, 2, 3), bias)
    np.testing.assert_allclose(out[2:4], np.transpose(x, (1, 0, 2, 3)) + bias[:, None, None])
    assert np.all(out[:2] == 0) and np.all(out[4:] == 0)
    nchw = rng.standard_normal((2, 4, 3, 5))
    np.testing.assert_array_equal(
        channels_first_matrix(nchw), np.transpose(nchw, (1, 0, 2, 3)).reshape(4, -1)
    )


@pytest.mark.parametrize(
    "batch,per_item,budget", [(10, 3, 9), (7, 100, 1), (5, 1, 100), (9, 2, 8), (0, 4, 4)]
)
def test_batch_chunks_cover_the_batch_in_order(batch, per_item, budget):
    chunks = batch_chunks(batch, per_item, budget)
    covered = [i for chunk in chunks for i in range(chunk.start, chunk.stop)]
    assert covered == list(range(batch))
    sizes = [chunk.stop - chunk.start for chunk in chunks]
    assert sizes == sorted(sizes, reverse=True) and max(sizes) - min(sizes) <= 1
    assert all(size * per_item <= budget or size == 1 for size in sizes)
    if batch:  # the fewest chunks that respect the budget
        assert len(chunks) == -(-batch // max(1, min(batch, budget // per_item)))


@pytest.mark.parametrize("keep", [True, False])
def test_conv_second_backward_gives_the_same_gradients(monkeypatch, bk, keep):
    """Backward lets forward's kept matrices go; calling it again gathers them again."""
    _set_workspace(monkeypatch, 4 * 8 * 3 * 9 * 36)  # two chunks of 4 (in float64)
    monkeypatch.setitem(ops.KEEP_BYTES, "numpy", 2**30 if keep else 0)
    rng = np.random.default_rng(5)
    layer = L.Conv2d(3, 4, 3, 1, 1)
    A = on(bk, rng.standard_normal((7, 3, 6, 6)))
    Z = layer.forward(A)
    dLdZ = on(bk, rng.standard_normal(tuple(Z.shape)))
    first = [snapshot(layer.backward(dLdZ)), snapshot(layer.dLdW), snapshot(layer.dLdb)]
    second = [snapshot(layer.backward(dLdZ)), snapshot(layer.dLdW), snapshot(layer.dLdb)]
    for a, b in zip(first, second):
        assert_same_result(a, b, bk)
    _, grads = torch_reference(
        lambda A, W, b: F.conv2d(A, W, b, padding=1),
        {"A": snapshot(A), "W": snapshot(layer.W), "b": snapshot(layer.b)},
        snapshot(dLdZ),
    )
    assert_close(layer.dLdW, grads["W"], bk, "dLdW")


# ------------------------------------------------------- batch norm and linear on threads


def _norm_engine(model, bn):
    """The NumPy batch-norm pass that ran ``bn`` in ``model``'s last forward, or None."""
    return next(step._engine for step in model._ran.steps if getattr(step, "norm", None) is bn)


@pytest.mark.parametrize("workers", [1, 2, 3])
@pytest.mark.parametrize("shape", [(13, 3, 6, 5), (9, 4, 7), (21, 5)], ids=["2d", "1d-L", "1d"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("relu", [False, True], ids=["bn", "bn+relu"])
def test_batchnorm_fast_path_matches_torch(monkeypatch, thread_count, workers, shape, dtype, relu):
    """The NumPy batch-norm path (chunks between threads, shifted one-pass statistics), alone
    or followed by a ReLU in a Sequential (one fused pass each way): PyTorch's output,
    running statistics and gradients, a channel with a large mean included, and the same
    bits on every call; after the fused pass the ReLU layer keeps what its own backward
    needs, and the two layers' own backward agree with the fused one."""
    import portaconv.backend.fast.norm as norm
    from portaconv.models import Sequential

    thread_count(workers)
    monkeypatch.setattr(norm, "CHUNK_BYTES", 256)  # small inputs take it, in many chunks
    monkeypatch.setattr(norm, "MIN_ROWS", 1)
    rng = np.random.default_rng(workers + len(shape))
    C = shape[1]
    A = rng.standard_normal(shape) * 2.0
    A[:, 0] += 1000.0  # float32 would lose this channel's variance without the shift
    A = A.astype(dtype)
    dLdZ = rng.standard_normal(shape).astype(dtype)
    BW, Bb = rng.uniform(0.5, 1.5, C), rng.standard_normal(C)
    cls = L.BatchNorm2d if len(shape) == 4 else L.BatchNorm1d
    with use_backend("numpy", None, dtype):
        layer, act = cls(C), L.ReLU()
        layer.BW, layer.Bb = BW.astype(dtype), Bb.astype(dtype)
        model = Sequential(layer, act) if relu else Sequential(layer)
        runs = []
        for _ in range(2):
            layer.running_M, layer.running_V = np.zeros(C, dtype), np.ones(C, dtype)
            Z = model.forward(A)
            assert _norm_engine(model, layer) is not None, "the fast path ran"
            assert _norm_engine(model, layer).relu is relu
            dLdA = model.backward(dLdZ)
            runs.append((Z, dLdA, layer.dLdBW, layer.dLdBb, layer.running_M, layer.running_V))
        if relu:  # the layers' own backward, the reference, after the fused forward
            np.testing.assert_array_equal(act.A, Z)
            tol = 1e-12 if dtype == "float64" else 1e-4
            own = layer.backward(act.backward(dLdZ))
            np.testing.assert_allclose(own, dLdA, rtol=tol, atol=tol * np.abs(dLdA).max())
        running_M = torch.zeros(C, dtype=torch.float64)
        running_V = torch.ones(C, dtype=torch.float64)

        def torch_fn(A, BW, Bb):
            Z = F.batch_norm(A, running_M, running_V, BW, Bb, training=True)
            return F.relu(Z) if relu else Z

        _assert_batchnorm_runs(runs, torch_fn, (A, BW, Bb), dLdZ, (running_M, running_V), dtype)


def _assert_batchnorm_runs(runs, torch_fn, inputs, dLdZ, running, dtype) -> None:
    """``runs``: two calls' (output, dL/dA, dL/dBW, dL/dBb, running mean, running variance),
    each as ``torch_fn(A, BW, Bb)`` gives them in float64 (updating the torch tensors
    ``running``), in ``dtype``; the second call the same bits as the first."""
    A, BW, Bb = inputs
    Z_ref, grads = torch_reference(torch_fn, {"A": A, "BW": BW, "Bb": Bb}, dLdZ)
    expected = (Z_ref, grads["A"], grads["BW"], grads["Bb"], *(r.numpy() for r in running))
    # float32: the inputs near 1000 carry 1e-4 of rounding into every statistic
    tol = 1e-10 if dtype == "float64" else 2e-3
    for got, want, what in zip(runs[0], expected, ("Z", "dLdA", "dLdBW", "dLdBb", "M", "V")):
        assert got.dtype == np.dtype(dtype), what
        scale = max(1.0, float(np.abs(want).max()))
        np.testing.assert_allclose(got, want, rtol=0, atol=tol * scale, err_msg=what)
    for a, b in zip(runs[1], runs[0]):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize(
    "geometry",
    ["2d", "2d-overlapping", "1d"],  # MaxPool2d(2), MaxPool2d(3, 2), MaxPool1d(2)
)
@pytest.mark.parametrize("scales", ["positive", "one negative", "one zero"])
def test_batchnorm_relu_maxpool_pools_first_and_matches_torch(
    monkeypatch, thread_count, workers, dtype, geometry, scales
):
    """BatchNorm + ReLU + max pooling in a Sequential on the NumPy fast path: with every
    scale BW / sqrt(V + eps) positive the input is pooled first (the normalised activations
    never written at full size); with a negative or a zero scale the three run in turn. Either
    way PyTorch's output, dL/dA, dL/dBW, dL/dBb and running statistics (float64 reference),
    windows with tied maxima and a channel with a large mean included; the same bits on a
    second call; plain ``backward`` after the fused forward is refused."""
    import portaconv.backend.fast.norm as norm
    from portaconv.models import Sequential

    thread_count(workers)
    monkeypatch.setattr(norm, "CHUNK_BYTES", 256)  # small inputs take it, in many chunks
    monkeypatch.setattr(norm, "MIN_ROWS", 1)
    rng = np.random.default_rng(len(geometry) + workers)
    shape = (6, 4, 9, 10) if geometry.startswith("2d") else (7, 4, 15)
    C = shape[1]
    A = np.round(rng.standard_normal(shape) * 2.0, 1)  # a 0.1 grid: many windows tie
    A[:, 0] += 1000.0  # float32 would lose this channel's variance without the shift
    A = A.astype(dtype)
    BW, Bb = rng.uniform(0.5, 1.5, C), rng.standard_normal(C)
    if scales == "one negative":
        BW[2] = -0.7
    elif scales == "one zero":
        BW[1] = 0.0
    kernel, stride = (3, 2) if geometry == "2d-overlapping" else (2, 2)
    bn_cls, pool_cls = (
        (L.BatchNorm2d, L.MaxPool2d) if geometry.startswith("2d") else (L.BatchNorm1d, L.MaxPool1d)
    )
    with use_backend("numpy", None, dtype):
        bn, relu, pool = bn_cls(C), L.ReLU(), pool_cls(kernel, stride)
        bn.BW, bn.Bb = BW.astype(dtype), Bb.astype(dtype)
        model = Sequential(bn, relu, pool)
        runs = []
        for _ in range(2):
            bn.running_M, bn.running_V = np.zeros(C, dtype), np.ones(C, dtype)
            Z = model.forward(A)
            engine = _norm_engine(model, bn)
            assert engine is not None and engine.pooled is (scales == "positive")
            dLdZ = np.random.default_rng(1).standard_normal(Z.shape).astype(dtype)
            dLdA = model.backward(dLdZ)
            runs.append((Z, dLdA, bn.dLdBW, bn.dLdBb, bn.running_M, bn.running_V))
        if scales == "positive":
            with pytest.raises(ValueError, match="backpropagate through the model"):
                bn.backward(np.ones(A.shape, dtype))
    running_M = torch.zeros(C, dtype=torch.float64)
    running_V = torch.ones(C, dtype=torch.float64)
    pool_fn = F.max_pool2d if geometry.startswith("2d") else F.max_pool1d

    def torch_fn(A, BW, Bb):
        Z = F.batch_norm(A, running_M, running_V, BW, Bb, training=True)
        return pool_fn(F.relu(Z), kernel, stride)

    _assert_batchnorm_runs(runs, torch_fn, (A, BW, Bb), dLdZ, (running_M, running_V), dtype)


def test_batchnorm_relu_maxpool_pooled_first_with_an_infinite_gradient(monkeypatch):
    """The pooled-first BatchNorm + ReLU + MaxPool2d step given an upstream gradient with an
    inf in one channel (its chunks then spread the gradient through the pooling's own
    backward, which keeps masked-out zeros exact): the other channels' dL/dA, dL/dBW and
    dL/dBb as PyTorch's, that channel's not finite anywhere, as PyTorch's."""
    import portaconv.backend.fast.norm as norm
    from portaconv.models import Sequential

    monkeypatch.setattr(norm, "CHUNK_BYTES", 256)
    monkeypatch.setattr(norm, "MIN_ROWS", 1)
    rng = np.random.default_rng(9)
    A = rng.standard_normal((5, 3, 6, 6))
    dLdZ = rng.standard_normal((5, 3, 3, 3))
    dLdZ[2, 1, 1, 1] = np.inf
    with use_backend("numpy", None, "float64"):
        bn = L.BatchNorm2d(3)
        model = Sequential(bn, L.ReLU(), L.MaxPool2d(2))
        Z = model.forward(A)
        assert _norm_engine(model, bn).pooled
        with np.errstate(invalid="ignore"):  # inf - inf in the channel with the inf
            dLdA = model.backward(dLdZ)
    running = torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)
    BW, Bb = np.ones(3), np.zeros(3)
    Z_ref, grads = torch_reference(
        lambda A, BW, Bb: F.max_pool2d(F.relu(F.batch_norm(A, *running, BW, Bb, training=True)), 2),
        {"A": A, "BW": BW, "Bb": Bb},
        dLdZ,
    )
    np.testing.assert_allclose(Z, Z_ref, rtol=0, atol=1e-10)
    for c in (0, 2):
        np.testing.assert_allclose(dLdA[:, c], grads["A"][:, c], rtol=0, atol=1e-10)
        np.testing.assert_allclose(bn.dLdBW[c], grads["BW"][c], rtol=0, atol=1e-10)
        np.testing.assert_allclose(bn.dLdBb[c], grads["Bb"][c], rtol=0, atol=1e-10)
    assert not np.isfinite(grads["A"][:, 1]).any() and not np.isfinite(dLdA[:, 1]).any()


def test_batchnorm_chunks_cover_enough_rows_for_the_gil(monkeypatch, thread_count):
    """Each chunk of the NumPy batch-norm path covers at least ``MIN_ROWS`` (sample,
    channel) rows, so its per-channel dot products let the other threads run (NumPy keeps
    the GIL through a matmul of at most 500 results); the chunks still cover the batch."""
    import portaconv.backend.fast.norm as norm

    thread_count(2)
    monkeypatch.setattr(norm, "CHUNK_BYTES", 256)  # bytes alone would give 1-sample chunks
    Z = np.random.default_rng(0).standard_normal((300, 4, 3, 3))
    engine = norm.BatchNormTrain(1e-5)
    engine.forward(Z, np.ones(4), np.zeros(4))
    sizes = [c.stop - c.start for c in engine._chunks]
    assert sum(sizes) == 300 and len(sizes) >= 2
    assert min(sizes) * 4 >= norm.MIN_ROWS > 500


@pytest.mark.parametrize("mode", ["eval", "portable", "leaky"])
def test_batchnorm_relu_unfused_where_the_fast_path_does_not_run(monkeypatch, mode):
    """Evaluation mode, an input below the fast path's size, or another activation: the
    layers run in turn (no fused pass), with PyTorch's results all the same."""
    import portaconv.backend.fast.norm as norm
    from portaconv.models import Sequential

    monkeypatch.setattr(norm, "CHUNK_BYTES", 2**30 if mode == "portable" else 256)
    rng = np.random.default_rng(4)
    A = rng.standard_normal((8, 3, 5, 5))
    dLdZ = rng.standard_normal(A.shape)
    with use_backend("numpy", None, "float64"):
        bn = L.BatchNorm2d(3)
        act = L.LeakyReLU(0.0) if mode == "leaky" else L.ReLU()
        model = Sequential(bn, act)
        if mode == "eval":
            model.eval()
        out = model.forward(A)
        engine = _norm_engine(model, bn)
        assert engine is None or not engine.relu
        dLdA = model.backward(dLdZ)
    running_M, running_V = torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)
    out_ref, grads = torch_reference(
        lambda A: F.relu(F.batch_norm(A, running_M, running_V, training=mode != "eval")),
        {"A": A},
        dLdZ,
    )
    np.testing.assert_allclose(out, out_ref, atol=1e-10)
    np.testing.assert_allclose(dLdA, grads["A"], atol=1e-10)


@pytest.mark.parametrize("input_grad", [False, True])
def test_zoo_cnn_on_the_fast_paths_matches_torch(monkeypatch, thread_count, input_grad):
    """The zoo's cnn in training on NumPy, its first convolution on the NCHW engine and its
    BatchNorm2d + ReLU + MaxPool2d blocks fused (pooled first), against the same network in
    torch (float64): logits, every parameter's gradient, and dL/dA when asked (None when
    not)."""
    import portaconv.backend.fast.norm as norm
    from portaconv.models import build_model

    thread_count(2)
    monkeypatch.setattr(norm, "CHUNK_BYTES", 512)
    monkeypatch.setattr(norm, "MIN_ROWS", 1)
    rng = np.random.default_rng(21)
    X = rng.standard_normal((10, 1, 12, 12))
    with use_backend("numpy", None, "float64"):
        model = build_model("cnn", (1, 12, 12), 5, widths=(4, 6), hidden=8, dropout=0.0)
        model.train()
        logits = model.forward(X)
        assert isinstance(model.layers[0]._engine, NCHWConv2d)
        norms = [bn for bn in model.layers if isinstance(bn, L.BatchNorm2d)]
        engines = [_norm_engine(model, bn) for bn in norms]
        assert all(e.relu and e.pooled for e in engines)  # each before a pool
        dLdZ = rng.standard_normal(logits.shape)
        dLdX = model.backward(dLdZ, input_grad=input_grad)
        grads = model.gradients()

    twins: list[torch.nn.Module] = []
    for layer in model.layers:
        if isinstance(layer, L.Conv2d):
            twin = torch.nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size,
                                   layer.stride, layer.padding)  # fmt: skip
            twin.weight.data, twin.bias.data = torch.tensor(layer.W), torch.tensor(layer.b)
        elif isinstance(layer, L.Linear):
            twin = torch.nn.Linear(layer.W.shape[1], layer.W.shape[0])
            twin.weight.data, twin.bias.data = torch.tensor(layer.W), torch.tensor(layer.b)
        elif isinstance(layer, (L.BatchNorm1d, L.BatchNorm2d)):
            twin = (torch.nn.BatchNorm2d if isinstance(layer, L.BatchNorm2d) else
                    torch.nn.BatchNorm1d)(layer.num_features)  # fmt: skip
        else:
            twin = {L.ReLU: torch.nn.ReLU(), L.MaxPool2d: torch.nn.MaxPool2d(2),
                    L.Flatten: torch.nn.Flatten()}[type(layer)]  # fmt: skip
        twins.append(twin)
    net = torch.nn.Sequential(*twins).double().train()
    X_t = torch.tensor(X, requires_grad=True)
    out = net(X_t)
    out.backward(torch.tensor(dLdZ))
    np.testing.assert_allclose(logits, out.detach().numpy(), rtol=0, atol=1e-10)
    names = {"W": "weight", "b": "bias", "BW": "weight", "Bb": "bias"}
    for key, grad in grads.items():
        index, param = key.split(".")
        want = getattr(net[int(index)], names[param]).grad.numpy()
        np.testing.assert_allclose(grad, want, rtol=0, atol=1e-9, err_msg=key)
    if input_grad:
        np.testing.assert_allclose(dLdX, X_t.grad.numpy(), rtol=0, atol=1e-10)
    else:
        assert dLdX is None


@pytest.mark.skipif(
    platform.machine() not in ("x86_64", "AMD64") or not threads.blas_thread_control(),
    reason="OPENBLAS_CORETYPE names x86-64 kernels; NumPy's bundled OpenBLAS not found here",
)
def test_blas_kernels_names_the_kernels_openblas_was_told_to_run():
    """``blas_kernels`` reports OpenBLAS's own core name: in a fresh interpreter with
    ``OPENBLAS_CORETYPE`` set (Nehalem's SSE4.2 kernels run on every x86-64 CPU that NumPy 2
    supports), that name."""
    code = "import portaconv.backend.fast.threads as t; print(t.blas_kernels())"
    env = {**os.environ, "OPENBLAS_CORETYPE": "Nehalem"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "Nehalem"


def _reference_product(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b in float64 by an elementwise sum (no BLAS)."""
    return (a.astype(np.float64)[:, :, None] * b.astype(np.float64)[None, :, :]).sum(axis=1)


@pytest.mark.parametrize("direct", [True, False], ids=["openblas", "numpy"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gemm_writes_and_accumulates_into_strided_blocks(direct, dtype, monkeypatch):
    """``gemm`` (the row-gather convolution's products) against a float64 elementwise sum:
    plain and transposed operands, an output that is a column block of a wider matrix
    (rows of a larger stride), overwriting and accumulating; the same through NumPy's
    matmul where OpenBLAS's cblas is not used. The block's neighbours are left alone, and
    with OpenBLAS every product is its call."""
    calls = []
    if direct:
        real = ops.blas_gemm(np.dtype(dtype).name)
        if real is None:
            pytest.skip("NumPy's bundled OpenBLAS (its cblas_?gemm) was not found here")
        monkeypatch.setattr(ops, "blas_gemm", lambda name: lambda *args: calls.append(real(*args)))
    else:
        monkeypatch.setattr(ops, "blas_gemm", lambda name: None)
    rng = np.random.default_rng(7)
    m, k, n = 13, 7, 5
    tol = 1e-5 if dtype == np.float32 else 1e-12
    operands_a = (rng.standard_normal((m, k)), np.asfortranarray(rng.standard_normal((m, k))))
    operands_b = (rng.standard_normal((k, n)), np.asfortranarray(rng.standard_normal((k, n))))
    for a in (x.astype(dtype, order="K") for x in operands_a):
        for b in (x.astype(dtype, order="K") for x in operands_b):
            wide = rng.standard_normal((m, n + 9)).astype(dtype)
            before = wide.copy()
            block = wide[:, 4 : 4 + n]
            ops.gemm(a, b, block)
            np.testing.assert_allclose(block, _reference_product(a, b), rtol=tol, atol=tol)
            ops.gemm(a, b, block, accumulate=True)
            np.testing.assert_allclose(block, 2 * _reference_product(a, b), rtol=tol, atol=tol)
            np.testing.assert_array_equal(wide[:, :4], before[:, :4])
            np.testing.assert_array_equal(wide[:, 4 + n :], before[:, 4 + n :])
    assert len(calls) == (8 if direct else 0)
    out = np.empty((n, m), dtype).T  # transposed: BLAS would write it the other way round
    a, b = operands_a[0].astype(dtype), operands_b[0].astype(dtype)
    ops.gemm(a, b, out)
    np.testing.assert_allclose(out, _reference_product(a, b), rtol=tol, atol=tol)
    assert len(calls) == (8 if direct else 0)  # NumPy's matmul wrote it
    with pytest.raises(ValueError, match="do not agree"):
        ops.gemm(np.ones((3, 4), dtype), np.ones((5, 2), dtype), np.empty((3, 2), dtype))
