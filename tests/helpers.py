"""Test helpers: the oracle (PyTorch autograd in float64), one assertion with dtype-aware
tolerances, a float64 finite-difference gradient check for any layer, and what the error
tests share: regexes for the library's messages and inputs made on any backend."""

from __future__ import annotations

import functools
import importlib.util
import math
import re
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from array_api_compat import array_namespace, device

from portaconv.backend import Backend, BackendUnavailableError, make_backend, to_backend, to_numpy

TOLERANCES = {  # (rtol, atol relative to the largest expected magnitude)
    "float64": (1e-10, 1e-10),
    "float32": (2e-4, 2e-5),
}


def rounded(x: np.ndarray, dtype: str) -> np.ndarray:
    """``x`` as the backend will see it: rounded to ``dtype``, returned as float64."""
    return np.asarray(x, dtype=dtype).astype(np.float64)


def on(backend: Backend, x: np.ndarray) -> Any:
    """A NumPy array moved to the backend, in the backend's dtype."""
    return to_backend(np.asarray(x), backend)


def assert_close(
    actual: Any, expected: np.ndarray, backend: Backend, what: str = "", dtype: str | None = None
) -> None:
    """``actual`` lives on ``backend`` in ``dtype`` (a name; default: the backend's dtype) and
    matches ``expected`` numerically, to that dtype's tolerance."""
    assert_on_backend(actual, backend, what, dtype)
    rtol, atol = TOLERANCES[dtype or backend.dtype_name]
    got = to_numpy(actual).astype(np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert got.shape == expected.shape, f"{what}: shape {got.shape} != expected {expected.shape}"
    scale = max(1.0, float(np.max(np.abs(expected)))) if expected.size else 1.0
    np.testing.assert_allclose(got, expected, rtol=rtol, atol=atol * scale, err_msg=what)


def assert_same_result(a: np.ndarray, b: np.ndarray, backend: Backend, what: str = "") -> None:
    """Two runs of one computation give the same bits; with torch on CUDA the same numbers
    to the dtype's rounding: its scatter-add (``index_add_``, the native col2im) adds with
    atomics in no fixed order, as PyTorch documents, so the last bit can differ."""
    if backend.name == "torch" and getattr(backend.device, "type", None) == "cuda":
        rtol, atol = TOLERANCES[backend.dtype_name]
        np.testing.assert_allclose(a, b, rtol=rtol, atol=atol, err_msg=what)
    else:
        np.testing.assert_array_equal(a, b, err_msg=what)


def assert_same_weights(whole: Any, resumed: Any) -> None:
    """Two trainers' models hold bitwise the same parameters and buffers: a resumed run
    against the uninterrupted one."""
    for key, want in whole.model.state_dict().items():
        got = to_numpy(resumed.model.state_dict()[key])
        np.testing.assert_array_equal(got, to_numpy(want), err_msg=key)


def assert_on_backend(x: Any, backend: Backend, what: str = "", dtype: str | None = None) -> None:
    """``x`` is an array of the backend's namespace, on its device, in ``dtype`` (a name;
    default: the backend's dtype)."""
    assert array_namespace(x) is backend.xp, f"{what}: wrong namespace {type(x)}"
    assert device(x) == backend.device, f"{what}: on {device(x)}, expected {backend.device}"
    expected = backend.dtype if dtype is None else getattr(backend.xp, dtype)
    assert x.dtype == expected, f"{what}: dtype {x.dtype}, expected {expected}"


def torch_reference(
    fn: Callable[..., torch.Tensor], inputs: dict[str, np.ndarray], grad_out: np.ndarray | None
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Run ``fn(**inputs)`` in float64 PyTorch; return the output and d(out . grad_out)/d input."""
    tensors = {
        k: torch.tensor(np.asarray(v, dtype=np.float64), requires_grad=True)
        for k, v in inputs.items()
    }
    out = fn(**tensors)
    grads = {}
    if grad_out is not None:
        out.backward(torch.tensor(np.asarray(grad_out, dtype=np.float64)))
        grads = {
            k: t.grad.numpy() if t.grad is not None else np.zeros(t.shape)
            for k, t in tensors.items()
        }
    return out.detach().numpy(), grads


def snapshot(x: Any) -> np.ndarray:
    """A NumPy copy, to check later that a layer did not modify its input."""
    return np.array(to_numpy(x), copy=True)


def finite_difference_check(
    layer: Any,
    A: Any,
    *,
    params: tuple[str, ...] = (),
    eps: float = 1e-6,
    seed: int = 0,
    rtol: float = 1e-6,
) -> None:
    """Compare backward with central differences of ``L = sum(R * forward(A))`` in float64.

    Checked along random directions (Chainer's ``gradient_check``): for input and each named
    parameter P, ``<dL/dP, V>`` against ``(L(P + eps V) - L(P - eps V)) / (2 eps)``.
    """
    xp = array_namespace(A)
    assert A.dtype == xp.float64, "finite differences need float64"
    gen = np.random.default_rng(seed)

    def like(x):
        return xp.asarray(gen.standard_normal(tuple(x.shape)), dtype=xp.float64, device=device(x))

    Z = layer.forward(A)
    R = like(Z)

    def loss(a):
        return float(xp.sum(R * layer.forward(a)))

    layer.forward(A)
    dLdA = layer.backward(R)
    grads = {p: getattr(layer, "dLd" + p) for p in params}

    V = like(A)
    numeric = (loss(A + eps * V) - loss(A - eps * V)) / (2 * eps)
    analytic = float(xp.sum(dLdA * V))
    np.testing.assert_allclose(analytic, numeric, rtol=rtol, atol=1e-8, err_msg="dLdA")
    for p in params:
        P = getattr(layer, p)
        V = like(P)
        setattr(layer, p, P + eps * V)
        plus = loss(A)
        setattr(layer, p, P - eps * V)
        minus = loss(A)
        setattr(layer, p, P)
        numeric = (plus - minus) / (2 * eps)
        analytic = float(xp.sum(grads[p] * V))
        np.testing.assert_allclose(analytic, numeric, rtol=rtol, atol=1e-8, err_msg=f"dLd{p}")


# ------------------------------------------------------------------ messages and inputs

LIBRARY = {  # a backend's library, as the messages name it
    "numpy": "NumPy",
    "torch": "PyTorch",
    "cupy": "CuPy",
    "jax": "JAX",
    "array_api_strict": "array-api-strict",
}


def rx(owner: str, pattern: str, *, literal: bool = False) -> str:
    """A regex for a message that starts with ``owner: `` (a layer, an optimizer, a
    function) and goes on with ``pattern``: a regex, or plain text with ``literal=True``."""
    return "^" + re.escape(f"{owner}: {pattern}") if literal else rf"^{owner}: {pattern}"


def a_library(name: str) -> str:
    """``a NumPy`` / ``an array-api-strict``: a library as the messages name one array of it."""
    label = LIBRARY[name]
    return ("an " if label[0].lower() in "aeiou" else "a ") + label


def sh(shape: tuple[int, ...]) -> str:
    """A regex for a shape as the messages print it: ``(2, 3)``, ``(2)`` or ``(2,)``."""
    return r"\(" + r", ".join(str(n) for n in shape) + r",?\)"


def data(shape: tuple[int, ...]) -> np.ndarray:
    """Float64 values with no ties (the values never matter for the error checks)."""
    return np.linspace(-1.0, 1.0, math.prod(shape)).reshape(shape) + 0.01


# An input for a check is made per backend: ``floats(shape)(backend)``, so tables can hold
# it before a backend is chosen.


def floats(shape: tuple[int, ...], dtype: str | None = None) -> Callable[[Backend], Any]:
    """A float array of ``shape`` on the backend (its dtype, or ``dtype``)."""
    return lambda b: to_backend(data(shape), b, None if dtype is None else getattr(b.xp, dtype))


def ints(shape: tuple[int, ...]) -> Callable[[Backend], Any]:
    """An int64 array of ones."""
    return lambda b: to_backend(np.ones(shape, dtype=np.int64), b, b.xp.int64)


def labels(values: list[int] | np.ndarray) -> Callable[[Backend], Any]:
    """Integer class labels."""
    return lambda b: to_backend(np.asarray(values, dtype=np.int64), b, b.xp.int64)


def pylist(shape: tuple[int, ...]) -> Callable[[Backend], Any]:
    """A nested Python list of floats: no array at all."""
    return lambda b: data(shape).tolist()


def const(value: Any) -> Callable[[Backend], Any]:
    """``value`` itself, whatever the backend."""
    return lambda b: value


@functools.cache
def available(name: str, device: Any = None) -> bool:
    """Whether the backend can run here (its library installed, its device present): the
    tests between two named libraries or devices are parametrized over the available ones
    only, so that CuPy and CUDA pairs are collected where there is a GPU and nowhere else."""
    if importlib.util.find_spec(name) is None:  # not even imported then
        return False
    try:
        make_backend(name, device, "float64")
    except BackendUnavailableError:
        return False
    return True


def other_library(backend: Backend) -> Backend:
    """Another installed CPU library than ``backend``'s, in float64."""
    candidates = ["array_api_strict", "torch"] if backend.name == "numpy" else ["numpy"]
    for name in candidates:
        try:
            return make_backend(name, "cpu" if name == "torch" else None, "float64")
        except BackendUnavailableError:
            continue
    pytest.skip(f"no library besides {backend.name} is installed")
