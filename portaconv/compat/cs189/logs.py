"""The package's ``Logger``: keeps each epoch's losses, errors and parameter ranges, and
saves and plots them.

``Logger(model_name, model_args, data_args, save=False, plot=False,
save_dir="experiments/")`` makes ``save_dir + model_name + "/"`` and pickles ``model_args``
and ``data_args`` there. The model calls ``push(log)`` once an epoch with
``{"loss": {"train": .., "validate": ..}, "error": {...}, "params": {"W0": {"max": ..,
"min": ..}, ...}}``; with ``save`` the whole log is pickled to ``log`` after each push, and
with ``plot`` too, one figure per quantity is written (``loss.png``, ``error.png``,
``W0.png``, ...; matplotlib, imported only then).
"""

from __future__ import annotations

import os
import pickle
from typing import Any

__all__ = ["Logger"]


class Logger:
    def __init__(
        self,
        model_name: str,
        model_args: Any,
        data_args: Any,
        save: bool = False,
        plot: bool = False,
        save_dir: str = "experiments/",
    ) -> None:
        self.model_name = model_name
        self.model_args = model_args
        self.data_args = data_args
        self.save = save
        self.save_dir = save_dir + model_name + "/"
        self.plot = plot
        self.counter = 0
        self.log: dict[str, Any] = {}
        os.makedirs(self.save_dir, exist_ok=True)
        with open(self.save_dir + "model_args", "wb") as f:
            pickle.dump(self.model_args, f)
        with open(self.save_dir + "data_args", "wb") as f:
            pickle.dump(self.data_args, f)

    def __repr__(self) -> str:
        return f"Logger({self.model_name!r}, save_dir={self.save_dir!r}, epochs={self.counter})"

    def push(self, log: dict[str, Any]) -> None:
        """Append one epoch's ``log`` (see the module) and save (and plot) if asked."""
        if self.counter == 0:
            self.log = {k: {} for k in log}
            if "params" in log:
                self.log["params"] = {k: {"max": [], "min": []} for k in log["params"]}
            self.log["loss"] = {"train": [], "validate": []}
            self.log["error"] = {"train": [], "validate": []}
        self.counter += 1
        for key, value in log.items():
            if key == "params":
                for param, vals in value.items():
                    entry = self.log["params"].setdefault(param, {"max": [], "min": []})
                    entry["max"].append(vals["max"])
                    entry["min"].append(vals["min"])
            else:
                self.log[key]["train"].append(value["train"])
                self.log[key]["validate"].append(value["validate"])
        if self.save:
            with open(self.save_dir + "log", "wb") as f:
                pickle.dump(self.log, f)
            if self.plot:
                self._plot()

    def reset(self) -> None:
        self.log = {}
        self.counter = 0

    def _plot(self) -> None:
        # matplotlib's Figure without pyplot: no window and no global backend switch
        from matplotlib.figure import Figure

        for key, value in self.log.items():
            if key == "params":
                curves = [
                    (p, {f"{p}_max": v["max"], f"{p}_min": v["min"]}) for p, v in value.items()
                ]
            else:
                curves = [(key, {"training": value["train"], "validation": value["validate"]})]
            for name, series in curves:
                figure = Figure(figsize=(15, 10))
                axes = figure.subplots()
                for label, points in series.items():
                    axes.plot(points, label=label)
                axes.legend()
                axes.set_xlabel("epochs")
                axes.set_ylabel(name)
                axes.set_title(self.model_name)
                figure.savefig(self.save_dir + name)
