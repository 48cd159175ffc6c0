"""How far portaconv's NumPy convolutions are from the matrix products they run.

    python benchmarks/products_floor.py [--cases REGEX] [--rounds N]

For each of ``run.py``'s convolution cases (and LeNet-5's two convolutions as a training
step runs them: the first without dL/dA, batch 128), three steps take turns in one
process, with ``run.py``'s protocol (paired rounds, the side that starts a round
rotating, a pause and untimed runs before each timed run):

- ``torch``: the layer's forward + backward in ``torch.nn.functional`` with autograd;
- ``portaconv``: the same on portaconv's NumPy engine;
- ``products``: only the BLAS products that engine ran. One run of the layer records every
  ``gemm``, ``dot`` and ``np.matmul`` call of the row-gather and NCHW engines, with the
  chunk of the batch it belonged to; the step replays those calls on the same arrays, in
  the same phases (forward, backward), each phase's chunks shared between the threads as
  the engine shares them (``run_chunks``), OpenBLAS single-threaded as in the layer.
  Nothing else of the layer runs: no gather, no layout pass, no bias, no col2im.

Columns: each side's best time (``prod ms``: the products alone), how many products the
run made and in how many phases (``products``), and the ratios. ``products/torch`` is a
floor for that engine: however fast everything around the products became, the layer
could not beat it without faster products (other shapes, or another library than
OpenBLAS). ``rest/torch`` (portaconv's time less the products', over torch's) is what the
gathers, the layout passes and the threads' hand-offs cost. Each ratio is the median of
the per-round ratios.

Set the threads and the OpenBLAS kernels in the environment as for ``run.py`` (``env -u
OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE`` for the CPU's own kernels). The allocator is
``train_bench.py``'s steady one unless ``--glibc-default``: without it, glibc handed
torch's large blocks back to the system and faulted them in again on every call, and its
5x5 16 -> 32 layer took about 1.5x its time in ``run.py`` (which reaches the steady state
by itself: its SGEMM step's 16 MiB blocks raise glibc's threshold for mapping blocks
apart).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
import threading
import types
from collections.abc import Callable, Iterator
from typing import Any

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")  # as run.py: idle BLAS threads sleep

import numpy as np  # noqa: E402
import run  # noqa: E402
import torch  # noqa: E402
from train_bench import steady_allocator  # noqa: E402

import portaconv.backend.conv.nchw as nchw  # noqa: E402
import portaconv.backend.conv.rowgather as rowgather  # noqa: E402
from portaconv.backend import single_threaded_blas  # noqa: E402
from portaconv.backend.conv._chunks import run_chunks  # noqa: E402

#: (module, name) of every product call recorded: the engines' own BLAS entry points.
RECORDED = ((rowgather, "gemm"), (rowgather, "dot"), (nchw, "gemm"))


def lenet_cases() -> list[run.Case]:
    """LeNet-5's 5x5 convolutions at batch 128 as a training step runs them: without dL/dA
    for the first layer (the Trainer skips it), with it for the second."""
    return [
        run.conv_case(
            "lenet_conv1_5x5_p2_1-6_28x28_N128_no_dA",
            2,
            128,
            1,
            6,
            5,
            28,
            padding=2,
            input_grad=False,
        ),
        run.conv_case("lenet_conv2_5x5_p0_6-16_14x14_N128", 2, 128, 6, 16, 5, 14),
    ]


Call = tuple[Callable[..., Any], tuple, dict]


class Recording:
    """The product calls of one run, in phases: each ``run_chunks`` call of an engine (a
    forward or a backward, its chunks shared between the threads) is one phase, its calls
    grouped by chunk; calls outside any chunk are phases of their own, in turn."""

    def __init__(self) -> None:
        self.phases: list[tuple[list[slice], int, dict[int, list[Call]]] | list[Call]] = []
        self._chunk = threading.local()

    def call(self, fn: Callable[..., Any], args: tuple, kwargs: dict) -> None:
        where = getattr(self._chunk, "calls", None)
        if where is None:  # outside a chunk: a phase of its own, or the one before
            if not self.phases or not isinstance(self.phases[-1], list):
                self.phases.append([])
            where = self.phases[-1]
        where.append((fn, args, kwargs))

    def run_chunks(self, real: Callable[..., Any]) -> Callable[..., Any]:
        """``real`` (an engine's ``run_chunks``), each chunk's calls noted under its index."""

        def run_chunks(chunks: list[slice], one_chunk: Any, make_buffers: Any, threads: int):
            by_chunk: dict[int, list[Call]] = {i: [] for i in range(len(chunks))}
            self.phases.append((chunks, threads, by_chunk))

            def noted(buffers: Any, i: int, chunk: slice) -> Any:
                self._chunk.calls = by_chunk[i]
                try:
                    return one_chunk(buffers, i, chunk)
                finally:
                    self._chunk.calls = None

            return real(chunks, noted, make_buffers, threads)

        return run_chunks

    def replay(self) -> None:
        """Every call again, phase after phase; a phase's chunks shared between its threads
        as the engine shares them (``run_chunks``), OpenBLAS held at one thread."""
        with single_threaded_blas():
            for phase in self.phases:
                if isinstance(phase, list):
                    for fn, args, kwargs in phase:
                        fn(*args, **kwargs)
                    continue
                chunks, threads, by_chunk = phase

                def one_chunk(_: Any, i: int, __: slice, by_chunk=by_chunk) -> None:
                    for fn, args, kwargs in by_chunk[i]:
                        fn(*args, **kwargs)

                run_chunks(chunks, one_chunk, lambda: None, threads)

    def count(self) -> int:
        return sum(
            len(p) if isinstance(p, list) else sum(map(len, p[2].values())) for p in self.phases
        )


@contextlib.contextmanager
def recording(into: Recording) -> Iterator[None]:
    """Within the block, every product call of the engines is noted in ``into``, and made."""
    saved = [(module, name, getattr(module, name)) for module, name in RECORDED]
    saved += [(module, "run_chunks", module.run_chunks) for module in (rowgather, nchw)]
    real_np = nchw.np

    def recorder(fn: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            into.call(fn, args, kwargs)
            return fn(*args, **kwargs)

        return call

    proxy = types.ModuleType("numpy_recorded")
    proxy.__getattr__ = lambda name: getattr(real_np, name)  # type: ignore[method-assign]
    proxy.matmul = recorder(real_np.matmul)
    try:
        for module, name, fn in saved:
            wrapped = into.run_chunks(fn) if name == "run_chunks" else recorder(fn)
            setattr(module, name, wrapped)
        nchw.np = proxy
        yield
    finally:
        for module, name, fn in saved:
            setattr(module, name, fn)
        nchw.np = real_np


def products_step(step: Callable[[], Any]) -> tuple[Callable[[], None], int, int]:
    """(a step replaying the products of one run of ``step``, how many products, in how
    many phases)."""
    noted = Recording()
    with single_threaded_blas(), recording(noted):
        step()
    return noted.replay, noted.count(), len(noted.phases)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", metavar="REGEX", help="only cases whose name matches")
    parser.add_argument("--rounds", type=int, default=9, help="timed rounds per case")
    parser.add_argument(
        "--glibc-default",
        action="store_true",
        help="keep glibc's allocator as it starts (see above), not the steady one",
    )
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    torch.set_num_threads(os.cpu_count() or 1)
    # else torch's large blocks came from fresh pages on every call
    allocator = "glibc's default" if args.glibc_default else steady_allocator()
    cases = [c for c in run.all_cases(False) if c.group == "layer" and "conv" in c.name]
    cases += lenet_cases()
    cases = [c for c in cases if not args.cases or re.search(args.cases, c.name)]
    if not cases:
        parser.error(f"no case matches --cases {args.cases!r}")
    ctx = run.make_context("numpy", None)
    print(
        f"{run.blas_name()}; torch {torch.__version__}, {torch.get_num_threads()} threads; "
        f"allocator: {allocator}; {args.rounds} paired rounds"
    )
    header = (
        f"{'case':40s} {'torch ms':>8s} {'pc ms':>7s} {'prod ms':>7s} {'products':>9s} "
        f"{'pc/torch':>8s} {'products/torch':>14s} {'rest/torch':>10s}"
    )
    print(header)
    for case in cases:
        pair = case.build(ctx)
        products, count, phases = products_step(pair.portaconv)
        if not count:
            print(f"{case.name:40s} no product recorded (only the row-gather and NCHW engines')")
            continue
        times, _, _ = run.best_times(
            [pair.torch, pair.portaconv, products], ctx, args.rounds, run.SETTLE_S
        )
        t, pc, prod = (np.array(x) for x in times)
        print(
            f"{case.name:40s} {1e3 * t.min():8.2f} {1e3 * pc.min():7.2f} {1e3 * prod.min():7.2f} "
            f"{f'{count} in {phases}':>9s} {np.median(pc / t):8.2f} "
            f"{np.median(prod / t):14.2f} {np.median((pc - prod) / t):10.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
