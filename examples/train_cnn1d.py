"""Train the handout's 1-d CNN (section 9) on synthetic waveforms: no download needed.

Three classes of noisy 1-d signals (sine, square and sawtooth waves of random frequency and
phase) are told apart by ``portaconv.models.CNN`` trained with its own ``step()``, at a
learning rate that falls along a cosine from ``--lr``. It runs on whichever backend is
chosen::

    python examples/train_cnn1d.py
    PORTACONV_BACKEND=torch python examples/train_cnn1d.py
    PORTACONV_BACKEND=cupy python examples/train_cnn1d.py      # on a CUDA GPU
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

import portaconv
from portaconv.layers import CrossEntropyLoss, ReLU
from portaconv.models import CNN

CLASSES = ("sine", "square", "sawtooth")


def make_waveforms(n: int, width: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``n`` signals (n, 1, width) with labels (n,): a random wave plus Gaussian noise."""
    labels = rng.integers(0, len(CLASSES), size=n)
    t = np.arange(width) / width
    cycles = rng.uniform(2.0, 5.0, size=(n, 1))
    phase = rng.uniform(0.0, 1.0, size=(n, 1))
    x = (cycles * t + phase) % 1.0  # position within the period, in [0, 1)
    waves = np.stack([np.sin(2 * np.pi * x), np.where(x < 0.5, 1.0, -1.0), 2 * x - 1])
    signals = waves[labels, np.arange(n)] + rng.normal(0.0, 0.3, size=(n, width))
    return signals[:, None, :], labels


def accuracy(model: CNN, A, labels: np.ndarray) -> float:
    predicted = portaconv.to_numpy(model.forward(A)).argmax(axis=1)
    return float(np.mean(predicted == labels))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    portaconv.manual_seed(args.seed)
    width = 64
    train_x, train_y = make_waveforms(2048, width, rng)
    test_x, test_y = make_waveforms(512, width, rng)
    backend = portaconv.get_backend()
    print(f"backend: {backend}")

    model = CNN(
        input_width=width,
        num_input_channels=1,
        num_channels=[8, 16],
        kernel_sizes=[5, 3],
        strides=[2, 2],
        num_linear_neurons=len(CLASSES),
        activations=[ReLU(), ReLU()],
        conv_weight_init_fn=None,
        bias_init_fn=None,
        linear_weight_init_fn=None,
        criterion=CrossEntropyLoss(),
        lr=args.lr,
    )
    test_A = portaconv.to_backend(test_x)
    start = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        # at a fixed rate, plain gradient descent overshoots and the test accuracy swings
        # from one epoch to the next; the rate falls along a cosine from --lr towards 0, so
        # the last epochs settle
        model.lr = args.lr * 0.5 * (1 + math.cos(math.pi * (epoch - 1) / args.epochs))
        order = rng.permutation(len(train_x))
        losses = []
        for first in range(0, len(order), args.batch_size):
            batch = order[first : first + args.batch_size]
            model.zero_grads()
            model.forward(portaconv.to_backend(train_x[batch]))
            model.backward(portaconv.to_backend(train_y[batch], dtype=backend.xp.int64))
            model.step()
            losses.append(float(model.loss))
        print(
            f"epoch {epoch}: train loss {np.mean(losses):.4f}, "
            f"test accuracy {accuracy(model, test_A, test_y):.3f}"
        )
    seconds = time.perf_counter() - start
    print(f"test accuracy {accuracy(model, test_A, test_y):.3f} after {seconds:.1f} s")


if __name__ == "__main__":
    main()
