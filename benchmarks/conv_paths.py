"""Which NumPy convolution engine is fastest, by shape: im2row, row gather or NCHW.

    python benchmarks/conv_paths.py [--rounds N] [--shapes REGEX]

On NumPy ``Conv2d`` takes the NCHW engine (``portaconv/backend/conv/nchw.py``) for fewer
than ``MAX_CHANNELS`` input channels or at most ``MAX_WINDOW`` values a window (C K K),
and for strided or 1x1 layers with at least
``MIN_POSITIONS`` output positions; the row-gather engine (``rowgather.py``) for stride 1,
K > 1 and at least ``MIN_CHANNELS`` input channels; the im2row engine otherwise. For each
shape below this times one forward + backward of the same layer on every engine that can
compute it, the engines taking turns within each round (their order rotating from round to
round) so that background load falls on all of them, and prints each engine's median time
and its median per-round ratio to im2row with the quartiles of those ratios (below 1: faster
than im2row). It is how the thresholds were chosen; rerun it on another machine to check them.
"""

from __future__ import annotations

import argparse
import os
import re
import time

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")  # idle BLAS threads sleep

import numpy as np  # noqa: E402

import portaconv.backend.conv.nchw as nchw  # noqa: E402
import portaconv.backend.conv.rowgather as rowconv  # noqa: E402
from portaconv.backend import num_threads, use_backend  # noqa: E402
from portaconv.layers import Conv1d, Conv2d  # noqa: E402

# C_in, C_out, K, stride, image size, padding, batch, input gradient needed
SHAPES = [
    (1, 6, 5, 1, 28, 2, 128, False),  # LeNet-5's first layer (the images need no gradient)
    (1, 6, 5, 1, 28, 0, 64, True),
    (1, 32, 3, 1, 28, 1, 128, False),  # the zoo cnn's first layer
    (2, 16, 3, 1, 28, 1, 64, True),
    (3, 32, 3, 1, 32, 1, 64, True),
    (4, 16, 3, 1, 28, 1, 64, True),
    (4, 32, 3, 1, 14, 1, 64, True),
    (5, 16, 3, 1, 28, 1, 64, True),
    (6, 32, 3, 1, 28, 1, 64, True),
    (4, 16, 5, 1, 28, 2, 64, True),
    (6, 16, 5, 1, 14, 0, 128, True),  # LeNet-5's second layer
    (16, 32, 5, 1, 28, 2, 32, True),  # benchmarks/run.py's 5x5 case
    (7, 32, 3, 1, 28, 1, 64, True),  # 63 values a window: the NCHW engine's largest
    (8, 32, 3, 1, 28, 1, 64, True),
    (8, 16, 2, 1, 28, 0, 64, True),  # 2x2
    (16, 32, 2, 1, 14, 0, 64, True),
    (16, 32, 3, 2, 28, 1, 64, True),  # strided
    (32, 64, 3, 2, 28, 1, 64, True),
    (128, 128, 3, 2, 14, 1, 64, True),  # 49 output positions
    (32, 64, 1, 1, 28, 0, 64, True),  # 1x1
    (64, 128, 1, 1, 14, 0, 64, True),
    (256, 64, 1, 1, 7, 0, 64, True),  # 49 output positions
]

# 1-d (Conv1d): C_in, C_out, K, stride, width, padding, batch, input gradient needed
SHAPES_1D = [
    (24, 8, 8, 4, 128, 0, 128, False),  # the handout's scanning MLP as a CNN: 31 positions
    (8, 16, 1, 1, 31, 0, 128, True),
    (32, 64, 3, 1, 128, 1, 64, True),  # benchmarks/run.py's 1-d cases
    (16, 32, 5, 2, 256, 0, 64, True),
    (32, 64, 3, 1, 64, 1, 64, True),
    (32, 64, 3, 1, 32, 1, 64, True),
    (64, 64, 5, 1, 100, 2, 64, True),
    (2, 16, 5, 1, 200, 2, 64, True),
    (64, 64, 3, 1, 8, 1, 128, True),  # few positions
    (128, 128, 3, 2, 8, 1, 128, True),
    (1, 16, 3, 1, 6, 0, 128, True),
]

