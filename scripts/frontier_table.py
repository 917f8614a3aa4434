"""A frontier study's front.json as BENCHMARKS.md shows it, and as the package ships it.

    python scripts/frontier_table.py benchmarks/frontier/front.json [--png benchmarks/frontier/front.png]
        [--package src/cifarlab/budget/frontier.json]

Prints the front as a markdown table (TFLOPs, seconds on the machine that ran the re-runs, test accuracy mean ± std
over the seeds), draws it (test accuracy against TFLOPs and against seconds, the preset as reference) with --png,
and with --package writes the file `train --budget` reads: the same record, points that a cheaper point beats on
re-run test accuracy left out (the search's front was drawn on one seed's validation accuracy).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def dominated_after_reruns(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The points (cheapest first) whose re-run test accuracy beats every cheaper point's."""
    kept, best = [], float("-inf")
    for point in sorted(points, key=lambda p: p["flops"]["total"]):
        if point["test_accuracy"]["mean"] > best:
            kept.append(point)
            best = point["test_accuracy"]["mean"]
    return kept


def describe(overrides: dict[str, Any]) -> str:
    """The recipe in a few words, as `train --budget` says it."""
    from cifarlab.budget.frontier import FrontPoint

    return FrontPoint("", overrides, 0.0, None, 0.0, 0.0, 0).describe()


def table(record: dict[str, Any]) -> str:
    """The markdown table: each point and the reference, cheapest first."""
    rows = ["| point | recipe | TFLOPs | seconds | test accuracy (mean ± std) | seeds |",
            "|---|---|---:|---:|---:|---:|"]  # fmt: skip
    kept = {p["name"] for p in dominated_after_reruns(record["points"])}
    for point in [*record["points"], record["reference"]]:
        seconds = point["seconds"]["mean"]
        reference = point is record["reference"]
        name = point["name"] + (" (preset)" if reference else "")
        name += "" if point["name"] in kept or reference else " (beaten after re-runs)"
        test = point["test_accuracy"]
        rows.append(f"| {name} | {describe(point['overrides'])} | {point['flops']['total'] / 1e12:.1f} | "
                    f"{'–' if seconds is None else f'{seconds:.0f}'} | {test['mean']:.2f} ± {test['std']:.2f} | "
                    f"{len(test['values'])} |")  # fmt: skip
    return "\n".join(rows)


def draw(record: dict[str, Any], path: Path) -> None:
    """Test accuracy against TFLOPs and against seconds, the front's re-run points and the preset."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    points, reference = record["points"], record["reference"]
    for ax, key, label in ((axes[0], "flops", "run cost (TFLOPs, log scale)"), (axes[1], "seconds", "command seconds")):

        def at(point, key=key):  # a point's x, None where no re-run of it was timed whole (seconds)
            return point["flops"]["total"] / 1e12 if key == "flops" else point["seconds"]["mean"]

        shown = [p for p in points if at(p) is not None]
        y = [p["test_accuracy"]["mean"] for p in shown]
        err = [p["test_accuracy"]["std"] for p in shown]
        ax.errorbar([at(p) for p in shown], y, yerr=err, fmt="o-", color="#4c72b0", capsize=3,
                    label="front (re-run test, mean ± std)")  # fmt: skip
        if at(reference) is not None:
            ax.errorbar([at(reference)], [reference["test_accuracy"]["mean"]], yerr=[reference["test_accuracy"]["std"]],
                        fmt="D", color="black", label=f"preset {record['preset']}")  # fmt: skip
        if key == "flops":
            ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
    axes[0].legend(loc="lower right", fontsize=8)
    machine = record.get("measured", {}).get("device") or record.get("measured", {}).get("cpu")
    axes[1].set_title(f"on {machine}", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("front", type=Path)
    parser.add_argument("--png", type=Path)
    parser.add_argument("--package", type=Path)
    args = parser.parse_args()
    record = json.loads(args.front.read_text())
    print(table(record))
    if args.png:
        draw(record, args.png)
    if args.package:
        shipped = {**record, "points": dominated_after_reruns(record["points"])}
        args.package.write_text(json.dumps(shipped, indent=1) + "\n")


if __name__ == "__main__":
    main()
