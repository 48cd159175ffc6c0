"""Bad input gets the library's own ValueError or TypeError, never an error from deep inside
an array library.

Every message must start with the layer's class name and say what was expected and what was
received; each regex below pins both. The tables list, per layer, the input that is valid
(so the bad ones differ from it in one respect only) and the ways of getting it wrong:
hyper-parameters, forward inputs, upstream gradients, init functions, losses' targets, and
arrays from another library, device or dtype.

Gaps found in the library are kept as ``xfail(strict=True)`` tests whose reason says what
happens today and what should happen instead.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

import portaconv
from portaconv import layers as L
from portaconv.backend import to_backend

from .helpers import (
    LIBRARY,
    a_library,
    backend_or_skip,
    const,
    data,
    floats,
    ints,
    labels,
    other_library,
    pylist,
    rx,
    sh,
)

# ------------------------------------------------------------------------------- helpers


DTYPE_PAIRS = [("float64", "float32"), ("float32", "float64")]


def xfail(reason: str) -> pytest.MarkDecorator:
    return pytest.mark.xfail(strict=True, reason=reason)


# -------------------------------------------------------------------- the layer table


@dataclass(frozen=True)
class Case:
    """One layer: how to build it, a valid input, and its layer-specific bad inputs."""

    name: str
    make: Callable[[], Any]
    shape: tuple[int, ...]  # a valid input shape
    ndim: int | None = None  # the one rank forward accepts, if there is one
    arg: str = "A"  # forward's argument, as messages name it
    grad: str = "dLdZ"  # backward's argument
    params: bool = False
    # (id, input shape, exception, pattern after "Name: ", marks)
    extra: list[tuple[str, tuple[int, ...], type, str, tuple]] = field(default_factory=list)


def _kernel_too_large(shape, what, K, shown, more):
    return ("kernel-larger-than-input", shape, ValueError,
            rf"{what}={K} is larger than the {shown}{more}", ())


def _channels(shape, expected):
    return ("wrong-channels", shape, ValueError,
            rf"A must have C_in={expected} \(axis 1\), got shape {sh(shape)}", ())


CONV = [
    Case("Conv1d_stride1", lambda: L.Conv1d_stride1(2, 3, 3), (2, 2, 7), 3, params=True, extra=[
        _channels((2, 3, 7), 2),
        _kernel_too_large((2, 2, 2), "kernel_size", 3,
                          rf"padded input {sh((2,))}", rf" \(input {sh((2,))}, padding=0\)"),
    ]),
    Case("Conv1d", lambda: L.Conv1d(2, 3, 4, stride=2, padding=1), (2, 2, 7), 3, params=True,
         extra=[
             _channels((2, 1, 7), 2),
             _kernel_too_large((2, 2, 1), "kernel_size", 4,
                               rf"padded input {sh((3,))}", rf" \(input {sh((1,))}, padding=1\)"),
         ]),
    Case("Conv2d_stride1", lambda: L.Conv2d_stride1(2, 3, 3), (2, 2, 5, 6), 4, params=True,
         extra=[
             _channels((2, 3, 5, 6), 2),
             _kernel_too_large((2, 2, 5, 2), "kernel_size", 3,
                               rf"padded input {sh((5, 2))}",
                               rf" \(input {sh((5, 2))}, padding=0\)"),
         ]),
    Case("Conv2d", lambda: L.Conv2d(2, 3, 4, stride=2, padding=1), (2, 2, 5, 6), 4, params=True,
         extra=[
             _channels((2, 3, 5, 6), 2),
             _kernel_too_large((2, 2, 5, 1), "kernel_size", 4,
                               rf"padded input {sh((7, 3))}",
                               rf" \(input {sh((5, 1))}, padding=1\)"),
         ]),
    Case("ConvTranspose1d", lambda: L.ConvTranspose1d(2, 3, 4, 2), (2, 2, 4), 3, params=True,
         extra=[
             _channels((2, 3, 4), 2),
             _kernel_too_large((2, 2, 2), "kernel_size", 4,
                               rf"upsampled input {sh((3,))}",
                               rf" \(input {sh((2,))}, upsampling_factor=2\)"),
         ]),
    Case("ConvTranspose2d", lambda: L.ConvTranspose2d(2, 3, 4, 2), (2, 2, 4, 3), 4, params=True,
         extra=[
             _channels((2, 1, 4, 3), 2),
             _kernel_too_large((2, 2, 4, 1), "kernel_size", 4,
                               rf"upsampled input {sh((7, 1))}",
                               rf" \(input {sh((4, 1))}, upsampling_factor=2\)"),
         ]),
]

POOL = [
    Case(name, make, shape, len(shape), extra=[
        _kernel_too_large(small, "kernel", K, f"input {sh(small[2:])}", "$"),
    ])
    for name, make, shape, K, small in [
        ("MaxPool1d", lambda: L.MaxPool1d(3, stride=2), (2, 2, 7), 3, (2, 2, 2)),
        ("MeanPool1d", lambda: L.MeanPool1d(3), (2, 2, 7), 3, (2, 2, 2)),
        ("MaxPool2d", lambda: L.MaxPool2d(2), (2, 2, 5, 6), 2, (2, 2, 5, 1)),
        ("MeanPool2d", lambda: L.MeanPool2d(2, stride=1), (2, 2, 5, 6), 2, (2, 2, 1, 6)),
        ("MaxPool2d_stride1", lambda: L.MaxPool2d_stride1(3), (2, 2, 5, 6), 3, (2, 2, 2, 6)),
        ("MeanPool2d_stride1", lambda: L.MeanPool2d_stride1(3), (2, 2, 5, 6), 3, (2, 2, 5, 2)),
    ]
]

RESAMPLE = [
    Case("Upsample1d", lambda: L.Upsample1d(2), (2, 2, 5), 3, extra=[
        ("empty-spatial-axis", (2, 2, 0), ValueError,
         rf"every spatial size of A must be >= 1, got shape {sh((2, 2, 0))}$", ()),
    ]),
    Case("Upsample2d", lambda: L.Upsample2d(3), (2, 2, 4, 5), 4, extra=[
        ("empty-spatial-axis", (2, 2, 0, 5), ValueError,
         rf"every spatial size of A must be >= 1, got shape {sh((2, 2, 0, 5))}$", ()),
    ]),
    Case("Downsample1d", lambda: L.Downsample1d(2), (2, 2, 7), 3),
    Case("Downsample2d", lambda: L.Downsample2d(3), (2, 2, 7, 5), 4),
]

OTHER = [
    Case("Flatten", L.Flatten, (2, 3, 4), extra=[
        ("0-d", (), ValueError,
         r"A must have at least 1 dimensions \(N, \.\.\.\), got 0 dimensions with shape \(\)$",
         ()),
    ]),
    Case("Linear", lambda: L.Linear(4, 3), (2, 4), params=True, extra=[
        ("wrong-features", (2, 5), ValueError,
         rf"A must have in_features=4 \(axis 1\), got shape {sh((2, 5))}", ()),
        ("wrong-features-3d", (2, 3, 5), ValueError,
         rf"A must have in_features=4 \(axis 2\), got shape {sh((2, 3, 5))}", ()),
        ("1-d", (4,), ValueError,
         r"A must have at least 2 dimensions \(N, in_features\), "
         rf"got 1 dimensions with shape {sh((4,))}$",
         ()),
    ]),
]

ACTIVATIONS = [
    Case(name, make, (2, 5), arg="Z", grad="dLdA")
    for name, make in [
        ("Identity", L.Identity),
        ("Sigmoid", L.Sigmoid),
        ("Tanh", L.Tanh),
        ("ReLU", L.ReLU),
        ("LeakyReLU", lambda: L.LeakyReLU(0.1)),
        ("GELU", L.GELU),
        ("GELU", lambda: L.GELU("tanh")),
    ]
] + [
    Case("Softmax", L.Softmax, (2, 5), arg="Z", grad="dLdA", extra=[
        ("0-d", (), ValueError, r"dim=-1 is out of range for Z with 0 dimensions", ()),
    ]),
    Case("Softmax", lambda: L.Softmax(dim=2), (2, 5, 3), arg="Z", grad="dLdA", extra=[
        ("dim-out-of-range", (2, 5), ValueError, r"dim=2 is out of range for Z with 2 dimensions",
         ()),
    ]),
]

LAYERS = CONV + POOL + RESAMPLE + OTHER + ACTIVATIONS
PARAM_LAYERS = [c for c in LAYERS if c.params]


def _layer_id(case: Case) -> str:
    return f"{case.name}{case.shape}".replace(" ", "")


# --------------------------------------------------------------------- hyper-parameters

# (class, valid keyword arguments); every integer argument is tried with each bad value.
INT_HYPER = [
    (L.Conv1d_stride1, dict(in_channels=2, out_channels=3, kernel_size=3)),
    (L.Conv2d_stride1, dict(in_channels=2, out_channels=3, kernel_size=3)),
    (L.Conv1d, dict(in_channels=2, out_channels=3, kernel_size=3, stride=2, padding=1)),
    (L.Conv2d, dict(in_channels=2, out_channels=3, kernel_size=3, stride=2, padding=1)),
    (L.ConvTranspose1d, dict(in_channels=2, out_channels=3, kernel_size=3, upsampling_factor=2)),
    (L.ConvTranspose2d, dict(in_channels=2, out_channels=3, kernel_size=3, upsampling_factor=2)),
    (L.MaxPool1d, dict(kernel=2, stride=2)),
    (L.MeanPool1d, dict(kernel=2, stride=2)),
    (L.MaxPool2d, dict(kernel=2, stride=2)),
    (L.MeanPool2d, dict(kernel=2, stride=2)),
    (L.MaxPool2d_stride1, dict(kernel=2)),
    (L.MeanPool2d_stride1, dict(kernel=2)),
    (L.Upsample1d, dict(upsampling_factor=2)),
    (L.Upsample2d, dict(upsampling_factor=2)),
    (L.Downsample1d, dict(downsampling_factor=2)),
    (L.Downsample2d, dict(downsampling_factor=2)),
    (L.Linear, dict(in_features=4, out_features=3)),
]

# (id, bad value, exception, pattern after "Name: {arg} must be ")
BAD_POSITIVE = [
    ("zero", 0, ValueError, r"a positive integer, got 0$"),
    ("negative", -2, ValueError, r"a positive integer, got -2$"),
    ("float", 2.0, TypeError, r"an integer, got 2\.0 of type float$"),
    ("fraction", 1.5, TypeError, r"an integer, got 1\.5 of type float$"),
    ("bool", True, TypeError, r"an integer, got True of type bool$"),
    ("str", "3", TypeError, r"an integer, got '3' of type str$"),
    ("None", None, TypeError, r"an integer, got None of type NoneType$"),
    ("np-float64", np.float64(2.0), TypeError, r"an integer, got .*2\.0.* of type float64$"),
    ("np-bool", np.True_, TypeError, r"an integer, got .*True.* of type bool_?$"),
]
BAD_PADDING = [
    ("negative", -1, ValueError, r"an integer >= 0, got -1$"),
    ("float", 1.0, TypeError, r"an integer, got 1\.0 of type float$"),
    ("bool-False", False, TypeError, r"an integer, got False of type bool$"),
    ("bool-True", True, TypeError, r"an integer, got True of type bool$"),
]


def _hyper_cases():
    for cls, kwargs in INT_HYPER:
        for arg in kwargs:
            bad_values = BAD_PADDING if arg == "padding" else BAD_POSITIVE
            for kind, value, exc, tail in bad_values:
                if value is None and arg == "stride" and "Pool" in cls.__name__:
                    continue  # pools take stride=None as "stride = kernel"
                yield pytest.param(
                    cls, {**kwargs, arg: value}, exc, rx(cls.__name__, rf"{arg} must be {tail}"),
                    id=f"{cls.__name__}-{arg}-{kind}",
                )
    yield pytest.param(L.LeakyReLU, dict(negative_slope="0.1"), TypeError,
                       rx("LeakyReLU", r"negative_slope must be a number, got str$"),
                       id="LeakyReLU-negative_slope-str")
    yield pytest.param(L.LeakyReLU, dict(negative_slope=True), TypeError,
                       rx("LeakyReLU", r"negative_slope must be a number, got bool$"),
                       id="LeakyReLU-negative_slope-bool")
    yield pytest.param(L.GELU, dict(approximate="exact"), ValueError,
                       rx("GELU", r"approximate must be 'none' or 'tanh', got 'exact'$"),
                       id="GELU-approximate-unknown")
    yield pytest.param(L.Softmax, dict(dim=1.0), TypeError,
                       rx("Softmax", r"dim must be an integer, got float$"), id="Softmax-dim-float")
    yield pytest.param(L.Softmax, dict(dim=True), TypeError,
                       rx("Softmax", r"dim must be an integer, got bool$"), id="Softmax-dim-bool")


@pytest.mark.parametrize("cls, kwargs, exc, pattern", list(_hyper_cases()))
def test_bad_hyper_parameter(cls, kwargs, exc, pattern):
    # Checked before any array is made, so once is enough (no backend fixture).
    with pytest.raises(exc, match=pattern):
        cls(**kwargs)


@pytest.mark.parametrize("cls, kwargs", [(cls, kw) for cls, kw in INT_HYPER],
                         ids=[cls.__name__ for cls, _ in INT_HYPER])
def test_integer_like_hyper_parameters_are_accepted(bk64, cls, kwargs):
    """The positive control for the table above: NumPy integers pass (they are integers)."""
    layer = cls(**{k: np.int64(v) for k, v in kwargs.items()})
    for k, v in kwargs.items():
        if hasattr(layer, k):
            assert getattr(layer, k) == v and type(getattr(layer, k)) is int


@pytest.mark.parametrize("cls, kwargs, arg", [
    (L.Conv2d, dict(in_channels=2, out_channels=3, stride=1), "kernel_size"),
    (L.MaxPool2d, dict(stride=1), "kernel"),
    (L.Upsample1d, {}, "upsampling_factor"),
], ids=["Conv2d", "MaxPool2d", "Upsample1d"])
def test_zero_d_float_array_as_hyper_parameter(cls, kwargs, arg):
    """A 0-d float array has ``__index__`` but is no integer; NumPy's own error must not leak."""
    with pytest.raises(TypeError, match=rx(
            cls.__name__, rf"{arg} must be an integer, got array\(2\.\) of type ndarray$")):
        cls(**kwargs, **{arg: np.array(2.0)})


