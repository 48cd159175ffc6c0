"""Accuracy (not timing) of networks built through ``portaconv.compat.cs189``, the CS189
homework's ``neural_networks`` API, the course's way: ``AttrDict`` layer arguments, NumPy's
global seed, ``initialize_model`` / ``train`` / ``test``.

    python benchmarks/cs189_results.py [--mlp-epochs E] [--lenet-epochs E] [--lenet-subset N]

Runs, each trained with the package's SGD (momentum 0.9, constant rate, ``clip_norm`` 1 as
the course's scripts set it: the package's initialisation makes Conv2D weights large, its
fans being the kernel height and the output channels, and without clipping LeNet's first
steps saturate the softmax to exact zeros, whose loss gradient -Y / Y_hat is infinite):

- ``iris``: seed 004's two-layer network (10 ReLU units, softmax), batch 25, rate 0.01,
  100 epochs, on portaconv's Iris (96 train, 24 validation, 30 test);
- ``fashion-mnist mlp``: 784-512-256-10 (ReLU, softmax), batch 64, rate 0.05;
- ``fashion-mnist lenet``: Conv2D 6 (5, 5) pad 2, max Pool2D 2, Conv2D 16 (5, 5) valid,
  max Pool2D 2, Flatten, 120, 84, softmax (ReLU), batch 64, rate 0.01, on the first
  ``--lenet-subset`` training images;
- unless ``--no-reference``: portaconv's own ``mlp`` (512-256, dropout 0.2) by
  ``portaconv train`` with the same optimizer (no clipping), batch, epochs and validation
  split.

Fashion-MNIST: 50,000 train, 10,000 validation, 10,000 test images; the accuracy is on the
10,000 test images. ``--quick`` replaces it by random images (its figures mean nothing).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from portaconv.backend import to_numpy
from portaconv.compat.cs189.datasets import Dataset, initialize_dataset
from portaconv.compat.cs189.models import initialize_model
from portaconv.compat.cs189.utils import AttrDict


def fc(n_out, activation):
    return AttrDict(name="fully_connected", activation=activation, n_out=n_out)


MLP = [fc(512, "relu"), fc(256, "relu"), fc(None, "softmax")]
LENET = [
    AttrDict(name="conv2d", activation="relu", n_out=6, kernel_shape=(5, 5), stride=1, pad=2),
    AttrDict(name="pool2d", kernel_shape=(2, 2), mode="max", stride=2),
    AttrDict(name="conv2d", activation="relu", n_out=16, kernel_shape=(5, 5), pad="valid"),
    AttrDict(name="pool2d", kernel_shape=(2, 2), mode="max", stride=2),
    AttrDict(name="flatten"),
    fc(120, "relu"),
    fc(84, "relu"),
    fc(None, "softmax"),
]
IRIS = [fc(10, "relu"), fc(None, "softmax")]


def accuracy(model, data) -> float:
    """The fraction of all ``data`` rows classified right (the package's ``test`` averages
    per batch; this counts every row once)."""
    right = 0
    for start in range(0, data.n_samples, 1000):
        X = data.data_[start : start + 1000, ...]
        Y = data.labels[start : start + 1000, ...]
        out = to_numpy(model.forward(X))
        right += int(np.sum(np.argmax(out, axis=1) == np.argmax(to_numpy(Y), axis=1)))
    return right / data.n_samples


def run(name, layer_args, dataset, epochs, lr, clip_norm=1.0, seed=0) -> dict:
    np.random.seed(seed)
    optimizer = AttrDict(
        name="SGD", lr=lr, lr_scheduler="constant", momentum=0.9, clip_norm=clip_norm
    )
    model = initialize_model(name, "cross_entropy", layer_args, optimizer)
    printed = io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stdout(printed):
        model.train(dataset, epochs=epochs)
    seconds = time.perf_counter() - start
    last = [line for line in printed.getvalue().splitlines() if line.startswith("Epoch")][-1]
    print(f"{name}: {last}", flush=True)
    return {
        "run": name,
        "epochs": epochs,
        "train_images": dataset.n_training,
        "test_accuracy": accuracy(model, dataset.test),
        "seconds": seconds,
    }


def subset(dataset, n, batch_size) -> Dataset:
    return Dataset(
        dataset.train.data_[:n, ...],
        dataset.train.labels[:n, ...],
        batch_size,
        dataset.validate.data_,
        dataset.validate.labels,
        dataset.test.data_,
        dataset.test.labels,
    )


def flattened(dataset, batch_size) -> Dataset:
    """The same images as rows (N, H W C), for the fully connected network."""

    def rows(data):
        return np.reshape(data.data_, (data.n_samples, -1)), data.labels

    return Dataset(*rows(dataset.train), batch_size, *rows(dataset.validate), *rows(dataset.test))


def random_images(n, batch_size) -> Dataset:
    rng = np.random.default_rng(0)
    X = rng.random((n, 28, 28, 1), dtype=np.float32)
    Y = np.eye(10, dtype=np.float32)[rng.integers(0, 10, n)]
    return Dataset(X, Y, batch_size, X[: n // 4], Y[: n // 4], X[: n // 4], Y[: n // 4])


def reference_mlp(epochs, batch_size, lr) -> dict:
    """portaconv's own ``mlp`` by ``portaconv train`` (no augmentation, constant rate)."""
    with tempfile.TemporaryDirectory() as out:
        command = [
            sys.executable, "-m", "portaconv", "train", "--dataset", "fashion-mnist",
            "--model", "mlp", "--epochs", str(epochs), "--batch-size", str(batch_size),
            "--optimizer", "sgd", "--lr", str(lr), "--momentum", "0.9", "--scheduler", "none",
            "--warmup-epochs", "0", "--augment", "none", "--weight-decay", "0",
            "--val-fraction", str(1 / 6), "--seed", "0", "--no-progress", "--out", out,
        ]  # fmt: skip
        start = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        seconds = time.perf_counter() - start
        with open(os.path.join(out, "summary.json")) as f:
            summary = json.load(f)
    return {
        "run": "fashion-mnist portaconv mlp (reference)",
        "epochs": epochs,
        "train_images": summary["train_images"],
        "test_accuracy": summary["test_accuracy"],
        "seconds": seconds,
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mlp-epochs", type=int, default=10)
    parser.add_argument("--lenet-epochs", type=int, default=3)
    parser.add_argument("--lenet-subset", type=int, default=12_000)
    parser.add_argument("--no-reference", action="store_true", help="skip portaconv's own mlp")
    parser.add_argument("--quick", action="store_true", help="tiny random data, for the smoke test")
    parser.add_argument("--json", help="write the rows to this file")
    args = parser.parse_args(argv)
    for option in ("mlp_epochs", "lenet_epochs", "lenet_subset"):
        if getattr(args, option) < 1:
            parser.error(f"--{option.replace('_', '-')} must be at least 1")

    rows = [run("iris ffnn", IRIS, initialize_dataset("iris", batch_size=25), 100, 0.01)]
    if args.quick:
        images, mlp_epochs, lenet_epochs = random_images(256, 64), 1, 1
        lenet_data = images
    else:
        images = initialize_dataset("fashion_mnist", batch_size=64)
        mlp_epochs, lenet_epochs = args.mlp_epochs, args.lenet_epochs
        lenet_data = subset(images, args.lenet_subset, 64)
    flat = flattened(images, 64)
    rows.append(run("fashion-mnist mlp", MLP, flat, mlp_epochs, 0.05))
    rows.append(run("fashion-mnist lenet", LENET, lenet_data, lenet_epochs, 0.01))
    if not (args.quick or args.no_reference):
        rows.append(reference_mlp(mlp_epochs, 64, 0.05))

    print("\n| run | epochs | train images | test accuracy | seconds |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for row in rows:
        print(
            f"| {row['run']} | {row['epochs']} | {row['train_images']:,} | "
            f"{100 * row['test_accuracy']:.2f} % | {row['seconds']:.0f} |"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
