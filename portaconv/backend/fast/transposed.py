"""NumPy fast path for the handout's transposed convolution: a strided convolution run backwards.

The layer (``portaconv.layers.conv_transpose``) upsamples its input A by zero insertion
(factor k) and convolves the result with W (C_out, C_in, K, ..., K), stride 1, no padding.
That is the input gradient of a stride-k convolution ``C`` with padding K - 1 and the
weights ``V = flip(W)`` with the channel axes swapped (C_in, C_out, K, ..., K), whose
input has Z's shape and whose output has A's::

    forward   Z      = C's dL/dA for dL/dZ = A            (+ b)
    dL/dA            = C(dZ), C's forward
    dL/dW            = flip(C's dL/dV)^T for input dZ and dL/dZ = A

so the work on the inserted zeros is never done, and the NCHW engine
(:class:`~.nchw.NCHWConv2d`, 1-d or 2-d) computes all three in its threaded chunks. The
portable layer does the same products on the whole batch at once, in one thread, through
``im2col`` and ``col2im``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .nchw import NCHWConv2d


def transposed_applies(A: Any) -> bool:
    """Whether a transposed convolution of ``A`` takes this engine: NumPy arrays."""
    return isinstance(A, np.ndarray) and A.shape[0] > 0


class TransposedConv:
    """Forward and backward of the handout's ``ConvTranspose{1,2}d`` on NumPy arrays.

    ``forward(A, W, b)`` returns Z (N, C_out, *(k (in - 1) + 2 - K)); ``backward(dZ,
    need_dA)`` returns ``(dA or None, dW, db)`` for the last forward.
    """

    def __init__(self, nd: int, kernel_size: int, factor: int, workspace: int, keep: int):
        self.nd, self.K, self.k = nd, kernel_size, factor
        self._conv = NCHWConv2d(kernel_size, factor, kernel_size - 1, workspace, keep, nd)
        self._A: np.ndarray | None = None

    def _flipped(self, W: np.ndarray) -> np.ndarray:
        """W flipped in space with its channel axes swapped (and back: its own inverse)."""
        spatial = tuple(range(2, self.nd + 2))
        return np.ascontiguousarray(np.flip(W, axis=spatial).swapaxes(0, 1))

    def forward(self, A: np.ndarray, W: np.ndarray, b: np.ndarray) -> np.ndarray:
        N, C_out = A.shape[0], W.shape[0]
        out = tuple(self.k * (n - 1) + 2 - self.K for n in A.shape[2:])
        self._V, self._A = self._flipped(W), A
        return self._conv.input_gradient(A, (N, C_out, *out), self._V, b)

    def backward(
        self, dZ: np.ndarray, need_dA: bool = True
    ) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
        zeros = np.zeros(self._V.shape[0], dtype=self._V.dtype)
        if need_dA:
            dA = self._conv.forward(dZ, self._V, zeros)
        else:  # dL/dW alone: the convolution's set-up without its products
            dA = None
            self._conv.prepare(dZ, self._V, zeros)
        _, dV, _ = self._conv.backward(self._A, need_dA=False)
        db = np.sum(dZ, axis=(0, *range(2, self.nd + 2)))
        return dA, self._flipped(dV), db
