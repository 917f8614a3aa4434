"""`cifarlab tune --frontier`: the Pareto front of accuracy against cost, re-run over seeds, and `front.json`.

A frontier study has two objectives (`objectives`): the final validation accuracy, up, and the recipe's TFLOPs,
down. Its answer is not one winner but the front: the trials no other trial beats on both. Each front point (or
`--top-k` of them, spread along the cost axis) trains again over the re-run seeds with the test split, beside the
preset, and `front.json` keeps what `cifarlab train --budget` needs of them: each point's overrides of the preset,
its FLOPs, and the seconds and accuracy it took on the machine that ran it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from cifarlab._io.atomic import write_json
from cifarlab.data import Dataset
from cifarlab.device import describe_hardware
from cifarlab.training.cost import DataSizes, RunCost, data_sizes, recipe_cost
from cifarlab.training.run_dir import RunFiles
from cifarlab.tuning.rerun import Candidate, rerun

if TYPE_CHECKING:
    from cifarlab.tuning.search import Search

FRONT_JSON = "front.json"


def front_trials(study: Any) -> list[Any]:
    """The study's Pareto front (Optuna's `best_trials`), cheapest first."""
    return sorted(study.best_trials, key=lambda t: (t.values[1], -t.values[0], t.number))


def spread(front: list[Any], k: int | None) -> list[Any]:
    """At most `k` points of a front (cheapest first), spread evenly along its log-cost axis.

    The cheapest and the most accurate (the costliest) are always kept; `k` None keeps every point, 1 the most
    accurate alone, 0 none.
    """
    if k is None or k >= len(front):
        return list(front)
    if k <= 1:
        return front[-1:] if k == 1 else []
    costs = [math.log(max(t.values[1], 1e-30)) for t in front]
    chosen = {0, len(front) - 1}
    for i in range(1, k - 1):  # each inner target on the log-cost axis takes the nearest point not yet chosen
        target = costs[0] + (costs[-1] - costs[0]) * i / (k - 1)
        chosen.add(min((j for j in range(len(front)) if j not in chosen), key=lambda j: abs(costs[j] - target)))
    return [front[j] for j in sorted(chosen)]


def rerun_front(
    search: Search, chosen: list[Any], seeds: list[int], dataset: Dataset
) -> tuple[list[Candidate], list[RunCost], DataSizes]:
    """Re-run the chosen front trials (cheapest first) and the preset over `seeds`, with the test split.

    Returns:
        The candidates (the trials, then the preset), each one's cost on the re-runs' splits, and those splits.
    """
    candidates = rerun(search, chosen, seeds, dataset)
    sizes = data_sizes(search.base_config, dataset)
    return candidates, [recipe_cost(c.config, sizes) for c in candidates], sizes


def write_front(
    search: Search, candidates: list[Candidate], costs: list[RunCost], sizes: DataSizes, seeds: list[int]
) -> Path:
    """Write STUDY_DIR/front.json (atomically): the front's re-run points by cost, and the preset as reference."""
    points = [_point(search, c, cost) for c, cost in zip(candidates, costs)]
    record = {
        "study": search.study_name,
        "preset": search.preset,
        "data": sizes.to_dict(),
        "measured": _measured(candidates, seeds),
        "points": sorted(points[:-1], key=lambda p: p["flops"]["total"]),
        "reference": points[-1],
    }
    path = Path(search.study_dir) / FRONT_JSON
    write_json(path, record)
    return path


def _point(search: Search, candidate: Candidate, cost: RunCost) -> dict[str, Any]:
    """One configuration of front.json: what it changes in the preset, what it costs, what it scored."""
    return {
        "name": candidate.name,
        "trial": candidate.trial,
        "overrides": {key: _plain(value) for key, value in search.trial_overrides(candidate.params).items()},
        "flops": cost.to_dict(),
        "seconds": _spread_of(candidate.seconds, std=False),
        "train_seconds": _spread_of(candidate.train_seconds, std=False),
        "val_accuracy": _spread_of(candidate.val),
        "test_accuracy": _spread_of(candidate.test),
        "search_val_accuracy": None if candidate.search_value is None else candidate.search_value * 100,
    }


def _spread_of(values: list[float | None], std: bool = True) -> dict[str, Any]:
    known = [v for v in values if v is not None]
    spread = {"mean": statistics.fmean(known) if known else None}
    if std:
        spread["std"] = statistics.stdev(known) if len(known) > 1 else 0.0
    return spread | {"values": list(values)}


def _plain(value: Any) -> Any:
    """A run-config override as JSON holds it (tuples as lists, a dataclass as its fields)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: _plain(v) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _measured(candidates: list[Candidate], seeds: list[int]) -> dict[str, Any]:
    """Where the seconds were measured: the CPU, the device the re-runs trained on, torch, the seeds, the date."""
    return {"cpu": describe_hardware(torch.device("cpu")), "device": measured_device(candidates),
            "torch": torch.__version__, "seeds": list(seeds), "date": time.strftime("%Y-%m-%d")}  # fmt: skip


def measured_device(candidates: list[Candidate]) -> str:
    """The hardware the re-runs trained on, as their config.json names it ('NVIDIA H100 ...', or the CPU)."""
    record = json.loads(RunFiles(candidates[-1].run_dirs[0]).config.read_text())
    return str(record.get("hardware") or record.get("device"))


def front_table(candidates: list[Candidate], costs: list[RunCost], front_size: int) -> str:
    """The terminal table of the front's re-run points (cheapest first), then the preset."""
    header = ("config", "TFLOPs", "seconds", "search val", "re-run val", "re-run test (mean ± std)")
    rows = []
    for candidate, cost in zip(candidates, costs):
        mean, std = candidate.test_mean_std
        seconds = _spread_of(candidate.seconds, std=False)["mean"]
        rows.append((
            candidate.name + (" (preset)" if candidate.trial is None else ""),
            f"{cost.total / 1e12:.4g}",
            "-" if seconds is None else f"{seconds:.1f}",
            "-" if candidate.search_value is None else f"{candidate.search_value * 100:.2f}",
            f"{candidate.val_mean:.2f}",
            f"{mean:.2f} ± {std:.2f}",
        ))  # fmt: skip
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(header, widths))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows]
    shown = len(candidates) - 1
    lines.append(f"the Pareto front of accuracy against cost: {shown} of its {front_size} points re-run, cheapest "
                 f"first; accuracies in %, over {len(candidates[-1].test)} seeds; seconds: wall seconds of a re-run "
                 f"on {measured_device(candidates)}, mean over the seeds")  # fmt: skip
    return "\n".join(lines) + "\n"
