"""One JSON line for a run timed whole from outside, appended to a record (the timing scripts' shared step).

    python benchmarks/run_record.py RECORD RUN_DIR STARTED ENDED [--preset NAME] [--budget DURATION]

STARTED and ENDED are `date +%s.%N` readings around the command. The line holds the command's seconds, the run's
seed, test accuracy, training seconds, epochs run, data and CPU; with --preset, the preset's name; with --budget, the
budget, the share of it the command took, the clock's duration, the widths and the plan `train --budget` printed.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from cifarlab._io.durations import parse_duration


def row(run: Path, seconds: float, preset: str | None = None, budget: str | None = None) -> dict:
    """The record's line for the run saved in `run` whose whole command took `seconds`."""
    config = json.loads((run / "config.json").read_text())
    metrics = json.loads((run / "metrics.json").read_text())
    line: dict = {"preset": preset} if preset else {}
    if budget:
        allowed = parse_duration(budget, "--budget")
        line |= {"budget": budget, "budget_seconds": allowed, "share": round(seconds / allowed, 4)}
    line |= {"seed": config["config"]["seed"], "command_seconds": round(seconds, 1),
             "train_seconds": round(metrics["train_seconds"], 1), "epochs_run": metrics["epochs_run"],
             "test_accuracy": metrics["test_accuracy"], "data": config["config"]["data"]["source"]}  # fmt: skip
    if budget:
        line |= {"duration": config["config"]["train"]["duration"], "widths": config["config"]["arch"]["widths"],
                 "plan": [note for note in metrics["notes"] if "--budget" in note]}  # fmt: skip
    return line | {"hardware": config.get("hardware")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("record", type=Path)
    parser.add_argument("run", type=Path)
    parser.add_argument("started", type=float)
    parser.add_argument("ended", type=float)
    parser.add_argument("--preset")
    parser.add_argument("--budget")
    args = parser.parse_args()
    line = json.dumps(row(args.run, args.ended - args.started, args.preset, args.budget))
    with args.record.open("a") as record:
        record.write(line + "\n")
    print(line)


if __name__ == "__main__":
    main()
