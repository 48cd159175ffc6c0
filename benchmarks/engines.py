"""portaconv's engines against each other and against PyTorch, case by case.

    python benchmarks/engines.py [--backend numpy] [--device DEV]
                                 [--set layers|thresholds|grouped]
                                 [--cases REGEX] [--rounds 9] [--threads T] [--json FILE]
                                 [--count-ops] [--quick]

Every case runs under each variant of ``portaconv.backend.fast_paths`` that applies to it:

- ``auto``: the backend picks its fast engines (what a user gets);
- ``never``: the portable reference code alone (``fast_paths("never")``);
- for a convolution, each engine forced with ``fast_paths(conv=ENGINE)``: ``reference``
  (portable im2col + matmul), ``im2row``, ``nchw``, ``row_gather`` (NumPy), ``strided``
  (torch). An engine that cannot take the case raises ValueError on its first run and is
  listed as ``n/a``;

and the same computation in PyTorch (``torch.nn.functional`` + autograd, or the twin network
and ``torch.optim``). All of them take turns in paired rounds in one process, as in
``run.py`` (a 20 ms pause and 50 ms of untimed runs before every timed run). Reported per
variant: its best time, the median per-round ratio to torch with its quartiles, the median
per-round ratio to ``auto``, and the largest relative difference from torch's results.

``--set layers`` (default) are ``run.py``'s layers, the zoo's training steps and an Adam
update; ``--set thresholds`` are convolution shapes around the switches between NumPy's
engines (few channels, small windows, strided, 1x1, few positions), to check on another
machine where each engine wins. ``--set grouped`` are depthwise and grouped convolutions of
MobileNet's and ResNeXt's kind; on NumPy they also run ``offset_loop``, the same forward and
backward written in this script as a loop over the kernel offsets (depthwise: ``Z += W[:, 0,
k] * A_pad[..., window k]``; grouped: one product per offset, batched over the groups), the
form portaconv's reference must not be slower than. ``--count-ops`` (torch backend) counts
the aten operations of one step of each variant and of PyTorch instead of timing them: on a
GPU each is at least one kernel launch, so a small network's step is bound by their number.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import sys
from collections.abc import Callable
from typing import Any

import harness

SETTLE_S, WARM_S = 0.02, 0.05

# C_in, C_out, K, stride, size, padding, batch, dL/dA needed: around the NumPy engines'
# switches (channels, values a window, output positions), 2-d then 1-d
THRESHOLD_SHAPES_2D = [
    (1, 6, 5, 1, 28, 2, 128, False),  # LeNet-5's first layer (the images need no gradient)
    (1, 32, 3, 1, 28, 1, 128, False),  # the zoo cnn's first layer
    (3, 32, 3, 1, 32, 1, 64, True),
    (4, 16, 5, 1, 28, 2, 64, True),
    (6, 16, 5, 1, 14, 0, 128, True),  # LeNet-5's second layer
    (7, 32, 3, 1, 28, 1, 64, True),  # 63 values a window
    (8, 32, 3, 1, 28, 1, 64, True),
    (16, 32, 2, 1, 14, 0, 64, True),  # 2x2
    (16, 32, 5, 1, 28, 2, 32, True),
    (16, 32, 3, 2, 28, 1, 64, True),  # strided
    (128, 128, 3, 2, 14, 1, 64, True),  # 49 output positions
    (32, 64, 1, 1, 28, 0, 64, True),  # 1x1
    (256, 64, 1, 1, 7, 0, 64, True),
]
# C_in, C_out, groups, K, stride, size, batch (padding K // 2): depthwise (groups == C_in,
# MobileNet's, with a depth multiplier of 2 once), then grouped (ResNeXt's)
GROUPED_SHAPES = [
    (32, 32, 32, 3, 1, 16, 64),
    (32, 32, 32, 3, 2, 16, 64),
    (64, 64, 64, 3, 1, 16, 64),
    (128, 128, 128, 3, 1, 8, 64),
    (128, 128, 128, 3, 2, 8, 64),
    (32, 64, 32, 3, 1, 16, 64),
    (64, 64, 2, 3, 1, 16, 64),
    (64, 64, 8, 3, 1, 8, 64),
    (128, 128, 32, 3, 1, 8, 64),
]
THRESHOLD_SHAPES_1D = [
    (24, 8, 8, 4, 128, 0, 128, False),  # the handout's scanning MLP as a CNN: 31 positions
    (32, 64, 3, 1, 64, 1, 64, True),
    (2, 16, 5, 1, 200, 2, 64, True),
    (64, 64, 3, 1, 8, 1, 128, True),  # few positions
    (128, 128, 3, 2, 8, 1, 128, True),
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--backend",
        choices=harness.BACKENDS,
        default=os.environ.get("PORTACONV_BACKEND", "").strip() or "numpy",
        help="portaconv backend (default: $PORTACONV_BACKEND or numpy)",
    )
    parser.add_argument("--device", default=os.environ.get("PORTACONV_DEVICE", "").strip() or None)
    parser.add_argument("--set", choices=("layers", "thresholds", "grouped"), default="layers")
    parser.add_argument("--cases", metavar="REGEX", help="only cases whose name matches")
    parser.add_argument("--rounds", type=int, default=9, help="timed rounds per case")
    parser.add_argument("--threads", type=int, help="CPU threads for both (default: all)")
    parser.add_argument("--json", metavar="FILE", help="write every number here")
    parser.add_argument("--count-ops", action="store_true", help="count aten ops (torch backend)")
    parser.add_argument("--quick", action="store_true", help="tiny cases, 1 round (smoke test)")
    args = parser.parse_args(argv)
    harness.at_least(parser, rounds=(args.rounds, 1), threads=(args.threads, 1))
    if args.count_ops and args.backend != "torch":
        parser.error("--count-ops counts torch's aten operations: it needs --backend torch")
    if args.quick:
        args.rounds = 1
    return args


def threshold_cases() -> list[harness.Case]:
    cases = []
    for nd, shapes in ((2, THRESHOLD_SHAPES_2D), (1, THRESHOLD_SHAPES_1D)):
        for c_in, c_out, K, stride, size, pad, N, input_grad in shapes:
            kernel, image = "x".join([str(K)] * nd), "x".join([str(size)] * nd)
            name = f"conv{nd}d_{kernel}_s{stride}_p{pad}_{c_in}-{c_out}_{image}_N{N}"
            name += "" if input_grad else "_no_dA"
            cases.append(
                harness.conv_case(
                    name, nd, N, c_in, c_out, K, size, stride, pad, "layer", input_grad
                )
            )
    return cases


def grouped_cases(quick: bool = False) -> list[harness.Case]:
    shapes = [(8, 8, 8, 3, 1, 8, 4), (8, 8, 2, 3, 2, 8, 4)] if quick else GROUPED_SHAPES
    cases = []
    for c_in, c_out, groups, K, stride, size, N in shapes:
        kind = "depthwise" if groups == c_in else f"g{groups}"
        name = f"conv2d_{kind}_{K}x{K}_s{stride}_{c_in}-{c_out}_{size}x{size}_N{N}"
        cases.append(
            harness.conv_case(name, 2, N, c_in, c_out, K, size, stride, K // 2, groups=groups)
        )
    return cases


def offset_loop(inputs: dict[str, Any], groups: int, stride: int, padding: int) -> Callable:
    """Forward and backward of a grouped 2-d convolution in NumPy as a loop over the kernel
    offsets, each a strided window of the padded input: depthwise, a product by one weight
    per channel; otherwise one matrix product per offset, batched over samples and groups.
    Returns the step: () -> (Z, dL/dA, dL/dW, dL/db)."""
    import numpy as np

    A, W, b, dZ = inputs["A"], inputs["W"], inputs["b"], inputs["dLdZ"]
    N, C_in, H, Wd = A.shape
    C_out, per_group, KH, KW = W.shape
    G, M = groups, C_out // groups
    out_h, out_w = dZ.shape[2:]
    depthwise = per_group == 1

    def window(x: Any, i: int, j: int) -> Any:
        rows = slice(i, i + stride * (out_h - 1) + 1, stride)
        return x[:, :, rows, j : j + stride * (out_w - 1) + 1 : stride]

    def step() -> tuple[Any, ...]:
        A_pad = np.pad(A, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
        dA_pad = np.zeros_like(A_pad)
        dW = np.empty_like(W)
        if depthwise:  # (N, C_in, M, out_h, out_w): M filters per input channel
            dZ_m = dZ.reshape(N, C_in, M, out_h, out_w)
            Z = np.empty(dZ_m.shape, dtype=A.dtype)
            Z[...] = b.reshape(1, C_in, M, 1, 1)
            W_m = W.reshape(C_in, M, KH, KW)
            for i in range(KH):
                for j in range(KW):
                    win, w = window(A_pad, i, j), W_m[None, :, :, i, j, None, None]
                    Z += w * win[:, :, None]
                    window(dA_pad, i, j)[...] += (w * dZ_m).sum(axis=2)
                    dW[:, 0, i, j] = np.einsum("ncmhw,nchw->cm", dZ_m, win).reshape(-1)
        else:  # (N, G, channels of a group, out_h * out_w)
            dZ_g = dZ.reshape(N, G, M, -1)
            Z = np.broadcast_to(b.reshape(1, G, M, 1), dZ_g.shape).copy()
            W_g = W.reshape(G, M, per_group, KH, KW)
            dW_g = dW.reshape(G, M, per_group, KH, KW)
            for i in range(KH):
                for j in range(KW):
                    win = window(A_pad, i, j).reshape(N, G, per_group, -1)  # a copy
                    W_k = W_g[:, :, :, i, j]  # (G, M, per_group)
                    Z += np.matmul(W_k, win)
                    d_win = np.matmul(np.swapaxes(W_k, 1, 2), dZ_g)
                    window(dA_pad, i, j)[...] += d_win.reshape(N, C_in, out_h, out_w)
                    dW_g[:, :, :, i, j] = np.matmul(dZ_g, np.swapaxes(win, 2, 3)).sum(axis=0)
        Z = Z.reshape(dZ.shape)
        dA = dA_pad[:, :, padding : padding + H, padding : padding + Wd]
        return Z, dA, dW, dZ.sum(axis=(0, 2, 3))

    return step


def all_cases(args: argparse.Namespace) -> list[harness.Case]:
    if args.set == "thresholds":
        return threshold_cases()
    if args.set == "grouped":
        return grouped_cases(args.quick)
    cases = harness.layer_cases(args.quick)
    models = ("lenet",) if args.quick else harness.MODELS
    cases += harness.network_cases(args.quick, models)
    cases.append(harness.adam_case("adam_step_mlp"))
    return cases


def variants(case: harness.Case) -> dict[str, dict[str, Any]]:
    """The ``fast_paths`` arguments of each variant that may apply to ``case``."""
    found: dict[str, dict[str, Any]] = {"auto": {"mode": "auto"}, "never": {"mode": "never"}}
    if case.conv:
        for engine in harness.CONV_ENGINES:
            found[f"conv={engine}"] = {"mode": "auto", "conv": engine}
    return found


def under(settings: dict[str, Any], step: Callable[[], Any]) -> Callable[[], Any]:
    """``step`` run inside ``fast_paths(**settings)``."""

    def run() -> Any:
        with harness.fast_paths(settings["mode"], conv=settings.get("conv")):
            return step()

    return run


def host_copies(results: tuple[Any, ...]) -> tuple[Any, ...]:
    """A step's results copied to the host now: a later step may update them in place."""
    import numpy as np

    from portaconv.backend import to_numpy

    def copy(x: Any) -> Any:
        if hasattr(x, "detach"):  # a torch tensor
            return x.detach().cpu().double().numpy()
        return np.array(to_numpy(x), dtype=np.float64)

    return tuple(copy(x) for x in results)


