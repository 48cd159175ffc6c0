"""portaconv against itself: a module constant at its default and at a variant, on run.py's cases.

    python benchmarks/variant_pairs.py --variant MODULE.NAME=VALUE [--cases REGEX] [--rounds N]

e.g. ``--variant portaconv.backend.conv.nchw.PARITY_PLANES=False --cases 's2|convtr'``. For
each of ``run.py``'s cases that ``--cases`` selects, portaconv's step (its forward +
backward, or LeNet's training step) runs with the constant at its default and at the
variant, the two taking turns in one process (the side that starts a round alternating,
two untimed runs of the same side before every timed run). It prints each side's best
time and the median of the per-round ratios variant / default with their quartiles (below
1: the variant is faster),
and the largest relative difference between the two sides' results (for LeNet's training
step that compares two different steps: each step changes the weights). Set the thread counts
and the OpenBLAS kernels in the environment as for ``run.py``; torch only builds the cases.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from collections.abc import Callable
from typing import Any

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")  # as run.py: idle BLAS threads sleep

import numpy as np  # noqa: E402
import run  # noqa: E402
from step_profile import parse_variant  # noqa: E402

import portaconv  # noqa: E402


def _setting(module: Any, name: str, value: Any, step: Callable[[], Any]) -> Callable[[], Any]:
    """``step`` run with ``module.name`` set to ``value``."""

    def run_step() -> Any:
        setattr(module, name, value)
        return step()

    return run_step


def _paired_times(steps: list[Callable[[], Any]], rounds: int) -> list[list[float]]:
    """Each step's time in every round, the steps taking turns (the one that starts a
    round alternating); before each timed run, two untimed runs of the same step, so it
    starts with its own blocks and code warm. No pause: both sides are portaconv, with the
    same threads (``run.py`` pauses for torch's spinning threads)."""
    times: list[list[float]] = [[] for _ in steps]
    for r in range(rounds + 1):  # the first round is a warm-up
        for j in range(len(steps)):
            k = (r + j) % len(steps)
            steps[k]()
            steps[k]()
            start = time.perf_counter()
            steps[k]()
            if r:
                times[k].append(time.perf_counter() - start)
    return times


def _copies(arrays: tuple[Any, ...]) -> list[np.ndarray]:
    """The step's results as arrays of their own (a later step may reuse the layer's)."""
    return [np.array(portaconv.to_numpy(a), dtype=np.float64) for a in arrays]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", required=True, metavar="MODULE.NAME=VALUE")
    parser.add_argument("--cases", metavar="REGEX", help="only cases whose name matches")
    parser.add_argument("--rounds", type=int, default=15, help="timed rounds per case")
    args = parser.parse_args()
    module, name, value = parse_variant(parser, args.variant)
    default = getattr(module, name)
    cases = [c for c in run.all_cases(False) if not args.cases or re.search(args.cases, c.name)]
    if not cases:
        parser.error(f"no case matches --cases {args.cases!r}")
    ctx = run.make_context("numpy", None)
    print(f"{args.variant} against the default {name}={default!r}; {args.rounds} paired rounds")
    print(
        "case                                  default ms  variant ms  variant/default  "
        "quartiles    max rel diff"
    )
    for case in cases:
        step = case.build(ctx).portaconv
        steps = [_setting(module, name, setting, step) for setting in (default, value)]
        try:
            times = _paired_times(steps, args.rounds)
            results = [_copies(s()) for s in steps]  # each side's numbers, kept apart
        finally:
            setattr(module, name, default)
        ratios = np.array(times[1]) / np.array(times[0])
        q1, med, q3 = np.percentile(ratios, [25, 50, 75])
        print(
            f"{case.name:37s} {1e3 * min(times[0]):10.3f}  {1e3 * min(times[1]):10.3f}  "
            f"{med:15.3f}  {q1:.3f}-{q3:.3f}  {run.max_relative_error(*results):12.1e}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