# ------------------------------------------------------------------------ forward inputs


def _forward_cases():
    for case in LAYERS:
        name, arg, shape = case.name, case.arg, case.shape
        rows = [
            ("list", pylist(shape), TypeError, rf"{arg} must be an array \(N, .*\), got list$", ()),
            ("float", const(1.5), TypeError, rf"{arg} must be an array \(N, .*\), got float$", ()),
            ("int-dtype", ints(shape), TypeError,
             rf"{arg} must be a real floating-point array \(float32 or float64\), "
             r"got dtype \S*int64$", ()),
        ]
        if case.ndim is not None:
            for bad in (shape[:-1], (*shape, 2)):
                rows.append((
                    f"{len(bad)}-d", floats(bad), ValueError,
                    rf"{arg} must have {case.ndim} dimensions \(N, C[^)]*\), "
                    rf"got {len(bad)} dimensions with shape {sh(bad)}$", (),
                ))
        for kind, bad, exc, pattern, marks in case.extra:
            rows.append((kind, floats(bad), exc, pattern, marks))
        for kind, make_input, exc, pattern, marks in rows:
            yield pytest.param(case, make_input, exc, rx(name, pattern),
                               id=f"{_layer_id(case)}-{kind}", marks=marks)


@pytest.mark.parametrize("case, make_input, exc, pattern", list(_forward_cases()))
def test_forward_rejects(bk64, case, make_input, exc, pattern):
    layer = case.make()
    A = make_input(bk64)
    with pytest.raises(exc, match=pattern):
        layer.forward(A)


