"""The NumPy fast paths outside the convolution engines, each against what it replaced.

    python benchmarks/numpy_paths.py [--rounds N] [--json FILE]

Every comparison runs its variants in turn within each round (order rotating, a pause
before each so that no idle OpenBLAS thread still spins), OpenBLAS held at one thread as a
model with convolutions holds it unless a variant says "openblas", and prints each
variant's median time per call over the rounds. What it shows, and which constant it justifies:

- ``dispatch``: one ``run_threaded`` call of empty tasks, with OpenBLAS held and not: the
  cost of handing work to portaconv's threads (why small products and passes stay on one).
- ``handoff``: one ``run_threaded`` call of tasks of ~150 us each (a product each), by
  portaconv's pool (two locks per worker: ``backend/_threads.py``) against the same tasks
  handed over through a ``concurrent.futures.ThreadPoolExecutor`` (submit, then ``wait``:
  how ``run_threaded`` worked before 2026-11-30), and one such task alone on one thread
  (the ideal: what each call costs beyond it is the handoff).
- ``matmul``: ``Linear``-sized products on one thread against ``split_matmul``'s rows
  shared between the threads (``SPLIT_MATMUL_MIN``), and OpenBLAS's own threads unheld.
- ``dot``: a product of at most 500 elements (LeNet's 6 -> 16 dL/dW, 16 x 6400 by
  6400 x 30) computed by every thread at once, by ``np.matmul`` (which keeps the GIL for
  such products) and by ``np.dot`` (``backend._ops.dot``), against one thread doing them in
  turn.
- ``relu``: ``maximum`` against a 0-d zero (the portable form) against ``backend.relu``.
- ``adam``: the portable per-parameter Adam update against the fused NumPy pass
  (``backend/update.py``) on the zoo mlp's parameters.
- ``maxpool``: 2x2 max pooling forward + backward on one thread against the batch shared
  between the threads (``SPLIT_POOL_MIN``), for the zoo cnn's pools and LeNet's.
- ``forward product``: the row-gather convolution's forward product for one kernel row of
  a chunk (``conv/rowgather.py``), on one thread, both ways round: ``R_ky @ W_ky`` into Z
  (M, C_out) against ``W_ky^T @ R_ky^T`` into Z^T (C_out, M), with its GFLOP/s; for LeNet's
  6 -> 16, ``run.py``'s 5x5 16 -> 32 and the zoo cnn's 32 -> 64, one chunk each.
- ``accumulated products``: the same chunks' sums over their 5 kernel rows, forward (into
  Z) and for dL/dA (into dR^T's rows), as NumPy products into a scratch block each added
  in a pass, against ``backend._ops.gemm`` letting OpenBLAS add each product (``beta = 1``).
- ``pass to NCHW``: the row-gather forward's last pass (a chunk's products plus the bias
  into NCHW) with NumPy's inner loop along rows of W_out values against along rows of
  C_out values (``conv/rowgather.py``, which takes the second).
- ``dL/dA rows apart``: the row-gather convolution, forward + backward on one thread in
  chunks whose dR^T (R's memory taken again for dL/dA's products) has rows a multiple of 4
  KiB apart, against rows one cache line further apart (``conv/rowgather.py``'s
  ``_pitch``).
- ``chunks at once``: one chunk's work in a convolution (forward + backward, portaconv at
  one thread: LeNet's 6 -> 16 over 64 samples, ``run.py``'s 5x5 16 -> 32 and 3x3 32 -> 64
  over 32) alone, then two such chunks at once on two of portaconv's threads, then in two
  processes. What two processes lose against one alone is what the two cores cost each
  other (caches and memory they share); what two threads lose beyond that is what sharing
  one interpreter costs (its lock, taken between NumPy calls).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any

import numpy as np
from train_bench import steady_allocator

import portaconv
import portaconv.backend._ops as ops
import portaconv.backend.conv.rowgather as rowconv
import portaconv.backend.update as update
import portaconv.optim.optimizer as optimizer
from portaconv.backend import (
    blas_kernels,
    num_threads,
    relu,
    run_threaded,
    set_num_threads,
    single_threaded_blas,
    split_matmul,
)
from portaconv.layers import Conv2d, MaxPool2d
from portaconv.models import build_model
from portaconv.optim import Adam

# Seconds to wait before each variant: OpenBLAS's idle threads spin ~0.1 s after an unheld
# product and would slow whatever runs next.
SETTLE_S = 0.2
WARM_S = 0.05


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7, help="rounds (median kept)")
    parser.add_argument("--json", metavar="FILE", help="write every median here")
    parser.add_argument("--quick", action="store_true", help="1 round, no pauses (smoke test)")
    args = parser.parse_args(argv)
    if args.quick:
        global SETTLE_S, WARM_S
        args.rounds, SETTLE_S, WARM_S = 1, 0.0, 0.0
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    return args


def timed(fn: Callable[[], Any], repeats: int) -> float:
    """Mean seconds of one call over ``repeats`` calls, after ``WARM_S`` of untimed calls
    (after the pause, the virtual machine's second core takes a while to come back)."""
    start = time.perf_counter()
    while time.perf_counter() - start < WARM_S:
        fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def compare(
    variants: dict[str, tuple[Callable[[], Any], Callable[[], Any]]], rounds: int, repeats: int
) -> dict[str, float]:
    """Median microseconds of each variant; a variant is (context factory, call)."""
    names = list(variants)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            context, call = variants[name]
            time.sleep(SETTLE_S)
            with context():
                times[name].append(timed(call, repeats))
    return {name: statistics.median(t) * 1e6 for name, t in times.items()}


def held() -> Any:
    return single_threaded_blas()


def threads(n: int) -> Callable[[], Any]:
    """A context: portaconv's thread count ``n``, OpenBLAS held, for the block."""

    @contextlib.contextmanager
    def context() -> Any:
        before = num_threads()
        with single_threaded_blas():  # entered with every thread: it holds OpenBLAS
            set_num_threads(n)
            try:
                yield
            finally:
                set_num_threads(before)

    return context


def two_processes(tasks: list[Callable[[], None]], rounds: int, repeats: int) -> float:
    """Median over ``rounds`` of the mean microseconds per call while two forked processes
    each call their own task ``repeats`` times at once (started together at a barrier),
    each with one thread of portaconv's and of OpenBLAS's; NaN where processes cannot fork."""
    import multiprocessing

    if "fork" not in multiprocessing.get_all_start_methods():  # Windows: no such row
        return float("nan")
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(2), ctx.Queue()

    def worker(task: Callable[[], None]) -> None:
        times = []
        with threads(1)():  # one thread each, OpenBLAS's too, as in the other variants
            task()  # warm
            for _ in range(rounds):
                barrier.wait()
                start = time.perf_counter()
                for _ in range(repeats):
                    task()
                times.append((time.perf_counter() - start) / repeats)
        results.put(times)

    procs = [ctx.Process(target=worker, args=(task,)) for task in tasks]
    time.sleep(SETTLE_S)
    for proc in procs:
        proc.start()
    per_round = [max(pair) for pair in zip(*(results.get() for _ in procs))]
    for proc in procs:
        proc.join()
    return statistics.median(per_round) * 1e6


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    allocator = steady_allocator()  # as train_bench.py: no page faults from freed blocks
    portaconv.set_backend("numpy", dtype="float32")
    rng = np.random.default_rng(0)
    T = num_threads()
    results: dict[str, dict[str, float]] = {}

    def report(title: str, medians: dict[str, float]) -> None:
        results[title] = medians
        cells = "  ".join(
            f"{name} {v:.0f}" if name.endswith("GFLOP/s") else f"{name} {v:8.1f} us"
            for name, v in medians.items()
        )
        print(f"{title:34s} {cells}", flush=True)

    print(
        f"portaconv threads: {T}; times are medians over {args.rounds} rounds; "
        f"allocator: {allocator}; OpenBLAS kernels {blas_kernels() or 'unknown'}"
        + (f" (OPENBLAS_CORETYPE={pin})" if (pin := os.environ.get("OPENBLAS_CORETYPE")) else "")
    )
    empty = [lambda: None] * max(2, T)
    report(
        "dispatch (run_threaded, empty)",
        compare(
            {
                "held": (held, lambda: run_threaded(empty)),
                "unheld": (contextlib.nullcontext, lambda: run_threaded(empty)),
            },
            args.rounds,
            2000,
        ),
    )

    square = rng.standard_normal((256, 256)).astype(np.float32)

    def product(out: np.ndarray) -> Callable[[], None]:
        """A task of ~150 us (one OpenBLAS thread, operands in the core's cache): a product
        into its own block, so the tasks share no memory bandwidth."""
        return lambda: np.dot(square, square, out=out)

    tasks = [product(np.empty_like(square)) for _ in range(max(2, T))]
    with ThreadPoolExecutor(len(tasks) - 1, "executor") as executor:

        def by_executor() -> list[Any]:
            futures = [executor.submit(task) for task in tasks[1:]]
            first = tasks[0]()
            wait(futures)
            return [first, *(future.result() for future in futures)]

        report(
            "handoff (run_threaded, ~150 us tasks)",
            compare(
                {
                    "pool": (held, lambda: run_threaded(tasks)),
                    "executor": (held, by_executor),
                    "one task alone": (held, tasks[0]),
                },
                args.rounds,
                200,
            ),
        )

    saved_min = ops.SPLIT_MATMUL_MIN
    ops.SPLIT_MATMUL_MIN = 1
    try:
        for m, k, n in [(128, 400, 120), (128, 512, 256), (128, 784, 512), (128, 3136, 128)]:
            a = rng.standard_normal((m, k)).astype(np.float32)
            b = rng.standard_normal((k, n)).astype(np.float32)
            report(
                f"matmul {m}x{k}x{n}",
                compare(
                    {
                        "one thread": (threads(1), lambda a=a, b=b: np.matmul(a, b)),
                        "split": (threads(T), lambda a=a, b=b: split_matmul(a, b)),
                        "openblas": (contextlib.nullcontext, lambda a=a, b=b: np.matmul(a, b)),
                    },
                    args.rounds,
                    50,
                ),
            )
    finally:
        ops.SPLIT_MATMUL_MIN = saved_min

    pairs = [
        (rng.standard_normal((16, 6400)).astype(np.float32),
         rng.standard_normal((6400, 30)).astype(np.float32))
        for _ in range(max(2, T))
    ]  # fmt: skip

    def products(fn: Callable[..., Any], a: Any, b: Any) -> Callable[[], None]:
        def call() -> None:
            for _ in range(10):
                fn(a, b)

        return call

    report(
        f"dot: {len(pairs)}x10 products 16x6400x30",
        compare(
            {
                "in turn": (held, lambda: [products(np.matmul, a, b)() for a, b in pairs]),
                "threads matmul": (
                    held,
                    lambda: run_threaded([products(np.matmul, a, b) for a, b in pairs]),
                ),
                "threads dot": (
                    held,
                    lambda: run_threaded([products(ops.dot, a, b) for a, b in pairs]),
                ),
            },
            args.rounds,
            10,
        ),
    )

    # (C_out, K C, M): one kernel row's product over a chunk of the row-gather engine
    for c_out, kc, m in [(16, 30, 6400), (32, 80, 5488), (64, 96, 4704)]:
        rows = rng.standard_normal((m, kc)).astype(np.float32)  # R_ky, as stored
        w = rng.standard_normal((kc, c_out)).astype(np.float32)  # W_ky
        w_t = np.ascontiguousarray(w.T)
        z, z_t = np.empty((m, c_out), np.float32), np.empty((c_out, m), np.float32)
        medians = compare(
            {
                "R @ W": (held, lambda r=rows, w=w, z=z: np.matmul(r, w, out=z)),
                "W^T @ R^T": (held, lambda r=rows, w=w_t, z=z_t: np.matmul(w, r.T, out=z)),
            },
            args.rounds,
            50,
        )
        flop = 2 * c_out * kc * m
        medians.update({f"{k} GFLOP/s": flop / us / 1e3 for k, us in list(medians.items())})
        report(f"forward product {c_out}x{kc}x{m}", medians)

    # One chunk's sums over the K = 5 kernel rows (shapes as above; rows offset by a row of
    # the output, as in R): NumPy's product into a scratch block and an add, against BLAS
    # adding each product itself (gemm's accumulate); forward into Z, dL/dA into dR^T's
    # rows of each kernel row
    for c_out, kc, m, row in [(16, 30, 6400, 640), (32, 80, 5488, 196), (64, 96, 4704, 336)]:
        rows = rng.standard_normal((m + 4 * row, kc)).astype(np.float32)
        w = rng.standard_normal((5, kc, c_out)).astype(np.float32)
        dy_t = rng.standard_normal((c_out, m)).astype(np.float32)
        z, dr_t = np.empty((m, c_out), np.float32), np.empty((kc, m + 4 * row), np.float32)
        t, t_a = np.empty((m, c_out), np.float32), np.empty((kc, m), np.float32)

        def forward_numpy(r=rows, w=w, z=z, t=t, row=row, m=m) -> None:
            np.matmul(r[:m], w[0], out=z)
            for ky in range(1, 5):
                np.matmul(r[ky * row : ky * row + m], w[ky], out=t)
                z += t

        def forward_gemm(r=rows, w=w, z=z, row=row, m=m) -> None:
            for ky in range(5):
                ops.gemm(r[ky * row : ky * row + m], w[ky], z, accumulate=ky > 0)

        def input_grad_numpy(w=w, d=dy_t, out=dr_t, t=t_a, row=row, m=m) -> None:
            np.matmul(w[0], d, out=out[:, :m])
            for ky in range(1, 5):
                np.matmul(w[ky], d, out=t)
                out[:, ky * row : ky * row + m] += t

        def input_grad_gemm(w=w, d=dy_t, out=dr_t, row=row, m=m) -> None:
            ops.gemm(w[0], d, out[:, :m])
            for ky in range(1, 5):
                ops.gemm(w[ky], d, out[:, ky * row : ky * row + m], accumulate=True)

        medians = compare(
            {
                "forward matmul + add": (held, forward_numpy),
                "forward gemm": (held, forward_gemm),
                "dL/dA matmul + add": (held, input_grad_numpy),
                "dL/dA gemm": (held, input_grad_gemm),
            },
            args.rounds,
            20,
        )
        report(f"accumulated products, 5 kernel rows {c_out}x{kc}x{m}", medians)

    # The row-gather forward's last pass: a chunk's Z (rows (y, sample, x) of C_out values)
    # plus the bias into NCHW, NumPy's inner loop along Z's rows of W_out values (the output
    # as it is) against along ZM's rows of C_out values (the output seen as NHWC)
    for c_out, n, h in [(16, 64, 10), (32, 7, 28), (64, 16, 14)]:
        zm = rng.standard_normal((h * n * h, c_out)).astype(np.float32)
        bias = rng.standard_normal(c_out).astype(np.float32)
        z = np.empty((n, c_out, h, h), np.float32)
        y = zm.reshape(h, n, h, c_out)
        report(
            f"pass to NCHW, {n}x{c_out}x{h}x{h}",
            compare(
                {
                    "along W_out": (
                        held,
                        lambda y=y, b=bias, z=z: np.add(
                            y.transpose(1, 3, 0, 2), b[:, None, None], out=z
                        ),
                    ),
                    "along C_out": (
                        held,
                        lambda y=y, b=bias, z=z: np.add(
                            y.transpose(1, 0, 2, 3), b, out=z.transpose(0, 2, 3, 1)
                        ),
                    ),
                },
                args.rounds,
                100,
            ),
        )

    # The row-gather convolution with dR^T's rows (R's memory, taken again for dL/dA's
    # products) a multiple of 4 KiB apart, against rows one cache line further apart
    # (conv/rowgather.py's _pitch): forward + backward on one thread, in chunks of 8 samples
    # (5x5 16 -> 32 at 28x28, "same" padding: rows of 32 * 8 * 28 floats, 28 KiB) and of 32
    # (3x3 32 -> 64 at 14x14: rows of 16 * 32 * 14 floats, 28 KiB)
    for c_in, c_out, k, size, n in [(16, 32, 5, 28, 8), (32, 64, 3, 14, 32)]:
        pad = k // 2
        a = rng.standard_normal((2 * n, c_in, size, size)).astype(np.float32)
        w = rng.standard_normal((c_out, c_in, k, k)).astype(np.float32)
        bias = np.zeros(c_out, np.float32)
        per_sample = (size + 2 * pad) * size * k * c_in * 4  # R's bytes per sample
        engine = rowconv.RowGatherConv2d(pad, n * per_sample, 0)
        dz = rng.standard_normal(engine.forward(a, w, bias).shape).astype(np.float32)

        @contextlib.contextmanager
        def rows_apart(plain: bool) -> Any:
            saved = rowconv._pitch
            if plain:
                rowconv._pitch = lambda length, itemsize: length
            try:
                with threads(1)():
                    yield
            finally:
                rowconv._pitch = saved

        def step(engine=engine, a=a, w=w, bias=bias, dz=dz) -> None:
            engine.forward(a, w, bias)
            engine.backward(dz, True)

        medians = compare(
            {
                "4 KiB multiple": (lambda: rows_apart(True), step),
                "padded": (lambda: rows_apart(False), step),
            },
            args.rounds,
            10,
        )
        report(f"dL/dA rows apart, {c_in}->{c_out} {k}x{k} {size}x{size}, chunks of {n}", medians)

    # Two chunks at once: a convolution's forward + backward over a chunk of its batch with
    # portaconv at one thread, alone, then two such layers at once on two threads
    # (run_threaded), then in two processes; at once, the pair ideally takes what one takes
    # alone. LeNet's 6 -> 16 over 64 samples (half its batch of 128), and run.py's 5x5
    # 16 -> 32 and 3x3 32 -> 64 over 32 samples (half their batch of 64).
    for c_in, c_out, k, size, pad, n, label in (
        (6, 16, 5, 14, 0, 64, "LeNet 6->16 N=64"),
        (16, 32, 5, 28, 2, 32, "5x5 16->32 28x28 N=32"),
        (32, 64, 3, 14, 1, 32, "3x3 32->64 14x14 N=32"),
    ):
        layers, data = [], []
        out = size + 2 * pad - k + 1
        for _ in range(2):
            layers.append(Conv2d(c_in, c_out, k, padding=pad))
            A = rng.standard_normal((n, c_in, size, size)).astype(np.float32)
            data.append((A, rng.standard_normal((n, c_out, out, out)).astype(np.float32)))

        def chunk_task(i: int, layers=layers, data=data) -> Callable[[], None]:
            def task() -> None:
                layers[i].forward(data[i][0])
                layers[i].backward(data[i][1])

            return task

        tasks = [chunk_task(0), chunk_task(1)]
        repeats = max(2, 20 * 64 * 100 // (n * out * out))  # ~20 of LeNet's, fewer large
        medians = compare(
            {
                "alone": (threads(1), tasks[0]),
                "two threads": (threads(1), lambda tasks=tasks: run_threaded(tasks)),
            },
            args.rounds,
            repeats,
        )
        medians["two processes"] = two_processes(tasks, args.rounds, repeats)
        report(f"chunks at once, {label}", medians)

    x = rng.standard_normal((128, 6, 28, 28)).astype(np.float32)
    zero = np.zeros((), dtype=np.float32)
    report(
        "relu forward 128x6x28x28",
        compare(
            {
                "maximum(x, 0-d)": (held, lambda: np.maximum(x, zero)),
                "backend.relu": (held, lambda: relu(x)),
            },
            args.rounds,
            50,
        ),
    )

    model = build_model("mlp", (1, 28, 28), 10)
    for _, layer in model.named_layers():
        for p in getattr(layer, "param_names", ()):
            grad = rng.standard_normal(getattr(layer, p).shape).astype(np.float32)
            setattr(layer, "dLd" + p, grad)
    opt = Adam(model, lr=1e-3)

    @contextlib.contextmanager
    def portable() -> Any:
        optimizer.fusable = lambda *a: False
        try:
            with threads(1)():
                yield
        finally:
            optimizer.fusable = update.fusable

    report(
        "adam step, zoo mlp (535k params)",
        compare(
            {
                "portable": (portable, opt.step),
                "fused": (threads(T), opt.step),
            },
            args.rounds,
            20,
        ),
    )

    saved_pool = ops.SPLIT_POOL_MIN
    ops.SPLIT_POOL_MIN = 1
    try:
        for shape in [(128, 32, 28, 28), (128, 64, 14, 14), (128, 6, 28, 28), (128, 16, 10, 10)]:
            A = rng.standard_normal(shape).astype(np.float32)
            pool = MaxPool2d(2)
            dZ = np.ones_like(pool.forward(A))

            def step(pool: Any = pool, A: Any = A, dZ: Any = dZ) -> None:
                pool.forward(A)
                pool.backward(dZ)

            report(
                "maxpool 2x2 fwd+bwd " + "x".join(map(str, shape)),
                compare(
                    {"one thread": (threads(1), step), "shared": (threads(T), step)},
                    args.rounds,
                    10,
                ),
            )
    finally:
        ops.SPLIT_POOL_MIN = saved_pool

    if args.json:
        with open(args.json, "w") as f:
            json.dump({"threads": T, "rounds": args.rounds, "results": results}, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
