"""Train a small CNN on the embedded 8x8 digits briefly, then predict with ``model.predict``.

Shows the model's summary, the class probabilities of a few test images and the accuracy of
the predictions on the whole test split. No download; a few seconds on a laptop's CPU::

    python examples/predict_digits.py
    PORTACONV_BACKEND=torch python examples/predict_digits.py

The same predictions from the command line, on a run's checkpoint and image files::

    portaconv train --out runs/digits
    portaconv predict --checkpoint runs/digits/best.npz digit.png more_digits.npy --top 3
"""

from __future__ import annotations

import argparse

import numpy as np

import portaconv
from portaconv.data import DataLoader, load_dataset, mean_std, normalize
from portaconv.models import build_model
from portaconv.optim import Adam
from portaconv.train import Trainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--show", type=int, default=5, help="test images to show")
    args = parser.parse_args()

    portaconv.manual_seed(0)
    data = load_dataset("digits")  # X (N, 1, 8, 8) in [0, 1]
    mean, std = mean_std(data.X_train)  # the training images' statistics, for every input
    X_train = normalize(data.X_train, mean, std)
    X_test = normalize(data.X_test, mean, std)

    model = build_model("cnn", data.input_shape, data.num_classes)
    print(model.summary(data.input_shape))
    trainer = Trainer(model, Adam(model, lr=2e-3), progress=False)
    loader = DataLoader(X_train, data.y_train, batch_size=32, shuffle=True, seed=0)
    trainer.fit(loader, epochs=args.epochs)

    # predict: evaluation mode, batches of 256, softmax probabilities (N, 10) on the backend
    probabilities = portaconv.to_numpy(model.predict(portaconv.to_backend(X_test)))
    predicted = probabilities.argmax(axis=1)
    for i in range(args.show):
        top = np.argsort(-probabilities[i])[:3]
        shown = ", ".join(f"{data.classes[k]} ({probabilities[i, k]:.3f})" for k in top)
        print(f"test image {i}: true {data.y_test[i]}, predicted {shown}")
    accuracy = float(np.mean(predicted == data.y_test))
    print(
        f"accuracy of model.predict on {len(predicted)} test images after {args.epochs} "
        f"epochs: {accuracy:.4f} ({portaconv.get_backend().name})"
    )


if __name__ == "__main__":
    main()
