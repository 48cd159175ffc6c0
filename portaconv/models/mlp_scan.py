"""Scanning MLPs written as 1-d CNNs (the handout's section 8).

The MLP reads 8 contiguous 24-dimensional input vectors at a time, flattened time-major
(input ``t * 24 + c`` is channel ``c`` at time ``t`` of the window), and strides 4 time
steps between evaluations; its layers are ``Linear(192, 8), ReLU, Linear(8, 16), ReLU,
Linear(16, 4)``, without biases. Scanning an input of width W gives
``(W - 8) // 4 + 1`` evaluations (31 for W = 128), each of 4 outputs.

Both CNNs below compute exactly that scan. An MLP weight matrix ``w`` (in_features,
out_features) turns into Conv1d weights by reading its ``(k * C_in, C_out)`` top-left block,
transposing it to ``(C_out, k * C_in)``, splitting the rows time-major into
``(C_out, k, C_in)`` and moving the kernel axis last: ``(C_out, C_in, k)``.
"""

from __future__ import annotations

from typing import Any

from ..backend._arrays import supplied_dtype, to_backend
from ..backend._config import get_backend
from ..checks import check_array
from ..layers import Conv1d, Flatten, ReLU
from ._model import Model, _shape

IN_CHANNELS = 24
WINDOW = 8
STRIDE = 4
MLP_SHAPES = ((WINDOW * IN_CHANNELS, 8), (8, 16), (16, 4))


class _ScanningCNN(Model):
    """Shared body: three Conv1d layers with ReLU between them, then Flatten.

    Subclasses give ``conv_specs``: (in_channels, out_channels, kernel_size, stride) of
    conv1, conv2 and conv3.
    """

    conv_specs: tuple[tuple[int, int, int, int], ...] = ()

    def __init__(self) -> None:
        (c1, c2, c3) = (Conv1d(*spec) for spec in self.conv_specs)
        self.conv1, self.conv2, self.conv3 = c1, c2, c3
        self.layers = [self.conv1, ReLU(), self.conv2, ReLU(), self.conv3, Flatten()]
        self._out_shape: tuple[int, ...] | None = None

    def __repr__(self) -> str:
        return f"{self.name}({', '.join(repr(layer) for layer in self.layers)})"

    def init_weights(self, weights: Any) -> None:
        """Load the MLP's weights ``(w1, w2, w3)``, shaped (192, 8), (8, 16), (16, 4).

        ``weights`` is any sequence of the three (in_features, out_features) matrices: a list,
        a tuple, or the object array ``np.load("mlp_weights_part_b.npy", allow_pickle=True)``
        returns; each matrix a NumPy or any backend's array. They are copied to the active
        backend; floating matrices keep their dtype (float64 stays float64), others take the
        backend's. Each conv layer reads the top-left ``(kernel_size * in_channels,
        out_channels)`` block of its matrix (the whole matrix for the simple scan, the one
        shared block for the distributed one). Biases are set to zero in the weights'
        dtype, as the MLP has none.
        """
        weights = self._three_matrices(weights)
        backend = get_backend()
        xp = backend.xp
        converted = []
        for i, (w, expected) in enumerate(zip(weights, MLP_SHAPES)):
            try:
                w = to_backend(w, backend, dtype=supplied_dtype(w, backend))
            except Exception as exc:
                raise TypeError(
                    f"{self.name}: w{i + 1} must be an array of shape {expected}, "
                    f"got {type(w).__name__}"
                ) from exc
            if _shape(w.shape) != expected:
                raise ValueError(
                    f"{self.name}: w{i + 1} must have shape {expected} (in_features, "
                    f"out_features), got {_shape(w.shape)}"
                )
            converted.append(w)
        for conv, w in zip((self.conv1, self.conv2, self.conv3), converted):
            C_in, C_out, K = conv.in_channels, conv.out_channels, conv.kernel_size
            block = w[: K * C_in, :C_out]
            W = xp.reshape(xp.matrix_transpose(block), (C_out, K, C_in))
            # A copy, so that later changes to the caller's matrices do not reach the model.
            conv.W = xp.asarray(xp.permute_dims(W, (0, 2, 1)), copy=True)
            conv.b = xp.zeros((C_out,), dtype=w.dtype, device=backend.device)
            conv.dLdW = xp.zeros_like(conv.W)
            conv.dLdb = xp.zeros_like(conv.b)

    def _three_matrices(self, weights: Any) -> list[Any]:
        """``weights`` as a list of three items, from any sequence (an object array too)."""
        numeric_array = hasattr(weights, "dtype") and getattr(weights.dtype, "kind", "") != "O"
        if (
            isinstance(weights, (str, bytes, dict))
            or numeric_array
            or not hasattr(weights, "__len__")
            or not hasattr(weights, "__getitem__")
        ):
            raise TypeError(
                f"{self.name}: init_weights expects a sequence of the MLP's three weight "
                f"matrices (w1, w2, w3) (a list, tuple or object array), got "
                f"{type(weights).__name__}"
            )
        if len(weights) != 3:
            raise ValueError(
                f"{self.name}: init_weights expects the MLP's three weight matrices "
                f"(w1, w2, w3), got {len(weights)}"
            )
        return [weights[i] for i in range(3)]

    def forward(self, A: Any) -> Any:
        """``A`` (N, 24, W) with W >= 8 -> ``Z`` (N, 4 * out_width), out_width = (W - 8) // 4 + 1.

        For W = 128: (N, 24, 128) -> (N, 124). ``Z`` is the flattened (N, 4, out_width)
        conv output, channel-major: ``Z[n, c * out_width + t]`` is MLP output ``c`` for the
        window of time steps ``4t .. 4t + 7``.
        """
        check_array(self.name, A, "A", f"(N, {IN_CHANNELS}, W)", 3)
        if A.shape[1] != IN_CHANNELS or A.shape[2] < WINDOW:
            raise ValueError(
                f"{self.name}: A must have shape (N, {IN_CHANNELS}, W) with W >= {WINDOW} "
                f"(channels on axis 1, time on axis 2), got {_shape(A.shape)}"
            )
        return self._forward_layers(A)

    def backward(self, dLdZ: Any) -> Any:
        """``dLdZ`` (N, 4 * out_width) -> ``dLdA`` (N, 24, W); sets each conv's dLdW, dLdb."""
        return self._backward_layers(dLdZ)


