"""Training: the :class:`Trainer` loop, atomic checkpoints, plots, and whole runs.

>>> from portaconv.data import DataLoader, load_dataset
>>> from portaconv.models import build_model
>>> from portaconv.optim import Adam
>>> from portaconv.train import Trainer
>>> data = load_dataset("digits")                        # X (N, 1, 8, 8), y (N,)
>>> model = build_model("cnn", data.input_shape, data.num_classes)
>>> trainer = Trainer(model, Adam(model, 2e-3), progress=False)  # out_dir=...: checkpoints
>>> train = DataLoader(data.X_train[:256], data.y_train[:256], batch_size=32, shuffle=True)
>>> history = trainer.fit(train, epochs=2)               # one dict per epoch
>>> [record["epoch"] for record in history]
[1, 2]
>>> sorted(trainer.evaluate(DataLoader(data.X_test, data.y_test, batch_size=256)))
['accuracy', 'confusion', 'count', 'loss']
"""

from .checkpoint import load_checkpoint, save_checkpoint
from .trainer import Trainer, TrainingDivergedError

__all__ = ["Trainer", "TrainingDivergedError", "load_checkpoint", "save_checkpoint"]