def build_sides(case: harness.Case, ctx: harness.Context) -> tuple[dict, dict, list[str]]:
    """(portaconv steps by variant, their first results, variants that do not apply): a
    fresh pair for each variant (the same data), its step probed once."""
    steps, firsts, skipped = {}, {}, []
    for name, settings in variants(case).items():
        step = under(settings, case.build(ctx).portaconv)
        try:
            firsts[name] = host_copies(step())
        except ValueError:  # a forced engine that cannot take this input
            skipped.append(name)
            continue
        steps[name] = step
    return steps, firsts, skipped


def time_case(
    case: harness.Case, ctx: harness.Context, rounds: int, quick: bool = False
) -> dict[str, Any]:
    pair = case.build(ctx)
    steps, firsts, skipped = build_sides(case, ctx)
    if "groups" in case.tags and ctx.name == "numpy":  # the loop portaconv must not lose to
        loop = offset_loop(pair.inputs, **case.tags)
        steps["offset_loop"], firsts["offset_loop"] = loop, host_copies(loop())
    reference = host_copies(pair.torch())
    sides = {"torch": harness.timer(pair.torch, ctx.sync)}
    sides.update({name: harness.timer(step, ctx.sync) for name, step in steps.items()})
    pause = {} if quick else {"settle": SETTLE_S, "warm": WARM_S}
    timing = harness.paired_rounds(sides, rounds, **pause)
    rows = {"torch": {"best_s": min(timing.times["torch"]), "runs_s": timing.times["torch"]}}
    for name in steps:
        runs = timing.times[name]
        to_torch = harness.ratio_stats(runs, timing.times["torch"])
        to_auto = harness.ratio_stats(runs, timing.times["auto"])
        error = harness.max_relative_error(firsts[name], reference) if pair.compare else None
        rows[name] = {
            "best_s": min(runs),
            "ratio_to_torch": to_torch["median"],
            "ratio_to_torch_q1": to_torch["q1"],
            "ratio_to_torch_q3": to_torch["q3"],
            "ratio_to_auto": to_auto["median"],
            "max_rel_error": error,
            "runs_s": runs,
        }
    for name in skipped:
        rows[name] = None
    return {"name": case.name, "group": case.group, "variants": rows, "cpu_wait": timing.cpu_wait}


