"""Mini-batches from host (NumPy) arrays, moved to the active backend one batch at a time."""

from __future__ import annotations

import math
import operator
from collections.abc import Iterator
from typing import Any

import numpy as np

from ..backend import Backend, get_backend, to_backend, to_numpy

__all__ = ["DataLoader"]


def _index(value: Any, what: str) -> int:
    """``value`` as a Python int; bools and floats are refused (``batch_size=True`` is a bug)."""
    if isinstance(value, bool):
        raise TypeError(f"DataLoader: {what} must be an int, got bool {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(
            f"DataLoader: {what} must be an int, got {type(value).__name__} {value!r}"
        ) from None


class DataLoader:
    """Iterate over ``(X_batch, y_batch)`` pairs on the backend, ``batch_size`` rows at a time.

    ``X``: ``(N, ...)`` and ``y``: ``(N,)`` (or ``(N, ...)``) are kept on the host as NumPy
    arrays; each batch is sliced there and moved with :func:`portaconv.to_backend` to
    ``backend`` (default: :func:`portaconv.get_backend` at the start of each pass). ``X_batch``
    has ``dtype`` (default: the backend's float dtype; a name like ``"float64"`` or a dtype of
    the backend's namespace). ``y_batch`` is int64 when ``y`` holds integers (class labels)
    and has ``X_batch``'s float dtype when ``y`` is floating.

    Augmentation. ``augment(X_batch, rng)`` (e.g. :func:`~portaconv.data.random_flip`), if
    given, transforms each NumPy batch before it moves to the backend; ``rng`` is
    ``np.random.default_rng([seed, e, 1])`` for pass ``e``, so augmented batches are a
    function of ``(seed, e)`` too.

    Order. Without ``shuffle`` batches follow the rows in order. With it, pass ``e`` visits
    the rows in the order ``np.random.default_rng([seed, e]).permutation(N)``: a function of
    ``(seed, e)`` alone. The epoch ``e`` is the attribute ``epoch``, set with :meth:`set_epoch`
    (default 0); each pass (each ``iter(loader)``) uses the current epoch and then advances it
    by one, so a plain ``for`` loop over epochs sees a new order every time, and a run resumed
    at epoch ``e`` that calls ``set_epoch(e)`` sees exactly the order the first run saw.

    ``len(loader)`` is the number of batches: ``ceil(N / batch_size)``, or
    ``N // batch_size`` with ``drop_last`` (the last, smaller batch is then skipped).

    Data-parallel training (:mod:`portaconv.distributed`). With ``world_size`` W > 1 the
    batches above are the global ones: every rank draws the same order and yields rows
    ``[start_r, stop_r)`` of each global batch, its consecutive share (sizes differ by at
    most one, the larger shares first), so the W ranks together see exactly the batches one
    process would. Every batch must give every rank at least one row (a ``ValueError``
    otherwise: use ``drop_last`` or another batch size).

    Example::

        loader = DataLoader(ds.X_train, ds.y_train, batch_size=128, shuffle=True, seed=1)
        for epoch in range(start_epoch, epochs):
            loader.set_epoch(epoch)
            for X_batch, y_batch in loader:
                ...
    """

    def __init__(
        self,
        X: Any,
        y: Any,
        batch_size: int = 64,
        shuffle: bool = False,
        seed: int = 0,
        drop_last: bool = False,
        backend: Backend | None = None,
        dtype: Any = None,
        augment: Any = None,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        X = np.asarray(to_numpy(X))
        y = np.asarray(to_numpy(y))
        if X.ndim == 0 or y.ndim == 0:
            raise ValueError(
                f"DataLoader: X and y need a leading sample axis, got shapes {X.shape} and "
                f"{y.shape}"
            )
        if len(X) != len(y):
            raise ValueError(f"DataLoader: X has {len(X)} samples but y has {len(y)}")
        if len(X) == 0:
            raise ValueError("DataLoader: X and y are empty (0 samples)")
        if X.dtype.kind not in "biuf":
            raise TypeError(f"DataLoader: X must be numeric, got dtype {X.dtype}")
        if y.dtype.kind not in "biuf":
            raise TypeError(
                f"DataLoader: y must hold integer class labels or float targets, got dtype "
                f"{y.dtype}"
            )
        batch_size = _index(batch_size, "batch_size")
        if batch_size <= 0:
            raise ValueError(f"DataLoader: batch_size must be positive, got {batch_size}")
        seed = _index(seed, "seed")
        if seed < 0:
            raise ValueError(f"DataLoader: seed must be non-negative, got {seed}")
        if drop_last and batch_size > len(X):
            raise ValueError(
                f"DataLoader: drop_last=True with batch_size={batch_size} > {len(X)} samples "
                "would yield no batch at all"
            )
        if backend is not None and not isinstance(backend, Backend):
            raise TypeError(
                f"DataLoader: backend must be a portaconv Backend (from make_backend or "
                f"get_backend) or None, got {type(backend).__name__}"
            )
        self.X = X
        self.y = y
        self.batch_size = batch_size
        self.shuffle = bool(shuffle)
        self.seed = seed
        self.drop_last = bool(drop_last)
        self.backend = backend
        self.dtype = dtype
        if augment is not None and not callable(augment):
            raise TypeError(
                f"DataLoader: augment must be a function augment(X, rng) -> X such as "
                f"portaconv.data.random_flip, got {type(augment).__name__}"
            )
        self.augment = augment
        self.epoch = 0
        world_size = _index(world_size, "world_size")
        rank = _index(rank, "rank")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(
                f"DataLoader: rank must be in [0, world_size) and world_size positive, got "
                f"rank {rank} and world_size {world_size}"
            )
        self.rank, self.world_size = rank, world_size
        smallest = min(batch_size, len(X)) if drop_last else len(X) % batch_size or batch_size
        if smallest < world_size:
            raise ValueError(
                f"DataLoader: a batch of {smallest} rows cannot give each of the {world_size} "
                f"ranks a row ({len(X)} samples, batch_size {batch_size}); use drop_last=True "
                "or a batch size that leaves a larger last batch"
            )

    @property
    def num_samples(self) -> int:
        return len(self.X)

    def __len__(self) -> int:
        if self.drop_last:
            return self.num_samples // self.batch_size
        return math.ceil(self.num_samples / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Make the next pass use epoch ``epoch``'s order (see the class docstring)."""
        epoch = _index(epoch, "epoch")
        if epoch < 0:
            raise ValueError(f"DataLoader: epoch must be non-negative, got {epoch}")
        self.epoch = epoch

    def order(self, epoch: int | None = None) -> np.ndarray:
        """The row indices pass ``epoch`` (default: the current one) visits, in order."""
        epoch = self.epoch if epoch is None else _index(epoch, "epoch")
        if not self.shuffle:
            return np.arange(self.num_samples)
        return np.random.default_rng([self.seed, epoch]).permutation(self.num_samples)

    def _resolve(self) -> tuple[Backend, Any, Any]:
        """(backend, X dtype, y dtype) for this pass."""
        backend = self.backend or get_backend()
        dtype = self.dtype
        if dtype is None:
            dtype = backend.dtype
        elif isinstance(dtype, str):
            if dtype not in ("float32", "float64"):
                raise ValueError(
                    f"DataLoader: dtype must be 'float32', 'float64' or a dtype of the "
                    f"backend's namespace, got {dtype!r}"
                )
            dtype = getattr(backend.xp, dtype)
        label_dtype = backend.xp.int64 if self.y.dtype.kind in "biu" else dtype
        return backend, dtype, label_dtype

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        # Resolved now, not at the first next(): the pass's order and backend are fixed by
        # the time iter() returns, and the epoch advances even if the pass is cut short.
        backend, dtype, label_dtype = self._resolve()
        order = self.order() if self.shuffle else None
        rng = None if self.augment is None else np.random.default_rng([self.seed, self.epoch, 1])
        self.epoch += 1
        return self._batches(order, backend, dtype, label_dtype, rng)

    def _batches(
        self,
        order: np.ndarray | None,
        backend: Backend,
        dtype: Any,
        label_dtype: Any,
        rng: np.random.Generator | None = None,
    ) -> Iterator[tuple[Any, Any]]:
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            stop = min(start + self.batch_size, self.num_samples)
            share = self._share(stop - start)
            if rng is not None:  # augment the global batch (the draws depend on it), then share
                rows = slice(start, stop) if order is None else order[start:stop]
                X, y = self.augment(self.X[rows], rng)[share], self.y[rows][share]
            else:
                # Shuffled, fancy indexing already copies; in order the slice is a view of
                # the data set, copied so that a caller writing into it cannot alter the data.
                rows = slice(start + share.start, start + share.stop)
                if order is not None:
                    rows = order[rows]
                X, y = self.X[rows], self.y[rows]
            copy = True if order is None else None
            yield (
                to_backend(X, backend, dtype=dtype, copy=copy),
                to_backend(y, backend, dtype=label_dtype, copy=copy),
            )

    def _share(self, rows: int) -> slice:
        """This rank's rows of a global batch of ``rows`` (all of them for one process)."""
        base, extra = divmod(rows, self.world_size)
        start = self.rank * base + min(self.rank, extra)
        return slice(start, start + base + (self.rank < extra))

    def __repr__(self) -> str:
        return (
            f"DataLoader(samples={self.num_samples}, batch_size={self.batch_size}, "
            f"batches={len(self)}, shuffle={self.shuffle}, seed={self.seed}, "
            f"drop_last={self.drop_last}, epoch={self.epoch}"
            + (f", rank={self.rank}, world_size={self.world_size})" if self.world_size > 1 else ")")
        )
