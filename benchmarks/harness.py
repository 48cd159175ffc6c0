"""What every benchmark script shares: the machine's description, the thread and allocator
set-up, the PyTorch twins of portaconv's layers and models, the cases (one layer's forward +
backward, one training step) built on both sides, and the paired timing loop.

Scripts are run as ``python benchmarks/NAME.py``: Python puts the script's own folder first
on ``sys.path``, so ``import harness`` finds this file; nothing edits ``sys.path``. Only
portaconv's public API is used (``portaconv``, ``portaconv.layers``, ``portaconv.models``,
``portaconv.optim``, ``portaconv.train``, ``portaconv.data`` and, in ``portaconv.backend``,
``set_backend``/``use_backend``/``get_backend``/``to_backend``/``to_numpy``/``num_threads``/
``set_num_threads``/``fast_paths``).

NumPy, torch and portaconv are imported inside the functions that need them, never at the
top of this module: a script sets the thread counts (:func:`set_threads`) before the BLAS
libraries load, and answers a bad argument (exit status 2) without loading them at all.

The paired protocol (:func:`paired_rounds`): every side (portaconv, PyTorch, another
version of portaconv, an SGEMM) runs once a round, in one process where they share it, with
the same data and threads; the side that starts a round rotates from round to round so that
background load falls on all of them alike; before each timed run an optional pause
(``settle``: no other library's thread left spinning) and optional untimed runs of the same
side (``warm``: its own threads and caches as in a loop of its own steps). A ratio is the
median over rounds of the two sides' times in the same round (:func:`ratio_stats`), with the
quartiles and the extremes as its spread.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import datetime
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

# ----------------------------------------------------------------------------- constants

#: The zoo networks the training benchmarks run, and the learning rate of each (Adam).
MODELS = ("cnn", "lenet", "mlp", "resnet", "mobilenet")
LR = {"cnn": 2e-3, "lenet": 2e-3, "mlp": 1e-3, "resnet": 2e-3, "mobilenet": 2e-3}
#: portaconv's backends, as ``--backend`` takes them.
BACKENDS = ("numpy", "torch", "cupy", "jax", "array_api_strict")
#: The convolution engines ``portaconv.backend.fast_paths(conv=...)`` can force.
CONV_ENGINES = ("reference", "im2row", "nchw", "row_gather", "strided")
THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
MIB = 2**20


# ----------------------------------------------------------------------------- set-up


def set_threads(threads: int | None, blas_idle_sleep: bool = True) -> int:
    """Give both libraries ``threads`` threads (default: every CPU) through the environment,
    which the BLAS libraries read when they load: call it before NumPy or torch is imported.
    ``blas_idle_sleep``: OpenBLAS's idle threads sleep at once (``OPENBLAS_THREAD_TIMEOUT=4``,
    unless set) instead of spinning ~0.1 s after each product on the cores the other library
    needs. Returns the thread count."""
    count = threads or os.cpu_count() or 1
    for name in THREAD_ENV:
        os.environ[name] = str(count)
    if blas_idle_sleep:
        os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
    return count


def set_torch_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


#: glibc's ``mallopt`` parameters (``malloc.h``) and what :func:`steady_allocator` sets.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
TRIM_THRESHOLD = 1 << 30  # free memory kept at the top of the heap before returning it
MMAP_THRESHOLD = 32 << 20  # glibc's largest: blocks below it come from the heap, reused


def steady_allocator() -> str:
    """Make glibc keep freed memory for reuse (``mallopt``: no trimming below 1 GiB, blocks
    up to 32 MiB from the heap), as a process running one library alone settles into.

    By default glibc hands memory at the top of its heap back to the kernel and faults it in
    again page by page, and with two libraries in one process how often that happens depends
    on what both allocated before (PyTorch's ``cnn`` epochs once took 1,568 page faults in
    one run and 316,685 in the next). Returns what was done, for the report."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return "default (no glibc mallopt)"
    if not (
        mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    ):
        return "default (mallopt refused)"
    return f"glibc mallopt: trim threshold {TRIM_THRESHOLD}, mmap threshold {MMAP_THRESHOLD}"


