"""The CS189 homework's ``neural_networks`` package, module for module, on portaconv.

=================  ==================================================================
``activations``    ``Linear``, ``Sigmoid``, ``TanH``, ``ReLU``, ``SoftMax``, ``ArcTan``
``layers``         ``FullyConnected``, ``Conv2D``, ``Pool2D``, ``Flatten`` (NHWC)
``losses``         ``CrossEntropy`` on probabilities
``models``         ``NeuralNetwork``, ``initialize_model``
``optimizers``     ``SGD`` (momentum, ``clip_norm``)
``schedulers``     ``Constant``, ``Exponential``
``weights``        the package's initialisers and gains
``logs``           ``Logger``
``datasets``       ``initialize_dataset``: the course's ``.npy`` files or portaconv's loaders
``utils``          ``AttrDict``, one-hot, scaling, ``check_gradients``
=================  ==================================================================

Same class names, constructor arguments, attributes and semantics as the package; the
computing is portaconv's layers', so it runs on every backend (arrays in and out are the
active backend's; NumPy by default). A course folder whose ``neural_networks/<module>.py``
only says ``from portaconv.compat.cs189.<module> import *`` runs the course's scripts.
"""

from . import (
    activations,
    datasets,
    layers,
    logs,
    losses,
    models,
    optimizers,
    schedulers,
    utils,
    weights,
)

__all__ = [
    "activations",
    "datasets",
    "layers",
    "logs",
    "losses",
    "models",
    "optimizers",
    "schedulers",
    "utils",
    "weights",
]
