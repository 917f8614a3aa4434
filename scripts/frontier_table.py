"""A frontier study's front.json as BENCHMARKS.md shows it, and as the package ships it.

    python scripts/frontier_table.py benchmarks/frontier/front.json [--png benchmarks/frontier/front.png]
        [--package src/cifarlab/budget/frontier.json]

Prints the front as a markdown table (TFLOPs, seconds on the machine that ran the re-runs, the command time
estimated on Zen 4, test accuracy mean ± std over the seeds) and the point each of 3, 7 and 15 minutes on Zen 4
affords (the budgets the presets are made for); draws it (test accuracy against TFLOPs and against seconds, the
preset as reference) with --png; and with --package writes the file `train --budget` reads: the same record, points
that a cheaper point beats on re-run test accuracy left out (the search's front was drawn on one seed's validation
accuracy).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from cifarlab.presets import ZEN4_BUDGETS

# Zen 4 (2 cores of an AMD EPYC with AVX512-BF16, family 25 model 17), the slowest CPU seen: the TFLOPs per second
# of whole commands there (start-up, loading, training, testing and saving), by AirNet width, measured on the front
# presets and fast94 in session 26 (`bash benchmarks/preset_times.sh`, benchmarks/presets/times.jsonl): air32-9ep
# and air32-13ep (41.8 + 88.2 TFLOP in 187.0 + 386.6 s), air48-13ep (193.5 TFLOP in 694.3 s), fast94 (295.5 TFLOP
# in 894.3 s). Between the widths measured the rate is interpolated, beyond them held.
ZEN4_COMMAND_TFLOPS = ((32, (41.78 + 88.23) / (187.0 + 386.6)), (48, 193.53 / 694.3), (64, 295.48 / 894.3))
ZEN4_MINUTES = tuple(ZEN4_BUDGETS)  # the budgets the front presets are made for
ZEN4_SPARE = 0.05  # a preset for N minutes is estimated to leave this share of them free (run-to-run noise)


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


def zen4_seconds(point: dict[str, Any]) -> float:
    """A point's command seconds on Zen 4, estimated from its FLOPs at its width's measured command rate there."""
    width = (point["overrides"].get("arch.widths") or [64])[0]
    rates = ZEN4_COMMAND_TFLOPS
    width = min(max(width, rates[0][0]), rates[-1][0])
    (w0, r0), (w1, r1) = next((a, b) for a, b in zip(rates, rates[1:], strict=False) if width <= b[0])
    rate = r0 + (r1 - r0) * (width - w0) / (w1 - w0)
    return point["flops"]["total"] / (rate * 1e12)


def zen4_choices(record: dict[str, Any]) -> list[str]:
    """For each of ZEN4_MINUTES, the most accurate point (after the re-runs) Zen 4 runs in it, ZEN4_SPARE free."""
    lines = []
    for minutes in ZEN4_MINUTES:
        fits = [
            p for p in dominated_after_reruns(record["points"]) if zen4_seconds(p) <= 60 * minutes * (1 - ZEN4_SPARE)
        ]
        if not fits:
            lines.append(f"{minutes} min on Zen 4: no point fits")
            continue
        best = max(fits, key=lambda p: p["test_accuracy"]["mean"])
        lines.append(f"{minutes} min on Zen 4: {best['name']} ({describe(best['overrides'])}), about "
                     f"{zen4_seconds(best) / 60:.1f} min, {best['test_accuracy']['mean']:.2f} %")  # fmt: skip
    return lines


def table(record: dict[str, Any]) -> str:
    """The markdown table: each point and the reference, cheapest first."""
    rows = ["| point | recipe | TFLOPs | seconds | Zen 4 (est.) | test accuracy (mean ± std) | seeds |",
            "|---|---|---:|---:|---:|---:|---:|"]  # fmt: skip
    kept = {p["name"] for p in dominated_after_reruns(record["points"])}
    for point in [*record["points"], record["reference"]]:
        seconds = point["seconds"]["mean"]
        reference = point is record["reference"]
        name = point["name"] + (" (preset)" if reference else "")
        name += "" if point["name"] in kept or reference else " (beaten after re-runs)"
        test = point["test_accuracy"]
        rows.append(f"| {name} | {describe(point['overrides'])} | {point['flops']['total'] / 1e12:.1f} | "
                    f"{'–' if seconds is None else f'{seconds:.0f}'} | {zen4_seconds(point) / 60:.1f} min | "
                    f"{test['mean']:.2f} ± {test['std']:.2f} | "
                    f"{len(test['values'])} |")  # fmt: skip
    return "\n".join(rows)


def draw(record: dict[str, Any], path: Path) -> None:
    """Test accuracy against TFLOPs and against seconds, the front's re-run points and the preset."""
    from cifarlab.reports.html import plain_log_x, plt

    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    points, reference = record["points"], record["reference"]
    kept = {p["name"] for p in dominated_after_reruns(points)}
    for ax, key, label in ((axes[0], "flops", "run cost (TFLOPs, log scale)"), (axes[1], "seconds", "command seconds")):

        def at(point, key=key):  # a point's x, None where no re-run of it was timed whole (seconds)
            return point["flops"]["total"] / 1e12 if key == "flops" else point["seconds"]["mean"]

        for beaten in (False, True):
            shown = sorted((p for p in points if at(p) is not None and (p["name"] not in kept) == beaten), key=at)
            if not shown:
                continue
            joined = key == "flops" and not beaten  # in seconds, a costlier point may run faster: no line
            ax.errorbar([at(p) for p in shown], [p["test_accuracy"]["mean"] for p in shown],
                        yerr=[p["test_accuracy"]["std"] for p in shown], fmt="o-" if joined else "o", capsize=3,
                        color="#4c72b0", mfc="white" if beaten else "#4c72b0",
                        label="beaten by a cheaper point after re-runs" if beaten else
                        "front (re-run test, mean ± std)")  # fmt: skip
        if at(reference) is not None:
            ax.errorbar([at(reference)], [reference["test_accuracy"]["mean"]], yerr=[reference["test_accuracy"]["std"]],
                        fmt="D", color="black", label=f"preset {record['preset']}")  # fmt: skip
        if key == "flops":
            plain_log_x(ax)
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
    print()
    print("\n".join(zen4_choices(record)))
    if args.png:
        draw(record, args.png)
    if args.package:
        shipped = {**record, "points": dominated_after_reruns(record["points"])}
        args.package.write_text(json.dumps(shipped, indent=1) + "\n")


if __name__ == "__main__":
    main()
