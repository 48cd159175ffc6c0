"""Random streams: the host stream behind parameter initialisation, and one stream per
library and device behind Dropout's masks.

Initial values are drawn with NumPy on the host, in float64, then moved to the active
backend: a seed gives the same network on every backend and device (initialisation is not
part of a training step).

Dropout's masks are drawn where the array lives, by that library's own generator, so a
training step never waits on a copy from the host: a NumPy ``Generator`` for NumPy (and
array-api-strict, whose arrays are NumPy's on the host), a ``torch.Generator`` on the
tensor's device, a JAX PRNG key split at every draw (kept on the array's device), cuRAND
through CuPy on its GPU. Each stream is seeded from :func:`manual_seed`'s seed and the
stream's name (``"torch:cpu"``), so a seed fixes the masks on each backend and device;
different backends draw different masks. :func:`get_rng_state` / :func:`set_rng_state` save
and restore every stream, so a resumed run draws the masks the uninterrupted one would.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from array_api_compat import (
    array_namespace,
    device,
    is_cupy_array,
    is_jax_array,
    is_numpy_array,
    is_torch_array,
)

from ._arrays import to_backend
from ._config import Backend

# ------------------------------------------------------------------- one stream per device


class _HostStream:
    """A NumPy generator on the host; the mask is copied to ``like``'s namespace and device
    (NumPy and array-api-strict: no device to wait for)."""

    kind = "numpy"

    def __init__(self, seed: int, name: str, like: Any = None) -> None:
        self.generator = np.random.default_rng(np.random.SeedSequence([seed, _crc(name)]))

    def keep_mask(self, shape: tuple[int, ...], keep_prob: float, like: Any) -> Any:
        keep = self.generator.random(size=shape) < keep_prob
        xp = array_namespace(like)
        return xp.astype(xp.asarray(keep, device=device(like)), like.dtype)

    def state(self) -> dict[str, Any]:
        return {"kind": self.kind, "state": self.generator.bit_generator.state}

    def set_state(self, state: Mapping[str, Any]) -> None:
        self.generator.bit_generator.state = state["state"]

    @staticmethod
    def check(state: Mapping[str, Any]) -> None:
        np.random.default_rng().bit_generator.state = state["state"]


class _TorchStream:
    """A ``torch.Generator`` on the tensor's device."""

    kind = "torch"

    def __init__(self, seed: int, name: str, like: Any) -> None:
        import torch

        self.generator = torch.Generator(device=like.device)
        self.generator.manual_seed(_derived_seed(seed, name))

    def keep_mask(self, shape: tuple[int, ...], keep_prob: float, like: Any) -> Any:
        import torch

        if torch.compiler.is_compiling():  # no Generator in a graph: see compiled_random
            draw = torch.rand(shape, dtype=like.dtype, device=like.device)
        else:
            draw = torch.rand(shape, generator=self.generator, dtype=like.dtype, device=like.device)
        return (draw < keep_prob).to(like.dtype)

    def state(self) -> dict[str, Any]:
        # get_state() is a CPU byte tensor whatever the device; read at checkpoint time only
        return {"kind": self.kind, "state": bytes(self.generator.get_state().numpy()).hex()}

    def set_state(self, state: Mapping[str, Any]) -> None:
        import torch

        data = bytearray.fromhex(state["state"])
        self.generator.set_state(torch.frombuffer(data, dtype=torch.uint8).clone())

    @staticmethod
    def check(state: Mapping[str, Any]) -> None:
        if not isinstance(state["state"], str):
            raise TypeError(f"a torch generator state is a hex string, got {state['state']!r:.40}")
        bytes.fromhex(state["state"])


class _JaxStream:
    """A JAX PRNG key on the array's device, split at every draw (JAX's functional RNG)."""

    kind = "jax"

    def __init__(self, seed: int, name: str, like: Any) -> None:
        import jax

        self.device = device(like)
        self.key = jax.device_put(jax.random.key(_derived_seed(seed, name)), self.device)

    def keep_mask(self, shape: tuple[int, ...], keep_prob: float, like: Any) -> Any:
        import jax

        self.key, draw_key = jax.random.split(self.key)
        draw = jax.random.uniform(draw_key, shape, dtype=like.dtype)
        return (draw < keep_prob).astype(like.dtype)

    def state(self) -> dict[str, Any]:
        import jax

        return {"kind": self.kind, "key": np.asarray(jax.random.key_data(self.key)).tolist()}

    def set_state(self, state: Mapping[str, Any]) -> None:
        import jax

        data = np.asarray(state["key"], dtype=np.uint32)
        self.key = jax.device_put(jax.random.wrap_key_data(data), self.device)

    @staticmethod
    def check(state: Mapping[str, Any]) -> None:
        key = state["key"]
        if not isinstance(key, list) or not all(isinstance(k, int) for k in key):
            raise TypeError(f"a jax key is a list of integers, got {key!r:.40}")


class _CupyStream:
    """cuRAND (Philox) through CuPy on the array's GPU: draw ``n`` comes from a generator
    seeded with (seed, name, n), so the state is one counter and the draw waits on nothing."""

    kind = "cupy"

    def __init__(self, seed: int, name: str, like: Any) -> None:
        self.seed, self.draws = _derived_seed(seed, name), 0

    def keep_mask(self, shape: tuple[int, ...], keep_prob: float, like: Any) -> Any:
        import cupy

        philox = cupy.cuda.curand.CURAND_RNG_PSEUDO_PHILOX4_32_10
        seed = _derived_seed(self.seed, str(self.draws))
        self.draws += 1
        with like.device:
            draw = cupy.random.RandomState(seed, method=philox).random_sample(shape, like.dtype)
            return (draw < keep_prob).astype(like.dtype)

    def state(self) -> dict[str, Any]:
        return {"kind": self.kind, "draws": self.draws}

    def set_state(self, state: Mapping[str, Any]) -> None:
        self.draws = state["draws"]

    @staticmethod
    def check(state: Mapping[str, Any]) -> None:
        draws = state["draws"]
        if isinstance(draws, bool) or not isinstance(draws, int) or draws < 0:
            raise TypeError(f"a cupy stream's draws is a count, got {draws!r:.40}")


