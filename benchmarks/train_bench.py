"""What users run, timed: the zoo's networks trained through ``Trainer.fit`` against the same
networks in a plain PyTorch loop, interleaved in one process.

    python benchmarks/train_bench.py [--models cnn,lenet,mlp] [--rounds 7] [--images 4096]
                                     [--batch-size 128] [--threads T] [--busy N] [--json FILE]
                                     [--default-malloc]

portaconv's side is what ``portaconv train`` does: ``build_model`` + ``DataLoader(shuffle)`` +
``Trainer.fit`` with Adam (no augmentation, no validation, no progress bar), on the NumPy
backend in float32 unless ``--backend`` says otherwise. PyTorch's side is the same network,
starting from portaconv's initial weights, trained with ``torch.optim.Adam`` over the same
images in batches of the same size, shuffled each epoch, in float32 on the CPU with the same
number of threads. One round is one epoch of each, their order alternating from round to
round; the first round is a warm-up and is not counted. Before each timed epoch the process
sleeps ``SETTLE_S`` so that the other library's idle threads have stopped spinning.
Reported per network: the median of the per-round time ratios (portaconv / PyTorch) with
its spread (lowest, highest), both sides' images per second, and the median page faults the
process took during each side's epochs (portaconv / PyTorch).

Data: the first ``--images`` Fashion-MNIST training images when the IDX files are found
(``/usr/share/datasets/fashion-mnist``, ``--data-dir``), else seeded random 28x28 images
(the time of a step does not depend on the pixels). ``--busy N`` runs N processes that
spin on the CPU beside the measurement (a busy machine), and stops them afterwards.

The C allocator: with glibc, the process first keeps freed memory for reuse
(:func:`steady_allocator`), because by default glibc returns freed memory at the top of
its heap to the kernel and the next allocations fault it back in page by page, and how
often that happens depends on everything the process allocated before: with both libraries
in one process, PyTorch's ``cnn`` epochs took 1,568 page faults each in one run and 316,685
in the next (4,340 and 3,249 img/s; BENCHMARKS.md). Held steady, each library runs as it
does alone in its own process. ``--default-malloc`` leaves glibc's defaults (the earlier
rounds' tables were measured so).
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from typing import Any

MODELS = ("cnn", "lenet", "mlp")
LR = {"cnn": 2e-3, "lenet": 2e-3, "mlp": 1e-3}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated zoo names")
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds (after a warm-up)")
    add_epoch_options(parser)
    parser.add_argument("--threads", type=int, help="threads for both (default: all)")
    parser.add_argument("--busy", type=int, default=0, help="CPU-spinning processes beside it")
    parser.add_argument("--backend", default="numpy", help="portaconv backend (default numpy)")
    parser.add_argument("--quick", action="store_true", help="2 rounds of 256 images (smoke test)")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.images = 2, 256
    models = comma_list(parser, "--models", args.models, MODELS)
    if args.rounds < 1 or args.images < args.batch_size or args.batch_size < 2:
        parser.error("need --rounds >= 1, --batch-size >= 2 and --images >= --batch-size")
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be at least 1")
    args.models = models
    return args


def add_epoch_options(parser: argparse.ArgumentParser) -> None:
    """The options every epoch benchmark shares: the data, the batch, the JSON report, the
    allocator."""
    parser.add_argument("--images", type=int, default=4096, help="images per epoch")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--data-dir", help="where the Fashion-MNIST IDX files are")
    parser.add_argument("--json", metavar="FILE", help="write every number here")
    parser.add_argument(
        "--default-malloc", action="store_true", help="leave glibc's allocator as it is"
    )


#: glibc's ``mallopt`` parameters (``malloc.h``) and what :func:`steady_allocator` sets.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
TRIM_THRESHOLD = 1 << 30  # free memory kept at the top of the heap before returning it
MMAP_THRESHOLD = 32 << 20  # glibc's largest: blocks below it come from the heap, reused


def steady_allocator() -> str:
    """Make glibc keep freed memory for reuse (``mallopt``: no trimming below 1 GiB, blocks
    up to 32 MiB from the heap), as a process running one library alone settles into, so
    neither library's epochs pay page faults that the other's allocations caused. Returns
    what was done, for the report ("default" where glibc is not the C library)."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return "default (no glibc mallopt)"
    mmap_set = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
    if not (mmap_set and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)):
        return "default (mallopt refused)"
    return f"glibc mallopt: trim threshold {TRIM_THRESHOLD}, mmap threshold {MMAP_THRESHOLD}"


