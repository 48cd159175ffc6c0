"""A Sequential CNN on the 8x8 handwritten digits shipped with portaconv (no download).

Build the network layer by layer, train it with :class:`portaconv.train.Trainer`, save a
checkpoint, load it into a fresh network and check that both classify the test images
alike. Runs on whichever backend is chosen::

    python examples/digits_cnn.py
    PORTACONV_BACKEND=torch python examples/digits_cnn.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

import portaconv
from portaconv.data import DataLoader, load_dataset, standardize
from portaconv.layers import BatchNorm2d, Conv2d, Flatten, Linear, MaxPool2d, ReLU
from portaconv.models import Sequential
from portaconv.optim import Adam, CosineAnnealingLR
from portaconv.train import Trainer, load_checkpoint, save_checkpoint

EPOCHS = 4


def build_cnn() -> Sequential:
    """(N, 1, 8, 8) images to (N, 10) class scores."""
    return Sequential(
        Conv2d(1, 16, 3, padding=1), BatchNorm2d(16), ReLU(), MaxPool2d(2, 2),  # 16 x 4 x 4
        Conv2d(16, 32, 3, padding=1), BatchNorm2d(32), ReLU(), MaxPool2d(2, 2),  # 32 x 2 x 2
        Flatten(), Linear(32 * 2 * 2, 10),
    )  # fmt: skip


def predicted_classes(model: Sequential, X: np.ndarray) -> np.ndarray:
    model.eval()  # BatchNorm uses its running statistics
    scores = model.forward(portaconv.to_backend(X))
    return portaconv.to_numpy(scores).argmax(axis=1)


def main() -> None:
    portaconv.manual_seed(0)  # the initial weights and the data order repeat run to run
    data = load_dataset("digits")  # X (N, 1, 8, 8) in [0, 1], y (N,) integer labels
    X_train, X_test = standardize(data.X_train, data.X_test)

    model = build_cnn()
    optimizer = Adam(model, lr=3e-3)
    # the learning rate falls to 0 along a cosine, so the last epochs settle, not swing
    trainer = Trainer(
        model, optimizer, scheduler=CosineAnnealingLR(optimizer, T_max=EPOCHS), progress=False
    )
    trainer.fit(
        DataLoader(X_train, data.y_train, batch_size=32, shuffle=True, seed=0), epochs=EPOCHS
    )
    accuracy = trainer.evaluate(DataLoader(X_test, data.y_test, batch_size=256))["accuracy"]
    print(f"backend {portaconv.get_backend().name}: test accuracy {accuracy:.3f}")

    with tempfile.TemporaryDirectory() as tmp:
        path = save_checkpoint(Path(tmp) / "digits.npz", {"model": model.state_dict()})
        restored = build_cnn()
        restored.load_state_dict(load_checkpoint(path)["model"])
    same = np.array_equal(predicted_classes(model, X_test), predicted_classes(restored, X_test))
    print(f"restored from the checkpoint: {'same' if same else 'DIFFERENT'} predictions")
    if not same:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
