"""Fully connected layer: ``Z = A W^T + b`` with PyTorch's parameter shapes."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from array_api_compat import array_namespace

from ..backend._windows import matmul
from ..checks import shape_str
from ._base import Layer, fan_in_bound, spec_of


class Linear(Layer):
    """``A`` (N, in_features) -> ``Z`` (N, out_features); leading axes beyond N are allowed.

    ``W`` (out_features, in_features), ``b`` (out_features,), as ``torch.nn.Linear``; ``b``
    may also be the handout's column (out_features, 1), from ``bias_init_fn`` or assigned,
    and ``dLdb`` then has that shape too. ``weight_init_fn(out_features, in_features)`` and
    ``bias_init_fn(out_features)`` are called once, here; without them PyTorch's default
    U(-1/sqrt(in), 1/sqrt(in)) is drawn. Gradients are sums over the batch (not averaged),
    like every layer's.
    """

    param_names = ("W", "b")

    def __init__(
        self,
        in_features: int,
        out_features: int,
        weight_init_fn: Callable[..., Any] | None = None,
        bias_init_fn: Callable[..., Any] | None = None,
    ) -> None:
        self.in_features = self._int_arg("in_features", in_features)
        self.out_features = self._int_arg("out_features", out_features)
        bound = fan_in_bound(self.in_features)
        shape = (self.out_features, self.in_features)
        self.W = self._init_param(weight_init_fn, "weight_init_fn", shape, bound)
        column = ((self.out_features, 1),)
        self.b = self._init_param(
            bias_init_fn, "bias_init_fn", (self.out_features,), bound, also=column
        )
        xp = array_namespace(self.W)
        self.dLdW = xp.zeros_like(self.W)
        self.dLdb = xp.zeros_like(self.b)
        self._A = None  # the input (in the computing dtype) and W as forward used them
        self._W = None

    def __repr__(self) -> str:
        return f"Linear({self.in_features}, {self.out_features})"

    def forward(self, A: Any) -> Any:
        xp = self._array_arg(A, "A", "(N, in_features)", range(2, 64))
        self._axis_size(A, "A", A.ndim - 1, "in_features", self.in_features)
        self._check_bias()
        A, W, b = self._promote(A)
        self._A, self._W = A, W
        if b.ndim == 2:  # the handout's column bias
            b = xp.reshape(b, (self.out_features,))
        if A.ndim > 2:  # leading axes beyond N: one row each
            Z = matmul(xp.reshape(A, (-1, self.in_features)), xp.matrix_transpose(W))
            return xp.reshape(Z, (*A.shape[:-1], self.out_features)) + b
        return matmul(A, xp.matrix_transpose(W)) + b

    def backward(self, dLdZ: Any) -> Any:
        self._forward_done("_A")
        shape = (*self._A.shape[:-1], self.out_features)
        xp = self._gradient_arg(dLdZ, "dLdZ", shape, spec_of(self._A))
        dZ, A = dLdZ, self._A
        if dZ.ndim > 2:  # leading axes beyond N: one row each
            rows = math.prod(shape[:-1])
            dZ = xp.reshape(dLdZ, (rows, self.out_features))
            A = xp.reshape(self._A, (rows, self.in_features))
        self._set_grads(W=matmul(xp.matrix_transpose(dZ), A), b=xp.sum(dZ, axis=0))
        if not self.needs_input_grad:
            return None
        dA = matmul(dZ, self._W)
        return self._as_input(xp.reshape(dA, self._A.shape) if dLdZ.ndim > 2 else dA)

    def _check_bias(self) -> None:
        if tuple(self.b.shape) not in ((self.out_features,), (self.out_features, 1)):
            raise ValueError(
                f"Linear: b must have shape ({self.out_features},) or ({self.out_features}, 1), "
                f"got {shape_str(self.b.shape)}"
            )
