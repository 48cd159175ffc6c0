"""Optimizers that update a model's parameters, with PyTorch's exact update rules.

A model is anything with ``parameters()`` and ``gradients()`` returning dicts keyed by the
same names (a :class:`~portaconv.layers.Layer`, or a container whose keys look like
``"0.W"``, as :meth:`portaconv.models.Model.parameters` says). The arrays are looked up by
name on every :meth:`Optimizer.step`, so a parameter replaced between steps
(``load_state_dict``) is the one updated. Every update goes
through :func:`portaconv.backend.scaled_add`: in place where the library allows it (NumPy,
PyTorch, CuPy, array-api-strict), and otherwise (JAX's immutable arrays) a new array that
replaces the parameter through ``model.set_parameter(name, value)``. Optimizer state
(momentum buffers, Adam moments) is keyed by parameter name and created lazily with
``zeros_like`` on the parameter's own namespace, device and dtype; hyper-parameters are
Python floats, so float32 parameters stay float32.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import array_api_compat
from array_api_compat import array_namespace, device

from ..backend._arrays import scaled_add, to_numpy, updates_in_place
from ..backend._delegate import fused_adam
from ..checks import check_int, check_real, check_state_dict, shape_str


class Optimizer:
    """Base class: validates the model, keeps ``lr`` and per-parameter state, and steps.

    Subclasses list their hyper-parameters in ``_hyper_names`` (set through
    :meth:`_configure`, which validates them) and implement :meth:`_update`, the rule for
    one parameter ``p`` with gradient ``g`` and that parameter's ``state`` dict.
    """

    #: Hyper-parameters saved by :meth:`state_dict` besides ``lr``.
    _hyper_names: tuple[str, ...] = ()
    #: Array buffers a parameter's state may hold (its ``step`` count is a Python int).
    _buffer_names: tuple[str, ...] = ()
    #: Integer counters a parameter's state may hold.
    _counter_names: tuple[str, ...] = ()

    def __init__(self, model: Any, lr: float) -> None:
        for method in ("parameters", "gradients"):
            if not callable(getattr(model, method, None)):
                raise TypeError(
                    f"{self.name}: model must have parameters() and gradients() methods "
                    f"(a portaconv Layer or model), got {type(model).__name__}"
                )
        self.model = model
        params = self._parameters()
        if not params:
            raise ValueError(f"{self.name}: the model has no parameters to optimize")
        immutable = [name for name, p in params.items() if not updates_in_place(p)]
        if immutable and not callable(getattr(model, "set_parameter", None)):
            raise TypeError(
                f"{self.name}: the parameter {immutable[0]!r} cannot change in place (an "
                f"immutable array, as JAX's), so the model must have a set_parameter(name, "
                f"value) method to take the updated one; {type(model).__name__} has none"
            )
        self.lr = lr
        #: Per-parameter state: ``{param_name: {buffer_name: array, "step": int}}``.
        self.state: dict[str, dict[str, Any]] = {}
        #: How many times :meth:`step` has run.
        self.step_count = 0

    @property
    def name(self) -> str:
        return type(self).__name__

    @property
    def lr(self) -> float:
        """The learning rate (a Python float >= 0); schedulers set it once per epoch."""
        return self._lr

    @lr.setter
    def lr(self, value: float) -> None:
        self._lr = check_real(self.name, "lr", value)

    def __repr__(self) -> str:
        hyper = ", ".join(f"{n}={getattr(self, n)!r}" for n in ("lr", *self._hyper_names))
        return f"{self.name}({hyper})"

    # ---------------------------------------------------------------------------- stepping

    def step(self) -> None:
        """Update every parameter from its current gradient (in place where the library
        allows it, else through ``model.set_parameter``).

        All gradients are checked first (present, same shape, library and dtype as the
        parameter), so a bad one leaves every parameter untouched.
        """
        for param_name, (p, g) in self._parameters_and_gradients().items():
            self._update_named(param_name, p, g)
        self.step_count += 1

    def _update_named(self, param_name: str, p: Any, g: Any) -> None:
        """:meth:`_update` for the parameter ``param_name``, rebinding it if immutable."""
        immutable = not updates_in_place(p)
        rebind = functools.partial(self.model.set_parameter, param_name) if immutable else None
        self._update(p, g, self.state.setdefault(param_name, {}), rebind)

    def zero_grad(self) -> None:
        """Reset the model's gradients to zeros (``model.zero_grad()``)."""
        if not callable(getattr(self.model, "zero_grad", None)):
            raise TypeError(
                f"{self.name}: zero_grad needs the model to have a zero_grad() method, "
                f"{type(self.model).__name__} has none"
            )
        self.model.zero_grad()

    def _update(
        self, p: Any, g: Any, state: dict[str, Any], rebind: Callable[[Any], None] | None
    ) -> None:
        """Update ``p`` with ``scaled_add(p, ..., rebind=rebind)``; ``rebind`` puts a new array
        (where ``p`` is immutable) in the model."""
        raise NotImplementedError

    def _parameters(self) -> Mapping[str, Any]:
        params = self.model.parameters()
        if not isinstance(params, Mapping):
            raise TypeError(
                f"{self.name}: model.parameters() must return a dict of name -> array, "
                f"got {type(params).__name__}"
            )
        return params

    def _parameters_and_gradients(self) -> dict[str, tuple[Any, Any]]:
        params = self._parameters()
        grads = self.model.gradients()
        if not isinstance(grads, Mapping):
            raise TypeError(
                f"{self.name}: model.gradients() must return a dict of name -> array, "
                f"got {type(grads).__name__}"
            )
        pairs = {}
        for param_name, p in params.items():
            g = grads.get(param_name)
            if g is None:
                raise ValueError(
                    f"{self.name}: parameter {param_name!r} has no gradient; "
                    "call backward before step"
                )
            self._check_gradient(param_name, p, g)
            pairs[param_name] = (p, g)
        return pairs

    def _check_gradient(self, param_name: str, p: Any, g: Any) -> None:
        where = f"{self.name}: the gradient of {param_name!r}"
        if not array_api_compat.is_array_api_obj(g) or isinstance(g, (int, float)):
            raise TypeError(f"{where} must be an array, got {type(g).__name__}")
        try:
            array_namespace(p, g)
        except TypeError:
            raise TypeError(
                f"{where} is a {type(g).__module__}.{type(g).__name__} but the parameter is "
                f"a {type(p).__module__}.{type(p).__name__}"
            ) from None
        if tuple(g.shape) != tuple(p.shape):
            raise ValueError(
                f"{where} has shape {shape_str(g.shape)} but the parameter has {shape_str(p.shape)}"
            )
        if g.dtype != p.dtype:
            raise TypeError(f"{where} has dtype {g.dtype} but the parameter has {p.dtype}")

    # ------------------------------------------------------------------------ saving state

    def state_dict(self) -> dict[str, Any]:
        """A plain dict: ``type``, ``lr``, the hyper-parameters and ``step`` (JSON-able
        Python values), and ``state``: ``{param_name: {buffer_name: array}}`` (copies, on
        the parameters' backend; Adam's per-parameter ``step`` is an int)."""
        state = {
            param_name: {
                key: value if isinstance(value, int) else _copy(value)
                for key, value in buffers.items()
            }
            for param_name, buffers in self.state.items()
        }
        return {
            "type": self.name,
            "lr": self.lr,
            **self._hyper_parameters(),
            "step": self.step_count,
            "state": state,
        }

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore ``lr``, the hyper-parameters, the step count and the per-parameter state.

        Arrays may come from any library (NumPy from a checkpoint); each is copied onto its
        parameter's namespace, device and dtype. Nothing changes if a check fails.
        """
        check_state_dict(
            self.name, state_dict, ("lr", *self._hyper_names, "step", "state"), "optimizer"
        )
        step_count = check_int(self.name, "state_dict['step']", state_dict["step"], minimum=0)
        per_param = state_dict["state"]
        if not isinstance(per_param, Mapping):
            raise TypeError(
                f"{self.name}: state_dict['state'] must be a dict of parameter name -> "
                f"buffers, got {type(per_param).__name__}"
            )
        params = self._parameters()
        state = {
            param_name: self._load_buffers(param_name, params, buffers)
            for param_name, buffers in per_param.items()
        }
        # Everything is validated before anything changes (_configure checks, then sets).
        lr = check_real(self.name, "lr", state_dict["lr"])
        self._configure(**{n: state_dict[n] for n in self._hyper_names})
        self.lr = lr
        self.state = state
        self.step_count = step_count

    def _load_buffers(
        self, param_name: str, params: Mapping[str, Any], buffers: Any
    ) -> dict[str, Any]:
        where = f"{self.name}: state_dict['state'][{param_name!r}]"
        if param_name not in params:
            raise ValueError(
                f"{where} names no parameter of the model; parameters are {list(params)}"
            )
        if not isinstance(buffers, Mapping):
            raise TypeError(f"{where} must be a dict of buffers, got {type(buffers).__name__}")
        p = params[param_name]
        xp = array_namespace(p)
        loaded: dict[str, Any] = {}
        for key, value in buffers.items():
            if key in self._counter_names:
                arg = f"state_dict['state'][{param_name!r}][{key!r}]"
                loaded[key] = check_int(self.name, arg, value, minimum=0)
                continue
            if key not in self._buffer_names:
                raise ValueError(
                    f"{where} has an unknown buffer {key!r}; "
                    f"{self.name} keeps {[*self._buffer_names, *self._counter_names]}"
                )
            if not array_api_compat.is_array_api_obj(value) or isinstance(value, (int, float)):
                raise TypeError(f"{where}[{key!r}] must be an array, got {type(value).__name__}")
            array = xp.asarray(to_numpy(value), dtype=p.dtype, device=device(p), copy=True)
            if tuple(array.shape) != tuple(p.shape):
                raise ValueError(
                    f"{where}[{key!r}] must have the parameter's shape {shape_str(p.shape)}, "
                    f"got {shape_str(array.shape)}"
                )
            loaded[key] = array
        return loaded

    def _hyper_parameters(self) -> dict[str, Any]:
        return {n: _plain(getattr(self, n)) for n in self._hyper_names}

    def _configure(self, **hyper: Any) -> None:
        raise NotImplementedError


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum, as ``torch.optim.SGD``.

    For each parameter ``p`` with gradient ``g`` (same shape)::

        g = g + weight_decay * p                      (L2 penalty, if weight_decay != 0)
        buf = g  on the first step,  else  buf = momentum * buf + (1 - dampening) * g
        g = g + momentum * buf  if nesterov  else  buf  (if momentum != 0)
        p -= lr * g

    Nesterov momentum needs ``momentum > 0`` and ``dampening == 0``.
    """

    _hyper_names = ("momentum", "dampening", "weight_decay", "nesterov")
    _buffer_names = ("momentum_buffer",)

    def __init__(
        self,
        model: Any,
        lr: float,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
    ) -> None:
        super().__init__(model, lr)
        self._configure(
            momentum=momentum, dampening=dampening, weight_decay=weight_decay, nesterov=nesterov
        )

    def _configure(
        self, momentum: float, dampening: float, weight_decay: float, nesterov: bool
    ) -> None:
        momentum = check_real(self.name, "momentum", momentum)
        dampening = check_real(self.name, "dampening", dampening)
        weight_decay = check_real(self.name, "weight_decay", weight_decay)
        nesterov = _check_bool(self.name, "nesterov", nesterov)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError(
                f"{self.name}: nesterov momentum requires momentum > 0 and dampening == 0, "
                f"got momentum={momentum}, dampening={dampening}"
            )
        self.momentum = momentum
        self.dampening = dampening
        self.weight_decay = weight_decay
        self.nesterov = nesterov

    def _update(
        self, p: Any, g: Any, state: dict[str, Any], rebind: Callable[[Any], None] | None
    ) -> None:
        xp = array_namespace(p)
        if self.weight_decay != 0:
            g = g + self.weight_decay * p
        if self.momentum != 0:
            buf = state.get("momentum_buffer")
            if buf is None:
                # A copy: the buffer is updated in place and must not alias the gradient.
                buf = xp.asarray(g, copy=True)
            else:
                buf = scaled_add(buf, g, 1 - self.dampening, scale=self.momentum)
            state["momentum_buffer"] = buf
            g = g + self.momentum * buf if self.nesterov else buf
        scaled_add(p, g, -self.lr, rebind=rebind)


