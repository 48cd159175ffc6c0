"""portaconv models to PyTorch modules and back, with the same parameters and buffers.

Each portaconv layer has a ``torch.nn`` twin with the same options and, under PyTorch's
names, the same state: ``W``/``b`` are ``weight``/``bias``, BatchNorm's ``BW``/``Bb`` and
``running_M``/``running_V`` are ``weight``/``bias`` and ``running_mean``/``running_var``.
Sequential positions and Residual branches name the same in both (``2.body.0.W`` is
``2.body.0.weight``), so a state name maps to the other by its last part alone.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import numpy as np

from .. import layers as L
from ..backend import to_numpy, use_backend
from ..models import Residual, Sequential
from ._deps import require

#: portaconv's state names and PyTorch's, for the last part of a state_dict key.
TORCH_NAMES = {
    "W": "weight",
    "b": "bias",
    "BW": "weight",
    "Bb": "bias",
    "running_M": "running_mean",
    "running_V": "running_var",
}
_ACTIVATIONS = ("Identity", "Sigmoid", "Tanh", "ReLU", "ReLU6", "SiLU", "Hardswish")
_DROPOUTS = ("Dropout", "Dropout1d", "Dropout2d")


def torch_name(name: str) -> str:
    """The PyTorch state name of the portaconv state name ``name`` (``"0.W"`` -> ``"0.weight"``)."""
    prefix, _, last = name.rpartition(".")
    return f"{prefix}.{TORCH_NAMES[last]}" if prefix else TORCH_NAMES[last]


# ------------------------------------------------------------------------------ to PyTorch


def to_torch(model: Any) -> Any:
    """The same network as a ``torch.nn.Module`` of plain PyTorch modules, holding copies of
    ``model``'s parameters and buffers (CPU tensors of the model's dtype) and in its mode
    (``module.eval()`` then gives ``model.eval()``'s outputs).

    ``Sequential`` becomes ``nn.Sequential``, ``Residual`` the ``Residual`` module of
    ``portaconv.interop.torch_modules`` (``body(x) + shortcut(x)``), each layer its
    ``torch.nn`` twin; ``GlobalAvgPool2d`` is ``nn.Sequential(nn.AdaptiveAvgPool2d(1),
    nn.Flatten())``. A layer without a twin (the handout's transposed convolutions and
    resampling, or a model other than Sequential and Residual) is a ``TypeError`` naming it.

    >>> from portaconv.layers import Conv2d, ReLU, Flatten, Linear
    >>> from portaconv.models import Sequential
    >>> to_torch(Sequential(Conv2d(1, 4, 3), ReLU(), Flatten(), Linear(4 * 6 * 6, 2)))
    Sequential(
      (0): Conv2d(1, 4, kernel_size=(3, 3), stride=(1, 1))
      (1): ReLU()
      (2): Flatten(start_dim=1, end_dim=-1)
      (3): Linear(in_features=144, out_features=2, bias=True)
    )
    """
    torch = require("torch", "to_torch")
    module = _module(model, torch.nn, "model")
    state = {name: np.asarray(to_numpy(value)) for name, value in model.state_dict().items()}
    dtypes = {value.dtype for value in state.values()}
    if len(dtypes) > 1:
        raise ValueError(
            f"to_torch: the model's parameters have several dtypes {sorted(map(str, dtypes))}; "
            "a PyTorch module holds one"
        )
    if dtypes:
        module = module.to(getattr(torch, dtypes.pop().name))
    targets = module.state_dict()
    converted = {}
    for name, value in state.items():
        key = torch_name(name)
        converted[key] = torch.from_numpy(value.reshape(tuple(targets[key].shape)).copy())
    missing, unexpected = module.load_state_dict(converted, strict=False)
    left = [key for key in missing if not key.endswith("num_batches_tracked")]
    if left or unexpected:  # a twin that names its state otherwise: a bug here
        raise RuntimeError(f"to_torch: state names differ: missing {left}, unexpected {unexpected}")
    return module.train(bool(getattr(model, "training", True)))


def _module(layer: Any, nn: Any, where: str) -> Any:
    """The ``torch.nn`` twin of one portaconv layer or model (parameters not yet copied)."""
    if isinstance(layer, Sequential):
        return nn.Sequential(
            *(_module(child, nn, f"{where}[{i}]") for i, child in enumerate(layer))
        )
    if isinstance(layer, Residual):
        from .torch_modules import Residual as TorchResidual

        shortcut = layer.shortcut
        return TorchResidual(
            _module(layer.body, nn, f"{where}.body"),
            None if shortcut is None else _module(shortcut, nn, f"{where}.shortcut"),
        )
    kind = type(layer).__name__
    if isinstance(layer, L.conv._ConvNd):
        Conv = nn.Conv1d if layer._nd == 1 else nn.Conv2d
        return Conv(
            layer.in_channels,
            layer.out_channels,
            layer._kernel,
            stride=layer._stride,
            padding=layer.padding
            if isinstance(layer.padding, str)
            else tuple(p for p, _ in layer._pads),
            dilation=layer._dilation,
            groups=layer.groups,
            bias="b" in layer.param_names,
        )
    if isinstance(layer, L.Linear):
        return nn.Linear(layer.in_features, layer.out_features)
    if isinstance(layer, (L.BatchNorm1d, L.BatchNorm2d)):
        return getattr(nn, kind)(layer.num_features, eps=layer.eps, momentum=layer.momentum)
    if isinstance(layer, L.LayerNorm):
        return nn.LayerNorm(layer.normalized_shape, layer.eps, layer.elementwise_affine)
    if isinstance(layer, L.GroupNorm):
        return nn.GroupNorm(layer.num_groups, layer.num_channels, layer.eps, layer.affine)
    if isinstance(layer, L.pool._PoolNd):
        nd = layer._nd
        geometry = (layer._kernel, layer._stride, layer._padding)
        if layer._max:
            return getattr(nn, f"MaxPool{nd}d")(*geometry)
        include = getattr(layer, "count_include_pad", True)  # MeanPool: the kernel's size
        return getattr(nn, f"AvgPool{nd}d")(*geometry, count_include_pad=include)
    if isinstance(layer, (L.AdaptiveAvgPool1d, L.AdaptiveAvgPool2d)):
        return getattr(nn, kind)(layer.output_size)
    if isinstance(layer, (L.GlobalAvgPool1d, L.GlobalAvgPool2d)):
        return nn.Sequential(getattr(nn, f"AdaptiveAvgPool{layer._nd}d")(1), nn.Flatten())
    if isinstance(layer, L.Flatten):
        return nn.Flatten()
    if kind in _ACTIVATIONS and type(layer).__module__ == L.activation.__name__:
        return getattr(nn, kind)()
    if isinstance(layer, L.LeakyReLU):
        return nn.LeakyReLU(layer.negative_slope)
    if isinstance(layer, L.GELU):
        return nn.GELU(approximate=layer.approximate)
    if isinstance(layer, L.Softmax):
        return nn.Softmax(dim=layer.dim)
    if kind in _DROPOUTS and type(layer).__module__ == L.dropout.__name__:
        return getattr(nn, kind)(layer.p)
    raise TypeError(
        f"to_torch: {where} is {layer!r}, which has no PyTorch counterpart here (to_torch "
        "takes Sequential and Residual models of convolutions, normalisations, pooling, "
        "Linear, activations, Dropout and Flatten)"
    )


# ---------------------------------------------------------------------------- from PyTorch


def from_torch(module: Any) -> Any:
    """A portaconv model of the same network as the PyTorch ``module``, on the active
    backend, with copies of its parameters and buffers (in the module's floating dtype) and
    in its mode, so that forward gives the module's outputs in training and in evaluation.

    Takes ``nn.Sequential`` (nested too) of ``nn.Conv1d``/``Conv2d`` (any kernel, stride,
    padding, dilation, groups, bias; zero padding), ``nn.BatchNorm1d``/``2d``,
    ``nn.LayerNorm``, ``nn.GroupNorm``, ``nn.MaxPool1d``/``2d``, ``nn.AvgPool1d``/``2d``,
    ``nn.AdaptiveAvgPool1d``/``2d``, ``nn.Linear``, the activations portaconv has
    (``ReLU``, ``ReLU6``, ``LeakyReLU``, ``GELU``, ``SiLU``, ``Hardswish``, ``Sigmoid``,
    ``Tanh``, ``Softmax``, ``Identity``), ``nn.Dropout``/``1d``/``2d``, ``nn.Flatten()``
    and the ``Residual`` of ``portaconv.interop.torch_modules``. Anything else, or an
    option portaconv's layer lacks, is a ``TypeError`` naming the module and where it is.
    A single module (not a Sequential) gives a single layer.
    """
    torch = require("torch", "from_torch")
    if not isinstance(module, torch.nn.Module):
        raise TypeError(
            f"from_torch: module must be a torch.nn.Module, got {type(module).__name__}"
        )
    floating = [t for t in (*module.parameters(), *module.buffers()) if t.is_floating_point()]
    dtypes = {str(t.dtype).removeprefix("torch.") for t in floating}
    if len(dtypes) > 1:
        raise ValueError(
            f"from_torch: the module's tensors have several dtypes {sorted(dtypes)}; "
            "portaconv's layers of one network share one"
        )
    dtype = dtypes.pop() if dtypes else None
    if dtype not in (None, "float32", "float64"):
        raise ValueError(f"from_torch: the module is {dtype}; portaconv takes float32 or float64")
    with use_backend(dtype=dtype) if dtype else nullcontext():
        model = _layer(module, torch.nn, "module")
    return model.train(module.training)


def _values(tensor: Any) -> Any:
    return tensor.detach().cpu().numpy().copy()


def _refuse(module: Any, where: str, why: str) -> TypeError:
    return TypeError(f"from_torch: {where} is {module!r}: {why}")


def _layer(module: Any, nn: Any, where: str) -> Any:
    """The portaconv layer or model of one torch module, with its state copied."""
    kind = type(module).__name__
    if type(module) is nn.Sequential:
        return Sequential(
            *(_layer(child, nn, f"{where}[{name}]") for name, child in module.named_children())
        )
    from .torch_modules import Residual as TorchResidual

    if type(module) is TorchResidual:
        shortcut = module.shortcut
        return Residual(
            _layer(module.body, nn, f"{where}.body"),
            None if type(shortcut) is nn.Identity else _layer(shortcut, nn, f"{where}.shortcut"),
        )
    if type(module) in (nn.Conv1d, nn.Conv2d):
        if module.padding_mode != "zeros":
            raise _refuse(module, where, "portaconv pads with zeros only (padding_mode='zeros')")
        weight = _values(module.weight)
        bias = None if module.bias is None else _values(module.bias)
        return getattr(L, kind)(
            module.in_channels,
            module.out_channels,
            tuple(module.kernel_size),
            tuple(module.stride),
            module.padding if isinstance(module.padding, str) else tuple(module.padding),
            lambda *shape: weight,
            None if bias is None else (lambda *shape: bias),
            dilation=tuple(module.dilation),
            groups=module.groups,
            bias=bias is not None,
        )
    if type(module) is nn.Linear:
        weight, bias = _values(module.weight), module.bias
        if bias is None:
            raise _refuse(module, where, "portaconv's Linear always has a bias")
        bias = _values(bias)
        return L.Linear(module.in_features, module.out_features, lambda *s: weight, lambda *s: bias)
    if type(module) in (nn.BatchNorm1d, nn.BatchNorm2d):
        if not (module.affine and module.track_running_stats) or module.momentum is None:
            raise _refuse(
                module,
                where,
                "portaconv's BatchNorm has a scale and shift (affine=True), keeps running "
                "statistics (track_running_stats=True) with a momentum (not None)",
            )
        layer = getattr(L, kind)(module.num_features, module.eps, module.momentum)
        return _loaded(layer, module, ("BW", "Bb", "running_M", "running_V"))
    if type(module) is nn.LayerNorm:
        if module.elementwise_affine and module.bias is None:
            raise _refuse(module, where, "portaconv's LayerNorm has a shift with its scale")
        layer = L.LayerNorm(tuple(module.normalized_shape), module.eps, module.elementwise_affine)
        return _loaded(layer, module, layer.param_names)
    if type(module) is nn.GroupNorm:
        layer = L.GroupNorm(module.num_groups, module.num_channels, module.eps, module.affine)
        return _loaded(layer, module, layer.param_names)
    if type(module) in (nn.MaxPool1d, nn.MaxPool2d):
        if module.ceil_mode or module.return_indices or _per_axis(module.dilation) != {1}:
            raise _refuse(
                module, where, "portaconv's max pooling has no ceil_mode, dilation or indices"
            )
        return getattr(L, kind)(
            kernel_size=module.kernel_size, stride=module.stride, padding=module.padding
        )
    if type(module) in (nn.AvgPool1d, nn.AvgPool2d):
        if module.ceil_mode or getattr(module, "divisor_override", None) is not None:
            raise _refuse(
                module, where, "portaconv's average pooling has no ceil_mode or divisor_override"
            )
        return getattr(L, kind)(
            _pair(module.kernel_size),
            _pair(module.stride),
            _pair(module.padding),
            count_include_pad=module.count_include_pad,
        )
    if type(module) in (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d):
        if None in _per_axis(module.output_size):
            raise _refuse(module, where, "portaconv's adaptive pooling needs every output size")
        return getattr(L, kind)(_pair(module.output_size))
    if type(module) is nn.Flatten:
        if (module.start_dim, module.end_dim) != (1, -1):
            raise _refuse(module, where, "portaconv's Flatten keeps axis 0 and flattens the rest")
        return L.Flatten()
    if type(module) in tuple(getattr(nn, name) for name in _ACTIVATIONS):
        return getattr(L, kind)()
    if type(module) is nn.LeakyReLU:
        return L.LeakyReLU(module.negative_slope)
    if type(module) is nn.GELU:
        return L.GELU(module.approximate)
    if type(module) is nn.Softmax:
        if module.dim is None:
            raise _refuse(module, where, "portaconv's Softmax needs its dim")
        return L.Softmax(module.dim)
    if type(module) in tuple(getattr(nn, name) for name in _DROPOUTS):
        return getattr(L, kind)(module.p)
    raise _refuse(
        module,
        where,
        "portaconv has no layer for it (from_torch takes nn.Sequential of convolutions, "
        "normalisations, pooling, Linear, activations, Dropout and Flatten)",
    )


def _loaded(layer: Any, module: Any, names: tuple[str, ...]) -> Any:
    """``layer`` with the state ``names`` copied from ``module``'s tensors of the twin names."""
    tensors = {**dict(module.named_parameters()), **dict(module.named_buffers())}
    layer.load_state_dict({name: _values(tensors[TORCH_NAMES[name]]) for name in names})
    return layer


def _per_axis(value: Any) -> set:
    return set(value) if isinstance(value, (tuple, list)) else {value}


def _pair(value: Any) -> Any:
    """A torch size argument as portaconv takes it: an int, or a tuple of ints."""
    return tuple(value) if isinstance(value, (tuple, list)) else value
