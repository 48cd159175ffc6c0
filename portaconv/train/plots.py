"""PNG plots of a run, drawn with matplotlib's Agg backend (no display needed).

matplotlib is optional (``pip install "portaconv[plot]"``); without it the functions return
no files and the trainer says so once.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def _pyplot() -> Any | None:
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plots_available() -> bool:
    return _pyplot() is not None


def plot_history(
    history: Sequence[dict[str, Any]], out_dir: str | Path, title: str = ""
) -> list[Path]:
    """``loss.png`` and ``accuracy.png`` (train and validation per epoch) and ``lr.png``
    (the learning rate each epoch trained at), each titled ``title`` (the run: dataset,
    model, backend)."""
    plt = _pyplot()
    if plt is None or not history:
        return []
    out_dir = Path(out_dir)
    epochs = [record["epoch"] for record in history]
    written = []
    for metric, label in (("loss", "cross-entropy loss"), ("accuracy", "accuracy")):
        fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
        for split, style in (("train", "-o"), ("val", "-s")):
            values = [record.get(f"{split}_{metric}") for record in history]
            if all(v is not None for v in values):
                name = "train" if split == "train" else "validation"
                ax.plot(epochs, values, style, markersize=3, label=name)
        _epoch_axis(ax)
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
        ax.legend()
        written.append(_save(plt, fig, ax, title, out_dir / f"{metric}.png"))
    rates = [record.get("lr") for record in history]
    if all(isinstance(rate, int | float) for rate in rates):
        fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
        ax.plot(epochs, rates, "-o", markersize=3)
        if min(rates) > 0 and max(rates) / min(rates) > 100:  # step or exponential decay
            ax.set_yscale("log")
        _epoch_axis(ax)
        ax.set_ylabel("learning rate")
        ax.grid(True, alpha=0.3)
        written.append(_save(plt, fig, ax, title, out_dir / "lr.png"))
    return written


def _epoch_axis(ax: Any) -> None:
    """The x axis counts epochs: ticks on whole numbers only (a 2-epoch run's would
    otherwise fall at 1.0, 1.2, ..., 2.0)."""
    from matplotlib.ticker import MaxNLocator

    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _save(plt: Any, fig: Any, ax: Any, title: str, path: Path) -> Path:
    if title:
        ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_confusion(
    matrix: np.ndarray, classes: Sequence[str], path: str | Path, title: str = ""
) -> list[Path]:
    """The confusion matrix (rows: true class, columns: predicted), counts in each cell; the
    title names the accuracy after ``title``."""
    plt = _pyplot()
    if plt is None:
        return []
    matrix = np.asarray(matrix)
    n = matrix.shape[0]
    size = max(4.0, 0.5 * n + 2)
    fig, ax = plt.subplots(figsize=(size, size), dpi=100)
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(n), labels=list(classes), rotation=45, ha="right")
    ax.set_yticks(range(n), labels=list(classes))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    threshold = matrix.max() / 2 if matrix.size else 0
    for i in range(n):
        for j in range(n):
            colour = "white" if matrix[i, j] > threshold else "black"
            count = str(int(matrix[i, j]))
            ax.text(j, i, count, ha="center", va="center", color=colour, fontsize=8)
    accuracy = np.trace(matrix) / max(1, matrix.sum())
    heading = f"confusion matrix (accuracy {accuracy:.4f})"
    return [_save(plt, fig, ax, f"{title}\n{heading}" if title else heading, Path(path))]
