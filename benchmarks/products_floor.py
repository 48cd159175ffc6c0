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
  thread that made it; the step replays those calls on the same arrays, each thread's
  calls on a thread of its own (``run_threaded``), OpenBLAS single-threaded as in the
  layer. Nothing else of the layer runs: no gather, no layout pass, no bias, no col2im.

Columns: each side's best time (``prod ms``: the products alone), how many products each
thread made (``products``), and the ratios. ``products/torch`` is a floor for that engine:
however fast everything around the products became, the layer could not beat it without
faster products (other shapes, or another library than OpenBLAS). ``rest/torch``
(portaconv's time less the products', over torch's) is what the gathers, the layout
passes and the threads' hand-offs cost. Each ratio is the median of the per-round ratios.
Set the threads and the OpenBLAS kernels in the environment as for ``run.py`` (``env -u
OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE`` for the CPU's own kernels); the allocator is
``train_bench.py``'s steady one (without it, torch's large blocks came as fresh pages on
every call in a short script: its 5x5 16 -> 32 layer took 1.5x its time in ``run.py``).
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
from portaconv.backend import run_threaded, single_threaded_blas  # noqa: E402
from portaconv.layers import Conv2d  # noqa: E402

#: (module, name) of every product call recorded: the engines' own BLAS entry points.
RECORDED = ((rowgather, "gemm"), (rowgather, "dot"), (nchw, "gemm"))


def lenet_case(name: str, c_in: int, c_out: int, size: int, padding: int, need_dA: bool):
    """One of LeNet-5's 5x5 convolutions at batch 128 as a training step runs it: without
    dL/dA for the first layer (the Trainer skips it), with it for the second."""
    N, K = 128, 5
    out = run.out_size(size, K, 1, padding)

    def build(ctx: run.Context) -> run.Pair:
        bound = 1 / np.sqrt(c_in * K * K)
        W, b = ctx.uniform(bound, c_out, c_in, K, K), ctx.uniform(bound, c_out)
        A, dLdZ = ctx.randn(N, c_in, size, size), ctx.randn(N, c_out, out, out)
        layer = Conv2d(
            c_in, c_out, K, 1, padding, weight_init_fn=lambda *_: W, bias_init_fn=lambda *_: b
        )
        layer.needs_input_grad = need_dA
        A_pc, dLdZ_pc = ctx.pc(A), ctx.pc(dLdZ)
        A_t, W_t, b_t, dLdZ_t = ctx.pt(A, need_dA), ctx.pt(W, True), ctx.pt(b, True), ctx.pt(dLdZ)
        wrt = (A_t, W_t, b_t) if need_dA else (W_t, b_t)

        def run_pc() -> Any:
            return layer.forward(A_pc), layer.backward(dLdZ_pc), layer.dLdW, layer.dLdb

        def run_torch() -> Any:
            Z = torch.nn.functional.conv2d(A_t, W_t, b_t, padding=padding)
            return Z.detach(), *torch.autograd.grad(Z, wrt, dLdZ_t)

        return run.Pair(run_pc, run_torch)

    flops = run.conv_flops(N, c_in, c_out, K, 2, out * out) * (1 if need_dA else 2 / 3)
    return run.Case(name, "layer", build, flops, N, size * size)


def lenet_cases() -> list[run.Case]:
    return [
        lenet_case("lenet_conv1_5x5_p2_1-6_28x28_N128_no_dA", 1, 6, 28, 2, False),
        lenet_case("lenet_conv2_5x5_p0_6-16_14x14_N128", 6, 16, 14, 0, True),
    ]


@contextlib.contextmanager
def recording(calls: list[tuple[int, Callable[..., Any], tuple, dict]]) -> Iterator[None]:
    """Within the block, every product call of the engines is appended to ``calls`` as
    (thread id, function, args, kwargs), and made."""
    saved = [(module, name, getattr(module, name)) for module, name in RECORDED]
    real_np = nchw.np

    def recorder(fn: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            calls.append((threading.get_ident(), fn, args, kwargs))
            return fn(*args, **kwargs)

        return call

    proxy = types.ModuleType("numpy_recorded")
    proxy.__getattr__ = lambda name: getattr(real_np, name)  # type: ignore[method-assign]
    proxy.matmul = recorder(real_np.matmul)
    try:
        for module, name, fn in saved:
            setattr(module, name, recorder(fn))
        nchw.np = proxy
        yield
    finally:
        for module, name, fn in saved:
            setattr(module, name, fn)
        nchw.np = real_np


def products_step(step: Callable[[], Any]) -> tuple[Callable[[], None], list[int]]:
    """(a step replaying the products of one run of ``step``, how many products each
    thread made in that run)."""
    calls: list[tuple[int, Callable[..., Any], tuple, dict]] = []
    with single_threaded_blas(), recording(calls):
        step()
    by_thread: dict[int, list[tuple[Callable[..., Any], tuple, dict]]] = {}
    for ident, fn, args, kwargs in calls:
        by_thread.setdefault(ident, []).append((fn, args, kwargs))

    def replay(own: list[tuple[Callable[..., Any], tuple, dict]]) -> Callable[[], None]:
        def task() -> None:
            for fn, args, kwargs in own:
                fn(*args, **kwargs)

        return task

    tasks = [replay(own) for own in by_thread.values()]

    def run_products() -> None:
        with single_threaded_blas():
            if len(tasks) == 1:
                tasks[0]()
            else:
                run_threaded(tasks)

    return run_products, [len(own) for own in by_thread.values()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", metavar="REGEX", help="only cases whose name matches")
    parser.add_argument("--rounds", type=int, default=9, help="timed rounds per case")
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    allocator = steady_allocator()  # else torch's large blocks come from fresh pages each call
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
        products, counts = products_step(pair.portaconv)
        if not counts:
            print(f"{case.name:40s} no product recorded (only the row-gather and NCHW engines')")
            continue
        times, _, _ = run.best_times(
            [pair.torch, pair.portaconv, products], ctx, args.rounds, run.SETTLE_S
        )
        t, pc, prod = (np.array(x) for x in times)
        print(
            f"{case.name:40s} {1e3 * t.min():8.2f} {1e3 * pc.min():7.2f} {1e3 * prod.min():7.2f} "
            f"{'+'.join(map(str, counts)):>9s} {np.median(pc / t):8.2f} "
            f"{np.median(prod / t):14.2f} {np.median((pc - prod) / t):10.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
