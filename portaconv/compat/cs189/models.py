"""The package's ``NeuralNetwork``: layers from argument dicts, trained and tested the way
the course's scripts do it, printing what the package prints.

``initialize_model(name, loss, layer_args, optimizer_args, logger=None, seed=None)`` builds
the layers of ``layer_args`` (dicts of :func:`.layers.initialize_layer`'s arguments) but
the last; ``train(dataset, epochs)`` adds the last, the output layer, with ``n_out`` set to
the data set's ``out_dim``. Each training step is ``forward``, ``backward(target, out)``
(which returns the loss) and ``update(epoch)`` (SGD through the optimizer, in place:
``layer.parameters[name] -= delta``, then ``clear_gradients``). After each epoch ``train``
prints an example target and prediction and the line
``Epoch i Training Loss: .. Training Accuracy: .. Val Loss: .. Val Accuracy: ..``;
``test(dataset)`` prints ``Test Loss: .. Test Accuracy: ..``. ``seed`` is kept and not
used, as in the package: seed NumPy (``np.random.seed``) before the first forward, as
``train_ffnn.py`` does.

>>> import numpy as np
>>> from portaconv.compat.cs189.models import initialize_model
>>> from portaconv.compat.cs189.utils import AttrDict
>>> layers = [AttrDict(name="fully_connected", activation="relu", n_out=8),
...           AttrDict(name="fully_connected", activation="softmax", n_out=None)]
>>> model = initialize_model("ffnn", "cross_entropy", layers, AttrDict(name="SGD", lr=0.1))
>>> len(model.layers), model.forward(np.ones((2, 4))).shape
(1, (2, 8))
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from typing import Any

import numpy as np
from array_api_compat import array_namespace

from ...backend import to_numpy
from .datasets import Dataset
from .layers import initialize_layer
from .losses import initialize_loss
from .optimizers import initialize_optimizer

__all__ = ["NeuralNetwork", "initialize_model"]


def initialize_model(
    name: str,
    loss: str,
    layer_args: Sequence[dict],
    optimizer_args: dict,
    logger: Any = None,
    seed: int | None = None,
) -> NeuralNetwork:
    """A :class:`NeuralNetwork` (``name`` is the package's label of the run; unused)."""
    return NeuralNetwork(
        loss=loss, layer_args=layer_args, optimizer_args=optimizer_args, logger=logger, seed=seed
    )


class NeuralNetwork:
    def __init__(
        self,
        loss: str,
        layer_args: Sequence[dict],
        optimizer_args: dict,
        logger: Any = None,
        seed: int | None = None,
    ) -> None:
        if len(layer_args) < 1:
            raise ValueError("NeuralNetwork: layer_args must list at least the output layer")
        self.n_layers = len(layer_args)
        self.layer_args = layer_args
        self.logger = logger
        self.seed = seed
        self.epoch_log: dict[str, Any] = {"loss": {}, "error": {}}
        self.loss = initialize_loss(loss)
        self.optimizer = initialize_optimizer(**optimizer_args)
        self._initialize_layers(layer_args)

    def __repr__(self) -> str:
        return f"NeuralNetwork(layers={self.layers}, loss={self.loss!r})"

    def _initialize_layers(self, layer_args: Sequence[dict]) -> None:
        """Every layer but the output layer, which ``train`` adds."""
        self.layers = [initialize_layer(**args) for args in layer_args[:-1]]

    def _log(self, loss: float, error: float, validation: bool = False) -> None:
        if self.logger is None:
            return
        split = "validate" if validation else "train"
        self.epoch_log["loss"][split] = round(loss, 4)
        self.epoch_log["error"][split] = round(error, 4)
        if validation:
            self.logger.push(self.epoch_log)
            self.epoch_log = {"loss": {}, "error": {}}

    def save_parameters(self, epoch: int) -> None:
        """Pickle ``{layer index: parameters}`` (as NumPy arrays) to the logger's directory,
        file ``parameters_epoch<epoch>``."""
        if self.logger is None:
            raise ValueError("NeuralNetwork: save_parameters needs a logger (its save_dir)")
        parameters = {
            i: {k: to_numpy(v) for k, v in layer.parameters.items()}
            for i, layer in enumerate(self.layers)
        }
        with open(self.logger.save_dir + f"parameters_epoch{epoch}", "wb") as f:
            pickle.dump(parameters, f)

    def forward(self, X: Any) -> Any:
        """``X`` through every layer in order; the last layer's output."""
        for layer in self.layers:
            X = layer.forward(X)
        return X

    def backward(self, target: Any, out: Any) -> float:
        """The loss of ``out`` against ``target``; its gradient goes back through every
        layer, in reverse, filling their ``gradients``."""
        loss = self.loss.forward(target, out)
        dLdY = self.loss.backward(target, out)
        for layer in reversed(self.layers):
            dLdY = layer.backward(dLdY)
        return loss

    def update(self, epoch: int) -> None:
        """One SGD step on every parameter, then ``clear_gradients`` on every layer."""
        param_log = {}
        for i, layer in enumerate(self.layers):
            for param_name, param in layer.parameters.items():
                delta = self.optimizer.update(
                    param_name + str(i), param, layer.gradients[param_name], epoch
                )
                layer.parameters[param_name] -= delta  # in place where the library allows
                if self.logger is not None:
                    xp, updated = array_namespace(param), layer.parameters[param_name]
                    param_log[f"{param_name}{i}"] = {
                        "max": float(xp.max(updated)),
                        "min": float(xp.min(updated)),
                    }
            layer.clear_gradients()
        self.epoch_log["params"] = param_log

    def error(self, target: Any, out: Any) -> float:
        """1 - accuracy: the fraction of rows whose largest ``out`` is not ``target``'s."""
        if self.loss.name != "cross_entropy":
            raise ValueError(f"NeuralNetwork: error is defined for cross_entropy, not {self.loss}")
        xp = array_namespace(out)
        wrong = xp.argmax(out, axis=1) != xp.argmax(target, axis=1)
        return float(xp.mean(xp.astype(wrong, out.dtype)))

    def _output_layer(self, out_dim: int) -> None:
        if len(self.layers) < self.n_layers:  # once, even if train is called again
            args = dict(self.layer_args[-1])
            args["n_out"] = out_dim
            self.layers.append(initialize_layer(**args))

    def train(self, dataset: Dataset, epochs: int) -> None:
        """``epochs`` passes over ``dataset.train`` (one step a batch), each followed by one
        over ``dataset.validate``; prints a line an epoch."""
        self._output_layer(dataset.out_dim)
        for i in range(epochs):
            training_loss, training_error = [], []
            for _ in range(dataset.train.samples_per_epoch):
                X, Y = dataset.train.sample()
                Y_hat = self.forward(X)
                training_loss.append(self.backward(Y, Y_hat))
                training_error.append(self.error(Y, Y_hat))
                self.update(i)
            training_loss, training_error = np.mean(training_loss), np.mean(training_error)
            self._log(training_loss, training_error)

            validation_loss, validation_error = [], []
            for _ in range(dataset.validate.samples_per_epoch):
                X, Y = dataset.validate.sample()
                Y_hat = self.forward(X)
                validation_loss.append(self.loss.forward(Y, Y_hat))
                validation_error.append(self.error(Y, Y_hat))
            validation_loss, validation_error = np.mean(validation_loss), np.mean(validation_error)
            self._log(validation_loss, validation_error, validation=True)

            print(f"Example target: {to_numpy(Y[0, ...])}")
            print(f"Example prediction: {[round(float(x), 4) for x in to_numpy(Y_hat[0, ...])]}")
            print(
                f"Epoch {i} Training Loss: {round(training_loss, 4)} "
                f"Training Accuracy: {round(1 - training_error, 4)} "
                f"Val Loss: {round(validation_loss, 4)} "
                f"Val Accuracy: {round(1 - validation_error, 4)}"
            )

    def test(self, dataset: Dataset, save_predictions: bool = False) -> dict[str, list]:
        """Loss and error of every batch of ``dataset.test`` (and, with
        ``save_predictions``, each prediction, pickled to the logger's
        ``test_predictions.p``); prints their means."""
        test_log: dict[str, list] = {"loss": [], "error": []}
        if save_predictions:
            test_log["prediction"] = []
        for _ in range(dataset.test.samples_per_epoch):
            X, Y = dataset.test.sample()
            Y_hat, L = self.predict(X, Y)
            test_log["loss"].append(L)
            test_log["error"].append(self.error(Y, Y_hat))
            if save_predictions:
                test_log["prediction"] += list(to_numpy(Y_hat))
        test_loss, test_error = np.mean(test_log["loss"]), np.mean(test_log["error"])
        print(f"Test Loss: {round(test_loss, 4)} Test Accuracy: {round(1 - test_error, 4)}")
        if save_predictions:
            if self.logger is None:
                raise ValueError("NeuralNetwork: test(save_predictions=True) needs a logger")
            with open(self.logger.save_dir + "test_predictions.p", "wb") as f:
                pickle.dump(test_log, f)
        return test_log

    def predict(self, X: Any, Y: Any) -> tuple[Any, float]:
        """(the predictions for ``X``, their loss against ``Y``)."""
        Y_hat = self.forward(X)
        return Y_hat, self.loss.forward(Y, Y_hat)
