"""How many threads portaconv's NumPy fast paths use, and control of OpenBLAS's thread count
(and its ``cblas_?gemm``, found with it: :func:`blas_gemm`).

NumPy runs its copies and additions on one thread and its matrix products on OpenBLAS's
threads. The convolution engines (``rowgather.py``, ``nchw.py``, ``im2row.py``) instead
split their batch chunks between :func:`num_threads` Python threads, each calling OpenBLAS
single-threaded, so that copies and products both use every thread. It keeps as many
threads busy as BLAS alone would: by default :func:`num_threads` *is* OpenBLAS's thread
count (``OPENBLAS_NUM_THREADS``, or a threadpoolctl limit, applies).
``PORTACONV_NUM_THREADS`` or :func:`set_num_threads` overrides it; 1 turns the threading
off. The threads are one pool per process
(:func:`run_threaded`: the caller runs the first task, a pool thread each other one, handed
over through a pair of locks); a call made while another thread of the program has the
pool runs its tasks one after another on its own thread.

A model whose layers thread their own work holds OpenBLAS at 1 thread for its whole forward
and backward (:func:`single_threaded_blas`): OpenBLAS's idle threads spin for a while after
each product they share (``OPENBLAS_THREAD_TIMEOUT``), and while they spin portaconv's own
threads get less of the cores.

The side effect, and why it is bounded: OpenBLAS has one process-wide thread count (NumPy's
bundled OpenBLAS offers no per-thread one that works: ``openblas_set_num_threads_local``
acts process-wide there), so while a threaded call runs the count is 1 for the
whole process, and a BLAS call made meanwhile by another thread of the program runs
single-threaded (same results, slower). The count is restored when the last of any
overlapping threaded calls ends, unless something else (a threadpoolctl limit the program
set meanwhile) has changed it from portaconv's 1: that setting is then left as it is. A
layer that is not portaconv's runs inside a model with the count given back
(:func:`blas_released`), so a count it sets, 1 included, is the one restored. The library
is the BLAS NumPy loaded, found and controlled through threadpoolctl (OpenBLAS, MKL or BLIS);
where there is none, the chunks run one after another in the calling thread and nothing is
changed. OpenBLAS's ``cblas_?gemm`` is called directly where it is NumPy's bundled
``libscipy_openblas``.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

T = TypeVar("T")

# Symbol spellings (prefix, suffix), tried in order: NumPy's bundled scipy-openblas (64-bit
# integer build, then 32-bit; NumPy 2), then OpenBLAS's own (NumPy 1.26 bundles the 64-bit
# build as openblas_..._64_); e.g. scipy_openblas_get_num_threads64_.
_SPELLINGS = (
    ("scipy_openblas_", "64_"),
    ("scipy_openblas_", ""),
    ("openblas_", "64_"),
    ("openblas_", ""),
)

_UNSET = object()
_openblas: Any = _UNSET  # (get, set, corename) once looked up; None where not found
_requested: int | None = None  # from set_num_threads or PORTACONV_NUM_THREADS
_env_read = False

_lock = threading.Lock()
_depth = 0  # threaded calls running now
_saved = 0  # OpenBLAS's thread count before the first of them
_workers: list[_Worker] = []  # the pool's threads (see _claim_workers)
_workers_pid = 0  # the process they were started in
_workers_busy = threading.Lock()  # held by the run_threaded call that has them
_task = threading.local()  # .running: this thread is running one of run_threaded's tasks


def _find_openblas() -> tuple[Callable[[], int], Callable[[Any], None], Any, dict] | None:
    """(get_num_threads, set_num_threads, get_corename or None, {dtype name: gemm}) of the
    BLAS that NumPy loaded, found through threadpoolctl (OpenBLAS, MKL or BLIS).

    OpenBLAS's count is read and set through its own functions (ctypes): threadpoolctl's
    setter lets only one "controlling" Python thread change OpenBLAS's count, and
    portaconv's holds come from whichever thread runs a model. The gemm entries,
    ``cblas_sgemm`` and ``cblas_dgemm`` with their argument types set (:func:`blas_gemm`),
    are found for NumPy's bundled scipy-openblas only."""
    import numpy
    from threadpoolctl import ThreadpoolController

    found = ThreadpoolController().select(user_api="blas").lib_controllers
    if not found:
        return None
    numpy_dir = os.path.dirname(os.path.dirname(numpy.__file__))
    lib = next((c for c in found if c.filepath.startswith(numpy_dir)), found[0])
    if lib.internal_api != "openblas":
        return lib.get_num_threads, lib.set_num_threads, None, {}
    cdll = ctypes.CDLL(lib.filepath)
    for prefix, suffix in _SPELLINGS:
        get_fn, set_fn, core_fn = (
            getattr(cdll, f"{prefix}{name}{suffix}", None)
            for name in ("get_num_threads", "set_num_threads", "get_corename")
        )
        if get_fn is not None and set_fn is not None:
            get_fn.restype = ctypes.c_int
            if core_fn is not None:
                core_fn.restype = ctypes.c_char_p
            gemms = _gemms(cdll, prefix, suffix)
            return get_fn, _int_setter(set_fn), core_fn, gemms
    return lib.get_num_threads, lib.set_num_threads, None, {}


