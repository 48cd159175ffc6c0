"""What a training checkpoint must hold before it is used: the entries the
:class:`~portaconv.train.Trainer` writes (:func:`check_training_state`) and the run's
metadata that :func:`~portaconv.train.experiment.run_experiment` adds
(:func:`check_run_meta`).

Each check is a ``ValueError`` naming the entry, what it holds and what was expected; the
callers prefix the checkpoint's path.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import array_api_compat
from array_api_compat import array_namespace

from ..backend import BACKENDS, DTYPES
from ..backend._random import check_rng_state
from ..checks import counted
from ..models.zoo import MODELS
from .config import DEFAULTS, RECIPES, WHO, TrainConfig, recipe

FORMAT = "portaconv-checkpoint-1"  # the format entry of a training checkpoint


#: The entries of a training checkpoint (:meth:`Trainer.checkpoint_state`) and their types.
_STATE_TYPES: dict[str, tuple[type, ...]] = {
    "epoch": (int,),
    "model": (dict,),
    "optimizer": (dict,),
    "scheduler": (dict, type(None)),
    "rng": (dict,),
    "history": (list,),
    "train_seconds": (int, float),
    "train_images": (int,),
    "meta": (dict,),
}

#: Entries that checkpoints of earlier versions lack, and their types where present.
_OPTIONAL_TYPES: dict[str, tuple[type, ...]] = {
    "compile_seconds": (int, float),
}


def check_training_state(state: Any) -> None:
    """``ValueError`` unless ``state`` has every entry of a training checkpoint, typed as
    :meth:`Trainer.checkpoint_state` writes it (what a damaged or foreign file lacks)."""
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise ValueError(
            f"not a portaconv training checkpoint (format {found!r}, expected {FORMAT!r})"
        )
    missing = [name for name in _STATE_TYPES if name not in state]
    if missing:
        raise ValueError(f"the checkpoint lacks {', '.join(missing)}")
    for name, types in {**_STATE_TYPES, **_OPTIONAL_TYPES}.items():
        if name not in state:
            continue  # an optional entry (the required ones are all there)
        value = state[name]
        if isinstance(value, bool) or not isinstance(value, types):
            expected = " or ".join("null" if t is type(None) else t.__name__ for t in types)
            raise ValueError(
                f"the checkpoint's {name} is {type(value).__name__} {value!r:.60}, "
                f"expected {expected}"
            )
    if state["epoch"] < 0 or len(state["history"]) != state["epoch"]:
        raise ValueError(
            f"the checkpoint's epoch {state['epoch']} does not match its history of "
            f"{counted(len(state['history']), 'epoch')}"
        )
    best = state.get("best_epoch")
    if best is not None and not (_is_count(best) and best <= state["epoch"]):
        raise ValueError(
            f"the checkpoint's best_epoch is {best!r:.60}, expected null or an epoch from 1 to "
            f"{state['epoch']}"
        )
    if not all(isinstance(record, dict) for record in state["history"]):
        raise ValueError("the checkpoint's history holds entries that are not records")
    try:
        check_rng_state(state["rng"])
    except ValueError as exc:
        raise ValueError(f"the checkpoint's random state rng is not usable ({exc})") from None
    check_finite(state["model"], "weights")  # the parameters and buffers (BatchNorm's)
    check_finite(state["optimizer"], "optimizer state")


def check_finite(tree: Any, what: str, prefix: str = "") -> None:
    """``ValueError`` naming the first array (any backend's) or number in the nested dicts
    and lists of ``tree`` that holds a NaN or an infinity. A trainer never saves non-finite
    weights (it stops the run first), so they come from a damaged or altered file: evaluated,
    they would score as a constant prediction, and resumed, diverge at the first step."""
    items = tree.items() if isinstance(tree, dict) else enumerate(tree)
    for key, value in items:
        name = f"{prefix}{key}"
        if isinstance(value, dict | list | tuple):
            check_finite(value, what, f"{name}.")
            continue
        bad, size = _non_finite(value)
        if bad:
            values = "value" if bad == 1 else "values"
            verb = "hold" if what == "weights" else "holds"
            raise ValueError(
                f"its {what} {name} {verb} {bad} non-finite {values} (NaN or infinity) of {size}"
            )


def _non_finite(value: Any) -> tuple[int, int]:
    """(count of NaN and infinite entries, count of entries) of a float or a floating array;
    (0, 0) for anything else (integers, strings, None)."""
    if isinstance(value, float):
        return (0 if math.isfinite(value) else 1), 1
    if not array_api_compat.is_array_api_obj(value) or isinstance(value, int | complex):
        return 0, 0
    xp = array_namespace(value)
    if not xp.isdtype(value.dtype, ("real floating", "complex floating")):
        return 0, 0
    bad = int(xp.sum(xp.astype(xp.logical_not(xp.isfinite(value)), xp.int64)))
    return bad, math.prod(int(n) for n in value.shape)


def _is_count(value: Any, minimum: int = 1) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _is_numbers(values: Any) -> bool:
    """A non-empty list of finite numbers."""

    def finite(v: Any) -> bool:
        return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)

    return isinstance(values, list) and len(values) > 0 and all(map(finite, values))


def _is_name(choices: Any) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, str) and v in choices


def _is_optional(test: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: v is None or test(v)


#: What :func:`check_run_meta` asks of a checkpoint's metadata: (entry, what it must be, test).
_META_ENTRIES: list[tuple[str, str, Callable[[Any], bool]]] = [
    ("config", "the run's settings", lambda v: isinstance(v, dict)),
    ("config.dataset", f"one of {sorted(RECIPES)}", _is_name(RECIPES)),
    ("config.seed", "a non-negative integer", lambda v: _is_count(v, 0)),
    ("config.subset", "null or a positive integer", _is_optional(_is_count)),
    ("config.data_dir", "null or a directory", _is_optional(lambda v: isinstance(v, str))),
    ("config.backend", f"null or one of {list(BACKENDS)}", _is_optional(_is_name(BACKENDS))),
    ("config.device", "null or a device name", _is_optional(lambda v: isinstance(v, str))),
    ("config.dtype", f"null or one of {list(DTYPES)}", _is_optional(_is_name(DTYPES))),
    ("model", "the model's description", lambda v: isinstance(v, dict)),
    ("model.name", f"one of {sorted(MODELS)}", _is_name(MODELS)),
    (
        "model.input_shape",
        "a non-empty list of positive integers",
        lambda v: isinstance(v, list) and len(v) > 0 and all(map(_is_count, v)),
    ),
    ("model.classes", "an integer of at least 2", lambda v: _is_count(v, 2)),
    (
        "classes",
        "a list of class names",
        lambda v: isinstance(v, list) and all(isinstance(name, str) for name in v),
    ),
    ("normalisation", "the input's mean and std", lambda v: isinstance(v, dict)),
    ("normalisation.mean", "a list of numbers", _is_numbers),
    ("normalisation.std", "a list of positive numbers", lambda v: _is_numbers(v) and min(v) > 0),
    (
        "fold",
        "null or [index, k] with 0 <= index < k",
        _is_optional(
            lambda v: (
                isinstance(v, list)
                and len(v) == 2
                and all(map(_is_count, v, (0, 2)))
                and v[0] < v[1]
            )
        ),
    ),
]
#: Entries a checkpoint written before they were recorded may lack.
_LATER_ENTRIES = ("config.data_dir", "config.backend", "config.device", "config.dtype")


def check_run_meta(meta: dict[str, Any]) -> None:
    """``ValueError`` unless a checkpoint's ``meta`` describes a run as :func:`run_experiment`
    writes it, naming the first entry that is missing, malformed or at odds with another:
    the settings (each checked as :meth:`TrainConfig.check` checks a command line's), the
    model (its input shape has a channel or feature for each of the normalisation's means,
    its class count is the number of class names), the input normalisation and the fold.

    What this cannot see is whether the data agrees: :func:`check_run_data`."""
    for entry, what, ok in _META_ENTRIES:
        value = meta
        for key in entry.split("."):
            if not isinstance(value, dict) or key not in value:
                if entry in _LATER_ENTRIES:
                    break
                raise ValueError(f"its metadata lacks {entry} ({what})")
            value = value[key]
        else:
            if not ok(value):
                raise ValueError(f"its metadata's {entry} is {value!r:.60}, expected {what}")
    _check_settings(meta["config"])
    config, spec, norm, fold = meta["config"], meta["model"], meta["normalisation"], meta["fold"]
    if len(norm["mean"]) != len(norm["std"]):
        raise ValueError(
            f"its metadata's normalisation has {len(norm['mean'])} means but "
            f"{len(norm['std'])} standard deviations"
        )
    channels = len(norm["mean"])
    if spec["input_shape"][0] != channels:
        raise ValueError(
            f"its metadata's model.input_shape is {spec['input_shape']!r:.60}, but its "
            f"normalisation has {channels} channel{'s' * (channels != 1)} (a mean and a "
            "standard deviation for each feature or channel, the shape's first entry)"
        )
    if spec["classes"] != len(meta["classes"]):
        raise ValueError(
            f"its metadata's model.classes is {spec['classes']}, but its classes name "
            f"{len(meta['classes'])}"
        )
    if config.get("model", spec["name"]) != spec["name"]:
        raise ValueError(
            f"its metadata's config.model is {config['model']!r} but its model.name is "
            f"{spec['name']!r}"
        )
    folds = config.get("folds")  # 1: the run has no fold; k > 1: it is a fold [i, k]
    if folds is not None and (None if fold is None else fold[1]) != (None if folds == 1 else folds):
        raise ValueError(f"its metadata's fold is {fold} but its config.folds is {folds}")


def _check_settings(config: dict[str, Any]) -> None:
    """The run's settings are those of a run: each that a run always has is set, and each
    passes :meth:`TrainConfig.check`, alone and then together."""
    names = {field.name for field in dataclasses.fields(TrainConfig)} - {"dataset", "out"}
    settings = {name: value for name, value in config.items() if name in names}
    dataset = config["dataset"]
    for name in sorted(set(DEFAULTS) | set(recipe(dataset))):
        if name in settings and settings[name] is None:
            raise ValueError(f"its metadata's config.{name} is None, expected the run's setting")
    for name, value in settings.items():
        try:
            TrainConfig(dataset=dataset, **{name: value}).check()
        except (TypeError, ValueError) as exc:
            raise ValueError(
                f"its metadata's config.{name} is {value!r:.60}: {_unprefixed(exc)}"
            ) from None
    try:
        TrainConfig(dataset=dataset, **settings).check()
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"its metadata's config is no run's settings: {_unprefixed(exc)}"
        ) from None


def _unprefixed(exc: Exception) -> str:
    return str(exc).removeprefix(f"{WHO}: ")


def check_run_data(meta: dict[str, Any], input_shape: Sequence[int], classes: int) -> None:
    """``ValueError`` unless the model a checkpoint's ``meta`` (checked by
    :func:`check_run_meta`) describes takes the data's inputs and classes: to be called
    before a model is built from the metadata (an input shape of 10^10 pixels would make
    its weights a memory error) and before a run is resumed on the data."""
    spec, dataset = meta["model"], meta["config"]["dataset"]
    if list(spec["input_shape"]) != [int(n) for n in input_shape]:
        raise ValueError(
            f"its metadata's model.input_shape is {spec['input_shape']!r:.60}, but the "
            f"{dataset} inputs are {[int(n) for n in input_shape]}"
        )
    if spec["classes"] != classes:
        raise ValueError(
            f"its metadata's model.classes is {spec['classes']}, but {dataset} has {classes} "
            "classes"
        )
