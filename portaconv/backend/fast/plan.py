"""A model's layers as an execution plan: single layers, and fused groups where they pay.

A model runs its steps in order and backpropagates through them in reverse; each step has
``forward`` and ``backward`` and names the layers it covers (``where``). With the fast
paths off every layer is its own step. With them on, the plan groups:

- ``BatchNorm`` (:class:`NormStep`), alone, with the ``ReLU`` after it, or with a ReLU and a
  max pooling without padding: on NumPy in training, chunked passes shared between threads,
  one pass over the activations each way where the layers make two or three (``norm.py``);
  with the pooling, the BatchNorm's input is pooled first where every channel's scale is
  positive. Elsewhere the layers in turn.
- ``ReLU`` + max pooling (:class:`PoolThenReLU`): the pooling first, then the ReLU on its
  output, the ReLU's backward first. Max commutes with the nondecreasing ReLU, so the
  outputs are equal (a zero's sign aside) and, as both orders send a window's gradient to
  its first maximum, so are the gradients; the ReLU then touches 1/kernel^d of the values.
  With padding too: a padded -inf never wins a window, which always holds an input element.

A container (a model inside a model: a ``Sequential`` block, a ``Residual``) is one step: its
own forward runs its own plan; it counts as a step with parameters when any layer inside it
has some, and is told when its input needs no gradient (``backward(grad, input_grad=False)``).
While the steps run on NumPy, OpenBLAS is held at one thread (:meth:`Plan.held`) where some
layer, at any depth of containers, shares its work between portaconv's threads
(convolutions, batch normalisation), so that none of OpenBLAS's idle threads spins beside
them; a container's own hold inside is then only a count (the holds nest).
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator
from typing import Any

from array_api_compat import is_numpy_array

from .norm import BatchNormTrain, batch_norm_applies
from .threads import blas_released, single_threaded_blas


def _kinds() -> tuple[type, ...]:
    """(BatchNorm base, ReLU, max-pooling base, convolution base), imported late: the layers
    import the backend."""
    from ...layers.activation import ReLU
    from ...layers.conv import _ConvNd
    from ...layers.normalization import _BatchNorm
    from ...layers.pool import _PoolNd

    return _BatchNorm, ReLU, _PoolNd, _ConvNd


def is_container(layer: Any) -> bool:
    """Whether ``layer`` is a model holding layers of its own (``named_layers``)."""
    return callable(getattr(layer, "named_layers", None))


def leaves(layers: list[Any]) -> Iterator[Any]:
    """The layers, those inside containers (at any depth) in their place."""
    for layer in layers:
        if is_container(layer):
            yield from leaves([inner for _, inner in layer.named_layers()])
        else:
            yield layer


def label(layer: Any) -> str:
    """A layer as an error message places it: its repr, a container's name alone (its
    repr spans lines, and the container's own message names the layer inside)."""
    return type(layer).__name__ if is_container(layer) else repr(layer)


class Step:
    """One layer alone. A layer that is not portaconv's runs with OpenBLAS's count given
    back to the program (``threads.blas_released``): its code may read or set it.

    ``param_names`` is the layer's; a container's are the dotted names of its parameters."""

    def __init__(self, layer: Any, where: str) -> None:
        self.layer, self.where = layer, where
        self.param_names = getattr(layer, "param_names", ())
        self._skips_input_grad = False  # backward takes input_grad (a container's)
        if is_container(layer):
            self.param_names = tuple(getattr(layer, "parameters", dict)())
            backward = inspect.signature(layer.backward).parameters
            self._skips_input_grad = "input_grad" in backward
        own = type(layer).__module__.startswith("portaconv.")
        self._context = contextlib.nullcontext if own else blas_released

    def forward(self, Z: Any) -> Any:
        with self._context():
            return self.layer.forward(Z)

    def backward(self, grad: Any, input_grad: bool = True) -> Any:
        layer = self.layer
        with self._context():
            if not input_grad and self._skips_input_grad:
                return layer.backward(grad, input_grad=False)
            if input_grad or not hasattr(layer, "needs_input_grad"):
                return layer.backward(grad)
            saved, layer.needs_input_grad = layer.needs_input_grad, False
            try:
                return layer.backward(grad)
            finally:
                layer.needs_input_grad = saved


class PoolThenReLU:
    """A ``ReLU`` followed by a max pooling, run pooling first (see the module docstring)."""

    param_names = ()

    def __init__(self, relu: Any, pool: Any, where: str) -> None:
        self.relu, self.pool, self.where = relu, pool, where

    def forward(self, Z: Any) -> Any:
        return self.relu.forward(self.pool.forward(Z))

    def backward(self, grad: Any, input_grad: bool = True) -> Any:
        return self.pool.backward(self.relu.backward(grad))