def fast_paths(mode: str = "auto", *, conv: str | None = None) -> Any:
    """``portaconv.backend.fast_paths(mode, conv=conv)``: "never" runs the portable
    reference code alone, "auto" lets the backend pick its engines, ``conv`` forces one
    convolution engine (a forced engine that cannot take the input raises ValueError)."""
    import portaconv.backend

    switch = getattr(portaconv.backend, "fast_paths", None)
    if switch is None:
        raise SystemExit(
            f"this portaconv ({portaconv.backend.__file__}) has no "
            "portaconv.backend.fast_paths: the engine comparisons need a version with it"
        )
    return switch(mode, conv=conv)


def has_fast_paths() -> bool:
    import portaconv.backend

    return hasattr(portaconv.backend, "fast_paths")


# ----------------------------------------------------------------------------- the machine


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def blas_description() -> str:
    """NumPy's BLAS and the kernels it runs (threadpoolctl's ``architecture``, where it is
    installed), and any ``OPENBLAS_CORETYPE`` that pins them: some machines pin Haswell's
    AVX2 kernels on an AVX-512 CPU, where SGEMM then runs at about half its rate."""
    import numpy as np  # noqa: F401  (loads the BLAS that threadpoolctl inspects)

    text = "BLAS unknown"
    try:
        from threadpoolctl import threadpool_info

        blas = [i for i in threadpool_info() if i.get("user_api") == "blas"]
        if blas:
            first = blas[0]
            text = f"{first.get('internal_api')} {first.get('version') or ''}".strip()
            if first.get("architecture"):
                text += f", kernels {first['architecture']}"
    except ImportError:
        pass
    pinned = os.environ.get("OPENBLAS_CORETYPE")
    return text + (f" (OPENBLAS_CORETYPE={pinned})" if pinned else "")


def machine_info(**extra: Any) -> dict[str, Any]:
    """Everything a table's header needs: CPU model and count, platform, library versions,
    where portaconv was imported from, threads, OpenBLAS settings, the date."""
    import numpy as np

    import portaconv
    from portaconv.backend import num_threads

    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "blas": blas_description(),
        "portaconv": portaconv.__version__,
        "portaconv_path": os.path.dirname(portaconv.__file__),
        "portaconv_threads": num_threads(),
        "thread_env": {name: os.environ.get(name) for name in THREAD_ENV},
        "openblas_env": {k: v for k, v in sorted(os.environ.items()) if k.startswith("OPENBLAS_")},
        "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    with contextlib.suppress(ImportError):
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    info.update(extra)
    return info


def header(info: dict[str, Any]) -> str:
    """Two lines naming the machine and the libraries, for the top of a table."""
    gpu = f", GPU {info['gpu']}" if info.get("gpu") else ""
    return (
        f"machine: {info['cpu']} ({info['cpu_count']} CPUs{gpu}), {info['platform']}\n"
        f"portaconv {info['portaconv']} ({info['portaconv_path']}), numpy {info['numpy']} "
        f"({info['blas']}), torch {info.get('torch', 'absent')}; threads: portaconv "
        f"{info['portaconv_threads']}, torch {info.get('torch_threads', '-')}"
    )


def write_json(path: str | None, report: dict[str, Any]) -> None:
    if path:
        with open(path, "w") as f:
            json.dump(report, f, indent=2)
            f.write("\n")


def runqueue_wait_s() -> float | None:
    """Seconds this process's threads have stood ready to run but waited for a CPU (Linux
    schedstat): other work on the machine. None where the kernel does not say."""
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


def start_busy(count: int) -> list[subprocess.Popen]:
    """``count`` processes spinning on the CPU for at most an hour (:func:`stop_busy`)."""
    spin = "import time\nend = time.time() + 3600\nwhile time.time() < end: pass\n"
    return [subprocess.Popen([sys.executable, "-c", spin]) for _ in range(count)]


