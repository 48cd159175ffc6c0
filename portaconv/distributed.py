"""Data-parallel training across processes and machines, over MPI (mpi4py).

Launch any training with ``mpiexec -n N portaconv train ...`` (or ``mpiexec -n N python
script.py``): each of the N processes (ranks) holds the whole model, takes its share of
every global batch, and the gradients are summed across ranks between ``backward`` and the
optimizer step, so every rank takes the same step. This module is the only place in
portaconv that talks MPI; the trainer calls it through :class:`Communicator`:

- :meth:`Communicator.broadcast_model`: rank 0's parameters and buffers to every rank, once,
  before training (and after a resume).
- :meth:`Communicator.allreduce_gradients`: every gradient packed into one buffer per dtype
  (one MPI call per step, not one per parameter), weighted by each rank's share of the batch:
  ``g = sum_r n_r g_r / sum_r n_r``, the gradient of the global batch's mean loss.
- :func:`sync_batch_norm`: batch normalisation over the global batch (``--sync-bn``).
- :meth:`Communicator.allreduce_sum`, :meth:`Communicator.broadcast_object`: metrics and
  settings.

Arrays travel through host memory: NumPy arrays (and torch CPU tensors) as they are, device
arrays (CuPy, torch on CUDA) copied to the host and back once per step. CUDA-aware MPI and
NCCL would avoid that copy; neither is written here, since no GPU was available to run it.

Nothing here imports mpi4py until a :class:`Communicator` is made, and :func:`world` makes
one only when the process was started by ``mpiexec`` with more than one rank, so a plain
``portaconv train`` never initialises MPI.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
from array_api_compat import array_namespace, device

from .backend._arrays import to_numpy
from .backend._delegate import share_cores
from .backend._random import manual_seed

__all__ = [
    "Communicator",
    "CollectiveError",
    "is_root",
    "launched_world_size",
    "mpi_info",
    "on_root",
    "seed_rank",
    "sync_batch_norm",
    "world",
]

T = TypeVar("T")

#: Environment variables through which MPI launchers announce the number of ranks:
#: Open MPI, MPICH / Intel MPI (Hydra), PMIx launchers, Slurm's srun.
_SIZE_VARIABLES = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "SLURM_NTASKS")


def launched_world_size() -> int:
    """The number of ranks the launcher started (1 without a launcher), from the
    environment alone: no MPI call is made."""
    for name in _SIZE_VARIABLES[:3]:
        value = os.environ.get(name, "")
        if value.isdigit() and int(value) > 0:
            return int(value)
    # srun sets SLURM_NTASKS for every job step; count it only under an MPI launch by srun.
    if "PMI_RANK" in os.environ or "PMIX_RANK" in os.environ:
        value = os.environ.get("SLURM_NTASKS", "")
        if value.isdigit() and int(value) > 0:
            return int(value)
    return 1


def mpi_info() -> dict[str, Any]:
    """Whether MPI can be used here, which implementation, and the launched world size
    (what ``portaconv info`` prints). Does not initialise MPI."""
    report: dict[str, Any] = {
        "available": False,
        "mpi4py": None,
        "implementation": None,
        "world_size": launched_world_size(),
    }
    if importlib.util.find_spec("mpi4py") is None:
        report["implementation"] = 'mpi4py is not installed (pip install "portaconv[mpi]")'
        return report
    try:
        import mpi4py

        mpi4py.rc.initialize = False  # MPI_Get_library_version may be called before MPI_Init
        from mpi4py import MPI

        report["mpi4py"] = mpi4py.__version__
        report["implementation"] = MPI.Get_library_version().splitlines()[0].split(",")[0].strip()
        report["available"] = True
    except Exception as exc:  # mpi4py without a usable MPI library
        report["implementation"] = f"mpi4py is installed but MPI cannot be loaded: {exc}"
    return report


class CollectiveError(ValueError):
    """A mistake found by rank 0 and raised on every rank alike (see :func:`on_root`): the
    whole job stops in step, and only rank 0 needs to report it."""


class Communicator:
    """The ranks of one job (``MPI.COMM_WORLD`` by default; any mpi4py communicator)."""

    def __init__(self, comm: Any = None) -> None:
        try:
            from mpi4py import MPI
        except ImportError as exc:
            raise RuntimeError(
                "portaconv.distributed needs mpi4py and an MPI library: "
                f'pip install "portaconv[mpi]" ({exc})'
            ) from exc
        self._MPI = MPI
        self.comm = MPI.COMM_WORLD if comm is None else comm
        self.rank: int = self.comm.Get_rank()
        self.size: int = self.comm.Get_size()
        #: The threads each rank computes with, when :func:`world` shared the cores out.
        self.threads: int | None = None

    def __repr__(self) -> str:
        return f"Communicator(rank={self.rank}, size={self.size})"

    @property
    def is_root(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        self.comm.Barrier()

    def abort(self, status: int = 1) -> None:
        """End every rank of the job now (a rank that failed alone must not leave the others
        waiting forever in a collective)."""
        self.comm.Abort(status)

    # --------------------------------------------------------------------- host values

    def broadcast_object(self, obj: T, root: int = 0) -> T:
        """``obj`` of rank ``root`` on every rank (pickled: settings, checkpoints)."""
        return self.comm.bcast(obj, root=root)

    def allreduce_sum(self, values: Any) -> np.ndarray:
        """The element-wise sum over ranks of a small host array of numbers (float64)."""
        buffer = np.array(values, dtype=np.float64)
        self.comm.Allreduce(self._MPI.IN_PLACE, buffer, op=self._MPI.SUM)
        return buffer

    def allreduce_max(self, value: float) -> float:
        return float(self.comm.allreduce(value, op=self._MPI.MAX))

    def allgather(self, array: Any) -> Any:
        """Rank r's ``array`` (any backend) at row r of the result, on ``array``'s backend."""
        host = np.ascontiguousarray(to_numpy(array))
        gathered = np.empty((self.size, *host.shape), dtype=host.dtype)
        self.comm.Allgather(host, gathered)
        return _like(gathered, array)

    def allreduce_arrays(self, *arrays: Any) -> list[Any]:
        """The sums over ranks of backend arrays of one dtype, in one MPI call."""
        xp = array_namespace(*arrays)
        flat = xp.concat([xp.reshape(a, (-1,)) for a in arrays])
        host = _host_buffer(flat)
        self.comm.Allreduce(self._MPI.IN_PLACE, host, op=self._MPI.SUM)
        return _unpack(host, arrays)

    # --------------------------------------------------------------------------- models

    def broadcast_model(self, model: Any) -> None:
        """Give every rank rank 0's parameters and buffers (``state_dict``)."""
        state = {name: to_numpy(value) for name, value in model.state_dict().items()}
        model.load_state_dict(self.broadcast_object(state if self.is_root else None))

    def allreduce_gradients(self, model: Any, count: int) -> None:
        """Replace every gradient of ``model`` by the batch-weighted mean over ranks,
        ``sum_r n_r g_r / sum_r n_r``, where ``count`` = n_r is the number of samples this
        rank's gradients were averaged over (0: this rank contributes nothing).

        All gradients of one dtype travel in one buffer, with the count appended."""
        gradients = model.gradients()
        groups: dict[Any, list[str]] = {}
        for name, grad in gradients.items():
            groups.setdefault(grad.dtype, []).append(name)
        for names in groups.values():
            grads = [gradients[name] for name in names]
            xp = array_namespace(*grads)
            count_array = xp.asarray([count], dtype=grads[0].dtype, device=device(grads[0]))
            flat = xp.concat([xp.reshape(g, (-1,)) * count for g in grads] + [count_array])
            host = _host_buffer(flat)
            self.comm.Allreduce(self._MPI.IN_PLACE, host, op=self._MPI.SUM)
            host[:-1] /= host[-1]
            for name, reduced in zip(names, _unpack(host[:-1], grads), strict=True):
                _set_gradient(model, name, reduced)


