"""A residual connection: a branch of layers added to its own input, or to a shortcut of it."""

from __future__ import annotations

from typing import Any

from ..backend import execution_plan, fast_paths_mode
from ..backend._arrays import astype
from ._model import Model, _gradient_shape, _is_layer_like, _layer_errors, _shape


class Residual(Model):
    """``Z = body(A) + shortcut(A)``; the identity ``Z = body(A) + A`` when ``shortcut`` is None.

    ``body`` and ``shortcut`` are any layer or model with ``forward`` and ``backward`` (a
    :class:`~portaconv.models.Sequential` of layers, a single convolution, another
    ``Residual``); both take ``A`` and must give outputs of one shape (a ValueError naming
    both shapes otherwise): where the body changes the shape, a projection shortcut maps the
    input to it (a 1x1 convolution of the body's stride, and a BatchNorm).

    ``backward`` sends ``dLdZ`` through both branches and returns the sum of their input
    gradients (for the identity, the body's plus ``dLdZ`` itself):

        dLdA = body.backward(dLdZ) + shortcut.backward(dLdZ)

    Parameters are named by branch: ``"body.0.W"``, ``"shortcut.W"``; inside a Sequential,
    ``"3.body.0.W"``. Each branch runs as a step of the backend's execution plan
    (``portaconv.backend.execution_plan``), so a body that is a Sequential runs its own plan,
    fused groups included.

    >>> from portaconv.layers import BatchNorm2d, Conv2d, ReLU
    >>> from portaconv.models import Sequential
    >>> block = Residual(Sequential(Conv2d(8, 8, 3, padding=1), BatchNorm2d(8), ReLU()))
    >>> sorted(block.parameters())
    ['body.0.W', 'body.0.b', 'body.1.BW', 'body.1.Bb']
    """

    def __init__(self, body: Any, shortcut: Any = None) -> None:
        for arg, layer in (("body", body), ("shortcut", shortcut)):
            if (layer is not None or arg == "body") and not _is_layer_like(layer):
                raise TypeError(
                    f"Residual: {arg} must have forward and backward methods (a layer or a "
                    f"model such as Sequential(...)), got {layer!r}"
                )
        if shortcut is body:
            raise ValueError(
                "Residual: body and shortcut are the same object; each branch keeps what its "
                "own backward needs, so give the shortcut a layer of its own"
            )
        self.body, self.shortcut = body, shortcut
        self._out_shape: tuple[int, ...] | None = None

    def named_layers(self) -> list[tuple[str, Any]]:
        """``("body", body)`` and, unless it is the identity, ``("shortcut", shortcut)``."""
        branches = [("body", self.body)]
        if self.shortcut is not None:
            branches.append(("shortcut", self.shortcut))
        return branches

    def _branches(self) -> list[tuple[str, Any]]:
        """(name, plan) of each branch: a plan of the branch alone, one step (the branches
        run side by side, so no group may span them); made again only when a branch or the
        fast paths' mode changes."""
        key = (id(self.body), id(self.shortcut), fast_paths_mode())
        cached = getattr(self, "_plans", None)
        if cached is None or cached[0] != key:
            plans = [(name, execution_plan([layer])) for name, layer in self.named_layers()]
            cached = self._plans = (key, plans)
        return cached[1]

    def forward(self, A: Any) -> Any:
        """``A`` -> ``body(A) + shortcut(A)``, the branches' outputs of one shape."""
        branches = self._branches()
        self._ran = branches
        outputs = []
        # Each branch's plan holds OpenBLAS where its layers need it; the holds nest, and
        # the identity's single plan is entered twice (a count, no change).
        with branches[0][1].held(A), branches[-1][1].held(A):
            for name, plan in branches:
                (step,) = plan.steps
                with _layer_errors(self.name, name):
                    outputs.append(step.forward(A))
        if self.shortcut is None:
            outputs.append(A)
        body_out, shortcut_out = outputs
        if _shape(body_out.shape) != _shape(shortcut_out.shape):
            shortcut = "shortcut's" if self.shortcut is not None else "input's (the identity)"
            raise ValueError(
                f"Residual: the body's output has shape {_shape(body_out.shape)} but the "
                f"{shortcut} has {_shape(shortcut_out.shape)}; they are added, so they must "
                "match (a shortcut that changes the shape as the body does: a 1x1 convolution "
                "of the body's stride)"
            )
        Z = body_out + shortcut_out
        self._dtypes = (A.dtype, body_out.dtype, shortcut_out.dtype, Z.dtype)
        self._out_shape = _shape(Z.shape)
        return Z

    def backward(self, dLdZ: Any, input_grad: bool = True) -> Any:
        """``dLdZ`` (the output's shape) -> ``dLdA``, the sum of both branches' input gradients.

        ``input_grad=False`` when the input is data (the block opens a network): every
        parameter's gradient is computed, the branches skip their input gradients where
        they can, and a branch without parameters is not run; returns None.
        """
        _gradient_shape(self.name, dLdZ, "dLdZ", self._out_shape)
        input_dtype, *branch_dtypes, out_dtype = self._dtypes
        if dLdZ.dtype != out_dtype:
            raise TypeError(f"Residual: dLdZ has dtype {dLdZ.dtype} but forward ran in {out_dtype}")
        branches = self._ran
        grads = []
        with branches[0][1].held(dLdZ), branches[-1][1].held(dLdZ):
            for (name, plan), dtype in zip(branches, branch_dtypes):
                (step,) = plan.steps
                if not input_grad and not step.param_names:
                    continue
                with _layer_errors(self.name, name):
                    # a branch computing in a narrower dtype than the sum takes its gradient
                    # in its own dtype, as its output had
                    grads.append(step.backward(astype(dLdZ, dtype), input_grad))
        if not input_grad:
            return None
        if self.shortcut is None:
            grads.append(dLdZ)
        return astype(grads[0] + grads[1], input_dtype)

    def __repr__(self) -> str:
        shortcut = "identity" if self.shortcut is None else _indented(self.shortcut)
        return f"Residual(\n  (body): {_indented(self.body)}\n  (shortcut): {shortcut}\n)"


def _indented(layer: Any) -> str:
    """``repr(layer)`` with its continuation lines indented one level."""
    return repr(layer).replace("\n", "\n  ")