@pytest.mark.parametrize("case", LAYERS, ids=_layer_id)
def test_valid_input_is_accepted(bk64, case):
    """The positive control: the table's valid shape passes forward and backward."""
    layer = case.make()
    Z = layer.forward(floats(case.shape)(bk64))
    dLdA = layer.backward(floats(tuple(Z.shape))(bk64))
    assert tuple(dLdA.shape) == case.shape


# --------------------------------------------------------------------------- backward


@pytest.mark.parametrize("case", LAYERS, ids=_layer_id)
def test_backward_before_forward(bk64, case):
    layer = case.make()
    with pytest.raises(ValueError, match=rx(case.name, r"backward called before forward$")):
        layer.backward(floats((2, 3))(bk64))


def _wrong_shapes(out):
    yield "wrong-last-axis", (*out[:-1], out[-1] + 1)
    yield "wrong-rank", (*out, 1)
    flipped = tuple(reversed(out))
    yield "reversed", flipped if flipped != out else (*out[:-1], out[-1] + 2)


@pytest.mark.parametrize("case", LAYERS, ids=_layer_id)
def test_backward_rejects_gradient(bk64, case):
    """dLdZ of the wrong shape, not an array, of an integer dtype or from another library."""
    layer = case.make()
    out = tuple(layer.forward(floats(case.shape)(bk64)).shape)
    g = case.grad

    for _, bad in _wrong_shapes(out):
        with pytest.raises(ValueError, match=rx(
                case.name, rf"{g} must have the shape of the forward output {sh(out)}, "
                           rf"got {sh(bad)}$")):
            layer.backward(floats(bad)(bk64))
    with pytest.raises(TypeError, match=rx(case.name, rf"{g} must be an array of shape {sh(out)}, "
                                                      r"got list$")):
        layer.backward(data(out).tolist())
    with pytest.raises(TypeError, match=rx(
            case.name, rf"{g} has dtype \S*int64 but forward ran in \S*float64$")):
        layer.backward(ints(out)(bk64))

    other = other_library(bk64)
    with pytest.raises(TypeError, match=rx(
            case.name, rf"{g} is {a_library(other.name)} array but forward ran on "
                       rf"{LIBRARY[bk64.name]} arrays$")):
        layer.backward(floats(out)(other))


