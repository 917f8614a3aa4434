"""The measured accuracy–cost front that `train --budget` chooses from, shipped as data in the package.

`cifarlab tune --frontier` writes a study's front as `front.json`: each Pareto-optimal recipe as overrides of the
searched preset, its cost in FLOPs (machine-independent), its seconds on the machine that ran the study, and its
test accuracy over the re-run seeds. `frontier.json` beside this module is such a file, from the study recorded in
`benchmarks/frontier/` (how it was measured is in its `measured` entry and in BENCHMARKS.md).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

FRONTIER_FILE = "frontier.json"


@dataclass(frozen=True)
class FrontPoint:
    """One recipe of the front."""

    name: str
    overrides: dict[str, Any]  # dotted run-config keys over the front's preset
    flops: float  # the whole run's FLOPs on the data the front was measured on
    seconds: float | None  # command seconds on the machine that measured it (mean over seeds; None: not timed)
    accuracy: float  # test accuracy in %, mean over seeds
    accuracy_std: float
    seeds: int

    @property
    def epochs(self) -> int | None:
        """The point's epochs, when it sets them."""
        value = self.overrides.get("train.epochs")
        return None if value is None else int(value)

    def describe(self) -> str:
        """'AirNet 48/192/192, 7 epochs (3 at 20px), batch 1000, TTA 1': the recipe in a few words."""
        o = self.overrides
        parts = []
        if "arch.widths" in o:
            parts.append("AirNet " + "/".join(str(w) for w in o["arch.widths"]))
        if "train.epochs" in o:
            low = o.get("train.low_res_epochs") or 0
            size = o.get("train.low_res_size")
            parts.append(f"{o['train.epochs']} epochs" + (f" ({low} at {size}px)" if low and size else ""))
        if "train.batch_size" in o:
            parts.append(f"batch {o['train.batch_size']}")
        if "train.tta" in o:
            parts.append(f"TTA {o['train.tta']}")
        return ", ".join(parts) or "the preset as it is"


@dataclass(frozen=True)
class Frontier:
    """The front's points (cheapest first), the preset they change, and where they were measured."""

    preset: str
    points: tuple[FrontPoint, ...]
    data: dict[str, Any]  # the splits it was measured on: train, val, test, image_size, classes, source
    measured: dict[str, Any]  # cpu or device, torch version, seeds, date
    path: str

    def machine(self) -> str:
        """The machine the seconds were measured on, in words."""
        return str(self.measured.get("device") or self.measured.get("cpu") or "an unnamed machine")


def load_frontier(path: str | Path | None = None) -> Frontier:
    """The front in `path` (a study's front.json), or the one shipped with cifarlab.

    Raises:
        ValueError: for a file that is not a front (one line, naming it and what is missing).
        FileNotFoundError: for a path that does not exist.
    """
    if path is None:
        text = resources.files("cifarlab.budget").joinpath(FRONTIER_FILE).read_text()
        where = f"cifarlab's {FRONTIER_FILE}"
    else:
        text = Path(path).read_text()
        where = str(path)
    try:
        record = json.loads(text)
        points = tuple(sorted((_point(p) for p in record["points"]), key=lambda p: p.flops))
        preset = str(record["preset"])
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"{where} is not an accuracy-cost front (tune --frontier's front.json): "
                         f"{type(error).__name__}: {error}") from None  # fmt: skip
    if not points:
        raise ValueError(f"{where} holds no front point")
    return Frontier(preset, points, dict(record.get("data") or {}), dict(record.get("measured") or {}), where)


def _point(entry: dict[str, Any]) -> FrontPoint:
    test = entry["test_accuracy"]
    values = test.get("values") or [test["mean"]]
    return FrontPoint(
        name=str(entry["name"]),
        overrides=dict(entry["overrides"]),
        flops=float(entry["flops"]["total"]),
        seconds=None if (entry.get("seconds") or {}).get("mean") is None else float(entry["seconds"]["mean"]),
        accuracy=float(test["mean"]),
        accuracy_std=float(test.get("std") or 0.0),
        seeds=len(values),
    )