#: The device of the arrays a jax.jit trace stands for (set by backend.tracing_for).
_traced_device: list[Any] = [None]

_KINDS = {cls.kind: cls for cls in (_HostStream, _TorchStream, _JaxStream, _CupyStream)}


def _stream_of(x: Any) -> tuple[str, type]:
    """The name and kind of the stream that draws for arrays like ``x``."""
    if is_torch_array(x):
        return f"torch:{x.device}", _TorchStream
    if is_jax_array(x):
        dev = device(x)  # None while jax.jit traces a step: the device it compiles for
        return f"jax:{_traced_device[0] if dev is None else dev}", _JaxStream
    if is_cupy_array(x):
        return f"cupy:{x.device.id}", _CupyStream
    if is_numpy_array(x):
        return "numpy", _HostStream
    return type(x).__module__.split(".")[0], _HostStream  # array-api-strict, and the rest


def _crc(name: str) -> int:
    return zlib.crc32(name.encode())


def _derived_seed(seed: int, name: str) -> int:
    """A 63-bit seed for the stream ``name`` (every library takes it)."""
    state = np.random.SeedSequence([seed, _crc(name)]).generate_state(1, np.uint64)
    return int(state[0] >> np.uint64(1))


# --------------------------------------------------------------------- the streams together


class _Streams:
    """The host generator, the seed, the device streams made so far, and saved states of
    streams not made yet (they take them when first used)."""

    def __init__(self, seed: int | None = None) -> None:
        self.host = np.random.default_rng(seed)
        self.seed = int(np.random.SeedSequence().entropy) if seed is None else int(seed)
        self.devices: dict[str, Any] = {}
        self.pending: dict[str, Mapping[str, Any]] = {}

    def for_array(self, x: Any) -> Any:
        name, kind = _stream_of(x)
        stream = self.devices.get(name)
        if stream is None:
            stream = self.devices[name] = kind(self.seed, name, x)
            saved = self.pending.pop(name, None)
            if saved is not None:
                stream.set_state(saved)
        return stream


_streams = _Streams()


def manual_seed(seed: int) -> None:
    """Seed every stream: default initialisers and Dropout's masks (like
    ``torch.manual_seed``)."""
    global _streams
    _streams = _Streams(seed)


def host_rng() -> np.random.Generator:
    """The NumPy generator default initialisers draw from."""
    return _streams.host


def get_rng_state() -> dict[str, Any]:
    """Every stream's state (a JSON-able dict), to store in a checkpoint: ``host`` (the
    initialisers' NumPy generator), ``seed`` and ``streams`` (one per library and device)."""
    streams = {**_streams.pending, **{k: s.state() for k, s in _streams.devices.items()}}
    return {"host": _streams.host.bit_generator.state, "seed": _streams.seed, "streams": streams}


def check_rng_state(state: Any) -> None:
    """``ValueError`` unless ``state`` is what :func:`get_rng_state` returns (or, from older
    checkpoints, a NumPy generator state alone)."""
    try:
        if isinstance(state, Mapping) and "bit_generator" in state:
            state = {"host": state, "seed": 0, "streams": {}}
        if not isinstance(state, Mapping) or set(state) != {"host", "seed", "streams"}:
            raise KeyError("expected the entries host, seed and streams")
        np.random.default_rng().bit_generator.state = state["host"]
        if isinstance(state["seed"], bool) or not isinstance(state["seed"], int):
            raise TypeError(f"seed must be an integer, got {state['seed']!r:.40}")
        for saved in state["streams"].values():
            _KINDS[saved["kind"]].check(saved)
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise ValueError(f"not a portaconv random state ({exc!r})") from None


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore a state from :func:`get_rng_state`: the next draws repeat exactly. A NumPy
    generator state alone (older checkpoints) restores the initialisers' stream only."""
    global _streams
    check_rng_state(state)
    if "bit_generator" in state:
        state = {"host": state, "seed": _streams.seed, "streams": {}}
    restored = _Streams(state["seed"])
    restored.host.bit_generator.state = state["host"]
    restored.pending = dict(state["streams"])
    _streams = restored


def uniform(shape: Sequence[int], bound: float, backend: Backend | None = None) -> Any:
    """U(-bound, bound) of ``shape`` on ``backend`` (PyTorch's default layer init uses this)."""
    return to_backend(_streams.host.uniform(-bound, bound, size=tuple(shape)), backend)


def bernoulli_mask(shape: Sequence[int], keep_prob: float, like: Any) -> Any:
    """A keep-mask of ``shape``: 1 with probability ``keep_prob``, else 0 (Dropout's draw).

    Drawn as ``random(shape) < keep_prob`` (so ``keep_prob=1`` keeps everything and
    ``keep_prob=0`` nothing) by the stream of ``like``'s library and device, on that
    device, in ``like``'s dtype; nothing is read back to the host.
    """
    return _streams.for_array(like).keep_mask(tuple(shape), keep_prob, like)