@pytest.mark.parametrize("case", LAYERS, ids=_layer_id)
@pytest.mark.parametrize("layer_dtype, grad_dtype", DTYPE_PAIRS)
def test_backward_rejects_gradient_of_another_dtype(backend_choice, case, layer_dtype,
                                                    grad_dtype):
    name, dev = backend_choice
    with portaconv.use_backend(name, dev, layer_dtype) as backend:
        layer = case.make()
        out = tuple(layer.forward(floats(case.shape)(backend)).shape)
        with pytest.raises(TypeError, match=rx(
                case.name,
                rf"{case.grad} has dtype \S*{grad_dtype} but forward ran in \S*{layer_dtype}$")):
            layer.backward(floats(out, grad_dtype)(backend))


@pytest.mark.parametrize("case", LAYERS, ids=_layer_id)
def test_backward_rejects_gradient_on_another_device(case):
    strict = backend_or_skip("array_api_strict", "device1")
    cpu = backend_or_skip("array_api_strict", None)
    with portaconv.use_backend("array_api_strict", "device1", "float64"):
        layer = case.make()
        out = tuple(layer.forward(floats(case.shape)(strict)).shape)
        with pytest.raises(ValueError, match=rx(
                case.name,
                rf"{case.grad} is on device \S*CPU_DEVICE\S* but forward ran on \S*device1\S*$")):
            layer.backward(floats(out)(cpu))


