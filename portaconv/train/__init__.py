"""Training: the :class:`Trainer` loop, atomic checkpoints, plots, and whole runs.

>>> from portaconv.models import build_model
>>> from portaconv.optim import Adam
>>> from portaconv.data import DataLoader
>>> from portaconv.train import Trainer
>>> model = build_model("cnn", (1, 8, 8), 10)
>>> trainer = Trainer(model, Adam(model, 2e-3), out_dir="runs/example")
>>> history = trainer.fit(DataLoader(X, y, batch_size=32, shuffle=True), epochs=5)  # doctest: +SKIP
"""

from .checkpoint import load_checkpoint, save_checkpoint
from .trainer import Trainer, TrainingDivergedError

__all__ = ["Trainer", "TrainingDivergedError", "load_checkpoint", "save_checkpoint"]