def _int_setter(set_fn: Any) -> Callable[[int], None]:
    return lambda n: set_fn(ctypes.c_int(n))


def _gemms(lib: Any, prefix: str, suffix: str) -> dict[str, Any]:
    """``cblas_?gemm`` of the library spelt as its thread functions are, by dtype name. Only
    scipy-openblas's spellings, whose suffix tells the size of an integer (``64_``: the
    64-bit integer build); for another spelling, or none found, empty (NumPy's products)."""
    if prefix != "scipy_openblas_":
        return {}
    size = ctypes.c_int64 if suffix == "64_" else ctypes.c_int
    cblas = "scipy_cblas_"
    found = {}
    kinds = (("float32", "s", ctypes.c_float), ("float64", "d", ctypes.c_double))
    for dtype, letter, scalar in kinds:
        fn = getattr(lib, f"{cblas}{letter}gemm{suffix}", None)
        if fn is None:
            continue
        # (order, trans_a, trans_b, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc)
        enum, ptr = ctypes.c_int, ctypes.c_void_p
        fn.argtypes = [enum, enum, enum, size, size, size, scalar, ptr, size, ptr, size, scalar]
        fn.argtypes += [ptr, size]
        fn.restype = None
        found[dtype] = fn
    return found


def _blas() -> tuple[Callable[[], int], Callable[[Any], None], Any, dict] | None:
    global _openblas
    if _openblas is _UNSET:
        try:
            _openblas = _find_openblas()
        except Exception:  # never fail a convolution over this: run the chunks in turn
            _openblas = None
    return _openblas


def blas_thread_control() -> bool:
    """Whether OpenBLAS's thread count can be read and set (NumPy's bundled OpenBLAS found)."""
    return _blas() is not None


def blas_kernels() -> str | None:
    """The CPU kernels NumPy's OpenBLAS runs ("Haswell", "SkylakeX", ...: what
    ``OPENBLAS_CORETYPE`` or the CPU chose), for benchmark reports; None where unknown."""
    blas = _blas()
    if blas is None or blas[2] is None:
        return None
    name = blas[2]()
    if isinstance(name, bytes):
        name = name.decode(errors="replace")
    return name.strip() if name else None


def blas_gemm(dtype_name: str) -> Any:
    """OpenBLAS's ``cblas_?gemm`` for ``"float32"`` or ``"float64"`` (C's argument order,
    ``ctypes`` releasing the GIL during the call), or None where it is not found."""
    blas = _blas()
    return None if blas is None else blas[3].get(dtype_name)