def _host_buffer(flat: Any) -> np.ndarray:
    """``flat`` in host memory, contiguous and writable, for MPI to reduce in place: a NumPy
    array or a torch CPU tensor's memory as it is, anything else copied."""
    return np.require(to_numpy(flat), requirements=["C", "W"])


def _like(host: np.ndarray, like: Any) -> Any:
    """``host`` on the backend, device and dtype of ``like``."""
    xp = array_namespace(like)
    return xp.asarray(host, dtype=like.dtype, device=device(like))


def _unpack(host: np.ndarray, arrays: Any) -> list[Any]:
    """Split a flat host buffer back into arrays shaped, typed and placed like ``arrays``."""
    out, start = [], 0
    for array in arrays:
        size = int(np.prod(array.shape))
        out.append(_like(host[start : start + size].reshape(tuple(array.shape)), array))
        start += size
    return out


def _set_gradient(model: Any, name: str, value: Any) -> None:
    """Set the gradient ``name`` (as in ``model.gradients()``, e.g. ``"0.W"``) on the
    layer that owns it: ``layer.dLdW = value``."""
    owner, key = model, name
    while hasattr(owner, "named_layers") and "." in key:
        layers = dict(owner.named_layers())
        prefix = next(p for p in layers if key.startswith(p + "."))
        owner, key = layers[prefix], key[len(prefix) + 1 :]
    setattr(owner, "dLd" + key, value)