class NormStep:
    """``BatchNorm`` alone, or with the ``ReLU`` (and the max pooling) after it, as one step."""

    def __init__(self, norm: Any, relu: Any, pool: Any, where: str) -> None:
        self.norm, self.relu, self.pool, self.where = norm, relu, pool, where
        self.param_names = norm.param_names
        self._engine: Any = None  # the NumPy pass that ran the last forward, if one did

    def _in_turn(self, Z: Any) -> Any:
        A = self.norm.forward(Z)
        if self.relu is not None:
            A = self.relu.forward(A)
        return A if self.pool is None else self.pool.forward(A)

    def forward(self, Z: Any) -> Any:
        norm, relu, pool = self.norm, self.relu, self.pool
        self._engine = None
        if not (norm.training and norm.sync is None and batch_norm_applies(Z)):
            return self._in_turn(Z)
        Z, BW, Bb, running_M, running_V = norm._checked_input(Z, None)
        engine = self._engine = BatchNormTrain(norm.eps, relu=relu is not None)
        A = engine.forward(Z, BW, Bb, pool)
        NZ = None if engine.pooled else engine.normalised
        norm._record_batch_statistics(
            engine.M, engine.V, engine.n, running_M, running_V, NZ, engine.inv_std
        )
        if relu is not None:
            relu.Z, relu.A, relu._spec = A, A, norm._spec  # as its own forward leaves it
        if pool is None or engine.pooled:
            self._out = (tuple(A.shape), norm._spec)
            return A
        return pool.forward(A)

    def backward(self, grad: Any, input_grad: bool = True) -> Any:
        norm, relu, pool, engine = self.norm, self.relu, self.pool, self._engine
        if engine is None or not engine.pooled:
            if pool is not None:
                grad = pool.backward(grad)
        if engine is None:
            return norm.backward(grad if relu is None else relu.backward(grad))
        if engine.pooled:
            norm._gradient_arg(grad, "dLdA", *self._out)
            dLdZ, dLdBW, dLdBb = engine.backward_pooled(grad, pool)
        else:
            norm._gradient_arg(grad, "dLdA" if relu else "dLdBZ", engine.shape, norm._spec)
            dLdZ, dLdBW, dLdBb = engine.backward(grad)  # the ReLU's mask applied first
        norm._set_grads(BW=dLdBW, Bb=dLdBb)
        return norm._as_input(dLdZ)


class Plan:
    """The steps of a sequence of layers, and whether they share work between threads."""

    def __init__(self, steps: list[Any], threads_own_work: bool) -> None:
        self.steps, self.threads_own_work = steps, threads_own_work

    def held(self, A: Any) -> contextlib.AbstractContextManager:
        """OpenBLAS at one thread for NumPy ``A`` where a layer threads its own work."""
        if self.threads_own_work and is_numpy_array(A):
            return single_threaded_blas()
        return contextlib.nullcontext()


def plan(layers: list[Any], fast: bool) -> Plan:
    """The layers as steps; fused groups only when ``fast``."""
    if not fast:
        steps = [Step(layer, f"layers[{i}] {label(layer)}") for i, layer in enumerate(layers)]
        return Plan(steps, False)
    norm_kind, relu_kind, pool_kind, conv_kind = _kinds()

    def is_max_pool(layer: Any) -> bool:
        return isinstance(layer, pool_kind) and layer._max

    def unpadded_max_pool(layer: Any) -> bool:
        # NormStep's pooled-first backward writes the pooling's gradient straight into the
        # input's chunks: a padded pool's gradient has the padded shape, so it runs alone
        return is_max_pool(layer) and not any(layer._padding)

    steps: list[Any] = []
    i = 0
    while i < len(layers):
        layer = layers[i]
        relu_next = i + 1 < len(layers) and type(layers[i + 1]) is relu_kind
        pool_after = i + 2 < len(layers) and unpadded_max_pool(layers[i + 2])
        if isinstance(layer, norm_kind):
            count = 1 + relu_next + (relu_next and pool_after)
            relu = layers[i + 1] if relu_next else None
            pool = layers[i + 2] if count == 3 else None
            names = ", ".join(repr(x) for x in layers[i : i + count])
            where = f"layers[{i}:{i + 3}] {names}" if count == 3 else f"layers[{i}] {layer!r}"
            steps.append(NormStep(layer, relu, pool, where))
            i += count
        elif type(layer) is relu_kind and i + 1 < len(layers) and is_max_pool(layers[i + 1]):
            pool = layers[i + 1]
            steps.append(PoolThenReLU(layer, pool, f"layers[{i + 1}] {pool!r}"))
            i += 2
        else:
            steps.append(Step(layer, f"layers[{i}] {label(layer)}"))
            i += 1
    threads = any(isinstance(layer, (norm_kind, conv_kind)) for layer in leaves(layers))
    return Plan(steps, threads)