def stop_busy(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        process.kill()
        process.wait()


# ----------------------------------------------------------------------------- arguments


def comma_list(parser: Any, option: str, value: str, known: Any) -> list[str]:
    """The names of a comma-separated option, each one of ``known`` (else a usage error)."""
    names = [name.strip() for name in value.split(",") if name.strip()]
    unknown = [name for name in names if name not in known]
    if unknown or not names:
        parser.error(f"{option}: unknown {unknown}; choose from {', '.join(known)}")
    return names


def at_least(parser: Any, **values: int) -> None:
    """A usage error (exit status 2) unless every ``name=(value, minimum)`` holds."""
    for name, (value, minimum) in values.items():
        if value is not None and value < minimum:
            parser.error(f"--{name.replace('_', '-')} must be at least {minimum}, got {value}")


# ----------------------------------------------------------------------------- timing


@dataclass
class Timing:
    """Every side's run times, in round order (pair them round by round), and the CPU wait
    (run-queue time of this process per second of the rounds, None where unknown)."""

    times: dict[str, list[float]]
    cpu_wait: float | None


def timer(step: Callable[[], Any], sync: Callable[[Any], None] | None = None) -> Callable:
    """``step`` as a side of :func:`paired_rounds`: returns the seconds of one run. ``sync``
    (a GPU, JAX's asynchronous dispatch) is called before the clock starts and with the
    step's result before it stops, so queued work falls inside the interval it belongs to."""

    def timed() -> float:
        if sync is not None:
            sync(None)
        start = time.perf_counter()
        result = step()
        if sync is not None:
            sync(result)
        return time.perf_counter() - start

    return timed


def paired_rounds(
    sides: dict[str, Callable[[], float]],
    rounds: int,
    *,
    warmup: int = 1,
    settle: float = 0.0,
    warm: float = 0.0,
) -> Timing:
    """``warmup`` untimed rounds, then ``rounds`` timed ones; each round runs every side once,
    the side that starts it rotating (a, b, c; b, c, a; ...). A side returns the seconds of
    its run (:func:`timer`, or a worker process timing itself). Before each timed run:
    ``settle`` seconds of pause, then untimed runs of the same side for ``warm`` seconds (at
    least one, when ``warm`` > 0)."""
    names = list(sides)
    times: dict[str, list[float]] = {name: [] for name in names}
    wait_before, paused = runqueue_wait_s(), 0.0
    start = time.perf_counter()
    for r in range(warmup + rounds):
        for j in range(len(names)):
            name = names[(r + j) % len(names)]
            if r >= warmup and settle:
                time.sleep(settle)
                paused += settle
            if r >= warmup and warm:
                began = time.perf_counter()
                sides[name]()
                while time.perf_counter() - began < warm:
                    sides[name]()
            seconds = sides[name]()
            if r >= warmup:
                times[name].append(seconds)
    wall = time.perf_counter() - start - paused
    wait_after = runqueue_wait_s()
    wait = None if wait_before is None or wait_after is None else (wait_after - wait_before) / wall
    return Timing(times, wait)


def ratio_stats(ours: list[float], reference: list[float]) -> dict[str, Any]:
    """The per-round ratios ``ours / reference``: median, quartiles, extremes, all of them."""
    ratios = [a / b for a, b in zip(ours, reference, strict=True)]
    q = statistics.quantiles(ratios, n=4, method="inclusive") if len(ratios) > 1 else ratios * 3
    return {
        "median": statistics.median(ratios),
        "q1": q[0],
        "q3": q[2],
        "min": min(ratios),
        "max": max(ratios),
        "ratios": ratios,
    }


def geometric_mean(values: list[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else math.nan


def print_table(title: str, head: list[str], rows: list[list[str]]) -> None:
    """A plain-text table, the first column left-aligned, the others right-aligned."""
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(head)]
    print(f"\n{title}")
    for cells in [head, None, *rows]:
        if cells is None:
            print("  ".join("-" * w for w in widths))
            continue
        print(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))
            )
        )
    sys.stdout.flush()


# ----------------------------------------------------------------------------- the device


@dataclass
class Context:
    """The portaconv backend, the torch device that mirrors it, and how to wait for both."""

    backend: Any  # portaconv.backend.Backend
    torch_device: Any  # torch.device

    @property
    def on_gpu(self) -> bool:
        return self.torch_device.type == "cuda"

    @property
    def name(self) -> str:
        return self.backend.name

    def sync(self, result: Any = None) -> None:
        """Wait until every queued GPU kernel (torch's and CuPy's) has finished, and until
        ``result`` is computed on JAX (which dispatches asynchronously, CPU included)."""
        import torch

        if self.on_gpu:
            torch.cuda.synchronize(self.torch_device)
        if self.backend.name == "cupy":
            self.backend.device.synchronize()
        if self.backend.name == "jax" and result is not None:
            import jax

            jax.block_until_ready(result)

    def pc(self, x: Any, dtype: Any = None) -> Any:
        import portaconv

        return portaconv.to_backend(x, dtype=dtype)

    def pt(self, x: Any, grad: bool = False) -> Any:
        import numpy as np
        import torch

        return torch.from_numpy(np.array(x)).to(self.torch_device).requires_grad_(grad)