# ----------------------------------------------------------------------- init functions

INIT_LAYERS = [
    (L.Conv1d_stride1, (2, 3, 3), (3, 2, 3)),
    (L.Conv1d, (2, 3, 3), (3, 2, 3)),
    (L.Conv2d_stride1, (2, 3, 3), (3, 2, 3, 3)),
    (L.Conv2d, (2, 3, 3), (3, 2, 3, 3)),
    (L.ConvTranspose1d, (2, 3, 3, 2), (3, 2, 3)),
    (L.ConvTranspose2d, (2, 3, 3, 2), (3, 2, 3, 3)),
    (L.Linear, (4, 3), (3, 4)),
]


def _init_cases():
    for cls, args, w in INIT_LAYERS:
        name = cls.__name__
        wrong = [("extra-axis", (*w, 1)), ("missing-axis", w[1:]),
                 ("swapped", (w[1], w[0], *w[2:]))]
        for kind, bad in wrong:
            yield pytest.param(
                cls, args, "weight_init_fn", (lambda bad: lambda *s: np.ones(bad))(bad),
                ValueError,
                rx(name, rf"weight_init_fn{sh(w)} must return an array of shape {sh(w)}, "
                         rf"got {sh(bad)}$"),
                id=f"{name}-weight-{kind}")
        yield pytest.param(
            cls, args, "weight_init_fn", lambda *s: 0.5, ValueError,
            rx(name, rf"weight_init_fn{sh(w)} must return an array of shape {sh(w)}, got \(\)$"),
            id=f"{name}-weight-scalar")
        # Linear also takes the handout's column bias (out, 1); convolutions take (out,) only
        bias = rf"{sh((3,))} or {sh((3, 1))}" if cls is L.Linear else sh((3,))
        yield pytest.param(
            cls, args, "bias_init_fn", lambda *s: np.ones(4), ValueError,
            rx(name, rf"bias_init_fn{sh((3,))} must return an array of shape {bias}, "
                     rf"got {sh((4,))}$"),
            id=f"{name}-bias-wrong-length")
        bad_bias = (1, 3) if cls is L.Linear else (3, 1)
        yield pytest.param(
            cls, args, "bias_init_fn", (lambda bad: lambda *s: np.ones(bad))(bad_bias),
            ValueError,
            rx(name, rf"bias_init_fn{sh((3,))} must return an array of shape {bias}, "
                     rf"got {sh(bad_bias)}$"),
            id=f"{name}-bias-2d")
        yield pytest.param(
            cls, args, "weight_init_fn", lambda *s: "abc", TypeError,
            rx(name, rf"weight_init_fn{sh(w)} must return an array, got str$"),
            id=f"{name}-weight-str")
        yield pytest.param(
            cls, args, "bias_init_fn", lambda *s: object(), TypeError,
            rx(name, rf"bias_init_fn{sh((3,))} must return an array, got object$"),
            id=f"{name}-bias-object")