def count_ops(step: Callable[[], Any]) -> int:
    """The aten operations ``step()`` dispatches (autograd's backward included)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Counter(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.ops: collections.Counter = collections.Counter()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops[str(func.overloadpacket.__name__)] += 1
            return func(*args, **(kwargs or {}))

    with Counter() as counter:
        step()
    return sum(counter.ops.values())


def count_case(case: harness.Case, ctx: harness.Context) -> dict[str, Any]:
    pair = case.build(ctx)
    steps, _, skipped = build_sides(case, ctx)
    rows: dict[str, Any] = {}
    for name, step in {"torch": pair.torch, **steps}.items():
        step(), step()  # the steady state (an optimizer's buffers exist)
        rows[name] = {"ops": count_ops(step)}
    for name in skipped:
        rows[name] = None
    return {"name": case.name, "group": case.group, "variants": rows}


def print_timings(results: list[dict]) -> None:
    head = ["case", "variant", "best ms", "/torch", "quartiles", "/auto", "max rel err"]
    rows = []
    for result in results:
        for name, row in result["variants"].items():
            label = result["name"] if name == "torch" else ""
            if row is None:
                rows.append([label, name, "n/a", "", "", "", ""])
            elif name == "torch":
                rows.append([label, name, f"{row['best_s'] * 1e3:.3f}", "1", "", "", ""])
            else:
                error = row["max_rel_error"]
                rows.append(
                    [
                        label,
                        name,
                        f"{row['best_s'] * 1e3:.3f}",
                        f"{row['ratio_to_torch']:.2f}",
                        f"{row['ratio_to_torch_q1']:.2f}-{row['ratio_to_torch_q3']:.2f}",
                        f"{row['ratio_to_auto']:.2f}",
                        "-" if error is None else f"{error:.1e}",
                    ]
                )
    harness.print_table("Each variant: best time, median per-round ratios", head, rows)


def print_counts(results: list[dict]) -> None:
    rows = []
    for result in results:
        torch_ops = result["variants"]["torch"]["ops"]
        for name, row in result["variants"].items():
            label = result["name"] if name == "torch" else ""
            if row is None:
                rows.append([label, name, "n/a", ""])
            else:
                rows.append([label, name, str(row["ops"]), f"{row['ops'] / torch_ops:.2f}"])
    harness.print_table("aten operations per step", ["case", "variant", "ops", "/torch"], rows)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    ctx = harness.start(args, "engines.py")
    if ctx is None:
        return 2
    harness.fast_paths("auto")  # a clear message now if this portaconv has no switch
    cases = [c for c in all_cases(args) if not args.cases or re.search(args.cases, c.name)]
    if not cases:
        print(f"benchmarks/engines.py: no case matches --cases {args.cases!r}", file=sys.stderr)
        return 2
    info = harness.machine_info(backend=ctx.name, device=str(ctx.backend.device))
    print(harness.header(info))
    what = "aten operations of one step" if args.count_ops else f"{args.rounds} paired rounds"
    print(f"portaconv on {ctx.backend!r}, each fast_paths variant, against torch: {what}")
    results = []
    for case in cases:
        results.append(
            count_case(case, ctx)
            if args.count_ops
            else time_case(case, ctx, args.rounds, args.quick)
        )
        print(f"  done {case.name}", file=sys.stderr, flush=True)
    (print_counts if args.count_ops else print_timings)(results)
    harness.write_json(args.json, {"machine": info, "cases": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
