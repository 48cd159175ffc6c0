"""Iris: the two-layer network of ``portaconv train --dataset iris`` against two linear
baselines, on ten stratified 80/20 splits (``load_iris(seed=s)``, s = 0..9).

    python benchmarks/iris_splits.py

Split 0 is the one ``portaconv train`` uses. The network is trained as the CLI trains it
(recipe, 10 % validation hold-out, standardisation with training statistics, seed 0); the
baselines are a logistic regression fitted by L-BFGS in PyTorch and linear discriminant
analysis in NumPy, both on the standardised training split.
"""

from __future__ import annotations

import contextlib
import io
import sys

import numpy as np
import torch

from portaconv.data import load_iris
from portaconv.train.experiment import TrainConfig, run_experiment


def logistic_regression(X, y, X_test):
    torch.manual_seed(0)
    model = torch.nn.Linear(X.shape[1], 3).double()
    optimizer = torch.optim.LBFGS(model.parameters(), max_iter=500)
    X_t, y_t = torch.tensor(X, dtype=torch.float64), torch.tensor(y)

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(X_t), y_t)
        loss.backward()
        return loss

    optimizer.step(closure)
    return model(torch.tensor(X_test, dtype=torch.float64)).argmax(1).numpy()


def lda(X, y, X_test):
    means = np.stack([X[y == c].mean(0) for c in range(3)])
    pooled = sum(np.cov(X[y == c].T) * ((y == c).sum() - 1) for c in range(3)) / (len(y) - 3)
    inv = np.linalg.inv(pooled)
    scores = X_test @ inv @ means.T - 0.5 * np.sum(means @ inv * means, axis=1)
    return scores.argmax(1)


def network(split, out):
    import portaconv.data.datasets as datasets

    original = datasets.load_iris
    datasets.DATASETS["iris"] = lambda **_: original(seed=split)
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            config = TrainConfig(dataset="iris", out=f"{out}/split{split}", progress=False)
            return run_experiment(config)["test_accuracy"]
    finally:
        datasets.DATASETS["iris"] = original


def main() -> None:
    out = sys.argv[1] if len(sys.argv) > 1 else "runs/iris-splits"
    rows = []
    print("split  two-layer net  logistic regression  LDA")
    for split in range(10):
        data = load_iris(seed=split)
        X = data.X_train.astype(np.float64)
        mean, std = X.mean(0), X.std(0)
        X, X_test = (X - mean) / std, (data.X_test - mean) / std
        row = (
            network(split, out),
            np.mean(logistic_regression(X, data.y_train, X_test) == data.y_test),
            np.mean(lda(X, data.y_train, X_test) == data.y_test),
        )
        rows.append(row)
        print(f"{split:>5}  {row[0]:>13.3f}  {row[1]:>19.3f}  {row[2]:.3f}")
    means = np.mean(rows, axis=0)
    print(f" mean  {means[0]:>13.3f}  {means[1]:>19.3f}  {means[2]:.3f}")


if __name__ == "__main__":
    main()