@pytest.mark.parametrize("cls, args, fn_name, init_fn, exc, pattern", list(_init_cases()))
def test_bad_init_fn(bk64, cls, args, fn_name, init_fn, exc, pattern):
    with pytest.raises(exc, match=pattern):
        cls(*args, **{fn_name: init_fn})


@pytest.mark.parametrize("cls, args, w", INIT_LAYERS, ids=[c.__name__ for c, _, _ in INIT_LAYERS])
def test_init_fn_returning_none(bk64, cls, args, w):
    """An init fn that forgets to return must not become a 0-d NaN array on any backend."""
    with pytest.raises(TypeError, match=rx(
            cls.__name__, rf"weight_init_fn{sh(w)} must return an array, got NoneType$")):
        cls(*args, weight_init_fn=lambda *s: None)


# --------------------------------------------------- another library, device or dtype

PLACES = {
    "numpy": ("numpy", None),
    "torch": ("torch", "cpu"),
    "strict": ("array_api_strict", None),
    "cupy": ("cupy", None),
}
LIBRARY_PAIRS = [  # (layer built under, input from)
    ("torch", "numpy"),
    ("strict", "numpy"),
    ("numpy", "torch"),
    ("numpy", "strict"),
    ("torch", "strict"),
    ("strict", "torch"),
    ("cupy", "numpy"),
    ("numpy", "cupy"),
]
PAIR_IDS = [f"{a}-from-{b}" for a, b in LIBRARY_PAIRS]


@pytest.mark.parametrize("case", PARAM_LAYERS, ids=_layer_id)
@pytest.mark.parametrize("layer_at, input_at", LIBRARY_PAIRS, ids=PAIR_IDS)
def test_forward_rejects_input_from_another_library(case, layer_at, input_at):
    source = backend_or_skip(*PLACES[input_at])
    target = backend_or_skip(*PLACES[layer_at])
    with portaconv.use_backend(target.name, target.device, "float64"):
        layer = case.make()
    with pytest.raises(TypeError, match=rx(
            case.name, rf"A is {a_library(source.name)} array but the layer's parameters are "
                       rf"{LIBRARY[target.name]} arrays; move it with portaconv\.to_backend")):
        layer.forward(floats(case.shape)(source))


DEVICE_PAIRS = [  # (library, layer's device, input's device, regex for each)
    pytest.param("array_api_strict", "device1", None, r".*CPU_DEVICE.*", r".*device1.*",
                 id="strict-device1-from-cpu"),
    pytest.param("array_api_strict", None, "device1", r".*device1.*", r".*CPU_DEVICE.*",
                 id="strict-cpu-from-device1"),
    pytest.param("torch", "cuda", "cpu", r"cpu", r"cuda(:0)?", id="torch-cuda-from-cpu"),
    pytest.param("torch", "cpu", "cuda", r"cuda(:0)?", r"cpu", id="torch-cpu-from-cuda"),
]


@pytest.mark.parametrize("case", PARAM_LAYERS, ids=_layer_id)
@pytest.mark.parametrize("lib, layer_dev, input_dev, got, want", DEVICE_PAIRS)
def test_forward_rejects_input_on_another_device(case, lib, layer_dev, input_dev, got, want):
    source = backend_or_skip(lib, input_dev)
    target = backend_or_skip(lib, layer_dev)
    with portaconv.use_backend(lib, target.device, "float64"):
        layer = case.make()
    with pytest.raises(ValueError, match=rx(
            case.name, rf"A is on device {got} but the layer's parameters are on {want}$")):
        layer.forward(floats(case.shape)(source))


