"""The handout's bonus layers (``portaconv.compat.hw2p1``), the handout's way, then trained.

1. The public bonus autograder's calls, as its NumPy code makes them: ``np.random.seed``,
   integer images, ``ResBlock(3, 64, 3, stride=4, padding=4)``, forward and backward;
   ``BatchNorm2d(3, 0.4)`` and ``Dropout2d(0.4)(x, False)`` with the handout's meanings.
2. The same classes inside a portaconv model: ResBlock -> Dropout2d -> Flatten ->
   Linear, trained with portaconv's SGD on the 8x8 digits shipped with portaconv (no
   download) on whichever backend is chosen; ``model.eval()`` reaches the handout's layers.

    python examples/handout_resblock.py
    PORTACONV_BACKEND=torch python examples/handout_resblock.py
"""

from __future__ import annotations

import argparse

import numpy as np

import portaconv
from portaconv.compat.hw2p1 import BatchNorm2d, Dropout2d, ResBlock
from portaconv.data import load_digits
from portaconv.layers import CrossEntropyLoss, Flatten, Linear
from portaconv.models import Sequential
from portaconv.optim import SGD


def autograder_calls() -> None:
    """Part 1: the handout's NumPy code, on NumPy."""
    with portaconv.use_backend("numpy"):
        np.random.seed(11785)
        x = np.random.randint(0, 255, size=(5, 3, 128, 128))
        delta = np.random.randint(0, 255, size=(5, 64, 34, 34))
        block = ResBlock(in_channels=3, out_channels=64, filter_size=3, stride=4, padding=4)
        y = block.forward(x)
        dx = block.backward(delta)
        print(f"ResBlock: integer x {x.shape} -> {y.dtype} {y.shape}; dLdx {dx.shape}")

        bn, drop = BatchNorm2d(3, 0.4), Dropout2d(0.4)  # 0.4 is alpha, and p
        z = np.random.random((5, 3, 4, 4))
        bn(z, False)
        kept = int(np.sum(drop.forward(z, False)[:, :, 0, 0] != 0))
        print(
            f"BatchNorm2d(3, 0.4): alpha={bn.alpha}, eps={bn.eps}, running_V {bn.running_V.ravel()}"
        )
        print(f"Dropout2d(0.4)(x, False): {kept} of 15 channels kept")


def train(epochs: int, batch_size: int, lr: float, seed: int) -> float:
    """Part 2: a classifier of the handout's layers; returns the test accuracy."""
    np.random.seed(seed)  # the handout's draws: ResBlock's weights, Dropout2d's masks
    data = load_digits(seed=seed)
    backend = portaconv.get_backend()
    xp = backend.xp

    def on_backend(X):
        return portaconv.to_backend(X, dtype=xp.float64)  # the handout's layers are float64

    model = Sequential(
        ResBlock(1, 16, 3, stride=2, padding=1),  # (N, 1, 8, 8) -> (N, 16, 4, 4)
        Dropout2d(0.1),
        Flatten(),
        Linear(
            256, 10, weight_init_fn=lambda *s: np.random.normal(0, 0.05, s), bias_init_fn=np.zeros
        ),
    )
    loss, optimizer = CrossEntropyLoss(), SGD(model, lr=lr, momentum=0.9)
    n = len(data.X_train)
    for epoch in range(epochs):
        order = np.random.permutation(n)
        total = 0.0
        for start in range(0, n, batch_size):
            batch = order[start : start + batch_size]
            labels = portaconv.to_backend(data.y_train[batch], dtype=xp.int64)
            total += float(loss.forward(model.forward(on_backend(data.X_train[batch])), labels))
            model.zero_grad()
            model.backward(loss.backward())
            optimizer.step()
        print(f"epoch {epoch + 1}: mean training loss {total / -(-n // batch_size):.3f}")
    model.eval()  # BatchNorm2d: the running statistics; Dropout2d: the identity
    scores = portaconv.to_numpy(model.forward(on_backend(data.X_test)))
    return float(np.mean(scores.argmax(axis=1) == data.y_test))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    autograder_calls()
    print(f"backend: {portaconv.get_backend()}")
    accuracy = train(args.epochs, args.batch_size, args.lr, args.seed)
    print(f"test accuracy of the handout's ResBlock on the digits: {accuracy:.1%}")


if __name__ == "__main__":
    main()
