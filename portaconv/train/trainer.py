"""The training loop: fit, evaluate, checkpoint, resume, log.

:class:`Trainer` drives any model that follows portaconv's model protocol (``forward``,
``backward``, ``parameters``/``gradients``, ``train``/``eval``, ``state_dict``) with an
optimizer from :mod:`portaconv.optim` and a loss layer. One epoch::

    loader.set_epoch(epoch)                 # the shuffle order depends on (seed, epoch) only
    for X, y in loader:
        Z = model.forward(X)
        loss = criterion.forward(Z, y)
        optimizer.zero_grad(); model.backward(criterion.backward()); optimizer.step()
    evaluate on the validation loader; scheduler.step()
    write metrics.jsonl (one line) and checkpoint.npz (atomically)

Because the data order is a function of the epoch and the checkpoint holds the model, the
optimizer, the scheduler and portaconv's random state (Dropout masks), a run resumed from
the checkpoint of epoch ``e`` continues exactly as the uninterrupted run would have.
"""

from __future__ import annotations

import inspect
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from array_api_compat import array_namespace

from ..backend import get_rng_state, set_rng_state, to_numpy
from ..checks import check_int, counted
from ..distributed import on_root
from ..layers import CrossEntropyLoss
from . import plots
from ._json import dumps
from .checkpoint import load_checkpoint, remove_stale_temporaries, save_checkpoint
from .checkpoint_checks import FORMAT, check_training_state
from .compiled import CompiledStep

CHECKPOINT = "checkpoint.npz"
BEST = "best.npz"
METRICS = "metrics.jsonl"


class TrainingDivergedError(ArithmeticError):
    """The loss or the weights stopped being finite; the epoch was not saved."""