class CNN_SimpleScanningMLP(_ScanningCNN):
    """The scanning MLP as a CNN: one conv per MLP layer.

    conv1 = Conv1d(24, 8, kernel 8, stride 4) is the first MLP layer applied to every window;
    conv2 = Conv1d(8, 16, 1, 1) and conv3 = Conv1d(16, 4, 1, 1) apply the next two layers at
    each window position. ``layers`` = [conv1, ReLU, conv2, ReLU, conv3, Flatten].
    Weights: W1 = w1.T reshaped (8, 8, 24), permuted to (8, 24, 8); W2 (16, 8, 1); W3 (4, 16, 1).

    ``A`` (N, 24, 128) -> ``Z`` (N, 124), channel-major (see ``forward``).
    """

    conv_specs = ((IN_CHANNELS, 8, WINDOW, STRIDE), (8, 16, 1, 1), (16, 4, 1, 1))


class CNN_DistributedScanningMLP(_ScanningCNN):
    """The shared-parameter (distributed) scanning MLP as a CNN: one conv per shared neuron group.

    In the MLP, the first layer is 4 copies of 2 neurons, each copy reading 2 time steps
    (w1 is block diagonal with 48 x 2 blocks); the second is 2 copies of 8 neurons, each
    reading two first-layer groups (4 x 8 blocks); the third has 4 neurons reading both
    (16 x 4). So conv1 = Conv1d(24, 2, 2, 2), conv2 = Conv1d(2, 8, 2, 2),
    conv3 = Conv1d(8, 4, 2, 1), whose receptive field is 8 time steps at a stride of 4.
    Weights come from the shared blocks w1[:48, :2], w2[:4, :8], w3[:16, :4].

    ``A`` (N, 24, 128) -> ``Z`` (N, 124), channel-major (see ``forward``).
    """

    conv_specs = ((IN_CHANNELS, 2, 2, 2), (2, 8, 2, 2), (8, 4, 2, 1))