def start(args: Any, script: str) -> Context | None:
    """A script's start: threads for NumPy and torch (``args.threads``), then
    :func:`make_context` for ``args.backend`` and ``args.device``; None, after one line on
    stderr naming ``script``, where that backend cannot run (the script exits 2)."""
    threads = set_threads(args.threads)
    import portaconv

    set_torch_threads(threads)
    try:
        return make_context(args.backend, args.device)
    except (portaconv.BackendUnavailableError, ValueError) as exc:
        print(f"benchmarks/{script}: {exc}", file=sys.stderr)
        return None


def make_context(name: str, device: Any = None) -> Context:
    """Select portaconv's backend (float32) and the torch device that mirrors it; TF32 off
    on CUDA so that both sides compute in float32. Raises ``BackendUnavailableError`` or
    ValueError where the backend cannot run."""
    import torch

    import portaconv

    if name == "cupy" and isinstance(device, str) and device.isdigit():
        device = int(device)
    backend = portaconv.set_backend(name, device, "float32")
    if name == "torch":
        torch_device = torch.device(backend.device)
    elif name == "cupy":
        if not torch.cuda.is_available():
            raise ValueError("--backend cupy: the torch reference needs a CUDA build of torch")
        torch_device = torch.device("cuda", backend.device.id)
    elif name == "jax" and any(k in str(backend.device).lower() for k in ("cuda", "gpu")):
        torch_device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        torch_device = torch.device("cpu")
    if torch_device.type == "cuda":
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    return Context(backend=backend, torch_device=torch_device)


# ----------------------------------------------------------------------------- twins


def torch_layer(layer: Any) -> Any:
    """The torch.nn module computing what the portaconv layer computes, with its weights."""
    import numpy as np
    import torch

    from portaconv import layers as L
    from portaconv import models
    from portaconv.backend import to_numpy

    def tensor(x: Any) -> Any:
        return torch.from_numpy(np.array(to_numpy(x), dtype=np.float32))

    if isinstance(layer, models.Sequential):
        return torch_twin(layer)
    if isinstance(layer, getattr(models, "Residual", ())):  # older versions (--baseline): none
        shortcut = None if layer.shortcut is None else torch_layer(layer.shortcut)
        return torch_residual(torch_layer(layer.body), shortcut)
    if isinstance(layer, (L.Conv1d, L.Conv2d)):
        kind = torch.nn.Conv2d if isinstance(layer, L.Conv2d) else torch.nn.Conv1d
        twin = kind(
            layer.in_channels,
            layer.out_channels,
            layer.kernel_size,
            layer.stride,
            layer.padding,
            dilation=getattr(layer, "dilation", 1),  # older versions: neither option
            groups=getattr(layer, "groups", 1),
            bias="b" in layer.param_names,
        )
    elif isinstance(layer, L.Linear):
        twin = torch.nn.Linear(layer.in_features, layer.out_features)
    elif isinstance(layer, (L.BatchNorm1d, L.BatchNorm2d)):
        kind = torch.nn.BatchNorm2d if isinstance(layer, L.BatchNorm2d) else torch.nn.BatchNorm1d
        twin = kind(layer.num_features, eps=layer.eps, momentum=layer.momentum)
        with torch.no_grad():
            twin.weight.copy_(tensor(layer.BW))
            twin.bias.copy_(tensor(layer.Bb))
    elif isinstance(layer, L.MaxPool2d):
        twin = torch.nn.MaxPool2d(layer.kernel, layer.stride)
    elif isinstance(layer, L.MeanPool2d):
        twin = torch.nn.AvgPool2d(layer.kernel, layer.stride)
    elif isinstance(layer, L.ReLU):
        twin = torch.nn.ReLU()
    elif isinstance(layer, L.Flatten):
        twin = torch.nn.Flatten()
    elif isinstance(layer, L.GlobalAvgPool2d):
        twin = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    elif isinstance(layer, L.Dropout):
        twin = torch.nn.Dropout(layer.p)
    elif isinstance(layer, getattr(L, "ReLU6", ())):  # older versions (--baseline): none
        twin = torch.nn.ReLU6()
    else:
        raise TypeError(f"harness: no torch twin for {layer!r}")
    if isinstance(layer, (L.Conv1d, L.Conv2d, L.Linear)):
        with torch.no_grad():
            twin.weight.copy_(tensor(layer.W))
            if twin.bias is not None:
                twin.bias.copy_(tensor(layer.b))
    return twin