class Trainer:
    """Fit ``model`` with ``optimizer`` (and optionally ``scheduler``, stepped once per epoch).

    Without an optimizer the trainer only evaluates.

    ``out_dir`` (optional) receives ``checkpoint.npz`` after every epoch, ``best.npz`` when
    the validation accuracy improves, ``metrics.jsonl`` and the plots. ``meta`` is stored in
    every checkpoint (what is needed to rebuild the model and its input pipeline).
    ``progress`` shows a tqdm bar per epoch with loss, accuracy, images/s and ETA.

    ``criterion`` is the loss layer. The default is ``CrossEntropyLoss()``: softmax
    cross-entropy on the model's outputs taken as logits, averaged over the batch, against
    integer labels or one-hot (probability) rows, without label smoothing.

    ``compile=True`` runs each training step (forward, loss, backward, optimizer update)
    as one compiled function: ``torch.compile`` on the torch backend, ``jax.jit`` on JAX
    (:mod:`portaconv.train.compiled`); other backends refuse it with a ``ValueError``. The
    first step of a run is eager, the first compiled one compiles (once per batch shape).
    The log says when it compiles; the seconds of the steps that compile (and of the eager
    first step) go to :attr:`compile_seconds` and each epoch's ``compile_seconds``, not to
    the training time and images/s.

    ``comm`` (a :class:`portaconv.distributed.Communicator`, e.g. from
    :func:`portaconv.distributed.world`): data-parallel training over its ranks. Each rank's
    training loader yields its share of every global batch (``DataLoader(...,
    rank=comm.rank, world_size=comm.size)``) and each evaluation loader its share of the rows;
    the trainer starts every rank from rank 0's model, all-reduces the gradients before each
    optimizer step and the metrics after each epoch, and only rank 0 logs, shows progress
    and writes files.
    """

    def __init__(
        self,
        model: Any,
        optimizer: Any = None,
        criterion: Any = None,
        scheduler: Any = None,
        out_dir: str | Path | None = None,
        progress: bool = True,
        meta: dict[str, Any] | None = None,
        log: Callable[[str], None] | None = None,
        patience: int | None = None,
        comm: Any = None,
        compile: bool = False,
    ) -> None:
        if patience is not None:
            check_int("Trainer", "patience", patience)
        if not isinstance(compile, bool):
            raise TypeError(f"Trainer: compile must be True or False, got {compile!r}")
        if compile and comm is not None:
            raise ValueError(
                "Trainer: compile=True runs one process's step as one compiled function; "
                "it does not take a communicator (comm) yet: train over MPI without compile"
            )
        for method in ("forward", "backward", "train", "eval", "state_dict", "load_state_dict"):
            if not callable(getattr(model, method, None)):
                raise TypeError(
                    f"Trainer: model must follow portaconv's model protocol (a Sequential or "
                    f"a Model); {type(model).__name__} has no {method}()"
                )
        for method in ("step", "zero_grad", "state_dict", "load_state_dict"):
            if optimizer is not None and not callable(getattr(optimizer, method, None)):
                raise TypeError(
                    f"Trainer: optimizer must be a portaconv.optim optimizer; "
                    f"{type(optimizer).__name__} has no {method}()"
                )
        self.model = model
        self._skips_input_grad = "input_grad" in inspect.signature(model.backward).parameters
        self.optimizer = optimizer
        self.criterion = CrossEntropyLoss() if criterion is None else criterion
        self.scheduler = scheduler
        self.out_dir = None if out_dir is None else Path(out_dir)
        self.comm = comm
        #: Whether this process logs and writes files: rank 0, or the only process.
        self.is_root = comm is None or comm.is_root
        self.progress = progress and self.is_root
        self.meta = dict(meta or {})
        self.log = log or (lambda line: print(line, file=sys.stderr, flush=True))
        if not self.is_root:
            self.log = lambda line: None
        self.history: list[dict[str, Any]] = []
        self.epoch = 0
        #: Seconds and images of the training steps, the steps that compiled left out.
        self.train_seconds = 0.0
        self.train_images = 0
        #: Seconds of the steps that compiled (compile=True; see portaconv.train.compiled).
        self.compile_seconds = 0.0
        self.patience = patience
        self.best_val_accuracy: float | None = None
        #: The epoch (1-based) of the best validation accuracy: the one best.npz holds.
        self.best_epoch: int | None = None
        #: Whether the last fit stopped before its epochs for want of progress (``patience``).
        self.stopped_early = False
        #: The compiled training step (compile=True; see portaconv.train.compiled), or None.
        self.compiled_step = None
        self._bar: Any = None  # the epoch's progress bar, while it shows
        if compile and optimizer is not None:
            self.compiled_step = CompiledStep(self._step, model, optimizer, self._log_in_epoch)

    # ---------------------------------------------------------------------------- training

    def fit(
        self, train_loader: Any, val_loader: Any = None, epochs: int = 10, resume: bool = False
    ) -> list[dict[str, Any]]:
        """Train until ``epochs`` epochs are done; returns the history (one dict per epoch).

        ``resume=True`` first loads ``out_dir/checkpoint.npz`` (if there is one) and
        continues after its epoch.

        Early stopping: with ``patience`` N (the constructor's), training stops once N epochs
        in a row have not raised the best validation accuracy (``stopped_early`` is then
        True); a resumed run counts the epochs of its checkpoint's history too.
        """
        if self.optimizer is None:
            raise ValueError("Trainer: fit needs an optimizer; this trainer can only evaluate")
        if self.patience is not None and val_loader is None:
            raise ValueError("Trainer: patience watches the validation accuracy: give val_loader")
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
            raise ValueError(f"Trainer: epochs must be a non-negative integer, got {epochs!r}")
        if resume:
            if self.out_dir is None:
                raise ValueError("Trainer: resume=True needs out_dir, where the checkpoint is")
            self.resume()
        if self.comm is not None:
            self.comm.broadcast_model(self.model)  # every rank starts from rank 0's weights
        if self.out_dir is not None and self.is_root:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            for path in remove_stale_temporaries(self.out_dir):
                self.log(f"removed {path}, left by a run killed while writing it")
            # A fresh run starts a fresh log; a resumed one rewrites it from the checkpoint's
            # history, dropping any epoch logged after the checkpoint was written.
            (self.out_dir / METRICS).write_text("".join(dumps(r) + "\n" for r in self.history))
        self.stopped_early = False
        while self.epoch < epochs:
            if self._out_of_patience():
                self.stopped_early = True
                self.log(
                    f"stopping early after epoch {self.epoch}: no better validation accuracy "
                    f"in the {counted(self.epoch - self.best_epoch, 'epoch')} since epoch "
                    f"{self.best_epoch} ({self.best_val_accuracy:.4f}; --patience "
                    f"{self.patience})"
                )
                break
            record = self._train_epoch(train_loader, epochs)
            if val_loader is not None:
                val = self.evaluate(val_loader)
                record.update(val_loss=val["loss"], val_accuracy=val["accuracy"])
            record["lr"] = float(self.optimizer.lr)
            self._stop_if_diverged(record)
            if self.scheduler is not None:
                self.scheduler.step()
            self.epoch += 1
            self.history.append(record)
            self.log(_epoch_line(record, epochs))
            val = record.get("val_accuracy")
            improved = val is not None and (
                self.best_val_accuracy is None or val > self.best_val_accuracy
            )
            if improved:
                self.best_val_accuracy, self.best_epoch = val, self.epoch
            if self.out_dir is not None and self.is_root:
                self._save_epoch(record, improved)
        return self.history

    def _out_of_patience(self) -> bool:
        return (
            self.patience is not None
            and self.best_epoch is not None
            and self.epoch - self.best_epoch >= self.patience
        )

    def resume(self) -> dict[str, Any] | None:
        """Load ``out_dir/checkpoint.npz`` if there is one; returns its state (None: there
        was none).

        A damaged checkpoint, or one that is not a training checkpoint, is a ``ValueError``
        naming the file; so is a directory in its place. If the checkpoint's own epoch is
        the best one but ``best.npz`` holds another (a run killed between the two writes),
        ``best.npz`` is rewritten from the checkpoint."""
        path = self.out_dir / CHECKPOINT
        # With several ranks, rank 0 reads the file and sends its state to the others.
        state = on_root(self.comm, lambda: load_checkpoint(path) if path.exists() else None)
        if state is None:
            self.log(f"no checkpoint at {path}; starting from scratch")
            return None
        try:
            self.restore(state)
        except (ValueError, TypeError) as exc:  # TypeError: arrays of a type the model refuses
            raise ValueError(f"checkpoint {path}: {exc}") from exc
        self.log(f"resumed from {path} after epoch {self.epoch}")
        if self.is_root:
            self._repair_best(state)
        return state

    def _repair_best(self, state: dict[str, Any]) -> None:
        if self.best_epoch is None:
            return
        path = self.out_dir / BEST
        try:
            held = load_checkpoint(path)["epoch"]
        except (OSError, ValueError, KeyError):
            held = None  # missing or damaged
        if held == self.best_epoch:
            return
        if self.best_epoch == self.epoch:
            save_checkpoint(path, state)
            self.log(f"{path} now holds epoch {self.epoch}, the best (it held {held})")
        else:
            self.log(
                f"warning: {path} holds epoch {held}, not the best epoch {self.best_epoch}, "
                f"and cannot be rebuilt; it is replaced when an epoch beats epoch "
                f"{self.best_epoch}"
            )

    def _backward(self, dLdZ: Any) -> None:
        """Backpropagate through the model. Its input is data, so models that can skip the
        input's gradient (``backward(dLdZ, input_grad=False)``, as Sequential) do."""
        if self._skips_input_grad:
            self.model.backward(dLdZ, input_grad=False)
        else:
            self.model.backward(dLdZ)

    def _step(self, X: Any, y: Any) -> tuple[Any, Any]:
        """One training step on the batch ``X``, ``y``: forward, loss, backward, optimizer
        update. Returns the batch's summed loss and its count of correct predictions, 0-d
        arrays left on the device."""
        Z = self.model.forward(X)
        loss = self.criterion.forward(Z, y)
        self.optimizer.zero_grad()
        self._backward(self.criterion.backward())
        n = int(X.shape[0])
        if self.comm is not None:
            self.comm.allreduce_gradients(self.model, n)
        self.optimizer.step()
        return loss * n, _correct(Z, y)

    def _log_in_epoch(self, line: str) -> None:
        """Log a line while an epoch's progress bar may show: the bar steps aside for it."""
        if self._bar is None:
            self.log(line)
            return
        with type(self._bar).external_write_mode(file=sys.stderr):
            self.log(line)

    def _train_epoch(self, loader: Any, epochs: int) -> dict[str, Any]:
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(self.epoch)
        self.model.train()
        bar = _progress(len(loader), f"epoch {self.epoch + 1}/{epochs}", self.progress)
        self._bar = bar
        total_loss = total_correct = None
        seen = 0
        compiled = self.compiled_step
        if compiled is not None:  # what the steps that compile add is left out of the timing
            compile_seconds, compile_images = compiled.compile_seconds, compiled.compile_images
        start = time.perf_counter()
        step = self._step if compiled is None else compiled
        try:
            for i, (X, y) in enumerate(loader):
                batch_loss, correct = step(X, y)
                total_loss = batch_loss if total_loss is None else total_loss + batch_loss
                total_correct = correct if total_correct is None else total_correct + correct
                seen += int(X.shape[0])
                # Reading a value from the device waits for it: do it only now and then.
                if bar is not None and (i % 10 == 9 or i == len(loader) - 1):
                    elapsed = time.perf_counter() - start
                    bar.set_postfix(
                        loss=f"{float(total_loss) / seen:.4f}",
                        acc=f"{float(total_correct) / seen:.4f}",
                        img_s=f"{seen / max(elapsed, 1e-9):.0f}",
                        refresh=False,
                    )
                if bar is not None:
                    bar.update(1)
        finally:
            self._bar = None
            if compiled is not None:  # the optimizer's numbers back on the host
                compiled.lower()
        if bar is not None:
            bar.close()
        if not seen:
            raise ValueError("Trainer.fit: the training loader yielded no batches")
        loss_sum, correct_sum = float(total_loss), float(total_correct)
        if self.comm is not None:
            loss_sum, correct_sum, seen = self.comm.allreduce_sum([loss_sum, correct_sum, seen])
            seen = int(seen)
        mean_loss = loss_sum / seen
        accuracy = correct_sum / seen
        seconds = time.perf_counter() - start
        record: dict[str, Any] = {
            "epoch": self.epoch + 1,
            "train_loss": mean_loss,
            "train_accuracy": accuracy,
        }
        timed_images = seen
        if compiled is not None:
            compile_seconds = compiled.compile_seconds - compile_seconds
            timed_images -= compiled.compile_images - compile_images
            seconds = max(0.0, seconds - compile_seconds)
            self.compile_seconds += compile_seconds
            record["compile_seconds"] = compile_seconds
        self.train_seconds += seconds
        self.train_images += timed_images
        record["seconds"] = seconds
        record["images_per_second"] = timed_images / seconds if timed_images and seconds else None
        return record

    # -------------------------------------------------------------------------- evaluation

    def evaluate(self, loader: Any, num_classes: int | None = None) -> dict[str, Any]:
        """Loss, accuracy and confusion matrix (rows true, columns predicted) in eval mode.

        The model is put back in training mode afterwards if it was in it. With ``comm``,
        ``loader`` holds this rank's share of the rows (possibly none: ``None``) and the
        results are those of all ranks' rows together.
        """
        was_training = getattr(self.model, "training", True)
        self.model.eval()
        total_loss = 0.0
        truths, predictions = [], []
        try:
            for X, y in loader or ():
                Z = self.model.forward(X)
                total_loss += float(self.criterion.forward(Z, y)) * int(X.shape[0])
                xp = array_namespace(Z)
                predictions.append(to_numpy(xp.argmax(Z, axis=1)))
                truths.append(to_numpy(y))
        finally:
            self.model.train(was_training)
        truth = np.concatenate(truths or [np.zeros(0)]).astype(np.int64)
        predicted = np.concatenate(predictions or [np.zeros(0)]).astype(np.int64)
        classes = num_classes or int(max(truth.max(initial=0), predicted.max(initial=0)) + 1)
        if self.comm is not None and not num_classes:
            classes = int(self.comm.allreduce_max(classes))
        confusion = np.bincount(truth * classes + predicted, minlength=classes * classes)
        count = truth.size
        if self.comm is not None:  # every rank's rows: sum the loss, count and confusion
            summed = self.comm.allreduce_sum([total_loss, count, *confusion])
            total_loss, count, confusion = summed[0], int(summed[1]), summed[2:].astype(np.int64)
        if not count:
            raise ValueError("Trainer.evaluate: the loader yielded no batches")
        return {
            "loss": total_loss / count,
            "accuracy": float(np.trace(confusion.reshape(classes, classes))) / count,
            "confusion": confusion.reshape(classes, classes),
            "count": int(count),
        }

    # ----------------------------------------------------------------- checkpoints and logs

    def checkpoint_state(self) -> dict[str, Any]:
        """Everything a resumed run needs, as :func:`save_checkpoint` stores it."""
        return {
            "format": FORMAT,
            "epoch": self.epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "rng": get_rng_state(),
            "history": self.history,
            "train_seconds": self.train_seconds,
            "train_images": self.train_images,
            "compile_seconds": self.compile_seconds,
            "best_val_accuracy": self.best_val_accuracy,
            "best_epoch": self.best_epoch,
            "meta": self.meta,
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Load a checkpoint's state (from :func:`load_checkpoint`) into this trainer.

        The whole state is checked first: a missing or malformed entry is a ``ValueError``
        that names it, and leaves the trainer as it was."""
        check_training_state(state)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state.get("scheduler") is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])
        self.epoch = int(state["epoch"])
        self.history = list(state["history"])
        self.train_seconds = float(state["train_seconds"])
        self.train_images = int(state["train_images"])
        self.compile_seconds = float(state.get("compile_seconds", 0.0))
        self.best_val_accuracy, self.best_epoch = _best_of(state)

    def _stop_if_diverged(self, record: dict[str, Any]) -> None:
        """Raise :class:`TrainingDivergedError` if the epoch's losses or the weights are not
        finite, before anything of the epoch is saved."""
        bad = [
            f"{name.replace('_', ' ')} {record[name]}"
            for name in ("train_loss", "val_loss")
            if name in record and not math.isfinite(record[name])
        ]
        for name, value in self.model.state_dict().items():  # BatchNorm's statistics too
            xp = array_namespace(value)
            if not bool(xp.all(xp.isfinite(value))):
                bad.append(f"weights {name} not finite")
                break
        if not bad:
            return
        kept = "nothing was saved"
        if self.out_dir is not None and self.epoch > 0:
            kept = f"{self.out_dir / CHECKPOINT} keeps epoch {self.epoch}, the last finite one"
        raise TrainingDivergedError(
            f"training diverged in epoch {record['epoch']}: {', '.join(bad)} at learning rate "
            f"{record['lr']:.3g}; {kept}. Try a smaller learning rate, and check that the "
            "labels lie in [0, classes) (off NumPy, a label out of range makes the loss NaN)"
        )

    def _save_epoch(self, record: dict[str, Any], improved: bool) -> None:
        """Log the epoch, then write the checkpoint, then (a best epoch) best.npz.

        The checkpoint comes first and records ``best_epoch``: a run killed between the two
        writes leaves a checkpoint whose best epoch is its own epoch, and :meth:`resume`
        copies it to best.npz."""
        with open(self.out_dir / METRICS, "a") as f:
            f.write(dumps(record) + "\n")
        state = self.checkpoint_state()
        save_checkpoint(self.out_dir / CHECKPOINT, state)
        if improved:
            save_checkpoint(self.out_dir / BEST, state)

    def write_plots(
        self, confusion: np.ndarray | None = None, classes: Sequence[str] = (), title: str = ""
    ) -> list:
        """``loss.png``, ``accuracy.png``, ``lr.png`` and, given a matrix,
        ``confusion_matrix.png``, each titled ``title`` (e.g. the dataset, model, backend)."""
        if self.out_dir is None or not self.is_root:
            return []
        if not plots.plots_available():
            self.log('matplotlib is not installed: no plots (pip install "portaconv[plot]")')
            return []
        written = plots.plot_history(self.history, self.out_dir, title)
        if confusion is not None:
            names = list(classes) or [str(i) for i in range(confusion.shape[0])]
            path = self.out_dir / "confusion_matrix.png"
            written += plots.plot_confusion(confusion, names, path, title)
        return written


def _best_of(state: dict[str, Any]) -> tuple[float | None, int | None]:
    """(best validation accuracy, its epoch) of a checkpoint; checkpoints written before
    ``best_epoch`` was recorded get it from their history (the first best epoch)."""
    best, epoch = None, None
    for record in state["history"]:
        val = record.get("val_accuracy")
        if isinstance(val, int | float) and (best is None or val > best):
            best, epoch = val, record.get("epoch")
    if state.get("best_epoch") is not None:
        epoch = state["best_epoch"]
    return state.get("best_val_accuracy", best), epoch


def _correct(Z: Any, y: Any) -> Any:
    """Number of rows whose arg-max is the label, as a 0-d array (no device sync)."""
    xp = array_namespace(Z)
    predicted = xp.argmax(Z, axis=1)
    if xp.isdtype(y.dtype, "integral"):
        truth = xp.astype(y, predicted.dtype)
    else:
        truth = xp.argmax(y, axis=1)
    return xp.sum(xp.astype(predicted == truth, xp.int64))


def _epoch_line(record: dict[str, Any], epochs: int) -> str:
    line = (
        f"epoch {record['epoch']:>3}/{epochs}  train loss {record['train_loss']:.4f} "
        f"acc {record['train_accuracy']:.4f}"
    )
    if "val_accuracy" in record:
        line += f"  val loss {record['val_loss']:.4f} acc {record['val_accuracy']:.4f}"
    speed = record.get("images_per_second")
    speed = "n/a" if speed is None else f"{speed:.0f}"
    line += f"  lr {record['lr']:.3g}  {record['seconds']:.1f}s ({speed} img/s)"
    if record.get("compile_seconds"):
        line += f" + {record['compile_seconds']:.1f}s compiling"
    return line


def _progress(total: int, desc: str, enabled: bool) -> Any:
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    # disable=None: no bar when stderr is not a terminal (logs, CI), only the epoch lines.
    return tqdm(total=total, desc=desc, unit="batch", leave=False, dynamic_ncols=True, disable=None)