def blas_text() -> str:
    """Which kernels NumPy's OpenBLAS runs, and why: the machine may pin them with
    ``OPENBLAS_CORETYPE`` (this development machine's environment pins Haswell's AVX2
    kernels on an AVX-512 CPU, for older OpenBLAS builds; a current NumPy runs slower so)."""
    import portaconv.backend

    kernels = getattr(portaconv.backend, "blas_kernels", lambda: None)()  # (older versions)
    pinned = os.environ.get("OPENBLAS_CORETYPE")
    why = f"OPENBLAS_CORETYPE={pinned}" if pinned else "OPENBLAS_CORETYPE unset: the CPU's own"
    return f"OpenBLAS kernels {kernels or 'unknown'} ({why})"


def comma_list(parser: argparse.ArgumentParser, option: str, value: str, known: Any) -> list:
    """The names of a comma-separated option, each one of ``known`` (else a usage error)."""
    names = [name.strip() for name in value.split(",") if name.strip()]
    unknown = [name for name in names if name not in known]
    if unknown:
        parser.error(f"{option}: unknown {unknown}; choose from {', '.join(known)}")
    return names


def load_images(n: int, data_dir: str | None) -> tuple[Any, Any, str]:
    import numpy as np

    from portaconv.data import load_dataset, standardize

    try:
        data = load_dataset("fashion-mnist", data_dir=data_dir, download=False)
        X, y, source = data.X_train[:n], data.y_train[:n], "Fashion-MNIST"
    except (FileNotFoundError, ValueError):
        rng = np.random.default_rng(0)
        X = rng.random((n, 1, 28, 28), dtype=np.float32)
        y, source = rng.integers(0, 10, n), "random 28x28 images"
    (X,) = standardize(X)
    return np.asarray(X, dtype=np.float32), np.asarray(y, dtype=np.int64), source


def torch_twin(model: Any) -> Any:
    """The same network in torch.nn, with portaconv's current weights."""
    import numpy as np
    import torch

    from portaconv import layers as L
    from portaconv.backend import to_numpy

    def tensor(x: Any) -> Any:
        return torch.from_numpy(np.array(to_numpy(x), dtype=np.float32))

    modules = []
    for layer in model:
        if isinstance(layer, L.Conv2d):
            twin = torch.nn.Conv2d(
                layer.in_channels,
                layer.out_channels,
                layer.kernel_size,
                layer.stride,
                layer.padding,
            )
        elif isinstance(layer, L.Linear):
            twin = torch.nn.Linear(layer.in_features, layer.out_features)
        elif isinstance(layer, (L.BatchNorm1d, L.BatchNorm2d)):
            two_d = isinstance(layer, L.BatchNorm2d)
            kind = torch.nn.BatchNorm2d if two_d else torch.nn.BatchNorm1d
            twin = kind(layer.num_features, eps=layer.eps, momentum=layer.momentum)
            with torch.no_grad():
                twin.weight.copy_(tensor(layer.BW))
                twin.bias.copy_(tensor(layer.Bb))
        elif isinstance(layer, L.MaxPool2d):
            twin = torch.nn.MaxPool2d(layer.kernel, layer.stride)
        elif isinstance(layer, L.ReLU):
            twin = torch.nn.ReLU()
        elif isinstance(layer, L.Flatten):
            twin = torch.nn.Flatten()
        elif isinstance(layer, L.Dropout):
            twin = torch.nn.Dropout(layer.p)
        else:
            raise TypeError(f"train_bench: no torch twin for {layer!r}")
        if isinstance(layer, (L.Conv2d, L.Linear)):
            with torch.no_grad():
                twin.weight.copy_(tensor(layer.W))
                twin.bias.copy_(tensor(layer.b))
        modules.append(twin)
    return torch.nn.Sequential(*modules)


def make_pair(name: str, X: Any, y: Any, batch_size: int, backend: str) -> tuple[Any, Any]:
    """(one portaconv epoch, one torch epoch) as callables, each returning its mean loss."""
    import torch

    import portaconv
    from portaconv.data import DataLoader
    from portaconv.models import build_model
    from portaconv.optim import Adam
    from portaconv.train import Trainer

    portaconv.set_backend(backend, dtype="float32")
    portaconv.manual_seed(0)
    model = build_model(name, X.shape[1:], 10)
    trainer = Trainer(model, Adam(model, lr=LR[name]), progress=False, log=lambda line: None)
    loader = DataLoader(X, y, batch_size=batch_size, shuffle=True, seed=0)

    def portaconv_epoch() -> float:
        history = trainer.fit(loader, epochs=trainer.epoch + 1)
        return history[-1]["train_loss"]

    net = torch_twin(model)
    optimizer = torch.optim.Adam(net.parameters(), lr=LR[name])
    X_t, y_t = torch.from_numpy(X), torch.from_numpy(y)
    generator = torch.Generator().manual_seed(0)

    def torch_epoch() -> float:
        net.train()
        total, seen = 0.0, 0
        order = torch.randperm(len(X_t), generator=generator)
        for start in range(0, len(order), batch_size):
            index = order[start : start + batch_size]
            optimizer.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(net(X_t[index]), y_t[index])
            loss.backward()
            optimizer.step()
            total += loss.item() * len(index)
            seen += len(index)
        return total / seen

    return portaconv_epoch, torch_epoch