# ------------------------------------------------------------------------------- losses

N, C = 2, 3
FLOAT_Y = floats((N, C))


def _loss_cases():
    rows = [
        # MSELoss
        ("MSELoss", "A-list", pylist((N, C)), FLOAT_Y, TypeError,
         r"A must be an array \(N, C\), got list$"),
        ("MSELoss", "Y-list", floats((N, C)), pylist((N, C)), TypeError,
         r"Y must be an array \(N, C\), got list$"),
        ("MSELoss", "A-float", const(1.5), FLOAT_Y, TypeError,
         r"A must be an array \(N, C\), got float$"),
        ("MSELoss", "A-int", ints((N, C)), FLOAT_Y, TypeError,
         r"A must be a real floating-point array .*got dtype \S*int64$"),
        ("MSELoss", "Y-int", floats((N, C)), ints((N, C)), TypeError,
         r"Y must be a real floating-point array .*got dtype \S*int64$"),
        ("MSELoss", "A-0-d", floats(()), floats(()), ValueError,
         r"A must have at least 1 dimensions \(N, C\), got 0 dimensions with shape \(\)$"),
        ("MSELoss", "Y-shape", floats((N, C)), floats((N, C + 1)), ValueError,
         rf"Y must have the shape of A {sh((N, C))}, got {sh((N, C + 1))}$"),
        ("MSELoss", "Y-transposed", floats((N, C)), floats((C, N)), ValueError,
         rf"Y must have the shape of A {sh((N, C))}, got {sh((C, N))}$"),
        # CrossEntropyLoss
        ("CrossEntropyLoss", "A-list", pylist((N, C)), labels([0, 1]), TypeError,
         r"A must be an array \(N, C\), got list$"),
        ("CrossEntropyLoss", "A-int", ints((N, C)), labels([0, 1]), TypeError,
         r"A must be a real floating-point array .*got dtype \S*int64$"),
        ("CrossEntropyLoss", "A-3-d", floats((N, C, 1)), labels([0, 1]), ValueError,
         rf"A must have 2 dimensions \(N, C\), got 3 dimensions with shape {sh((N, C, 1))}$"),
        ("CrossEntropyLoss", "A-1-d", floats((C,)), labels([0]), ValueError,
         rf"A must have 2 dimensions \(N, C\), got 1 dimensions with shape {sh((C,))}$"),
        ("CrossEntropyLoss", "label-too-large", floats((N, C)), labels([0, 3]), ValueError,
         r"labels must lie in \[0, 3\), got values from 0 to 3$"),
        ("CrossEntropyLoss", "label-negative", floats((N, C)), labels([-1, 1]), ValueError,
         r"labels must lie in \[0, 3\), got values from -1 to 1$"),
        ("CrossEntropyLoss", "labels-2d", floats((N, C)), labels([[0], [1]]), ValueError,
         rf"integer labels Y must have shape {sh((N,))}, got {sh((N, 1))}$"),
        ("CrossEntropyLoss", "labels-too-many", floats((N, C)), labels([0, 1, 2]), ValueError,
         rf"integer labels Y must have shape {sh((N,))}, got {sh((3,))}$"),
        ("CrossEntropyLoss", "targets-shape", floats((N, C)), floats((N, C + 1)), ValueError,
         rf"targets Y must have the shape of A {sh((N, C))}, got {sh((N, C + 1))}$"),
        ("CrossEntropyLoss", "targets-3-d", floats((N, C)), floats((N, C, 1)), ValueError,
         rf"Y must have 2 dimensions \(N, C\), got 3 dimensions with shape {sh((N, C, 1))}$"),
        ("CrossEntropyLoss", "Y-list", floats((N, C)), const([0, 1]), TypeError,
         r"Y must be an array of labels \(N,\) or targets \(N, C\), got list$"),
        ("CrossEntropyLoss", "Y-bool", floats((N, C)),
         lambda b: to_backend(np.array([True, False]), b, b.xp.bool), TypeError,
         r"Y must be a real floating-point array .*got dtype \S*bool$"),
    ]
    for name, kind, make_A, make_Y, exc, pattern in rows:
        yield pytest.param(getattr(L, name), make_A, make_Y, exc, rx(name, pattern),
                           id=f"{name}-{kind}")


