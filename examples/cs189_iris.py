"""The CS189 homework's two-layer network on Iris, through ``portaconv.compat.cs189``.

Written as the course's ``train_ffnn.py`` is: the layers as ``AttrDict`` arguments, NumPy's
global seed, ``initialize_model`` / ``initialize_dataset`` / ``train`` / ``test``. The only
change from the course's script is the import path (``neural_networks`` ->
``portaconv.compat.cs189``). Iris comes from portaconv's embedded copy (no download)::

    python examples/cs189_iris.py
    PORTACONV_BACKEND=torch python examples/cs189_iris.py
"""

from __future__ import annotations

import contextlib
import io

import numpy as np

from portaconv.compat.cs189.datasets import initialize_dataset
from portaconv.compat.cs189.models import initialize_model
from portaconv.compat.cs189.utils import AttrDict

fc1 = AttrDict(name="fully_connected", activation="relu", weight_init="xavier_uniform", n_out=10)
fc_out = AttrDict(  # n_out of the output layer comes from the data set
    name="fully_connected", activation="softmax", weight_init="xavier_uniform", n_out=None
)
optimizer_args = AttrDict(name="SGD", lr=0.01, lr_scheduler="constant", momentum=0.9, clip_norm=1.0)


def main() -> None:
    np.random.seed(0)  # the course seeds NumPy's global generator before building anything
    model = initialize_model(
        name="feed_forward",
        loss="cross_entropy",
        layer_args=[fc1, fc_out],
        optimizer_args=optimizer_args,
    )
    dataset = initialize_dataset("iris", batch_size=25)
    epochs = 100
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):  # the package prints three lines an epoch
        model.train(dataset, epochs=epochs)
    epoch_lines = [line for line in printed.getvalue().splitlines() if line.startswith("Epoch")]
    print(f"Training feed_forward neural network on iris with SGD for {epochs} epochs...")
    for line in epoch_lines[::25] + epoch_lines[-1:]:
        print(line)
    model.test(dataset)


if __name__ == "__main__":
    main()
