"""Iris: how well the two-layer network of ``portaconv train --dataset iris`` generalises,
measured by nested cross-validation so that no test flower influences any choice.

    python benchmarks/iris_cv.py [--repeats R]

For each repeat r (folds drawn with seed r) and each of the 5 outer folds, the recipe is
chosen from :data:`GRID` by 5-fold cross-validation on the 120 training flowers alone, then
trained on those 120 and tested on the 30 held-out ones; every flower is tested once per
repeat. Printed: the nested accuracy, each grid entry's plain 5-fold accuracy (optimistic
for whichever entry one would pick by it), which entry the inner loops chose, and two
linear baselines on the same outer folds (logistic regression by L-BFGS in PyTorch, linear
discriminant analysis in NumPy). Training is the CLI's: :func:`prepare_data` (10 %
validation hold-out, standardisation with training statistics) and :func:`train_model`.
"""

from __future__ import annotations

import argparse
import sys

import harness
import numpy as np

from portaconv.data import DataLoader, Dataset, load_iris, stratified_folds
from portaconv.train.config import TrainConfig
from portaconv.train.experiment import prepare_data, train_model

#: Candidate recipes, fixed before any result was seen: the SGD recipe that
#: ``portaconv train --dataset iris`` used first, and Adam; each with weight decay 0, 1e-3, 1e-2.
GRID = [dict(optimizer="sgd", lr=0.05, epochs=60, weight_decay=wd) for wd in (0.0, 1e-3, 1e-2)] + [
    dict(optimizer="adam", lr=1e-2, epochs=200, weight_decay=wd) for wd in (0.0, 1e-3, 1e-2)
]


def network_predictions(recipe: dict, X: np.ndarray, y: np.ndarray, X_test: np.ndarray):
    config = TrainConfig(dataset="iris", progress=False, **recipe).resolved()
    split = Dataset("iris", X, y, X_test, np.zeros(len(X_test), np.int64), [0, 1, 2], (4,))
    data = prepare_data(config, dataset=split)
    trainer = train_model(config, data, log=lambda _: None)
    trainer.model.eval()
    predictions = []
    for X_batch, _ in DataLoader(*data["test"], batch_size=256):
        predictions.append(np.asarray(trainer.model.forward(X_batch)).argmax(1))
    return np.concatenate(predictions)


def cv_accuracy(recipe: dict, X: np.ndarray, y: np.ndarray, seed: int) -> float:
    correct = 0
    for test in stratified_folds(y, 5, seed):
        train = np.setdiff1d(np.arange(len(y)), test)
        correct += np.sum(network_predictions(recipe, X[train], y[train], X[test]) == y[test])
    return correct / len(y)


def standardised(X: np.ndarray, X_test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean, std = X.mean(0), X.std(0)
    return (X - mean) / std, (X_test - mean) / std


def logistic_regression(X, y, X_test):
    import torch

    X, X_test = standardised(X.astype(np.float64), X_test.astype(np.float64))
    torch.manual_seed(0)
    model = torch.nn.Linear(X.shape[1], 3).double()
    optimizer = torch.optim.LBFGS(model.parameters(), max_iter=500)
    X_t, y_t = torch.tensor(X), torch.tensor(y)

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(X_t), y_t)
        loss.backward()
        return loss

    optimizer.step(closure)
    return model(torch.tensor(X_test)).argmax(1).numpy()


def lda(X, y, X_test):
    X, X_test = standardised(X.astype(np.float64), X_test.astype(np.float64))
    means = np.stack([X[y == c].mean(0) for c in range(3)])
    pooled = sum(np.cov(X[y == c].T) * ((y == c).sum() - 1) for c in range(3)) / (len(y) - 3)
    inv = np.linalg.inv(pooled)
    scores = X_test @ inv @ means.T - 0.5 * np.sum(means @ inv * means, axis=1)
    return scores.argmax(1)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=1, help="fold draws (seeds 0..R-1)")
    parser.add_argument(
        "--quick", action="store_true", help="two recipes of 3 epochs, one outer fold (smoke)"
    )
    args = parser.parse_args(argv)
    harness.at_least(parser, repeats=(args.repeats, 1))
    grid = [dict(entry, epochs=3) for entry in GRID[::3]] if args.quick else GRID
    iris = load_iris()
    X = np.concatenate([iris.X_train, iris.X_test])
    y = np.concatenate([iris.y_train, iris.y_test])
    nested = 0
    per_recipe = np.zeros(len(grid))
    baselines = np.zeros(2)
    chosen = np.zeros(len(grid), dtype=int)
    total = 0
    for seed in range(args.repeats):
        for i, test in enumerate(stratified_folds(y, 5, seed)):
            if args.quick and i:
                break
            total += len(test)
            train = np.setdiff1d(np.arange(len(y)), test)
            inner = [cv_accuracy(r, X[train], y[train], seed) for r in grid]
            pick = int(np.argmax(inner))  # ties go to the earlier entry
            chosen[pick] += 1
            outer = [
                np.sum(network_predictions(r, X[train], y[train], X[test]) == y[test]) for r in grid
            ]
            per_recipe += outer
            nested += outer[pick]
            for j, baseline in enumerate((logistic_regression, lda)):
                baselines[j] += np.sum(baseline(X[train], y[train], X[test]) == y[test])
            print(
                f"seed {seed} fold {i}: inner CV {np.round(inner, 3).tolist()} -> entry {pick}, "
                f"{outer[pick]}/{len(test)} correct",
                file=sys.stderr,
                flush=True,
            )
    print(harness.header(harness.machine_info()))
    print(f"Iris, {args.repeats} x 5-fold cross-validation ({total} test predictions)")
    print(f"  nested (recipe chosen by inner CV): {nested / total:.4f}")
    for entry, (recipe, correct, picks) in enumerate(zip(grid, per_recipe, chosen, strict=True)):
        text = ", ".join(f"{k}={v}" for k, v in recipe.items())
        print(f"  entry {entry} ({text}): {correct / total:.4f}  chosen {picks}x")
    print(f"  logistic regression: {baselines[0] / total:.4f}  LDA: {baselines[1] / total:.4f}")


if __name__ == "__main__":
    main()