# how each engine is forced: (nchw.MAX_CHANNELS, nchw.MAX_WINDOW, nchw.MIN_POSITIONS,
# nchw.MIN_POSITIONS_1D, rowgather.MIN_CHANNELS)
ENGINES = {
    "im2row": (0, 0, 10**9, 10**9, 10**9),
    "row gather": (0, 0, 10**9, 10**9, 1),
    "nchw": (10**9, 10**9, 1, 0, 10**9),
}


def _force(*thresholds: int) -> None:
    """Set the thresholds that choose the engine (in ``ENGINES``' order)."""
    nchw.MAX_CHANNELS, nchw.MAX_WINDOW, nchw.MIN_POSITIONS, nchw.MIN_POSITIONS_1D = thresholds[:4]
    rowconv.MIN_CHANNELS = thresholds[4]


def engines_for(k: int, stride: int, nd: int) -> list[str]:
    row_gather = nd == 2 and k > 1 and stride <= min(k, rowconv.MAX_STRIDE)
    return ["im2row", *(["row gather"] if row_gather else []), "nchw"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=21, help="timed rounds per shape")
    parser.add_argument("--shapes", metavar="REGEX", help="only shapes whose label matches")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    defaults = (
        nchw.MAX_CHANNELS,
        nchw.MAX_WINDOW,
        nchw.MIN_POSITIONS,
        nchw.MIN_POSITIONS_1D,
        rowconv.MIN_CHANNELS,
    )
    print(
        f"portaconv threads: {num_threads()}, nchw.MAX_CHANNELS = {defaults[0]}, "
        f"nchw.MAX_WINDOW = {defaults[1]}, nchw.MIN_POSITIONS = {defaults[2]}, "
        f"nchw.MIN_POSITIONS_1D = {defaults[3]}, rowgather.MIN_CHANNELS = {defaults[4]}"
    )
    print("shape (C_in-C_out KxK stride size pad batch dL/dA) | engine median ms, ratio to im2row")
    with use_backend("numpy", None, "float32"):
        shapes = [(2, *shape) for shape in SHAPES] + [(1, *shape) for shape in SHAPES_1D]
        for nd, cin, cout, k, stride, size, pad, batch, input_grad in shapes:
            kernel, image = ("x".join([str(k)] * nd), "x".join([str(size)] * nd))
            label = f"{cin}-{cout} {kernel} s{stride} {image} p{pad} N{batch} dA={input_grad}"
            if args.shapes and not re.search(args.shapes, label):
                continue
            A = rng.standard_normal((batch, cin, *(size,) * nd), dtype=np.float32)
            layer = (Conv1d if nd == 1 else Conv2d)(cin, cout, k, stride, pad)
            layer.needs_input_grad = input_grad
            dZ = np.ones_like(layer.forward(A))
            names = engines_for(k, stride, nd)
            times: dict[str, list[float]] = {name: [] for name in names}
            for r in range(args.rounds + 2):  # the first two rounds are warm-up
                for j in range(len(names)):
                    name = names[(r + j) % len(names)]
                    _force(*ENGINES[name])
                    start = time.perf_counter()
                    layer.forward(A)
                    layer.backward(dZ)
                    times[name].append(time.perf_counter() - start)
            _force(*defaults)
            base = np.array(times["im2row"][2:])
            cells = []
            for name in names:
                t = np.array(times[name][2:])
                q1, med, q3 = np.percentile(t / base, [25, 50, 75])
                cells.append(f"{name} {np.median(t) * 1e3:.2f} ms {med:.2f} [{q1:.2f}-{q3:.2f}]")
            print(f"{label:42s} | " + " | ".join(cells))


if __name__ == "__main__":
    main()