# Seconds to wait before each timed epoch: a library's idle worker threads spin on the
# cores for a while after its last parallel call (OpenBLAS ~0.1 s, libgomp less), and in one
# process they would slow the other library's epoch that starts right after.
SETTLE_S = 0.3


def timed(step: Any, faults: list[int]) -> tuple[float, float]:
    """(seconds, loss) of ``step()`` after ``SETTLE_S``; appends to ``faults`` the page
    faults the process took meanwhile (memory the kernel had to hand back)."""
    time.sleep(SETTLE_S)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    start = time.perf_counter()
    loss = step()
    seconds = time.perf_counter() - start
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    return seconds, loss


def faults_text(faults: dict[str, float]) -> str:
    return " / ".join(f"{v:,.0f}" for v in faults.values())


def start_busy(count: int) -> list[subprocess.Popen]:
    """``count`` processes spinning on the CPU for at most an hour (stopped by the caller)."""
    spin = "import time\nend = time.time() + 3600\nwhile time.time() < end: pass\n"
    return [subprocess.Popen([sys.executable, "-c", spin]) for _ in range(count)]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads is not None:  # before NumPy and torch start their thread pools
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = str(args.threads)
    allocator = "default" if args.default_malloc else steady_allocator()
    import torch

    from portaconv.backend import num_threads

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    X, y, source = load_images(args.images, args.data_dir)
    busy = start_busy(args.busy)
    results = []
    try:
        for name in args.models:
            pc_epoch, torch_epoch = make_pair(name, X, y, args.batch_size, args.backend)
            pc_epoch(), torch_epoch()  # warm-up round
            ratios, pc_times, torch_times = [], [], []
            faults: dict[str, list[int]] = {"portaconv": [], "torch": []}
            for r in range(args.rounds):
                if r % 2 == 0:
                    t_pc, pc_loss = timed(pc_epoch, faults["portaconv"])
                    t_torch, torch_loss = timed(torch_epoch, faults["torch"])
                else:
                    t_torch, torch_loss = timed(torch_epoch, faults["torch"])
                    t_pc, pc_loss = timed(pc_epoch, faults["portaconv"])
                ratios.append(t_pc / t_torch)
                pc_times.append(t_pc)
                torch_times.append(t_torch)
            result = {
                "model": name,
                "median_ratio": statistics.median(ratios),
                "min_ratio": min(ratios),
                "max_ratio": max(ratios),
                "ratios": ratios,
                "portaconv_images_per_s": args.images / statistics.median(pc_times),
                "torch_images_per_s": args.images / statistics.median(torch_times),
                "last_loss": {"portaconv": pc_loss, "torch": torch_loss},
                "page_faults_per_epoch": {k: statistics.median(v) for k, v in faults.items()},
            }
            results.append(result)
            print(
                f"{name:6s} portaconv/torch {result['median_ratio']:.2f}x "
                f"(spread {result['min_ratio']:.2f}-{result['max_ratio']:.2f}, {args.rounds} "
                f"rounds)  portaconv {result['portaconv_images_per_s']:.0f} img/s, torch "
                f"{result['torch_images_per_s']:.0f} img/s; page faults per epoch "
                f"{faults_text(result['page_faults_per_epoch'])}",
                flush=True,
            )
    finally:
        for process in busy:
            process.kill()
            process.wait()
    info = {
        "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
        "data": source,
        "images": args.images,
        "batch_size": args.batch_size,
        "rounds": args.rounds,
        "busy_processes": args.busy,
        "backend": args.backend,
        "portaconv_threads": num_threads(),
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "machine": platform.platform(),
        "openblas_env": {k: v for k, v in os.environ.items() if k.startswith("OPENBLAS_")},
        "openblas": blas_text(),
        "allocator": allocator,
        "results": results,
    }
    print(
        f"data: {source}, {args.images} images, batch {args.batch_size}; threads: portaconv "
        f"{info['portaconv_threads']}, torch {info['torch_threads']}; busy processes: {args.busy}"
        f"; allocator: {allocator}; {info['openblas']}"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(info, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