def set_num_threads(n: int | None) -> None:
    """Threads for portaconv's NumPy fast paths; ``None``: OpenBLAS's own count (default)."""
    global _requested, _env_read
    if n is not None and (isinstance(n, bool) or not isinstance(n, int)):
        raise TypeError(f"set_num_threads: n must be an int or None, got {type(n).__name__}")
    if n is not None and n < 1:
        raise ValueError(f"set_num_threads: n must be at least 1, got {n}")
    _requested, _env_read = n, True  # code overrides the environment


def num_threads() -> int:
    """Threads the NumPy fast paths split their work between: ``set_num_threads``, else
    ``PORTACONV_NUM_THREADS``, else OpenBLAS's thread count (1 where it is not found)."""
    global _requested, _env_read
    if not _env_read:
        value = os.environ.get("PORTACONV_NUM_THREADS", "").strip()
        if value and (not value.isdigit() or int(value) < 1):
            raise ValueError(f"PORTACONV_NUM_THREADS must be a positive integer, got {value!r}")
        _requested, _env_read = (int(value) if value else None), True
    if _requested is not None:
        return _requested
    blas = _blas()
    if blas is None:
        return 1
    with _lock:  # during a threaded call the live count is our 1, not the user's
        return _saved if _depth else max(1, blas[0]())


@contextlib.contextmanager
def _single_threaded_blas() -> Iterator[None]:
    global _depth, _saved
    get_fn, set_fn, _, _ = _blas()
    with _lock:
        if _depth == 0:
            _saved = get_fn()
            set_fn(1)
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            # A count other than our 1 was set meanwhile by the program (threadpoolctl):
            # theirs is the newer wish, keep it.
            if _depth == 0 and get_fn() == 1:
                set_fn(_saved)


@contextlib.contextmanager
def single_threaded_blas() -> Iterator[None]:
    """OpenBLAS held at 1 thread for the block (restored as :func:`run_threaded` restores
    it), where portaconv's threads do the parallel work: a model's forward and backward on
    NumPy. Why it matters: after a product on several threads, OpenBLAS's idle threads spin
    on the cores for a while (``OPENBLAS_THREAD_TIMEOUT``) and slow
    every thread of portaconv's that runs meanwhile; held at 1, they never wake. Nothing is
    changed where OpenBLAS is not found or ``num_threads()`` is 1."""
    if num_threads() <= 1 or not blas_thread_control():
        yield
        return
    with _single_threaded_blas():
        yield


@contextlib.contextmanager
def blas_released() -> Iterator[None]:
    """Within a hold (:func:`single_threaded_blas`), OpenBLAS's count given back to the
    program for the block: where a model runs a layer that is not portaconv's, whose code
    may read or set the count. A count it sets (1 included) is the one the hold restores
    when it ends."""
    global _saved
    blas = _blas()
    with _lock:
        held = _depth > 0 and blas is not None
        if held:
            blas[1](_saved)
    try:
        yield
    finally:
        if held:
            with _lock:
                _saved = blas[0]()
                if _depth > 0:
                    blas[1](1)


def blas_held() -> bool:
    """Whether portaconv holds OpenBLAS at one thread now (:func:`single_threaded_blas`,
    or a :func:`run_threaded` call of any thread)."""
    with _lock:
        return _depth > 0


def in_threaded_task() -> bool:
    """Whether this thread is running one of :func:`run_threaded`'s tasks (then splitting
    more work between the threads would wait on itself)."""
    return getattr(_task, "running", False)


def _as_task(task: Callable[[], T]) -> Callable[[], T]:
    def run() -> T:
        outer = in_threaded_task()
        _task.running = True
        try:
            return task()
        finally:
            _task.running = outer

    return run