_WORLD: list[Communicator | None] = []  # world()'s answer, once made


def world() -> Communicator | None:
    """A :class:`Communicator` over every rank when this process was launched by
    ``mpiexec`` with more than one rank; None for a single process (MPI is not touched).
    The same object on every call."""
    if not _WORLD:
        _WORLD.append(_make_world())
    return _WORLD[0]


def is_root(comm: Communicator | None) -> bool:
    """Whether this process is rank 0 of ``comm`` (or the only process: ``comm`` None)."""
    return comm is None or comm.is_root


def _make_world() -> Communicator | None:
    if launched_world_size() <= 1:
        return None
    if importlib.util.find_spec("mpi4py") is None:
        raise RuntimeError(
            f"this process is one of {launched_world_size()} MPI ranks, but mpi4py is not "
            'installed: pip install "portaconv[mpi]"'
        )
    communicator = Communicator()
    if communicator.size == 1:
        return None
    # the ranks on this node share its cores (unless the environment sets the threads)
    node = communicator.comm.Split_type(communicator._MPI.COMM_TYPE_SHARED)
    communicator.threads = share_cores(node.Get_size())
    node.Free()
    _abort_on_uncaught_exceptions(communicator)
    return communicator


def _abort_on_uncaught_exceptions(comm: Communicator) -> None:
    """An exception that ends one rank's program would leave the other ranks waiting in
    their next collective forever: after Python prints it, end every rank (what ``python
    -m mpi4py`` does for a script)."""
    previous = sys.excepthook

    def hook(kind: type[BaseException], value: BaseException, traceback: Any) -> None:
        previous(kind, value, traceback)
        print(f"rank {comm.rank} of {comm.size} failed: ending every rank", file=sys.stderr)
        sys.stderr.flush()
        comm.abort(1)

    sys.excepthook = hook


def on_root(comm: Communicator | None, work: Callable[[], T]) -> T:
    """Run ``work`` on rank 0 alone and give its result to every rank. A ``ValueError`` or
    ``TypeError`` it raises is raised on every rank as a :class:`CollectiveError` with the
    same words, so the ranks stop together. Without ``comm``: ``work()``."""
    if comm is None:
        return work()
    outcome: tuple[str, Any] = ("ok", None)
    if comm.is_root:
        try:
            outcome = ("ok", work())
        except (ValueError, TypeError) as exc:
            outcome = ("error", str(exc))
    kind, value = comm.broadcast_object(outcome)
    if kind == "error":
        raise CollectiveError(value)
    return value


def seed_rank(comm: Communicator | None, seed: int, epoch: int = 0) -> None:
    """Give ranks 1, 2, ... random streams of their own (Dropout's masks), drawn from
    ``seed``, the rank and the ``epoch`` training starts at; rank 0 keeps the stream of
    :func:`portaconv.manual_seed`, as one process would (and a checkpoint stores)."""
    if comm is not None and comm.rank > 0:
        state = np.random.SeedSequence([seed, comm.rank, epoch]).generate_state(1)[0]
        manual_seed(int(state))


def sync_batch_norm(model: Any, comm: Communicator | None) -> int:
    """Make every BatchNorm layer of ``model`` normalise over the global batch: the
    statistics of all ranks are combined in forward, the gradient sums in backward (as
    ``torch.nn.SyncBatchNorm``). Returns the number of layers changed. ``comm`` None
    (one process) changes nothing."""
    from .layers.normalization import _BatchNorm

    layers = model.named_layers() if hasattr(model, "named_layers") else [("", model)]
    changed = 0
    for _, layer in layers:
        if isinstance(layer, _BatchNorm) and comm is not None and comm.size > 1:
            layer.sync = comm
            changed += 1
        elif hasattr(layer, "named_layers"):
            changed += sync_batch_norm(layer, comm)
    return changed
