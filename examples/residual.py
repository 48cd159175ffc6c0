"""A small residual network on the 8x8 digits, trained by a plain loop (no Trainer).

``Residual(body, shortcut)`` adds its body's output to its input (or to the shortcut's
projection of it); its backward sends the gradient through both branches and sums them.
The loop below is every step written out: forward, loss, backward, optimizer step::

    python examples/residual.py
    PORTACONV_BACKEND=jax python examples/residual.py
"""

from __future__ import annotations

import numpy as np

import portaconv
from portaconv.data import DataLoader, load_dataset, standardize
from portaconv.layers import BatchNorm2d, Conv2d, CrossEntropyLoss, GlobalAvgPool2d, Linear, ReLU
from portaconv.models import Residual, Sequential
from portaconv.optim import SGD, CosineAnnealingLR

EPOCHS = 3


def block(c_in: int, c_out: int, stride: int) -> Sequential:
    """conv-BN-ReLU-conv-BN plus the input, or a 1x1 projection of it where the shape changes."""
    body = Sequential(
        Conv2d(c_in, c_out, 3, stride, 1, bias=False), BatchNorm2d(c_out), ReLU(),
        Conv2d(c_out, c_out, 3, padding=1, bias=False), BatchNorm2d(c_out),
    )  # fmt: skip
    shortcut = None
    if (c_in, stride) != (c_out, 1):
        shortcut = Sequential(Conv2d(c_in, c_out, 1, stride, bias=False), BatchNorm2d(c_out))
    return Sequential(Residual(body, shortcut), ReLU())


def main() -> None:
    portaconv.manual_seed(0)
    data = load_dataset("digits")
    X_train, X_test = standardize(data.X_train, data.X_test)
    net = Sequential(
        Conv2d(1, 8, 3, padding=1, bias=False), BatchNorm2d(8), ReLU(),
        block(8, 8, 1),  # 8 x 8 x 8
        block(8, 16, 2),  # 16 x 4 x 4
        GlobalAvgPool2d(), Linear(16, 10),
    )  # fmt: skip
    loss = CrossEntropyLoss()
    optimizer = SGD(net, lr=0.05, momentum=0.9, weight_decay=5e-4)
    scheduler = CosineAnnealingLR(optimizer, T_max=EPOCHS)
    loader = DataLoader(X_train, data.y_train, batch_size=32, shuffle=True, seed=0)

    for epoch in range(EPOCHS):
        loader.set_epoch(epoch)  # a new shuffled order each epoch, from (seed, epoch) alone
        net.train()
        total = 0.0
        for X, y in loader:  # arrays of the active backend
            net.zero_grad()
            total += float(loss.forward(net.forward(X), y))
            net.backward(loss.backward(), input_grad=False)  # no gradient for the images
            optimizer.step()
        scheduler.step()
        print(f"epoch {epoch + 1}: mean train loss {total / len(loader):.4f}")

    net.eval()
    scores = portaconv.to_numpy(net.forward(portaconv.to_backend(X_test)))
    accuracy = float(np.mean(scores.argmax(axis=1) == data.y_test))
    print(
        f"residual network, {len(net.parameters())} parameter arrays: test accuracy {accuracy:.3f}"
    )


if __name__ == "__main__":
    main()