class _Worker:
    """One thread of the pool: it sleeps on its ``go`` lock until handed a task, runs it and
    releases ``done``. Two bare locks, where a ``ThreadPoolExecutor`` has a queue, a future
    and a condition per task (Python code on both sides, under the GIL), so less time
    passes between the caller's first task and the others'."""

    def __init__(self) -> None:
        self._go, self._done = threading.Lock(), threading.Lock()
        self._go.acquire()
        self._done.acquire()
        self._task: Callable[[], Any] | None = None
        self._outcome: tuple[Any, BaseException | None] = (None, None)
        threading.Thread(target=self._serve, name="portaconv", daemon=True).start()

    def _serve(self) -> None:
        while True:
            self._go.acquire()
            task, self._task = self._task, None
            try:
                self._outcome = (task(), None)
            except BaseException as error:  # handed to the caller, raised there
                self._outcome = (None, error)
            self._done.release()

    def start(self, task: Callable[[], Any]) -> None:
        self._task = task
        self._go.release()

    def wait(self) -> tuple[Any, BaseException | None]:
        """(result, exception) of the task, once it has ended."""
        self._done.acquire()
        outcome, self._outcome = self._outcome, (None, None)
        return outcome


def _claim_workers(count: int) -> tuple[list[_Worker], Any] | None:
    """``count`` pool threads for the calling ``run_threaded`` call (started the first time
    they are needed, again after a fork) and the lock it then holds, or None while another
    thread of the program has them: that call runs its tasks in turn on its own thread."""
    global _workers, _workers_pid, _workers_busy
    with _lock:
        if _workers_pid != os.getpid():  # a forked child has the list, not the threads
            _workers, _workers_pid, _workers_busy = [], os.getpid(), threading.Lock()
        busy = _workers_busy
    if not busy.acquire(blocking=False):
        return None
    while len(_workers) < count:
        _workers.append(_Worker())
    return _workers[:count], busy


def _release_workers(busy: Any, intact: bool) -> None:
    """Give the pool back (``busy``, the lock the call took); ``intact=False`` (a wait was
    interrupted, a worker may still run its task) starts the next call on new threads."""
    global _workers
    if not intact:
        _workers = []
    busy.release()


def run_threaded(tasks: Sequence[Callable[[], T]]) -> list[T]:
    """Run the tasks, one per thread, with OpenBLAS single-threaded meanwhile; their results
    in order. The calling thread runs the first, the pool's threads (:class:`_Worker`) the
    others. Without OpenBLAS control, with one task, or while another thread of the program
    has the pool, they run one after another in the calling thread (same results, same
    order). An exception of the first task is raised, else the first of the others'; the
    call never returns while a task still runs (it may write into the caller's arrays)."""
    if len(tasks) <= 1 or not blas_thread_control():
        return [task() for task in tasks]
    claimed = _claim_workers(len(tasks) - 1)
    if claimed is None:
        return [task() for task in tasks]
    workers, busy = claimed
    intact = False
    try:
        with _single_threaded_blas():
            for worker, task in zip(workers, tasks[1:]):
                worker.start(_as_task(task))
            try:
                first = _as_task(tasks[0])()
            finally:
                outcomes = [worker.wait() for worker in workers]
                intact = True
    finally:
        _release_workers(busy, intact)
    for _, error in outcomes:
        if error is not None:
            raise error
    return [first, *(result for result, _ in outcomes)]


def share_cores(processes: int) -> int | None:
    """Give this process its share of the machine's cores when ``processes`` processes
    (MPI ranks on one node) run side by side: unless ``PORTACONV_NUM_THREADS`` or
    ``OPENBLAS_NUM_THREADS`` says otherwise, portaconv's threads, OpenBLAS's and torch's
    become ``cores // processes`` (at least 1), so the processes do not fight for the
    cores. Returns that count (None: the environment's setting was kept)."""
    if processes <= 1 or any(
        os.environ.get(name) for name in ("PORTACONV_NUM_THREADS", "OPENBLAS_NUM_THREADS")
    ):
        return None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    threads = max(1, (cores or 1) // processes)
    set_num_threads(threads)
    blas = _blas()
    if blas is not None:
        blas[1](threads)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads)
    return threads
