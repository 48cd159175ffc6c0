"""The training step as one compiled function (``Trainer(compile=True)``).

The layers keep their object API: parameters, gradients and buffers are attributes, the
optimizer keeps its state in a dict. A compiler wants a pure function of arrays instead, so
:class:`CompiledStep` lifts the objects in and out around the eager step, as Flax NNX's
split/merge and Equinox's filter_jit do::

    step(state, X, y) -> (new state, (batch loss sum, correct count))

    state = parameters, buffers (BatchNorm's running statistics), the optimizer's buffers,
            its learning rate and step counters, JAX's random key (Dropout's masks),
            [gradients: out only]

``step`` loads ``state`` into the attributes, runs the eager step (forward, loss, backward,
optimizer update: the very code the eager trainer runs) and reads the attributes back. The
compiler traces it once per batch shape (``torch.compile`` or ``jax.jit``, see
``portaconv.backend.compile_step``); every later call runs the compiled function and
:class:`CompiledStep` loads the new state into the objects.

Host numbers that change during training would compile the step again at every new value,
so they become 0-d arrays on the parameters' device while the compiled steps run
(:meth:`CompiledStep.lift`), and Python numbers again afterwards (:meth:`CompiledStep.lower`,
which the trainer calls at the end of each epoch, before anything reads or saves them): the
optimizer's learning rate (a scheduler changes it between epochs), its step count and its
per-parameter counters (Adam's ``step``).

The first step of a run (the optimizer's first) is eager: it creates the optimizer's state
(momentum buffers, Adam's moments), so that every compiled step finds the same arrays and
only updates them. A resumed run compiles from its first step, as the run it continues did.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from ..backend._compile import (
    check_compiles,
    compile_step,
    compiled_random,
    scalar_array,
    set_step_random_state,
    step_random_state,
    tracing_for,
)

Slot = tuple[str, Any, str]  # (dotted name, owner object, attribute)


def _slots(model: Any, prefix: str = "") -> Iterator[tuple[str, Slot]]:
    """("param" | "grad" | "buffer", (name, owner, attribute)) for every layer of ``model``."""
    if callable(getattr(model, "named_layers", None)):
        for name, layer in model.named_layers():
            yield from _slots(layer, f"{prefix}{name}.")
        return
    for name in getattr(model, "param_names", ()):
        yield "param", (prefix + name, model, name)
        yield "grad", (prefix + name, model, "dLd" + name)
    for name in getattr(model, "buffer_names", ()):
        yield "buffer", (prefix + name, model, name)


class CompiledStep:
    """``step(X, y) -> (loss sum, correct)``, an eager training step of ``model`` updated by
    ``optimizer``, run as one compiled function (see the module's notes).

    ``ValueError`` (from ``portaconv.backend.check_compiles``) unless the model's
    arrays belong to a library that compiles (torch, JAX).
    """

    def __init__(
        self, step: Callable[[Any, Any], tuple[Any, Any]], model: Any, optimizer: Any
    ) -> None:
        params = list(model.parameters().values())
        if not params:
            raise ValueError("Trainer: compile=True needs a model with parameters")
        check_compiles("Trainer", params[0])
        self.step, self.model, self.optimizer = step, model, optimizer
        self._slots: dict[str, list[Slot]] = {"param": [], "grad": [], "buffer": []}
        for kind, slot in _slots(model):
            self._slots[kind].append(slot)
        self._compiled = compile_step(self._pure_step, params[0])

    def __call__(self, X: Any, y: Any) -> tuple[Any, Any]:
        if isinstance(self.optimizer.step_count, int) and self.optimizer.step_count == 0:
            return self.step(X, y)  # eager: creates the optimizer's state
        self.lift()
        like = self._like()
        state = self._state(grads=False)
        try:
            with compiled_random(like), tracing_for(like):
                new_state, out = self._compiled(state, X, y)
        except BaseException:
            self._load(state)  # a failed trace leaves its traced arrays in the attributes
            raise
        self._load(new_state)
        return out

    def _like(self) -> Any:
        """A parameter: where the step's arrays live (looked up anew: JAX's are replaced)."""
        return next(iter(self.model.parameters().values()))

    def _pure_step(self, state: dict[str, Any], X: Any, y: Any) -> tuple[dict[str, Any], Any]:
        """What the compiler traces: the eager step between loading and reading the state."""
        self._load(state)
        out = self.step(X, y)
        return self._state(grads=True), out

    # ----------------------------------------------------------------- the state, in and out

    def _state(self, grads: bool) -> dict[str, Any]:
        kinds = ("param", "buffer", "grad") if grads else ("param", "buffer")
        state: dict[str, Any] = {
            kind: {name: getattr(owner, attr) for name, owner, attr in self._slots[kind]}
            for kind in kinds
        }
        opt = self.optimizer
        state["optimizer"] = {name: dict(buffers) for name, buffers in opt.state.items()}
        state["lr"], state["step_count"] = opt._lr, opt.step_count
        state["random"] = step_random_state(self._like())
        return state

    def _load(self, state: dict[str, Any]) -> None:
        for kind in ("param", "buffer", "grad"):
            values = state.get(kind, {})
            for name, owner, attr in self._slots[kind]:
                if name in values:
                    setattr(owner, attr, values[name])
        opt = self.optimizer
        for name, buffers in state["optimizer"].items():
            opt.state[name].update(buffers)
        opt._lr, opt.step_count = state["lr"], state["step_count"]
        set_step_random_state(self._like(), state["random"])

    # ------------------------------------------------------ host numbers as device scalars

    def lift(self) -> None:
        """The optimizer's learning rate and counters as 0-d arrays (see the module's notes);
        those already lifted stay as they are."""
        opt, like = self.optimizer, self._like()
        if isinstance(opt._lr, float):
            self._host_lr = opt._lr
            opt._lr = scalar_array(opt._lr, like)
        if isinstance(opt.step_count, int):
            opt.step_count = scalar_array(opt.step_count, like)
        for buffers in opt.state.values():
            for key in opt._counter_names:
                if isinstance(buffers.get(key), int):
                    buffers[key] = scalar_array(buffers[key], like)

    def lower(self) -> None:
        """Python numbers again: the learning rate as it was set, the counters read from the
        device (once an epoch: the trainer calls this after the epoch's last step)."""
        opt = self.optimizer
        if not isinstance(opt._lr, float):
            opt._lr = self._host_lr
        if not isinstance(opt.step_count, int):
            opt.step_count = _count(opt.step_count)
        for buffers in opt.state.values():
            for key in opt._counter_names:
                if key in buffers and not isinstance(buffers[key], int):
                    buffers[key] = _count(buffers[key])


def _count(x: Any) -> int:
    """A counter held as a 0-d float array, back to a Python int (exact below 2**24)."""
    return round(float(x))