def torch_twin(model: Any) -> Any:
    """The same network in torch.nn (a ``Sequential``), with portaconv's current weights."""
    import torch

    return torch.nn.Sequential(*(torch_layer(layer) for layer in model))


def torch_residual(body: Any, shortcut: Any = None) -> Any:
    """A torch.nn module computing ``body(x) + shortcut(x)`` (``shortcut`` None: ``x``), as
    ``portaconv.models.Residual`` does; torchvision's ResNet blocks add the same way."""
    import torch

    class Residual(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = body
            self.shortcut = torch.nn.Identity() if shortcut is None else shortcut

        def forward(self, x: Any) -> Any:
            return self.body(x) + self.shortcut(x)

    return Residual()


def load_images(n: int, data_dir: str | None = None) -> tuple[Any, Any, str]:
    """The first ``n`` Fashion-MNIST training images when the IDX files are found (no
    download), else seeded random 28x28 images (a step's time does not depend on the
    pixels); standardised float32, int64 labels, and which it was."""
    import numpy as np

    from portaconv.data import load_dataset, standardize

    try:
        data = load_dataset("fashion-mnist", data_dir=data_dir, download=False)
        X, y, source = data.X_train[:n], data.y_train[:n], "Fashion-MNIST"
    except (FileNotFoundError, ValueError, OSError):
        rng = np.random.default_rng(0)
        X = rng.random((n, 1, 28, 28), dtype=np.float32)
        y, source = rng.integers(0, 10, n), "random 28x28 images"
    (X,) = standardize(X)
    return np.asarray(X, dtype=np.float32), np.asarray(y, dtype=np.int64), source


# ----------------------------------------------------------------------------- the cases


@dataclass
class Pair:
    """One case built on both sides; each step returns the arrays to compare."""

    portaconv: Callable[[], tuple[Any, ...]]
    torch: Callable[[], tuple[Any, ...]]
    compare: bool = True  # False where the two steps differ by design (dropout masks)
    inputs: dict[str, Any] = field(default_factory=dict)  # the NumPy data, where a script needs it


@dataclass
class Case:
    """A benchmark case: ``build(ctx)`` makes a fresh :class:`Pair` on the same seeded data
    every time it is called (so that several variants of one side can be compared)."""

    name: str
    group: str  # "layer", "network", "optimizer" or "scaling"
    build: Callable[[Context], Pair]
    flops: float | None = None  # forward + backward (+ update) FLOPs; None: memory-bound
    batch: int = 0
    pixels: int = 0  # spatial positions of the input per sample
    conv: bool = False  # a convolution: fast_paths(conv=...) picks its engine
    tags: dict[str, Any] = field(default_factory=dict)


def out_size(n: int, K: int, stride: int, padding: int) -> int:
    return (n + 2 * padding - K) // stride + 1


def conv_flops(N: int, c_in: int, c_out: int, K: int, nd: int, positions: int) -> float:
    """Forward + backward of a convolution: 3 x (2 N C_out C_in K^d positions)."""
    return 3.0 * 2 * N * c_out * c_in * K**nd * positions


def _rng() -> Any:
    import numpy as np

    return np.random.default_rng(0)


def _uniform(rng: Any, bound: float, *shape: int) -> Any:
    import numpy as np

    return rng.uniform(-bound, bound, shape).astype(np.float32)


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
    groups: int = 1,
) -> Case:
    """Conv1d or Conv2d forward + backward against F.conv1d / F.conv2d + autograd; with
    ``input_grad=False`` without dL/dA on both sides (a network's first layer); ``groups``
    as both take it (``c_in``: depthwise). The pair's ``inputs`` hold A, W, b and dL/dZ."""
    out = out_size(size, K, stride, padding)

    def build(ctx: Context) -> Pair:
        import numpy as np
        import torch
        import torch.nn.functional as F

        from portaconv.layers import Conv1d, Conv2d

        rng = _rng()
        bound = 1 / math.sqrt(c_in // groups * K**nd)
        W = _uniform(rng, bound, c_out, c_in // groups, *(K,) * nd)
        b = _uniform(rng, bound, c_out)
        A = rng.standard_normal((N, c_in, *(size,) * nd), dtype=np.float32)
        dLdZ = rng.standard_normal((N, c_out, *(out,) * nd), dtype=np.float32)
        init = {"weight_init_fn": lambda *_: W, "bias_init_fn": lambda *_: b}
        options = {"groups": groups} if groups != 1 else {}  # older versions lack groups=
        layer = (Conv1d if nd == 1 else Conv2d)(c_in, c_out, K, stride, padding, **init, **options)
        layer.needs_input_grad = input_grad
        A_pc, dLdZ_pc = ctx.pc(A), ctx.pc(dLdZ)

        def run_pc() -> tuple[Any, ...]:
            Z = layer.forward(A_pc)
            dLdA = layer.backward(dLdZ_pc)
            return (Z, *((dLdA,) if input_grad else ()), layer.dLdW, layer.dLdb)

        torch_conv = F.conv1d if nd == 1 else F.conv2d
        A_t, W_t, b_t = ctx.pt(A, input_grad), ctx.pt(W, True), ctx.pt(b, True)
        dLdZ_t = ctx.pt(dLdZ)
        wrt = (A_t, W_t, b_t) if input_grad else (W_t, b_t)

        def run_torch() -> tuple[Any, ...]:
            Z = torch_conv(A_t, W_t, b_t, stride=stride, padding=padding, groups=groups)
            return (Z.detach(), *torch.autograd.grad(Z, wrt, dLdZ_t))

        inputs = {"A": A, "W": W, "b": b, "dLdZ": dLdZ}
        return Pair(run_pc, run_torch, inputs=inputs)

    flops = conv_flops(N, c_in // groups, c_out, K, nd, out**nd) * (1 if input_grad else 2 / 3)
    tags = {"groups": groups, "stride": stride, "padding": padding} if groups != 1 else {}
    return Case(name, group, build, flops, N, size**nd, conv=True, tags=tags)


def conv_transpose_case(name: str, N: int, c_in: int, c_out: int, K: int, k: int, size: int):
    """ConvTranspose2d (upsample by k, then a stride-1 convolution) against
    F.conv_transpose2d + autograd."""
    out = k * (size - 1) + 2 - K

    def build(ctx: Context) -> Pair:
        import numpy as np
        import torch
        import torch.nn.functional as F

        from portaconv.layers import ConvTranspose2d

        rng = _rng()
        bound = 1 / math.sqrt(c_in * K * K)
        W, b = _uniform(rng, bound, c_out, c_in, K, K), _uniform(rng, bound, c_out)
        A = rng.standard_normal((N, c_in, size, size), dtype=np.float32)
        dLdZ = rng.standard_normal((N, c_out, out, out), dtype=np.float32)
        layer = ConvTranspose2d(
            c_in, c_out, K, k, weight_init_fn=lambda *_: W, bias_init_fn=lambda *_: b
        )
        A_pc, dLdZ_pc = ctx.pc(A), ctx.pc(dLdZ)

        def run_pc() -> tuple[Any, ...]:
            Z = layer.forward(A_pc)
            return Z, layer.backward(dLdZ_pc), layer.dLdW, layer.dLdb

        A_t, W_t, b_t, dLdZ_t = ctx.pt(A, True), ctx.pt(W, True), ctx.pt(b, True), ctx.pt(dLdZ)

        def run_torch() -> tuple[Any, ...]:
            # torch's weight is portaconv's flipped in space with the channel axes swapped
            V = W_t.flip(-1, -2).transpose(0, 1)
            Z = F.conv_transpose2d(A_t, V, b_t, stride=k, padding=K - 1)
            return (Z.detach(), *torch.autograd.grad(Z, (A_t, W_t, b_t), dLdZ_t))

        return Pair(run_pc, run_torch)

    flops = conv_flops(N, c_in, c_out, K, 2, size * size)  # the zeros inserted are not work
    return Case(name, "layer", build, flops, N, size**2, conv=True)


def pool_case(name: str, mean: bool, N: int, C: int, size: int, kernel: int, stride: int) -> Case:
    """MaxPool2d / MeanPool2d forward + backward against F.max_pool2d / F.avg_pool2d."""
    out = out_size(size, kernel, stride, 0)

    def build(ctx: Context) -> Pair:
        import numpy as np
        import torch
        import torch.nn.functional as F

        from portaconv.layers import MaxPool2d, MeanPool2d

        rng = _rng()
        A = rng.standard_normal((N, C, size, size), dtype=np.float32)
        dLdZ = rng.standard_normal((N, C, out, out), dtype=np.float32)
        layer = (MeanPool2d if mean else MaxPool2d)(kernel, stride)
        A_pc, dLdZ_pc = ctx.pc(A), ctx.pc(dLdZ)
        A_t, dLdZ_t = ctx.pt(A, True), ctx.pt(dLdZ)
        pool = F.avg_pool2d if mean else F.max_pool2d

        def run_torch() -> tuple[Any, ...]:
            Z = pool(A_t, kernel, stride)
            return (Z.detach(), *torch.autograd.grad(Z, (A_t,), dLdZ_t))

        return Pair(lambda: (layer.forward(A_pc), layer.backward(dLdZ_pc)), run_torch)

    return Case(name, "layer", build, None, N, size * size)


def batchnorm_relu_case(name: str, N: int, C: int, size: int) -> Case:
    """BatchNorm2d (training mode) then ReLU, forward + backward, as a model runs them,
    against F.batch_norm + F.relu + autograd."""

    def build(ctx: Context) -> Pair:
        import numpy as np
        import torch
        import torch.nn.functional as F

        from portaconv.layers import BatchNorm2d, ReLU
        from portaconv.models import Sequential

        rng = _rng()
        A = rng.standard_normal((N, C, size, size), dtype=np.float32)
        dLdZ = rng.standard_normal((N, C, size, size), dtype=np.float32)
        model = Sequential(BatchNorm2d(C), ReLU())
        A_pc, dLdZ_pc = ctx.pc(A), ctx.pc(dLdZ)
        A_t, dLdZ_t = ctx.pt(A, True), ctx.pt(dLdZ)
        BW_t, Bb_t = ctx.pt(np.ones(C, np.float32), True), ctx.pt(np.zeros(C, np.float32), True)
        mean_t, var_t = ctx.pt(np.zeros(C, np.float32)), ctx.pt(np.ones(C, np.float32))

        def run_torch() -> tuple[Any, ...]:
            Z = F.relu(F.batch_norm(A_t, mean_t, var_t, BW_t, Bb_t, training=True))
            return (Z.detach(), *torch.autograd.grad(Z, (A_t,), dLdZ_t))

        return Pair(lambda: (model.forward(A_pc), model.backward(dLdZ_pc)), run_torch)

    return Case(name, "layer", build, None, N, size * size)


#: SGD of the network steps (``model_step_case``): as ``Trainer.fit`` runs a step.
STEP_LR, STEP_MOMENTUM = 0.01, 0.9


def model_step_case(model: str, N: int) -> Case:
    """One training step of zoo network ``model`` on (N, 1, 28, 28): forward, cross-entropy,
    zero_grad, backward (no dL/dX: the images need none), SGD with momentum; against the
    same network (:func:`torch_twin`, the same initial weights) with autograd and
    ``torch.optim.SGD``. Networks with dropout draw different masks on the two sides: their
    results are not compared."""

    def build(ctx: Context) -> Pair:
        import numpy as np
        import torch

        import portaconv
        from portaconv.layers import CrossEntropyLoss, Dropout
        from portaconv.models import build_model
        from portaconv.optim import SGD

        rng = _rng()
        X = rng.standard_normal((N, 1, 28, 28), dtype=np.float32)
        labels = rng.integers(0, 10, N).astype(np.int64)
        portaconv.manual_seed(0)
        net = build_model(model, (1, 28, 28), 10)
        net.train()
        criterion = CrossEntropyLoss()
        optimizer = SGD(net, lr=STEP_LR, momentum=STEP_MOMENTUM)
        X_pc, y_pc = ctx.pc(X), ctx.pc(labels, dtype=ctx.backend.xp.int64)
        trained = [layer for layer in net if getattr(layer, "param_names", ())]

        def run_pc() -> tuple[Any, ...]:
            loss = criterion.forward(net.forward(X_pc), y_pc)
            optimizer.zero_grad()
            net.backward(criterion.backward(), input_grad=False)
            optimizer.step()
            return loss, trained[0].W, trained[-1].W

        twin = torch_twin(net).to(ctx.torch_device)
        twin.train()
        weighted = [m for m in twin if hasattr(m, "weight") and m.weight is not None]
        torch_optimizer = torch.optim.SGD(twin.parameters(), lr=STEP_LR, momentum=STEP_MOMENTUM)
        X_t, y_t = ctx.pt(X), ctx.pt(labels)

        def run_torch() -> tuple[Any, ...]:
            torch_optimizer.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(twin(X_t), y_t)
            loss.backward()
            torch_optimizer.step()
            return (
                loss.detach(),
                weighted[0].weight.detach().clone(),
                weighted[-1].weight.detach().clone(),
            )

        dropout = any(isinstance(layer, Dropout) for layer in net)
        return Pair(run_pc, run_torch, compare=not dropout)

    return Case(f"{model}_train_step_N{N}", "network", build, None, N, 28 * 28)


def adam_case(name: str, model: str = "mlp") -> Case:
    """One Adam update of zoo network ``model``'s parameters, their gradients fixed (one
    backward before), against ``torch.optim.Adam`` on the twin's."""

    def build(ctx: Context) -> Pair:
        import numpy as np
        import torch

        import portaconv
        from portaconv.layers import CrossEntropyLoss
        from portaconv.models import build_model
        from portaconv.optim import Adam

        rng = _rng()
        X = rng.standard_normal((32, 1, 28, 28), dtype=np.float32)
        labels = rng.integers(0, 10, 32).astype(np.int64)
        portaconv.manual_seed(0)
        net = build_model(model, (1, 28, 28), 10)
        net.eval()  # no dropout: the same gradients on both sides
        twin = torch_twin(net).to(ctx.torch_device).eval()
        criterion = CrossEntropyLoss()
        criterion.forward(net.forward(ctx.pc(X)), ctx.pc(labels, dtype=ctx.backend.xp.int64))
        net.backward(criterion.backward(), input_grad=False)
        optimizer = Adam(net, lr=1e-3)
        trained = [layer for layer in net if getattr(layer, "param_names", ())]
        torch.nn.functional.cross_entropy(twin(ctx.pt(X)), ctx.pt(labels)).backward()
        torch_optimizer = torch.optim.Adam(twin.parameters(), lr=1e-3)
        weighted = [m for m in twin if hasattr(m, "weight") and m.weight is not None]

        def run_pc() -> tuple[Any, ...]:
            optimizer.step()
            return trained[0].W, trained[-1].W

        def run_torch() -> tuple[Any, ...]:
            torch_optimizer.step()
            return weighted[0].weight.detach().clone(), weighted[-1].weight.detach().clone()

        return Pair(run_pc, run_torch)

    return Case(name, "optimizer", build)


def layer_cases(quick: bool = False) -> list[Case]:
    """The single-layer cases of ``run.py`` and ``engines.py`` (tiny ones with ``quick``)."""
    if quick:
        return [
            conv_case("tiny_conv2d_3x3_p1_4-8_8x8_N4", 2, 4, 4, 8, 3, 8, padding=1),
            conv_case("tiny_conv1d_3_p1_4-8_w16_N4", 1, 4, 4, 8, 3, 16, padding=1),
            pool_case("tiny_maxpool2d_2_s2_4ch_8x8", False, 4, 4, 8, 2, 2),
        ]
    return [
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
    ]


def network_cases(quick: bool = False, models: tuple[str, ...] = ("lenet",)) -> list[Case]:
    """One training step of each zoo network in ``models`` (batch 128; 8 with ``quick``)."""
    return [model_step_case(model, 8 if quick else 128) for model in models]


def max_relative_error(ours: tuple[Any, ...], reference: tuple[Any, ...]) -> float:
    """Largest |difference| over the compared arrays, each relative to the largest |value|
    of ``reference`` (torch tensors, or arrays of any backend)."""
    import numpy as np

    from portaconv.backend import to_numpy

    def host(x: Any) -> Any:
        if hasattr(x, "detach"):  # a torch tensor
            return x.detach().cpu().double().numpy()
        return np.asarray(to_numpy(x), dtype=np.float64)

    worst = 0.0
    for a, b in zip(ours, reference, strict=True):
        a, b = host(a), host(b)
        if b.size:
            scale = max(float(np.max(np.abs(b))), 1e-30)
            worst = max(worst, float(np.max(np.abs(a - b))) / scale)
    return worst


@contextlib.contextmanager
def quiet_stdout() -> Iterator[None]:
    """Send what a library prints to stderr (worker processes keep stdout for replies)."""
    with contextlib.redirect_stdout(sys.stderr):
        yield
