"""Time portaconv against PyTorch, side by side, in one process on one device.

    python benchmarks/run.py [--backend numpy|torch|cupy|jax|array_api_strict] [--device DEV]
                             [--repeats 5] [--threads T] [--quick] [--json FILE] [--cases REGEX]
                             [--quiet-threads]

Every case is the forward and backward pass of one layer (or one LeNet-5 training step) on
the same float32 data: portaconv's explicit ``forward``/``backward`` on the chosen backend,
and the same computation in ``torch.nn.functional`` with autograd on the same device with the
same thread count. Each case runs ``--repeats`` rounds after one warm-up run, every round
one run of each side, the side that goes first alternating from round to round, so that
background load on a shared machine falls on both alike. Each timed run comes after a
pause (``SETTLE_S``: no thread of the other library left spinning) and ``WARM_S`` of
untimed runs of the same side, so each library runs as in a loop of its own steps, its
threads as it leaves them: libgomp's (torch) spin between parallel regions, portaconv's
sleep.
OpenBLAS's idle threads sleep at once (``OPENBLAS_THREAD_TIMEOUT=4``; inside portaconv's
layers OpenBLAS runs single-threaded anyway). ``--quiet-threads`` is the earlier protocol:
``OMP_WAIT_POLICY=PASSIVE`` too, no pauses; it slows torch's small operations (its threads
then sleep between them) and flatters portaconv. The ratio reported is the median
of the per-round ratios (portaconv / torch) with their quartiles as its spread; the best
time of each side is given too. On a GPU the device is synchronised before the clock is
read, on both sides of every run.

FLOP counts (multiply and add counted as 2), with d spatial axes and L_out output positions::

    convolution        forward  = 2 * N * C_out * C_in * K**d * L_out
                       forward + backward = 3 * forward      (dLdA and dLdW each cost one forward)
    transposed conv    the same with L_out replaced by the input's L_in (the zeros inserted by
                       upsampling are never multiplied, by either library)
    linear             forward  = 2 * N * in_features * out_features; forward + backward = 3x
    pooling            memory-bound: no FLOP rate is reported

The machine's SGEMM rate is measured in the same run with the portaconv backend's own library
(NumPy for numpy and array_api_strict, CuPy for cupy, torch for torch, JAX for jax): once at
the start (the header), and again within every case that has a FLOP count, the matrix product taking
turns with portaconv and torch; each case's rate is given as a percentage of its own.

Needs PyTorch (it is the reference): ``pip install 'portaconv[torch]'``.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import math
import os
import platform
import re
import sys
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

BACKEND_NAMES = ("numpy", "torch", "cupy", "jax", "array_api_strict")
MIB = 2**20
THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
QUIET_IDLE_ENV = {"OPENBLAS_THREAD_TIMEOUT": "4", "OMP_WAIT_POLICY": "PASSIVE"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Time portaconv against torch.nn.functional + autograd, case by case."
    )
    parser.add_argument(
        "--backend",
        choices=BACKEND_NAMES,
        default=os.environ.get("PORTACONV_BACKEND", "").strip() or "numpy",
        help="portaconv backend (default: $PORTACONV_BACKEND or numpy)",
    )
    parser.add_argument(
        "--device",
        default=os.environ.get("PORTACONV_DEVICE", "").strip() or None,
        help="device as the backend spells it: cpu, cuda:0 (torch), 0 (cupy)",
    )
    parser.add_argument(
        "--repeats", type=int, default=9, help="timed rounds per case (median ratio kept)"
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="CPU threads for both libraries (default: all)"
    )
    parser.add_argument("--quick", action="store_true", help="two tiny cases, one repeat")
    parser.add_argument("--json", metavar="FILE", help="write every number and machine info")
    parser.add_argument("--cases", metavar="REGEX", help="run only cases whose name matches")
    parser.add_argument(
        "--quiet-threads",
        action="store_true",
        help="the earlier protocol: torch's idle threads sleep at once too "
        "(OMP_WAIT_POLICY=PASSIVE) and runs follow each other without pauses; slows torch's "
        "small operations",
    )
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be at least 1")
    if args.quick:
        args.repeats = 1
    return args


# The thread count must reach the BLAS libraries before they are loaded, hence before NumPy
# and torch are imported: parse the command line first, import the array libraries after.
ARGS = parse_args() if __name__ == "__main__" else None
THREADS = (ARGS.threads if ARGS and ARGS.threads else None) or os.cpu_count() or 1
QUIET_THREADS = bool(ARGS and ARGS.quiet_threads)
if ARGS is not None:
    for _name in THREAD_ENV:
        os.environ[_name] = str(THREADS)
    # OpenBLAS's idle threads keep a core busy for ~0.1 s after every call they shared and
    # libgomp's (torch) for a while after every parallel region, so in one process each
    # library's spinning threads would steal the CPUs from the other's run (measured: torch
    # 2-10x slower right after a NumPy product on 2 cores). OpenBLAS's sleep at once (inside
    # portaconv's layers OpenBLAS runs single-threaded anyway); libgomp's keep torch's own
    # policy, spinning, as in a program using torch, and each timed run waits them out
    # (SETTLE_S). --quiet-threads makes libgomp's sleep at once too, which slows torch's
    # small operations. A value already in the environment is kept.
    for _name, _value in QUIET_IDLE_ENV.items():
        if ARGS.quiet_threads or _name != "OMP_WAIT_POLICY":
            os.environ.setdefault(_name, _value)

import numpy as np  # noqa: E402

try:
    import torch  # noqa: E402
    import torch.nn.functional as F  # noqa: E402
except ImportError:
    sys.exit(
        "benchmarks/run.py needs PyTorch: it is the reference every case is timed against.\n"
        "Install it with: pip install 'portaconv[torch]'"
    )

import portaconv  # noqa: E402
from portaconv.layers import (  # noqa: E402
    BatchNorm2d,
    Conv1d,
    Conv2d,
    ConvTranspose2d,
    CrossEntropyLoss,
    Flatten,
    Linear,
    MaxPool2d,
    MeanPool2d,
    ReLU,
)
from portaconv.models import Sequential  # noqa: E402

# ----------------------------------------------------------------------------- the machine


@dataclass
class Context:
    """The portaconv backend, the torch device that mirrors it, and how to wait for a GPU."""

    backend: Any  # portaconv.backend.Backend
    torch_device: torch.device
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(0))

    @property
    def on_gpu(self) -> bool:
        return self.torch_device.type == "cuda"

    def sync(self, result: Any = None) -> None:
        """Wait until every queued GPU kernel (torch's and CuPy's) has finished, and until
        ``result`` is computed on JAX (which dispatches asynchronously, CPU included)."""
        if self.torch_device.type == "cuda":
            torch.cuda.synchronize(self.torch_device)
        if self.backend.name == "cupy":
            self.backend.device.synchronize()
        if self.backend.name == "jax" and result is not None:
            import jax

            jax.block_until_ready(result)

    # data: drawn once in NumPy float32, then copied to each side
    def randn(self, *shape: int) -> np.ndarray:
        return self.rng.standard_normal(shape, dtype=np.float32)

    def uniform(self, bound: float, *shape: int) -> np.ndarray:
        return self.rng.uniform(-bound, bound, shape).astype(np.float32)

    def pc(self, x: np.ndarray, dtype: Any = None) -> Any:
        return portaconv.to_backend(x, dtype=dtype)

    def pt(self, x: np.ndarray, grad: bool = False) -> torch.Tensor:
        return torch.from_numpy(np.array(x)).to(self.torch_device).requires_grad_(grad)


def make_context(name: str, device: Any) -> Context:
    if name == "cupy" and isinstance(device, str) and device.isdigit():
        device = int(device)
    backend = portaconv.set_backend(name, device, "float32")
    if name == "torch":
        torch_device = torch.device(backend.device)
    elif name == "cupy":
        torch_device = torch.device("cuda", backend.device.id)
        if not torch.cuda.is_available():
            sys.exit("--backend cupy: the torch reference needs a CUDA build of torch")
    else:
        torch_device = torch.device("cpu")
    if torch_device.type == "cuda":
        # TF32 would let torch run its convolutions at lower precision than portaconv's float32
        # matrix products (cuDNN allows it by default); compare float32 with float32.
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    return Context(backend=backend, torch_device=torch_device)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(ctx: Context) -> str:
    if ctx.on_gpu:
        return torch.cuda.get_device_name(ctx.torch_device)
    return cpu_model()


def blas_name() -> str:
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        return f"{blas.get('name', '?')} {blas.get('version', '')}".strip()
    except Exception:  # older NumPy without mode="dicts"
        return "unknown"


def blas_env() -> dict[str, str]:
    """OPENBLAS_* settings other than the thread count, e.g. OPENBLAS_CORETYPE, which picks the
    SGEMM kernels (a Haswell kernel on an AVX-512 CPU runs NumPy's SGEMM well below its peak)."""
    return {
        name: value
        for name, value in sorted(os.environ.items())
        if name.startswith("OPENBLAS_") and name not in (*THREAD_ENV, *QUIET_IDLE_ENV)
    }


def machine_info(ctx: Context, args: argparse.Namespace) -> dict[str, Any]:
    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "threads": THREADS,
        "torch_num_threads": torch.get_num_threads(),
        "thread_env": {name: os.environ.get(name) for name in (*THREAD_ENV, *QUIET_IDLE_ENV)},
        "blas_env": blas_env(),
        "numpy_version": np.__version__,
        "numpy_blas": blas_name(),
        # the kernels OpenBLAS picked (OPENBLAS_CORETYPE or the CPU), e.g. Haswell, SkylakeX
        "openblas_kernels": (
            portaconv.backend.blas_kernels() if hasattr(portaconv.backend, "blas_kernels") else None
        ),
        "torch_version": torch.__version__,
        "portaconv_version": portaconv.__version__,
        # the im2row chunk budget of the convolutions (portaconv.backend.WORKSPACE_BYTES)
        "workspace_bytes": dict(getattr(portaconv.backend, "WORKSPACE_BYTES", {})),
        # threads of the NumPy row-gather convolution (portaconv.backend.num_threads)
        "portaconv_threads": (
            portaconv.backend.num_threads() if hasattr(portaconv.backend, "num_threads") else None
        ),
        "backend": ctx.backend.name,
        "backend_device": str(ctx.backend.device),
        "torch_device": str(ctx.torch_device),
        "device_name": device_name(ctx),
        "repeats": args.repeats,
        "quiet_threads": args.quiet_threads,
        "quick": args.quick,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    if ctx.on_gpu:
        info["torch_cuda"] = torch.version.cuda
        info["cudnn_allow_tf32"] = torch.backends.cudnn.allow_tf32
        info["cuda_matmul_allow_tf32"] = torch.backends.cuda.matmul.allow_tf32
    if ctx.backend.name == "cupy":
        import cupy

        info["cupy_version"] = cupy.__version__
        info["CUPY_TF32"] = os.environ.get("CUPY_TF32", "0")
    return info


# ----------------------------------------------------------------------------- measuring


def _timed(step: Callable[[], Any], ctx: Context) -> float:
    """Seconds for one run; the device is synchronised before each clock reading, so queued
    GPU work falls inside the interval it belongs to and nothing else does."""
    ctx.sync()
    start = time.perf_counter()
    result = step()
    ctx.sync(result)
    return time.perf_counter() - start


def runqueue_wait_s() -> float | None:
    """Seconds this process's threads have spent ready to run but waiting for a CPU.

    Linux's per-thread schedstat; a large value during a measurement means other work was
    holding the CPUs. None where the kernel does not provide it.
    """
    if not os.path.isdir("/proc/self/task"):
        return None
    total_ns = 0
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/schedstat") as stat:
                total_ns += int(stat.read().split()[1])
        except (OSError, IndexError, ValueError):  # the thread has just exited
            continue
    return total_ns / 1e9


#: Seconds of pause before every timed run (then an untimed run of the same step), unless
#: ``--quiet-threads``: libgomp's idle threads (torch) spin a short while after a parallel
#: region (``GOMP_SPINCOUNT``), and none should be left to take a CPU from the other
#: library's run (portaconv's times matched those of ``--quiet-threads``). Not longer: on the
#: 2-core development machine (a virtual machine) a run after 50 ms or more of idle cores
#: took much longer, even after an untimed run.
SETTLE_S = 0.02
#: Seconds of untimed runs of a step before its timed run (after the pause): on that machine
#: cores that have idled come back to speed only after a while of work.
WARM_S = 0.05


def best_times(
    steps: list[Callable[[], Any]], ctx: Context, repeats: int, settle: float = 0.0
) -> tuple[list[list[float]], list[Any], float | None]:
    """``repeats`` rounds of timed runs, one of each step a round, after one warm-up run of each.

    The steps take turns, the one that starts a round rotating from round to round (a, b;
    b, a; ...), so that background load on a shared machine falls on every side alike and
    no side always runs right after the same other one. Returns every step's run times, in
    round order (pair them round by round), each warm-up result, and the CPU wait
    (run-queue time of this process / wall time) over the timed runs. ``settle``: seconds
    of pause before every timed run, then untimed runs of the same step for ``WARM_S``
    (at least one), so each run starts with its own library's threads warm and no other's
    spinning, as in a loop of one library's steps (the wait figure then counts the warm-up
    runs too).
    """
    firsts = [step() for step in steps]
    ctx.sync()
    times: list[list[float]] = [[] for _ in steps]
    wait_before, start = runqueue_wait_s(), time.perf_counter()
    for r in range(repeats):
        for j in range(len(steps)):
            k = (r + j) % len(steps)
            if settle:  # no other thread left spinning; then this step's own warm-up
                time.sleep(settle)
                warm = time.perf_counter()
                steps[k]()
                ctx.sync()  # on a GPU each run completes: no queue of runs builds up
                while time.perf_counter() - warm < WARM_S:
                    steps[k]()
                    ctx.sync()
            times[k].append(_timed(steps[k], ctx))
    wall = time.perf_counter() - start - settle * repeats * len(steps)  # minus the pauses
    wait_after = runqueue_wait_s()
    wait = None if wait_before is None else (wait_after - wait_before) / wall
    return times, firsts, wait


def sgemm_step(ctx: Context, quick: bool) -> tuple[Callable[[], Any], int, str]:
    """A square float32 matrix product in the backend's own library: (step, n, library)."""
    n = 512 if quick else (8192 if ctx.on_gpu else 2048)
    host = np.random.default_rng(1).standard_normal((2, n, n), dtype=np.float32)
    name = ctx.backend.name
    if name == "torch":
        a, b = (torch.from_numpy(h).to(ctx.torch_device) for h in host)
        library, matmul = "torch", torch.matmul
    elif name == "cupy":
        import cupy

        with ctx.backend.device:
            a, b = cupy.asarray(host[0]), cupy.asarray(host[1])
        library, matmul = "cupy", cupy.matmul
    elif name == "jax":
        a, b = (ctx.backend.xp.asarray(h, device=ctx.backend.device) for h in host)
        library, matmul = "jax", ctx.backend.xp.matmul
    else:  # numpy, and array_api_strict, whose arrays are NumPy arrays inside
        a, b = host[0], host[1]
        library, matmul = "numpy", np.matmul
    return (lambda: matmul(a, b)), n, library


def sgemm_rate(
    ctx: Context, quick: bool, sgemm: tuple[Callable[[], Any], int, str]
) -> dict[str, Any]:
    """GFLOP/s of the matrix product ``sgemm`` (from :func:`sgemm_step`)."""
    step, n, library = sgemm
    (runs,), _, wait = best_times([step], ctx, 1 if quick else 3)
    seconds = min(runs)
    gflops = 2 * n**3 / seconds / 1e9
    return {"library": library, "n": n, "seconds": seconds, "gflops": gflops, "cpu_wait": wait}


class _Rss:
    """Peak resident memory of this process above its level at ``start`` (Linux).

    Writing 5 to /proc/self/clear_refs resets the kernel's high-water mark (VmHWM); memory
    glibc still holds from earlier cases is handed back first (malloc_trim) so that it is
    counted when it is touched again. Where that is impossible, the lifetime high-water of
    getrusage is used, which only shows a step that sets a new process-wide record.
    """

    def __init__(self) -> None:
        self.method = "RSS high-water (/proc/self VmHWM, reset per case)"
        self._trim = None
        try:
            import ctypes

            self._trim = ctypes.CDLL("libc.so.6").malloc_trim
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self._status()
        except (OSError, KeyError):
            self._trim = None
            self.method = "RSS high-water (getrusage ru_maxrss, lifetime: a lower bound)"

    @staticmethod
    def _status() -> dict[str, int]:
        values = {}
        with open("/proc/self/status") as status:
            for line in status:
                key, _, rest = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    values[key] = int(rest.split()[0]) * 1024
        return {"VmRSS": values["VmRSS"], "VmHWM": values["VmHWM"]}

    def measure(self, step: Callable[[], Any]) -> int:
        gc.collect()
        if self._trim is None:
            import resource

            before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            step()
            return max(0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before)
        self._trim(0)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        before = self._status()["VmRSS"]
        step()
        return max(0, self._status()["VmHWM"] - before)


class Memory:
    """Peak memory of one step, above what was allocated before it, for each side."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.rss = None if ctx.on_gpu else _Rss()
        name = ctx.backend.name
        if ctx.on_gpu:
            self.torch_method = "torch.cuda.max_memory_allocated (caching allocator)"
        else:
            self.torch_method = self.rss.method
        if name == "cupy":
            self.pc_method = "CuPy default memory pool growth (total_bytes, pool emptied first)"
        elif name == "torch":
            self.pc_method = self.torch_method
        else:
            self.pc_method = "tracemalloc (NumPy reports its array buffers to it)"

    @property
    def same_method(self) -> bool:
        return self.pc_method == self.torch_method

    def _torch_cuda(self, step: Callable[[], Any]) -> int:
        self.ctx.sync()
        torch.cuda.reset_peak_memory_stats(self.ctx.torch_device)
        before = torch.cuda.memory_allocated(self.ctx.torch_device)
        step()
        self.ctx.sync()
        return torch.cuda.max_memory_allocated(self.ctx.torch_device) - before

    def _cupy_pool(self, step: Callable[[], Any]) -> int:
        import cupy

        pool = cupy.get_default_memory_pool()
        self.ctx.sync()
        pool.free_all_blocks()
        before = pool.total_bytes()
        step()
        self.ctx.sync()
        return pool.total_bytes() - before

    @staticmethod
    def _tracemalloc(step: Callable[[], Any]) -> int:
        gc.collect()
        tracemalloc.start()
        try:
            step()
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    def portaconv(self, step: Callable[[], Any]) -> int:
        if self.ctx.backend.name == "cupy":
            return self._cupy_pool(step)
        if self.ctx.backend.name == "torch":
            return self.torch(step)
        return self._tracemalloc(step)

    def portaconv_rss(self, step: Callable[[], Any]) -> int | None:
        """The torch side's method applied to portaconv too, where the two differ on CPU."""
        if self.rss is None or self.same_method:
            return None
        return self.rss.measure(step)

    def torch(self, step: Callable[[], Any]) -> int:
        if self.ctx.on_gpu:
            return self._torch_cuda(step)
        return self.rss.measure(step)


# ----------------------------------------------------------------------------- the cases


@dataclass
class Pair:
    """One case built on both sides; each step returns the arrays to compare (numerically)."""

    portaconv: Callable[[], tuple[Any, ...]]
    torch: Callable[[], tuple[Any, ...]]


@dataclass
class Case:
    name: str
    group: str  # "layer", "network" or "scaling"
    build: Callable[[Context], Pair]
    flops: float | None  # forward + backward (+ update) FLOPs, None where memory-bound
    batch: int
    pixels: int  # spatial positions of the input per sample


def conv_flops(N: int, c_in: int, c_out: int, K: int, nd: int, positions: int) -> float:
    """Forward + backward of a convolution: 3 * (2 * N * C_out * C_in * K**d * positions)."""
    return 3.0 * 2 * N * c_out * c_in * K**nd * positions


def out_size(n: int, K: int, stride: int, padding: int) -> int:
    return (n + 2 * padding - K) // stride + 1


def conv_case(
    name: str,
    nd: int,
    N: int,
    c_in: int,
    c_out: int,
    K: int,
    size: int,
    stride: int = 1,
    padding: int = 0,
    group: str = "layer",
    input_grad: bool = True,
) -> Case:
    """Conv1d or Conv2d forward + backward against F.conv1d / F.conv2d + autograd; with
    ``input_grad=False`` without dL/dA on both sides (a network's first layer, as the
    Trainer runs it)."""
    layer_cls, torch_conv = (Conv1d, F.conv1d) if nd == 1 else (Conv2d, F.conv2d)
    out = out_size(size, K, stride, padding)

    def build(ctx: Context) -> Pair:
        bound = 1 / math.sqrt(c_in * K**nd)
        W = ctx.uniform(bound, c_out, c_in, *(K,) * nd)
        b = ctx.uniform(bound, c_out)
        A = ctx.randn(N, c_in, *(size,) * nd)
        dLdZ = ctx.randn(N, c_out, *(out,) * nd)

        layer = layer_cls(
            c_in, c_out, K, stride, padding, weight_init_fn=lambda *_: W, bias_init_fn=lambda *_: b
        )
        layer.needs_input_grad = input_grad
        A_pc, dLdZ_pc = ctx.pc(A), ctx.pc(dLdZ)

        def run_pc():
            Z = layer.forward(A_pc)
            dLdA = layer.backward(dLdZ_pc)
            return (Z, *((dLdA,) if input_grad else ()), layer.dLdW, layer.dLdb)

        A_t, W_t, b_t = ctx.pt(A, input_grad), ctx.pt(W, True), ctx.pt(b, True)
        dLdZ_t = ctx.pt(dLdZ)
        wrt = (A_t, W_t, b_t) if input_grad else (W_t, b_t)

        def run_torch():
            Z = torch_conv(A_t, W_t, b_t, stride=stride, padding=padding)
            return (Z.detach(), *torch.autograd.grad(Z, wrt, dLdZ_t))

        return Pair(run_pc, run_torch)

    # forward, dL/dW and dL/dA each cost one forward's multiply-adds
    flops = conv_flops(N, c_in, c_out, K, nd, out**nd) * (1 if input_grad else 2 / 3)
    return Case(name, group, build, flops, N, size**nd)


def conv_transpose_case(name: str, N: int, c_in: int, c_out: int, K: int, k: int, size: int):
    """ConvTranspose2d (upsample by k, then stride-1 conv) against F.conv_transpose2d."""
    out = k * (size - 1) + 2 - K

    def build(ctx: Context) -> Pair:
        bound = 1 / math.sqrt(c_in * K * K)
        W = ctx.uniform(bound, c_out, c_in, K, K)
        b = ctx.uniform(bound, c_out)
        A = ctx.randn(N, c_in, size, size)
        dLdZ = ctx.randn(N, c_out, out, out)

        layer = ConvTranspose2d(
            c_in, c_out, K, k, weight_init_fn=lambda *_: W, bias_init_fn=lambda *_: b
        )
        A_pc, dLdZ_pc = ctx.pc(A), ctx.pc(dLdZ)

        def run_pc():
            Z = layer.forward(A_pc)
            dLdA = layer.backward(dLdZ_pc)
            return Z, dLdA, layer.dLdW, layer.dLdb

        A_t, W_t, b_t = ctx.pt(A, True), ctx.pt(W, True), ctx.pt(b, True)
        dLdZ_t = ctx.pt(dLdZ)

        def run_torch():
            # torch's weight is ours flipped in space with the channel axes swapped
            # (portaconv/layers/conv_transpose.py)
            V = W_t.flip(-1, -2).transpose(0, 1)
            Z = F.conv_transpose2d(A_t, V, b_t, stride=k, padding=K - 1)
            return (Z.detach(), *torch.autograd.grad(Z, (A_t, W_t, b_t), dLdZ_t))

        return Pair(run_pc, run_torch)

    return Case(name, "layer", build, conv_flops(N, c_in, c_out, K, 2, size * size), N, size**2)


def pool_case(name: str, mean: bool, N: int, C: int, size: int, kernel: int, stride: int):
    """MaxPool2d / MeanPool2d forward + backward against F.max_pool2d / F.avg_pool2d."""
    out = out_size(size, kernel, stride, 0)

    def build(ctx: Context) -> Pair:
        A = ctx.randn(N, C, size, size)
        dLdZ = ctx.randn(N, C, out, out)
        layer = (MeanPool2d if mean else MaxPool2d)(kernel, stride)
        A_pc, dLdZ_pc = ctx.pc(A), ctx.pc(dLdZ)

        def run_pc():
            return layer.forward(A_pc), layer.backward(dLdZ_pc)

        A_t, dLdZ_t = ctx.pt(A, True), ctx.pt(dLdZ)
        pool = F.avg_pool2d if mean else F.max_pool2d

        def run_torch():
            Z = pool(A_t, kernel, stride)
            return (Z.detach(), *torch.autograd.grad(Z, (A_t,), dLdZ_t))

        return Pair(run_pc, run_torch)

    return Case(name, "layer", build, None, N, size * size)


def batchnorm_relu_case(name: str, N: int, C: int, size: int) -> Case:
    """BatchNorm2d (training mode) followed by ReLU, forward + backward, as a model runs
    them (one fused step on NumPy), against F.batch_norm + F.relu + autograd."""

    def build(ctx: Context) -> Pair:
        A = ctx.randn(N, C, size, size)
        dLdZ = ctx.randn(N, C, size, size)
        model = Sequential(BatchNorm2d(C), ReLU())
        A_pc, dLdZ_pc = ctx.pc(A), ctx.pc(dLdZ)

        def run_pc():
            return model.forward(A_pc), model.backward(dLdZ_pc)

        A_t, dLdZ_t = ctx.pt(A, True), ctx.pt(dLdZ)
        BW_t, Bb_t = ctx.pt(np.ones(C, np.float32), True), ctx.pt(np.zeros(C, np.float32), True)
        running_M, running_V = ctx.pt(np.zeros(C, np.float32)), ctx.pt(np.ones(C, np.float32))

        def run_torch():
            Z = F.relu(F.batch_norm(A_t, running_M, running_V, BW_t, Bb_t, training=True))
            return (Z.detach(), *torch.autograd.grad(Z, (A_t,), dLdZ_t))

        return Pair(run_pc, run_torch)

    return Case(name, "layer", build, None, N, size * size)


LENET_LR = 0.01
# A case is flagged noisy when this process's threads spent more than NOISY_WAIT of the timed
# wall time waiting for a CPU: other work then slowed every run, and the best one too. (One
# slow round among fast ones does no harm: the median is kept.)
NOISY_WAIT = 0.10


def lenet_case(name: str, N: int) -> Case:
    """One LeNet-5 training step on (N, 1, 28, 28): forward, loss, backward, SGD update."""

    def build(ctx: Context) -> Pair:
        layers = [
            Conv2d(1, 6, 5, padding=2),
            ReLU(),
            MaxPool2d(2, 2),
            Conv2d(6, 16, 5),
            ReLU(),
            MaxPool2d(2, 2),
            Flatten(),
            Linear(400, 120),
            ReLU(),
            Linear(120, 84),
            ReLU(),
            Linear(84, 10),
        ]
        loss_pc = CrossEntropyLoss()
        X = ctx.randn(N, 1, 28, 28)
        labels = ctx.rng.integers(0, 10, N).astype(np.int64)
        X_pc = ctx.pc(X)
        labels_pc = ctx.pc(labels, dtype=ctx.backend.xp.int64)
        trained = [layer for layer in layers if layer.param_names]
        # The images need no gradient: torch skips dL/dX because X does not require grad;
        # portaconv is told the same way.
        layers[0].needs_input_grad = False

        def run_pc():
            A = X_pc
            for layer in layers:
                A = layer.forward(A)
            loss = loss_pc.forward(A, labels_pc)
            dLdA = loss_pc.backward()
            for layer in reversed(layers):
                dLdA = layer.backward(dLdA)
            for layer in trained:
                for p in layer.param_names:
                    setattr(layer, p, getattr(layer, p) - LENET_LR * getattr(layer, "dLd" + p))
            return (loss, trained[0].W, trained[-1].W)

        # the same network in torch, starting from portaconv's initial weights
        model = torch.nn.Sequential(
            torch.nn.Conv2d(1, 6, 5, padding=2),
            torch.nn.ReLU(),
            torch.nn.MaxPool2d(2, 2),
            torch.nn.Conv2d(6, 16, 5),
            torch.nn.ReLU(),
            torch.nn.MaxPool2d(2, 2),
            torch.nn.Flatten(),
            torch.nn.Linear(400, 120),
            torch.nn.ReLU(),
            torch.nn.Linear(120, 84),
            torch.nn.ReLU(),
            torch.nn.Linear(84, 10),
        ).to(ctx.torch_device)
        twins = [m for m in model if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
        with torch.no_grad():
            for layer, twin in zip(trained, twins, strict=True):
                twin.weight.copy_(ctx.pt(np.asarray(portaconv.to_numpy(layer.W))))
                twin.bias.copy_(ctx.pt(np.asarray(portaconv.to_numpy(layer.b))))
        optimizer = torch.optim.SGD(model.parameters(), lr=LENET_LR)
        criterion = torch.nn.CrossEntropyLoss()
        X_t, labels_t = ctx.pt(X), ctx.pt(labels)

        def run_torch():
            optimizer.zero_grad(set_to_none=True)
            loss = criterion(model(X_t), labels_t)
            loss.backward()
            optimizer.step()
            # clones: the optimizer updates the parameters in place on the next step
            return (
                loss.detach(),
                twins[0].weight.detach().clone(),
                twins[-1].weight.detach().clone(),
            )

        return Pair(run_pc, run_torch)

    forward = 2 * N * (6 * 1 * 25 * 28 * 28 + 16 * 6 * 25 * 10 * 10)
    forward += 2 * N * (400 * 120 + 120 * 84 + 84 * 10)
    return Case(name, "network", build, 3.0 * forward, N, 28 * 28)


def all_cases(quick: bool) -> list[Case]:
    if quick:
        return [
            conv_case("tiny_conv2d_3x3_p1_4-8_8x8_N4", 2, 4, 4, 8, 3, 8, padding=1),
            lenet_case("tiny_lenet5_step_N8", 8),
        ]
    cases = [
        conv_case("conv2d_3x3_s1_p1_32-64_14x14", 2, 64, 32, 64, 3, 14, 1, 1),
        conv_case("conv2d_3x3_s2_p1_32-64_28x28", 2, 64, 32, 64, 3, 28, 2, 1),
        conv_case("conv2d_5x5_s1_p2_16-32_28x28", 2, 64, 16, 32, 5, 28, 1, 2),
        conv_case("conv2d_1x1_s1_p0_64-128_14x14", 2, 64, 64, 128, 1, 14),
        conv_case("conv2d_5x5_s1_p0_1-6_28x28", 2, 64, 1, 6, 5, 28),
        conv_case("conv2d_3x3_s1_p1_3-32_32x32", 2, 64, 3, 32, 3, 32, 1, 1),
        conv_case("conv2d_3x3_s1_p1_128-128_14x14", 2, 64, 128, 128, 3, 14, 1, 1),
        conv_case("conv1d_3_s1_p1_32-64_w128", 1, 64, 32, 64, 3, 128, 1, 1),
        conv_case("conv1d_5_s2_p0_16-32_w256", 1, 64, 16, 32, 5, 256, 2, 0),
        conv_transpose_case("convtranspose2d_3x3_up2_32-16_14x14", 64, 32, 16, 3, 2, 14),
        pool_case("maxpool2d_2_s2_32ch_28x28", False, 64, 32, 28, 2, 2),
        pool_case("meanpool2d_2_s2_32ch_28x28", True, 64, 32, 28, 2, 2),
        batchnorm_relu_case("batchnorm2d_relu_32ch_28x28", 64, 32, 28),
        lenet_case("lenet5_train_step_N128", 128),
    ]
    for N in (16, 32, 64, 128):
        cases.append(
            conv_case(f"scale_batch_N{N}_3x3_32-64_14x14", 2, N, 32, 64, 3, 14, 1, 1, "scaling")
        )
    for size in (14, 28, 56):
        cases.append(
            conv_case(
                f"scale_size_{size}x{size}_3x3_32-64_N16", 2, 16, 32, 64, 3, size, 1, 1, "scaling"
            )
        )
    return cases


# ----------------------------------------------------------------------------- running


def max_relative_error(ours: tuple[Any, ...], reference: tuple[Any, ...]) -> float:
    """Largest |difference| over the compared arrays, each relative to its largest |value|
    in ``reference`` (torch tensors, or arrays of any backend)."""
    worst = 0.0
    for a, b in zip(ours, reference, strict=True):
        a = np.asarray(portaconv.to_numpy(a), dtype=np.float64)
        if isinstance(b, torch.Tensor):
            b = b.detach().cpu().double().numpy()
        else:
            b = np.asarray(portaconv.to_numpy(b), dtype=np.float64)
        scale = max(float(np.max(np.abs(b))), 1e-30) if b.size else 1.0
        worst = max(worst, float(np.max(np.abs(a - b))) / scale if b.size else 0.0)
    return worst


def run_case(
    case: Case,
    ctx: Context,
    memory: Memory,
    repeats: int,
    sgemm: tuple[Callable[[], Any], int, str],
) -> dict:
    """Time, error and peak memory of one case. For a case with a FLOP count the SGEMM step
    (and its size n) takes turns with both sides, so %SGEMM compares rates measured under
    the same background load."""
    pair = case.build(ctx)
    steps = [pair.portaconv, pair.torch] + ([sgemm[0]] if case.flops else [])
    runs, firsts, cpu_wait = best_times(steps, ctx, repeats, 0.0 if QUIET_THREADS else SETTLE_S)
    (pc_runs, torch_runs), (pc_first, torch_first) = runs[:2], firsts[:2]
    sgemm_gflops = 2 * sgemm[1] ** 3 / min(runs[2]) / 1e9 if case.flops else None
    del firsts
    pc_seconds, torch_seconds = min(pc_runs), min(torch_runs)
    paired = [a / b for a, b in zip(pc_runs, torch_runs)]  # one ratio per round
    q1, median, q3 = (float(q) for q in np.percentile(paired, [25, 50, 75]))
    error = max_relative_error(pc_first, torch_first)
    del pair, pc_first, torch_first

    # Memory: a fresh pair per measurement (its data and parameters are allocated before the
    # baseline), after one step of another fresh pair has done any one-time set-up.
    def peak(side: str, measure: Callable[[Callable[[], Any]], int]) -> int:
        getattr(case.build(ctx), side)()
        gc.collect()
        step = getattr(case.build(ctx), side)
        ctx.sync()
        return measure(step)

    pc_peak = peak("portaconv", memory.portaconv)
    pc_rss = None
    if memory.rss is not None and not memory.same_method:  # CPU, portaconv not on torch
        pc_rss = peak("portaconv", memory.portaconv_rss)
    torch_peak = peak("torch", memory.torch)

    gflops = case.flops / pc_seconds / 1e9 if case.flops else None
    return {
        "name": case.name,
        "group": case.group,
        "batch": case.batch,
        "pixels_per_sample": case.pixels,
        "portaconv_s": pc_seconds,
        "torch_s": torch_seconds,
        # median over the rounds of portaconv's time / torch's in the same round
        "ratio": median,
        "ratio_q1": q1,
        "ratio_q3": q3,
        "best_ratio": pc_seconds / torch_seconds,
        "flops": case.flops,
        "portaconv_gflops": gflops,
        "torch_gflops": case.flops / torch_seconds / 1e9 if case.flops else None,
        "portaconv_pct_sgemm": 100 * gflops / sgemm_gflops if gflops else None,
        "sgemm_gflops": sgemm_gflops,
        "portaconv_peak_bytes": pc_peak,
        "portaconv_peak_rss_bytes": pc_rss,
        "torch_peak_bytes": torch_peak,
        "max_rel_error": error,
        "portaconv_runs_s": pc_runs,
        "torch_runs_s": torch_runs,
        # slowest / best run, on the worse side
        "spread": max(max(pc_runs) / pc_seconds, max(torch_runs) / torch_seconds),
        # time this process's threads waited for a CPU, per second of timed runs
        "cpu_wait": cpu_wait,
    }


def geometric_mean(values: list[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else math.nan


def _noisy(result: dict) -> bool:
    return result["cpu_wait"] is not None and result["cpu_wait"] > NOISY_WAIT


def summarise(results: list[dict]) -> dict[str, Any]:
    layer = [r for r in results if r["group"] == "layer"]
    network = [r for r in results if r["group"] == "network"]
    worst = max(layer, key=lambda r: r["ratio"]) if layer else None
    return {
        "layer_cases": len(layer),
        "geomean_ratio_layers": geometric_mean([r["ratio"] for r in layer]) if layer else None,
        "max_ratio_layers": worst["ratio"] if worst else None,
        "max_ratio_case": worst["name"] if worst else None,
        "lenet_step_ratio": network[0]["ratio"] if network else None,
        "noisy_cases": [r["name"] for r in results if _noisy(r)],
    }


# ----------------------------------------------------------------------------- printing


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _mib(value: int | None) -> str:
    return "-" if value is None else f"{value / MIB:.1f}"


def print_table(title: str, header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    line = "  ".join("-" * w for w in widths)
    print(f"\n{title}")
    for cells in [header, None, *rows]:
        if cells is None:
            print(line)
            continue
        padded = [
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))
        ]
        print("  ".join(padded))


def print_results(results: list[dict], memory: Memory) -> None:
    rss_column = not memory.same_method and memory.rss is not None
    header = ["case", "pc ms", "torch ms", "pc/torch", "quartiles", "best/best"]
    header += ["pc GFLOP/s", "%SGEMM", "pc MiB"]
    header += (["pc RSS MiB"] if rss_column else []) + ["torch MiB", "max rel err", "wait%"]

    def row(r: dict) -> list[str]:
        cells = [
            r["name"],
            f"{r['portaconv_s'] * 1e3:.3f}",
            f"{r['torch_s'] * 1e3:.3f}",
            f"{r['ratio']:.2f}",
            f"{r['ratio_q1']:.2f}-{r['ratio_q3']:.2f}",
            f"{r['best_ratio']:.2f}",
            _fmt(r["portaconv_gflops"], ".1f"),
            _fmt(r["portaconv_pct_sgemm"], ".1f"),
            _mib(r["portaconv_peak_bytes"]),
        ]
        if rss_column:
            cells.append(_mib(r["portaconv_peak_rss_bytes"]))
        wait = "-" if r["cpu_wait"] is None else f"{100 * r['cpu_wait']:.0f}"
        return cells + [_mib(r["torch_peak_bytes"]), f"{r['max_rel_error']:.1e}", wait]

    for group, title in (
        ("layer", "Single layers: forward + backward"),
        ("network", f"LeNet-5 training step (forward, loss, backward, SGD lr={LENET_LR})"),
        ("scaling", "Scaling: Conv2d 3x3 s1 p1 32->64, forward + backward"),
    ):
        rows = [row(r) for r in results if r["group"] == group]
        if rows:
            print_table(title, header, rows)

    scaling = [r for r in results if r["group"] == "scaling"]
    if scaling:
        rows = []
        for r in scaling:
            per_sample = 1e6 / r["batch"]
            per_pixel = 1e9 / (r["batch"] * r["pixels_per_sample"])
            rows.append(
                [
                    r["name"],
                    str(r["batch"]),
                    str(r["pixels_per_sample"]),
                    f"{r['portaconv_s'] * per_sample:.1f}",
                    f"{r['torch_s'] * per_sample:.1f}",
                    f"{r['portaconv_s'] * per_pixel:.2f}",
                    f"{r['torch_s'] * per_pixel:.2f}",
                ]
            )
        print_table(
            "Scaling, normalised (flat columns = linear in batch and in pixels)",
            ["case", "N", "pixels", "pc us/sample", "torch us/sample", "pc ns/px", "torch ns/px"],
            rows,
        )


def _load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):  # not on every platform
        return None


def main(args: argparse.Namespace) -> int:
    torch.set_num_threads(THREADS)
    try:
        ctx = make_context(args.backend, args.device)
    except (portaconv.BackendUnavailableError, ValueError) as exc:
        print(f"benchmarks/run.py: {exc}", file=sys.stderr)
        return 2
    memory = Memory(ctx)
    info = machine_info(ctx, args)
    cases = all_cases(args.quick)
    if args.cases:
        pattern = re.compile(args.cases)
        cases = [c for c in cases if pattern.search(c.name)]
        if not cases:
            print(f"no case matches --cases {args.cases!r}", file=sys.stderr)
            return 2

    load_before = _load_average()
    started = time.perf_counter()
    sgemm_pair = sgemm_step(ctx, args.quick)
    sgemm = sgemm_rate(ctx, args.quick, sgemm_pair)
    print(
        f"portaconv {portaconv.__version__} on {ctx.backend!r} vs torch {torch.__version__} "
        f"on {ctx.torch_device}"
    )
    print(f"device: {info['device_name']}  |  {info['platform']}")
    print(
        f"threads: {THREADS} of {os.cpu_count()} CPUs (torch.get_num_threads()="
        f"{torch.get_num_threads()}; {'/'.join(THREAD_ENV)}={THREADS}); "
        f"numpy {np.__version__} ({info['numpy_blas']}, kernels "
        f"{info['openblas_kernels'] or 'unknown'})"
    )
    if info["blas_env"]:
        print("OpenBLAS settings: " + ", ".join(f"{k}={v}" for k, v in info["blas_env"].items()))
    idle = ", ".join(f"{name}={os.environ.get(name)}" for name in QUIET_IDLE_ENV)
    if QUIET_THREADS:
        print(f"idle threads sleep instead of spinning: {idle}")
    else:
        print(
            f"idle threads: OpenBLAS's sleep, libgomp's (torch) spin as by default ({idle}); "
            f"before every timed run a {1000 * SETTLE_S:.0f} ms pause and {1000 * WARM_S:.0f} ms "
            "of untimed runs of the same side"
        )
    print(
        f"SGEMM ({sgemm['library']}, {sgemm['n']}x{sgemm['n']} float32): "
        f"{sgemm['gflops']:.1f} GFLOP/s"
        + ("" if sgemm["cpu_wait"] is None else f" (wait% {100 * sgemm['cpu_wait']:.0f})")
        + "; timed again within every case, for its %SGEMM"
    )
    if ctx.on_gpu:
        print("TF32 disabled for torch (cudnn and matmul): both sides compute in float32")
    print(
        f"timing: {args.repeats} paired rounds after 1 warm-up, portaconv and torch taking turns "
        "to go first; pc/torch is the median of the per-round ratios, with their quartiles; "
        "pc ms and torch ms are each side's best"
        + ("; device synchronised around every run" if ctx.on_gpu else "")
    )
    print(
        "wait%: time this process's threads waited for a CPU (other work on the machine), "
        "per second of timed runs"
    )
    if hasattr(portaconv.backend, "workspace_bytes"):  # absent before the chunked convolutions
        budget = portaconv.backend.workspace_bytes(ctx.pc(np.zeros(1, dtype=np.float32)))
        print(
            f"convolution workspace (im2row chunk budget, portaconv.backend.WORKSPACE_BYTES): "
            f"{budget / MIB:.0f} MiB"
        )
    if ctx.backend.name == "numpy" and hasattr(portaconv.backend, "num_threads"):
        threaded = portaconv.backend.blas_thread_control()
        print(
            f"portaconv NumPy threads: {portaconv.backend.num_threads()} (stride-1 Conv2d with "
            f"C_in >= {portaconv.backend.MIN_CHANNELS} splits its chunks between them, OpenBLAS "
            + ("single-threaded meanwhile)" if threaded else "not found: run in turn)")
        )
    print(f"peak memory, portaconv: {memory.pc_method}")
    print(f"peak memory, torch:     {memory.torch_method}")
    if not memory.same_method:
        print(
            "  (measured differently: compare across columns with care"
            + ("; 'pc RSS MiB' applies the torch method to portaconv" if memory.rss else "")
            + ")"
        )

    results = []
    for case in cases:
        results.append(run_case(case, ctx, memory, args.repeats, sgemm_pair))
        print(f"  done {case.name}", file=sys.stderr, flush=True)
    elapsed = time.perf_counter() - started
    load_after = _load_average()
    info["load_average_1min"] = {"before": load_before, "after": load_after}

    print_results(results, memory)
    summary = summarise(results)
    print(
        "\nSummary (ratio = median over paired rounds of portaconv time / torch time; < 1 means "
        "portaconv is faster)"
    )
    if summary["layer_cases"]:
        print(
            f"  geometric mean over {summary['layer_cases']} single-layer cases: "
            f"{summary['geomean_ratio_layers']:.2f}"
        )
        print(f"  max ratio: {summary['max_ratio_layers']:.2f} ({summary['max_ratio_case']})")
    if summary["lenet_step_ratio"] is not None:
        print(f"  LeNet-5 training step: {summary['lenet_step_ratio']:.2f}")
    if summary["noisy_cases"]:
        print(
            f"  noisy (wait% > {100 * NOISY_WAIT:.0f}: other work held the CPUs; rerun these "
            f"on a quiet machine): {', '.join(summary['noisy_cases'])}"
        )
    print(f"  total time {elapsed:.1f} s")
    if load_before is not None:
        print(
            f"  1-min load average: {load_before:.2f} at start, {load_after:.2f} at end "
            f"({os.cpu_count()} CPUs, {THREADS} threads used here; a start value well above 0 "
            "means other work was sharing the CPUs)"
        )

    if args.json:
        report = {
            "machine": info,
            "sgemm": sgemm,
            "memory_methods": {
                "portaconv": memory.pc_method,
                "torch": memory.torch_method,
                "same_method": memory.same_method,
            },
            "flop_formula": "conv forward = 2*N*C_out*C_in*K^d*L_out; forward+backward = 3x "
            "forward; transposed conv uses L_in; linear forward = 2*N*in*out",
            "cases": results,
            "summary": summary,
            "elapsed_s": elapsed,
        }
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
        print(f"  wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main(ARGS))
