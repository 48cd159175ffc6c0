"""Which NumPy convolution path is faster: the im2row gather or the row gather, by shape.

    python benchmarks/conv_paths.py [--runs N]

``Conv2d`` on NumPy takes the row-gather path (``portaconv/backend/conv/rowgather.py``) for
stride 1, K > 1 and at least ``MIN_CHANNELS`` input channels, and the im2row path otherwise.
For each shape below this times one forward + backward of the same layer on both paths,
the two alternating call by call so that background load falls on both, and prints the
best and median times and their ratio (row gather / im2row: below 1, the row gather wins).
It is how ``MIN_CHANNELS`` was chosen; rerun it on another machine to check the threshold.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")  # idle BLAS threads sleep

import numpy as np  # noqa: E402

import portaconv.backend.conv.rowgather as rowconv  # noqa: E402
from portaconv.backend import use_backend  # noqa: E402
from portaconv.layers import Conv2d  # noqa: E402

# C_in, C_out, K, image size, padding, batch, input gradient needed
SHAPES = [
    (1, 6, 5, 28, 2, 128, False),  # LeNet-5's first layer (the images need no gradient)
    (1, 6, 5, 28, 0, 64, True),
    (1, 32, 3, 28, 1, 128, False),  # the Fashion-MNIST CNN's first layer
    (2, 16, 3, 28, 1, 64, True),
    (3, 32, 3, 32, 1, 64, True),
    (4, 16, 3, 28, 1, 64, True),
    (4, 32, 3, 14, 1, 64, True),
    (5, 16, 3, 28, 1, 64, True),
    (6, 32, 3, 28, 1, 64, True),
    (4, 16, 5, 28, 2, 64, True),
    (6, 16, 5, 14, 0, 128, True),  # LeNet-5's second layer
    (8, 32, 3, 28, 1, 64, True),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30, help="timed calls per path and shape")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"portaconv threads: {rowconv.num_threads()}, MIN_CHANNELS = {rowconv.MIN_CHANNELS}")
    print(
        "C_in C_out  K  size  pad  batch  dL/dA | im2row best / median ms"
        " | row best / median ms | ratio"
    )
    default = rowconv.MIN_CHANNELS
    with use_backend("numpy", None, "float32"):
        for cin, cout, k, size, pad, batch, input_grad in SHAPES:
            A = rng.standard_normal((batch, cin, size, size), dtype=np.float32)
            layer = Conv2d(cin, cout, k, 1, pad)
            layer.needs_input_grad = input_grad
            dZ = np.ones_like(layer.forward(A))
            times: list[list[float]] = [[], []]
            for _ in range(args.runs + 2):  # the first two calls of each are warm-up
                for path, threshold in enumerate((10**9, 1)):  # im2row, then row gather
                    rowconv.MIN_CHANNELS = threshold
                    start = time.perf_counter()
                    layer.forward(A)
                    layer.backward(dZ)
                    times[path].append(time.perf_counter() - start)
            rowconv.MIN_CHANNELS = default
            im2row, row = (np.array(t[2:]) * 1e3 for t in times)
            print(
                f"{cin:4d} {cout:5d} {k:2d} {size:5d} {pad:4d} {batch:6d}  {str(input_grad):5s}"
                f" | {im2row.min():8.2f} / {np.median(im2row):6.2f}"
                f" | {row.min():8.2f} / {np.median(row):6.2f}"
                f" | {row.min() / im2row.min():.2f}"
            )


if __name__ == "__main__":
    main()