class Adam(Optimizer):
    """Adam (Kingma & Ba), as ``torch.optim.Adam``; ``amsgrad`` as Reddi et al.

    For each parameter ``p`` with gradient ``g``, at its step ``t = 1, 2, ...``::

        g = g + weight_decay * p                      (L2 penalty, if weight_decay != 0)
        m = beta1 * m + (1 - beta1) * g               (exp_avg, starts at 0)
        v = beta2 * v + (1 - beta2) * g * g           (exp_avg_sq, starts at 0)
        v_hat = max(v_hat, v) if amsgrad else v       (max_exp_avg_sq)
        p -= lr / (1 - beta1**t) * m / (sqrt(v_hat) / sqrt(1 - beta2**t) + eps)
    """

    _hyper_names = ("betas", "eps", "weight_decay", "amsgrad")
    _buffer_names = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")
    _counter_names = ("step",)
    #: AdamW decays the weights directly instead of adding an L2 term to the gradient.
    _decoupled_weight_decay = False

    def __init__(
        self,
        model: Any,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
    ) -> None:
        super().__init__(model, lr)
        self._configure(betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad)

    def _configure(
        self, betas: tuple[float, float], eps: float, weight_decay: float, amsgrad: bool
    ) -> None:
        if isinstance(betas, (str, bytes)) or not hasattr(betas, "__len__") or len(betas) != 2:
            raise TypeError(f"{self.name}: betas must be a pair (beta1, beta2), got {betas!r}")
        beta1, beta2 = (
            check_real(self.name, f"betas[{i}]", beta, below=1.0) for i, beta in enumerate(betas)
        )
        eps = check_real(self.name, "eps", eps)
        weight_decay = check_real(self.name, "weight_decay", weight_decay)
        amsgrad = _check_bool(self.name, "amsgrad", amsgrad)
        self.betas = (beta1, beta2)
        self.eps = eps
        self.weight_decay = weight_decay
        self.amsgrad = amsgrad

    def step(self) -> None:
        """As :meth:`Optimizer.step`. Parameters that the backend has a fused update for
        (``backend._delegate.fused_adam``; without amsgrad or an L2 term) go through it
        together, with the bits of the update here."""
        if self.amsgrad or (self.weight_decay != 0 and not self._decoupled_weight_decay):
            super().step()
            return
        fused, update = [], None
        for param_name, (p, g) in self._parameters_and_gradients().items():
            state = self.state.setdefault(param_name, {})
            buffers = (state.get("exp_avg", p), state.get("exp_avg_sq", p))
            body = fused_adam(p, g, *buffers)
            if body is None:
                self._update_named(param_name, p, g)
                continue
            update = body
            self._init_state(p, state)
            if self.weight_decay != 0:  # AdamW's decay first, as in _update
                scaled_add(p, None, 0.0, 1 - self.lr * self.weight_decay)
            fused.append((p, g, state["exp_avg"], state["exp_avg_sq"], *self._scales(state)))
        if fused:
            update(fused, *self.betas, self.eps)
        self.step_count += 1

    def _init_state(self, p: Any, state: dict[str, Any]) -> None:
        """Zero moments at the first step; count the step."""
        if not state:
            xp = array_namespace(p)
            state["step"] = 0
            state["exp_avg"] = xp.zeros_like(p)
            state["exp_avg_sq"] = xp.zeros_like(p)
        state["step"] += 1

    def _scales(self, state: dict[str, Any]) -> tuple[float, float]:
        """(step size ``lr / (1 - beta1**t)``, ``sqrt(1 - beta2**t)``) at the state's step."""
        beta1, beta2 = self.betas
        step = state["step"]
        return self.lr / (1 - beta1**step), (1 - beta2**step) ** 0.5

    def _update(
        self, p: Any, g: Any, state: dict[str, Any], rebind: Callable[[Any], None] | None
    ) -> None:
        xp = array_namespace(p)
        beta1, beta2 = self.betas
        self._init_state(p, state)
        if self.weight_decay != 0:
            if self._decoupled_weight_decay:
                p = scaled_add(p, None, 0.0, 1 - self.lr * self.weight_decay, rebind)
            else:
                g = g + self.weight_decay * p
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        exp_avg = scaled_add(exp_avg, g - exp_avg, 1 - beta1)  # torch's lerp towards g
        exp_avg_sq = scaled_add(exp_avg_sq, g * g, 1 - beta2, scale=beta2)
        state["exp_avg"], state["exp_avg_sq"] = exp_avg, exp_avg_sq
        if self.amsgrad:
            previous = state.get("max_exp_avg_sq")
            if previous is None:
                previous = xp.zeros_like(p)
            second_moment = state["max_exp_avg_sq"] = xp.maximum(previous, exp_avg_sq)
        else:
            second_moment = exp_avg_sq
        step_size, bias_correction2_sqrt = self._scales(state)
        denom = xp.sqrt(second_moment) / bias_correction2_sqrt + self.eps
        scaled_add(p, exp_avg / denom, -step_size, rebind=rebind)


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter), as ``torch.optim.AdamW``.

    Each step first shrinks the weights, ``p *= 1 - lr * weight_decay``, then applies the
    :class:`Adam` update with no L2 term in the gradient.
    """

    _decoupled_weight_decay = True

    def __init__(
        self,
        model: Any,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
    ) -> None:
        super().__init__(model, lr, betas, eps, weight_decay, amsgrad)


# ------------------------------------------------------------------------------- helpers


def _check_bool(owner: str, arg: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{owner}: {arg} must be True or False, got {value!r}")
    return value


def _plain(value: Any) -> Any:
    """A JSON-able version of a hyper-parameter (tuples become lists)."""
    return list(value) if isinstance(value, tuple) else value


def _copy(x: Any) -> Any:
    return array_namespace(x).asarray(x, copy=True)
