"""Which array library, device and dtype portaconv computes with.

The choice is read once from the environment (``PORTACONV_BACKEND``, ``PORTACONV_DEVICE``,
``PORTACONV_DTYPE``) the first time it is needed, and can be replaced from code with
:func:`set_backend` or, for a block, :func:`use_backend`. Nothing here imports an optional
library at ``import portaconv`` time: CuPy, PyTorch and JAX are imported when they are chosen.

JAX computes in 32 bits unless ``jax_enable_x64`` is set, and then turns a float64 array
silently into float32. portaconv's dtype rule (a parameter has the dtype of the array the
user supplied; float64 when the backend is chosen with ``dtype="float64"``) needs float64 to
stay float64, so choosing the ``jax`` backend switches ``jax_enable_x64`` on for the process.
The float32 path is not affected: portaconv names the dtype of every array it creates.
"""

from __future__ import annotations

import contextlib
import importlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

BACKENDS = ("numpy", "cupy", "torch", "jax", "array_api_strict")
DTYPES = ("float32", "float64")

_EXTRA = {
    "cupy": "pip install 'portaconv[cupy]' (CuPy built for your CUDA version, e.g. cupy-cuda12x)",
    "torch": "pip install 'portaconv[torch]'",
    "jax": "pip install 'portaconv[jax]' (or a JAX build for your GPU or TPU, e.g. 'jax[cuda12]')",
    "array_api_strict": "pip install 'portaconv[strict]'",
    "numpy": "pip install numpy",
}


class BackendUnavailableError(RuntimeError):
    """The chosen backend cannot run here: its library is missing or it has no GPU."""


@dataclass(frozen=True)
class Backend:
    """One resolved choice: the library name, its array namespace, device and float dtype.

    ``xp`` is an array-API-compatible namespace (array-api-compat's wrapper for NumPy, CuPy
    and PyTorch; the module itself for array-api-strict). ``device`` is that library's
    device object and ``dtype`` the namespace's floating dtype used for new parameters.
    """

    name: str
    xp: Any
    device: Any
    dtype: Any

    @property
    def dtype_name(self) -> str:
        return "float64" if self.dtype == self.xp.float64 else "float32"

    def __repr__(self) -> str:
        return f"Backend(name={self.name!r}, device={self.device!r}, dtype={self.dtype_name!r})"


_active: Backend | None = None


def _validate_name(name: str) -> str:
    if name not in BACKENDS:
        raise ValueError(
            f"unknown portaconv backend {name!r}; valid names are {', '.join(BACKENDS)} "
            "(set PORTACONV_BACKEND or call portaconv.set_backend)"
        )
    return name


def _validate_dtype(dtype: str) -> str:
    if dtype not in DTYPES:
        raise ValueError(
            f"unknown portaconv dtype {dtype!r}; valid dtypes are {', '.join(DTYPES)} "
            "(set PORTACONV_DTYPE or pass dtype= to portaconv.set_backend)"
        )
    return dtype


