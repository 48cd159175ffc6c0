"""Bad input gets the library's own ValueError or TypeError, never an error from deep inside
an array library.

Every message must start with the layer's class name and say what was expected and what was
received; each regex below pins both. The layers come from the table in
tests/layer_specs.py: each row gives a valid input (so the bad ones differ from it in one
respect only), its integer hyper-parameters and its layer-specific bad inputs and
hyper-parameters. Checked here: hyper-parameters, forward inputs, upstream gradients, init
functions, losses' targets, and arrays from another library, device or dtype.

Which rows a check runs on follows what the check reads. A check that reads only the
argument's type, rank, dtype, library or device, or the layer's state, is made by the class
(``Layer._array_arg``, ``_gradient_arg``, ``_forward_done`` with the class's own layout and
ranks) before anything that depends on the row's sizes: it runs on each class's reference
row (``REFERENCE``). A check whose expected value comes from the row's geometry runs on
every row that has it: the layer-specific bad inputs (wrong channels, a kernel larger than
the input, ...) on the rows that list them, and a gradient of the wrong shape on every row
(conv, pool and upsample layers compute the output shape it is compared with from their
sizes). Every row's valid input passing forward and backward in both dtypes is
test_layers.py's conformance check; here it is the positive control of the rows checked.
All in float64 except where the error is about the dtype (a gradient of the other dtype:
both pairs).

Gaps found in the library are kept as ``xfail(strict=True)`` tests whose reason says what
happens today and what should happen instead.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

import portaconv
from portaconv import layers as L
from portaconv.backend import make_backend, to_backend, to_numpy

from .helpers import (
    LIBRARY,
    a_library,
    available,
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
from .layer_specs import REFERENCE, SPECS, WITH_INIT_FNS, WITH_PARAMS, LayerSpec

DTYPE_PAIRS = [("float64", "float32"), ("float32", "float64")]


def place(name: str, device=None):
    """A library on a device, in float64 (the pairs below are of available ones only)."""
    return make_backend(name, device, "float64")


def xfail(reason: str) -> pytest.MarkDecorator:
    return pytest.mark.xfail(strict=True, reason=reason)


def _row_id(spec: LayerSpec) -> str:
    return spec.id


def _class_id(spec: LayerSpec) -> str:
    return spec.name


# --------------------------------------------------------------------- hyper-parameters

# (id, bad value, exception, pattern after "Name: {arg} must be "), for every integer
# hyper-parameter of each layer's reference row (padding: BAD_PADDING).
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
    for spec in REFERENCE:
        for arg in spec.hyper:
            bad_values = BAD_PADDING if arg == "padding" else BAD_POSITIVE
            for kind, value, exc, tail in bad_values:
                if value is None and arg == "stride" and "Pool" in spec.name:
                    continue  # pools take stride=None as "stride = kernel"
                yield pytest.param(spec, {arg: value}, exc, rx(spec.name, rf"{arg} must be {tail}"),
                                   id=f"{spec.name}-{arg}-{kind}")
    for spec in SPECS:  # the other hyper-parameters: each layer lists its own on one row
        for bad in spec.bad_hyper:
            yield pytest.param(spec, bad.kwargs, bad.exc, rx(spec.name, bad.pattern),
                               id=f"{spec.name}-{bad.id}")


@pytest.mark.parametrize("spec, kwargs, exc, pattern", list(_hyper_cases()))
def test_bad_hyper_parameter(spec, kwargs, exc, pattern):
    # Checked before any array is made, so once is enough (no backend fixture).
    with pytest.raises(exc, match=pattern):
        spec.cls(**{**spec.hyper, **spec.options, **kwargs})


@pytest.mark.parametrize("spec", [s for s in REFERENCE if s.hyper], ids=_class_id)
def test_integer_like_hyper_parameters_are_accepted(bk64, spec):
    """The positive control for the table above: NumPy integers pass (they are integers)."""
    layer = spec.cls(**{k: np.int64(v) for k, v in spec.hyper.items()}, **spec.options)
    for k, v in spec.hyper.items():
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


REFERENCE_IDS = {spec.id for spec in REFERENCE}


def _forward_cases():
    for spec in SPECS:
        arg, shape, layout = spec.arg, spec.in_shape, re.escape(spec.layout)
        rows = []
        if spec.id in REFERENCE_IDS:  # read type, dtype and rank only: once per class
            rows += [
                ("list", pylist(shape), TypeError, rf"{arg} must be an array {layout}, got list$",
                 ()),
                ("float", const(1.5), TypeError, rf"{arg} must be an array {layout}, got float$",
                 ()),
                ("int-dtype", ints(shape), TypeError,
                 rf"{arg} must be a real floating-point array \(float32 or float64\), "
                 r"got dtype \S*int64$", ()),
            ]
            if spec.ranks:  # one rank too few, one too many
                lo, hi = min(spec.ranks), max(spec.ranks)
                ranks = " or ".join(str(r) for r in spec.ranks)
                for bad in (shape[: lo - 1], (*shape, *(2,) * (hi + 1 - len(shape)))):
                    rows.append((
                        f"{len(bad)}-d", floats(bad), ValueError,
                        rf"{arg} must have {ranks} dimensions {layout}, "
                        rf"got {len(bad)} dimensions with shape {sh(bad)}$", (),
                    ))
        for bad in spec.bad_inputs:  # the row's own: they depend on its sizes
            rows.append((bad.id, floats(bad.shape), bad.exc, bad.pattern, bad.marks))
        for kind, make_input, exc, pattern, marks in rows:
            yield pytest.param(spec, make_input, exc, rx(spec.name, pattern),
                               id=f"{spec.id}-{kind}", marks=marks)


#: The rows test_forward_rejects builds: each class's reference row and the rows with bad
#: inputs of their own.
CHECKED_ROWS = [spec for spec in SPECS if spec.id in REFERENCE_IDS or spec.bad_inputs]


@pytest.mark.parametrize("spec, make_input, exc, pattern", list(_forward_cases()))
def test_forward_rejects(bk64, spec, make_input, exc, pattern):
    layer = spec.make()
    A = make_input(bk64)
    with pytest.raises(exc, match=pattern):
        layer.forward(A)


@pytest.mark.parametrize("spec", CHECKED_ROWS, ids=_row_id)
def test_valid_input_is_accepted(bk64, spec):
    """The positive control of the rows above: their valid shape passes forward and backward
    (every other row's does in test_layers.py, in float64 and float32)."""
    layer = spec.make()
    Z = layer.forward(floats(spec.in_shape)(bk64))
    dLdA = layer.backward(floats(tuple(Z.shape))(bk64))
    assert tuple(dLdA.shape) == spec.in_shape


# --------------------------------------------------------------------------- backward


@pytest.mark.parametrize("spec", REFERENCE, ids=_class_id)
def test_backward_before_forward(bk64, spec):
    """Reads the layer's state only (``_forward_done``): once per class."""
    layer = spec.make()
    with pytest.raises(ValueError, match=rx(spec.name, r"backward called before forward$")):
        layer.backward(floats(spec.in_shape)(bk64))


def _wrong_shapes(out):
    yield "wrong-last-axis", (*out[:-1], out[-1] + 1)
    yield "one-axis-more", (*out, 1)
    yield "one-axis-fewer", out[:-1]
    flipped = tuple(reversed(out))
    yield "reversed", flipped if flipped != out else (*out[:-1], out[-1] + 2)


@pytest.mark.parametrize("spec", SPECS, ids=_row_id)
def test_backward_rejects_gradient(bk64, spec):
    """dLdZ of the wrong shape, not an array, of an integer dtype or from another library.
    On every row: the shape dLdZ must have is the forward output's, which conv, pool and
    upsample layers compute from the row's sizes."""
    layer = spec.make()
    out = tuple(layer.forward(floats(spec.in_shape)(bk64)).shape)
    g = spec.grad

    for _, bad in _wrong_shapes(out):
        with pytest.raises(ValueError, match=rx(
                spec.name, rf"{g} must have the shape of the forward output {sh(out)}, "
                           rf"got {sh(bad)}$")):
            layer.backward(floats(bad)(bk64))
    with pytest.raises(TypeError, match=rx(spec.name, rf"{g} must be an array of shape {sh(out)}, "
                                                      r"got list$")):
        layer.backward(data(out).tolist())
    with pytest.raises(TypeError, match=rx(
            spec.name, rf"{g} has dtype \S*int64 but forward ran in \S*float64$")):
        layer.backward(ints(out)(bk64))

    other = other_library(bk64)
    with pytest.raises(TypeError, match=rx(
            spec.name, rf"{g} is {a_library(other.name)} array but forward ran on "
                       rf"{LIBRARY[bk64.name]} arrays$")):
        layer.backward(floats(out)(other))


@pytest.mark.parametrize("spec", REFERENCE, ids=_class_id)
@pytest.mark.parametrize("layer_dtype, grad_dtype", DTYPE_PAIRS)
def test_backward_rejects_gradient_of_another_dtype(backend_choice, spec, layer_dtype,
                                                    grad_dtype):
    """Compares dtypes only (``_gradient_arg``), in both directions: once per class."""
    name, dev = backend_choice
    with portaconv.use_backend(name, dev, layer_dtype) as backend:
        layer = spec.make()
        out = tuple(layer.forward(floats(spec.in_shape)(backend)).shape)
        with pytest.raises(TypeError, match=rx(
                spec.name,
                rf"{spec.grad} has dtype \S*{grad_dtype} but forward ran in \S*{layer_dtype}$")):
            layer.backward(floats(out, grad_dtype)(backend))


@pytest.mark.parametrize("spec", REFERENCE, ids=_class_id)
def test_backward_rejects_gradient_on_another_device(spec):
    """Compares devices only (``_gradient_arg``): once per class."""
    strict = place("array_api_strict", "device1")
    cpu = place("array_api_strict", None)
    with portaconv.use_backend("array_api_strict", "device1", "float64"):
        layer = spec.make()
        out = tuple(layer.forward(floats(spec.in_shape)(strict)).shape)
        with pytest.raises(ValueError, match=rx(
                spec.name,
                rf"{spec.grad} is on device \S*CPU_DEVICE\S* but forward ran on \S*device1\S*$")):
            layer.backward(floats(out)(cpu))


# ----------------------------------------------------------------------- init functions


def _init_cases():
    for spec in WITH_INIT_FNS:
        name, w, b = spec.name, spec.params["W"], spec.params["b"]
        out = b[0]
        wrong = [("extra-axis", (*w, 1)), ("missing-axis", w[1:]),
                 ("swapped", (w[1], w[0], *w[2:]))]
        for kind, bad in wrong:
            yield pytest.param(
                spec, "weight_init_fn", (lambda bad: lambda *s: np.ones(bad))(bad), ValueError,
                rx(name, rf"weight_init_fn{sh(w)} must return an array of shape {sh(w)}, "
                         rf"got {sh(bad)}$"),
                id=f"{name}-weight-{kind}")
        yield pytest.param(
            spec, "weight_init_fn", lambda *s: 0.5, ValueError,
            rx(name, rf"weight_init_fn{sh(w)} must return an array of shape {sh(w)}, got \(\)$"),
            id=f"{name}-weight-scalar")
        # Linear also takes the handout's column bias (out, 1); convolutions take (out,) only
        bias = rf"{sh(b)} or {sh((out, 1))}" if spec.cls is L.Linear else sh(b)
        yield pytest.param(
            spec, "bias_init_fn", (lambda n: lambda *s: np.ones(n))(out + 1), ValueError,
            rx(name, rf"bias_init_fn{sh(b)} must return an array of shape {bias}, "
                     rf"got {sh((out + 1,))}$"),
            id=f"{name}-bias-wrong-length")
        bad_bias = (1, out) if spec.cls is L.Linear else (out, 1)
        yield pytest.param(
            spec, "bias_init_fn", (lambda bad: lambda *s: np.ones(bad))(bad_bias), ValueError,
            rx(name, rf"bias_init_fn{sh(b)} must return an array of shape {bias}, "
                     rf"got {sh(bad_bias)}$"),
            id=f"{name}-bias-2d")
        yield pytest.param(
            spec, "weight_init_fn", lambda *s: "abc", TypeError,
            rx(name, rf"weight_init_fn{sh(w)} must return an array, got str$"),
            id=f"{name}-weight-str")
        yield pytest.param(
            spec, "bias_init_fn", lambda *s: object(), TypeError,
            rx(name, rf"bias_init_fn{sh(b)} must return an array, got object$"),
            id=f"{name}-bias-object")


@pytest.mark.parametrize("spec, fn_name, init_fn, exc, pattern", list(_init_cases()))
def test_bad_init_fn(bk64, spec, fn_name, init_fn, exc, pattern):
    with pytest.raises(exc, match=pattern):
        spec.make(**{fn_name: init_fn})


@pytest.mark.parametrize("spec", WITH_INIT_FNS, ids=_class_id)
def test_init_fn_returning_none(bk64, spec):
    """An init fn that forgets to return must not become a 0-d NaN array on any backend."""
    with pytest.raises(TypeError, match=rx(
            spec.name, rf"weight_init_fn{sh(spec.params['W'])} must return an array, "
                       r"got NoneType$")):
        spec.make(weight_init_fn=lambda *s: None)


# --------------------------------------------------- another library, device or dtype

PLACES = {
    "numpy": ("numpy", None),
    "torch": ("torch", "cpu"),
    "strict": ("array_api_strict", None),
    "cupy": ("cupy", None),
    "jax": ("jax", "cpu"),
}
ALL_LIBRARY_PAIRS = [  # (layer built under, input from)
    ("torch", "numpy"),
    ("strict", "numpy"),
    ("numpy", "torch"),
    ("numpy", "strict"),
    ("torch", "strict"),
    ("strict", "torch"),
    ("cupy", "numpy"),
    ("numpy", "cupy"),
    ("jax", "torch"),
    ("numpy", "jax"),
]
#: The pairs whose two libraries run here: CuPy's need a GPU, and are collected where
#: there is one (a skip would stand for a pass).
LIBRARY_PAIRS = [p for p in ALL_LIBRARY_PAIRS if all(available(*PLACES[at]) for at in p)]
PAIR_IDS = [f"{a}-from-{b}" for a, b in LIBRARY_PAIRS]


@pytest.mark.parametrize("spec", WITH_PARAMS, ids=_class_id)
@pytest.mark.parametrize("layer_at, input_at", LIBRARY_PAIRS, ids=PAIR_IDS)
def test_forward_rejects_input_from_another_library(spec, layer_at, input_at):
    source = place(*PLACES[input_at])
    target = place(*PLACES[layer_at])
    with portaconv.use_backend(target.name, target.device, "float64"):
        layer = spec.make()
    with pytest.raises(TypeError, match=rx(
            spec.name, rf"{spec.arg} is {a_library(source.name)} array but the layer's "
                       rf"parameters are {LIBRARY[target.name]} arrays; "
                       r"move it with portaconv\.to_backend")):
        layer.forward(floats(spec.in_shape)(source))


ALL_DEVICE_PAIRS = [  # (library, layer's device, input's device, regex for each)
    pytest.param("array_api_strict", "device1", None, r".*CPU_DEVICE.*", r".*device1.*",
                 id="strict-device1-from-cpu"),
    pytest.param("array_api_strict", None, "device1", r".*device1.*", r".*CPU_DEVICE.*",
                 id="strict-cpu-from-device1"),
    pytest.param("torch", "cuda", "cpu", r"cpu", r"cuda(:0)?", id="torch-cuda-from-cpu"),
    pytest.param("torch", "cpu", "cuda", r"cuda(:0)?", r"cpu", id="torch-cpu-from-cuda"),
]
#: The pairs of devices present here: torch's CUDA ones are collected where there is a GPU.
DEVICE_PAIRS = [
    p for p in ALL_DEVICE_PAIRS if available(*p.values[:2]) and available(p.values[0], p.values[2])
]


@pytest.mark.parametrize("spec", WITH_PARAMS, ids=_class_id)
@pytest.mark.parametrize("lib, layer_dev, input_dev, got, want", DEVICE_PAIRS)
def test_forward_rejects_input_on_another_device(spec, lib, layer_dev, input_dev, got, want):
    source = place(lib, input_dev)
    target = place(lib, layer_dev)
    with portaconv.use_backend(lib, target.device, "float64"):
        layer = spec.make()
    with pytest.raises(ValueError, match=rx(
            spec.name,
            rf"{spec.arg} is on device {got} but the layer's parameters are on {want}$")):
        layer.forward(floats(spec.in_shape)(source))
    layer.forward(floats(spec.in_shape)(target))  # the positive control: the layer's device


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


@pytest.mark.parametrize("bad, low, high", [([0, 3], 0, 3), ([-1, 1], -1, 1)])
def test_cross_entropy_labels_out_of_range(bk64, bad, low, high):
    """On the host (NumPy, array-api-strict) a ValueError that says which labels; elsewhere
    reading them would wait for the device, so the loss and the bad row's gradient are NaN
    (and the good row's gradient is torch's)."""
    loss = L.CrossEntropyLoss()
    A, Y = floats((N, C))(bk64), labels(bad)(bk64)
    if bk64.name in ("numpy", "array_api_strict"):
        with pytest.raises(ValueError, match=rx(
                "CrossEntropyLoss",
                rf"labels must lie in \[0, 3\), got values from {low} to {high}$")):
            loss.forward(A, Y)
        return
    assert math.isnan(float(loss.forward(A, Y)))
    dLdA = to_numpy(loss.backward())
    good = [i for i, label in enumerate(bad) if 0 <= label < C]
    assert np.all(np.isnan(np.delete(dLdA, good, axis=0)))
    logits = torch.tensor(to_numpy(A)[good], requires_grad=True)
    torch.nn.functional.cross_entropy(logits, torch.tensor(bad)[good], reduction="sum").backward()
    np.testing.assert_allclose(dLdA[good], logits.grad.numpy() / N, rtol=1e-10)


@pytest.mark.parametrize("cls", [L.MSELoss, L.CrossEntropyLoss], ids=lambda c: c.__name__)
def test_loss_backward_before_forward(bk64, cls):
    with pytest.raises(ValueError, match=rx(cls.__name__, r"backward called before forward$")):
        cls().backward()


@pytest.mark.parametrize("A_at, Y_at", LIBRARY_PAIRS, ids=PAIR_IDS)
def test_mse_rejects_target_from_another_library(A_at, Y_at):
    target, source = place(*PLACES[A_at]), place(*PLACES[Y_at])
    with pytest.raises(TypeError, match=rx(
            "MSELoss",
            rf"Y is {a_library(source.name)} array but A is {a_library(target.name)} array; "
            r"move it with portaconv\.to_backend")):
        L.MSELoss().forward(floats((N, C))(target), floats((N, C))(source))


@pytest.mark.parametrize("Y_kind", ["labels", "targets"])
@pytest.mark.parametrize("A_at, Y_at", LIBRARY_PAIRS, ids=PAIR_IDS)
def test_cross_entropy_rejects_target_from_another_library(A_at, Y_at, Y_kind):
    target, source = place(*PLACES[A_at]), place(*PLACES[Y_at])
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
    A_place = place("array_api_strict", "device1")
    Y_place = place("array_api_strict", None)
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
