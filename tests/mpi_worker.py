"""A training script for the MPI tests (``mpiexec -n N python tests/mpi_worker.py ...``).

Trains a small conv + batch-norm network (no Dropout) on the embedded digits through the
library API, as a user's own script would: ``world()``, ``sync_batch_norm``, a sharded
``DataLoader`` and ``Trainer(comm=...)``; rank 0 saves the final state to OUT (.npz).

    python tests/mpi_worker.py OUT [--sync-bn] [--fail-rank R]

``--fail-rank R``: rank R raises in its third training batch (a bug on one rank alone;
the exception hook ``world()`` installs must end every rank).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from portaconv import manual_seed
from portaconv.backend import to_numpy
from portaconv.data import DataLoader, load_dataset
from portaconv.distributed import sync_batch_norm, world
from portaconv.layers import BatchNorm1d, BatchNorm2d, Conv2d, Flatten, Linear, MaxPool2d, ReLU
from portaconv.models import Sequential
from portaconv.optim import SGD
from portaconv.train import Trainer

#: Samples and global batch: 256 = 6 x 41 + 10, so the shares are uneven (21 and 20 on two
#: ranks) and the last batch is smaller: the gradient weighting is exercised.
SAMPLES, BATCH = 256, 41


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--sync-bn", action="store_true")
    parser.add_argument("--fail-rank", type=int)
    args = parser.parse_args()
    comm = world()
    rank, size = (0, 1) if comm is None else (comm.rank, comm.size)
    data = load_dataset("digits")
    X, y = data.X_train[:SAMPLES], data.y_train[:SAMPLES]
    manual_seed(0)
    model = Sequential(
        Conv2d(1, 4, 3, padding=1),
        BatchNorm2d(4),
        ReLU(),
        MaxPool2d(2),
        Flatten(),
        Linear(64, 16),
        BatchNorm1d(16),
        ReLU(),
        Linear(16, 10),
    )
    if args.sync_bn:
        sync_batch_norm(model, comm)
    loader = DataLoader(X, y, batch_size=BATCH, shuffle=True, seed=3, rank=rank, world_size=size)
    if args.fail_rank == rank:
        loader = _failing(loader, after=2)
    trainer = Trainer(model, SGD(model, 0.1, momentum=0.9), progress=False, comm=comm)
    trainer.fit(loader, epochs=2)
    if rank == 0:
        np.savez(args.out, **{k: to_numpy(v) for k, v in model.state_dict().items()})
    return 0


def _failing(loader, after):
    class Failing:
        def __len__(self):
            return len(loader)

        def set_epoch(self, epoch):
            loader.set_epoch(epoch)

        def __iter__(self):
            for i, batch in enumerate(loader):
                if i == after:
                    raise RuntimeError("mpi_worker: a bug on this rank alone")
                yield batch

    return Failing()


if __name__ == "__main__":
    sys.exit(main())