def _import(name: str, module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise BackendUnavailableError(
            f"portaconv backend {name!r} needs the package {module.split('.')[0]!r}, "
            f"which is not installed: {_EXTRA[name]}"
        ) from exc


def _resolve_device(name: str, device: Any) -> tuple[Any, Any]:
    """Return (namespace, device object) for a backend name and a device spec."""
    if name == "numpy":
        xp = _import(name, "array_api_compat.numpy")
        _import(name, "numpy")
        if device not in (None, "cpu"):
            raise ValueError(f"the numpy backend runs on 'cpu' only, got device {device!r}")
        return xp, "cpu"
    if name == "array_api_strict":
        xp = _import(name, "array_api_strict")
        if device in (None, "cpu"):
            return xp, xp.Device("CPU_DEVICE")
        if isinstance(device, str):
            return xp, xp.Device(device)
        return xp, device
    if name == "torch":
        torch = _import(name, "torch")
        xp = _import(name, "array_api_compat.torch")
        dev = torch.device("cpu" if device is None else device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise BackendUnavailableError(
                f"portaconv backend 'torch' on device {str(dev)!r} needs a CUDA GPU, but "
                "torch.cuda.is_available() is False (a CPU-only torch build, or no GPU visible); "
                "use PORTACONV_DEVICE=cpu or install a CUDA build of torch"
            )
        if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(
                f"torch device {str(dev)!r} does not exist: "
                f"{torch.cuda.device_count()} GPU(s) visible"
            )
        if dev.type == "cuda" and dev.index is None:  # "cuda": the one tensors then land on
            dev = torch.device("cuda", torch.cuda.current_device())
        return xp, dev
    if name == "jax":
        return _resolve_jax_device(device)
    # cupy
    cupy = _import(name, "cupy")
    xp = _import(name, "array_api_compat.cupy")
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CUDA driver missing or broken: cupy raises its own types
        raise BackendUnavailableError(
            f"portaconv backend 'cupy' needs a CUDA GPU, but CUDA reports none ({exc})"
        ) from exc
    if count == 0:
        raise BackendUnavailableError("portaconv backend 'cupy' needs a CUDA GPU; none is visible")
    if isinstance(device, str):
        device = device.removeprefix("cuda:").removeprefix("cuda")
        device = int(device) if device else 0
    index = 0 if device is None else device if isinstance(device, int) else device.id
    if not 0 <= index < count:
        raise ValueError(f"cupy device {index} does not exist: {count} GPU(s) visible")
    return xp, cupy.cuda.Device(index)


def _resolve_jax_device(device: Any) -> tuple[Any, Any]:
    """JAX with 64-bit types on (see the module docstring) and one of its devices: None is
    JAX's default device; a string is a platform with an optional index (``"cpu"``,
    ``"gpu:1"``, ``"cuda"``, ``"tpu"``); a ``jax.Device`` is taken as it is."""
    jax = _import("jax", "jax")
    xp = _import("jax", "jax.numpy")
    jax.config.update("jax_enable_x64", True)
    if device is None:
        return xp, jax.devices()[0]
    if not isinstance(device, str):
        return xp, device
    platform, _, index = device.partition(":")
    if not index.isdigit() and index:
        raise ValueError(f"jax device {device!r} is not 'platform' or 'platform:index'")
    platform = {"cuda": "gpu", "rocm": "gpu"}.get(platform, platform)
    try:
        devices = jax.devices(platform)
    except RuntimeError as exc:  # no such platform in this JAX build, or no device of it
        raise BackendUnavailableError(
            f"portaconv backend 'jax' on device {device!r}: JAX has no {platform!r} device "
            f"here ({exc}); use PORTACONV_DEVICE=cpu or install a JAX build for it"
        ) from exc
    number = int(index or 0)
    if number >= len(devices):
        raise ValueError(
            f"jax device {device!r} does not exist: {len(devices)} {platform} device(s)"
        )
    return xp, devices[number]


def make_backend(name: str, device: Any = None, dtype: str = "float32") -> Backend:
    """Resolve and validate one backend choice without activating it."""
    name = _validate_name(name)
    dtype = _validate_dtype(dtype)
    xp, dev = _resolve_device(name, device)
    return Backend(name=name, xp=xp, device=dev, dtype=getattr(xp, dtype))


def _from_environment() -> Backend:
    name = os.environ.get("PORTACONV_BACKEND", "").strip() or "numpy"
    device = os.environ.get("PORTACONV_DEVICE", "").strip() or None
    dtype = os.environ.get("PORTACONV_DTYPE", "").strip() or "float32"
    return make_backend(name, device, dtype)


def get_backend() -> Backend:
    """The active backend; resolved from the environment on first use."""
    global _active
    if _active is None:
        _active = _from_environment()
    return _active


def set_backend(name: str | None = None, device: Any = None, dtype: str | None = None) -> Backend:
    """Choose the backend from code, overriding the environment; returns the new choice.

    ``name`` None keeps the current library; ``dtype`` None keeps the current dtype. The
    device is given like the library spells it (``"cuda:0"`` for torch, ``0`` for cupy).
    """
    global _active
    current = get_backend() if (name is None or dtype is None) else None
    if name is None:
        name = current.name
        if device is None:
            device = current.device
    if dtype is None:
        dtype = current.dtype_name
    _active = make_backend(name, device, dtype)
    return _active


@contextlib.contextmanager
def use_backend(
    name: str | None = None, device: Any = None, dtype: str | None = None
) -> Iterator[Backend]:
    """Use another backend inside a ``with`` block, restoring the previous one afterwards."""
    global _active
    previous = _active
    try:
        yield set_backend(name, device, dtype)
    finally:
        _active = previous