@pytest.mark.parametrize("cls, make_A, make_Y, exc, pattern", list(_loss_cases()))
def test_loss_forward_rejects(bk64, cls, make_A, make_Y, exc, pattern):
    loss = cls()
    A, Y = make_A(bk64), make_Y(bk64)
    with pytest.raises(exc, match=pattern):
        loss.forward(A, Y)


@pytest.mark.parametrize("cls", [L.MSELoss, L.CrossEntropyLoss], ids=lambda c: c.__name__)
def test_loss_backward_before_forward(bk64, cls):
    with pytest.raises(ValueError, match=rx(cls.__name__, r"backward called before forward$")):
        cls().backward()


@pytest.mark.parametrize("A_at, Y_at", LIBRARY_PAIRS, ids=PAIR_IDS)
def test_mse_rejects_target_from_another_library(A_at, Y_at):
    target, source = backend_or_skip(*PLACES[A_at]), backend_or_skip(*PLACES[Y_at])
    with pytest.raises(TypeError, match=rx(
            "MSELoss",
            rf"Y is {a_library(source.name)} array but A is {a_library(target.name)} array; "
            r"move it with portaconv\.to_backend")):
        L.MSELoss().forward(floats((N, C))(target), floats((N, C))(source))


@pytest.mark.parametrize("Y_kind", ["labels", "targets"])
@pytest.mark.parametrize("A_at, Y_at", LIBRARY_PAIRS, ids=PAIR_IDS)
def test_cross_entropy_rejects_target_from_another_library(A_at, Y_at, Y_kind):
    target, source = backend_or_skip(*PLACES[A_at]), backend_or_skip(*PLACES[Y_at])
    Y = labels([0, 1])(source) if Y_kind == "labels" else floats((N, C))(source)
    with pytest.raises(TypeError, match=rx(
            "CrossEntropyLoss",
            rf"Y is {a_library(source.name)} array but A is {a_library(target.name)} array; "
            r"move it with portaconv\.to_backend")):
        L.CrossEntropyLoss().forward(floats((N, C))(target), Y)


@pytest.mark.parametrize("cls, make_Y", [
    (L.MSELoss, floats((N, C))),
    (L.CrossEntropyLoss, floats((N, C))),
    (L.CrossEntropyLoss, labels([0, 1])),
], ids=["MSELoss-targets", "CrossEntropyLoss-targets", "CrossEntropyLoss-labels"])
def test_loss_rejects_target_on_another_device(cls, make_Y):
    A_place = backend_or_skip("array_api_strict", "device1")
    Y_place = backend_or_skip("array_api_strict", None)
    with pytest.raises(ValueError, match=rx(
            cls.__name__, r"Y is on device \S*CPU_DEVICE\S* but A is on \S*device1\S*$")):
        cls().forward(floats((N, C))(A_place), make_Y(Y_place))


@pytest.mark.parametrize("cls", [L.MSELoss, L.CrossEntropyLoss], ids=lambda c: c.__name__)
def test_loss_message_compares_target_with_prediction(bk64, cls):
    """A loss has no parameters: the message compares Y with A and gives no set_backend advice."""
    with pytest.raises(TypeError) as excinfo:
        cls().forward(floats((N, C))(bk64), floats((N, C))(other_library(bk64)))
    message = str(excinfo.value)
    assert message.startswith(f"{cls.__name__}: Y is a")
    assert "parameters" not in message and "set_backend" not in message
    assert re.search(r"\bA\b", message)


# ---------------------------------------------------------------- readable messages


@pytest.mark.parametrize("make_call", [
    pytest.param(lambda b: L.Linear(4, 3).forward(floats((4,))(b)), id="Linear-1-d"),
    pytest.param(lambda b: L.Flatten().forward(floats(())(b)), id="Flatten-0-d"),
    pytest.param(lambda b: L.MSELoss().forward(floats(())(b), floats(())(b)), id="MSELoss-0-d"),
])
def test_rank_message_is_readable(bk64, make_call):
    """A range of allowed ranks reads 'at least 2', not '2 or 3 or ... or 63'."""
    with pytest.raises(ValueError) as excinfo:
        make_call(bk64)
    assert len(str(excinfo.value)) <= 160, str(excinfo.value)
