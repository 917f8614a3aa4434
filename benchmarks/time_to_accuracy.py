"""Time to accuracy: train presets on real data, several seeds, one run at a time, and check them against targets.

Each run is a normal `cifarlab.train` (the fast presets hold out 5 % for their temperature and test once at the end).
Each row also gives the run's calibration: its temperature and the 15-bin test ECE before and after it.
Training time is the sum of the epochs' wall time; data loading and the final (TTA) evaluation are reported apart.
Before each run the script waits until the machine is quiet (1-minute load average below --max-load), because
two timed jobs on 2 cores spoil each other.

    python benchmarks/time_to_accuracy.py --data ../shared/datasets/cifar10-jpeg --presets fast88,fast94 --seeds 0,1,2
    python benchmarks/time_to_accuracy.py --data ../shared/datasets/cifar10-jpeg --presets proyecto9 --epochs 3

Targets (accuracy %, training seconds) are issue 3's for the JPEG copy; other presets are reported without one.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import cifarlab
from cifarlab.data import load_dataset
from cifarlab.evaluation.calibration import apply_temperature, expected_calibration_error

TARGETS = {"fast88": (88.4, 180.0), "fast94": (90.8, 420.0)}  # on ../shared/datasets/cifar10-jpeg


def wait_for_quiet(max_load: float, timeout: float = 600.0) -> float:
    """Sleep until the 1-minute load average drops below `max_load` (or `timeout` passes); returns the load."""
    deadline = time.monotonic() + timeout
    load = os.getloadavg()[0]
    while load >= max_load and time.monotonic() < deadline:
        time.sleep(10)
        load = os.getloadavg()[0]
    return load


def main() -> None:
    """Run every preset x seed and print one row per run, then a summary per preset."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="CIFAR-10 as an image folder (or 'cifar10')")
    parser.add_argument("--presets", default="fast88,fast94")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    parser.add_argument("--epochs", type=int, help="override every preset's epochs")
    parser.add_argument("--config", metavar="TOML", help="run config applied over each preset")
    parser.add_argument("--max-load", type=float, default=1.0, help="wait for a 1-minute load average below this")
    parser.add_argument("--out", default="runs/time-to-accuracy", help="run directories and results.jsonl go here")
    args = parser.parse_args()

    started = time.perf_counter()
    dataset = load_dataset(args.data)
    load_seconds = time.perf_counter() - started
    print(f"data: {args.data} loaded in {load_seconds:.1f} s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows: dict[str, list[dict]] = {}
    for preset in args.presets.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            load = wait_for_quiet(args.max_load)
            started = time.perf_counter()
            result = cifarlab.train(preset, dataset=dataset, config_file=args.config, seed=seed, epochs=args.epochs,
                                    out=str(out / f"{preset}-seed{seed}"), quiet=True)  # fmt: skip
            total = time.perf_counter() - started
            probabilities = result.test.probabilities.float().numpy()
            labels = dataset.test.labels.numpy()
            temperature = json.loads((result.run_dir / "metrics.json").read_text())["temperature"]
            calibrated = None if temperature is None else apply_temperature(probabilities, temperature)
            ece = None if calibrated is None else round(100 * expected_calibration_error(calibrated, labels), 2)
            row = {
                "preset": preset,
                "seed": seed,
                "epochs": len(result.history),
                "train_seconds": round(result.train_seconds, 1),
                "other_seconds": round(total - result.train_seconds, 1),  # model setup, final evaluation, saving
                "test_accuracy": round(100 * result.test.accuracy, 2),
                "temperature": None if temperature is None else round(temperature, 3),
                "test_ece_raw": round(100 * expected_calibration_error(probabilities, labels), 2),
                "test_ece": ece,
                "load_before": round(load, 2),
            }
            rows.setdefault(preset, []).append(row)
            with open(out / "results.jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")
            print(" | ".join(f"{k} {v}" for k, v in row.items()), flush=True)

    print("\n| preset | runs | test accuracy mean (min-max) | training time mean (min-max) | target | met |")
    print("|---|---:|---:|---:|---|---|")
    for preset, runs in rows.items():
        accuracy = [r["test_accuracy"] for r in runs]
        seconds = [r["train_seconds"] for r in runs]
        target = TARGETS.get(preset)
        met = "-"
        if target is not None:
            met = "yes" if statistics.mean(accuracy) >= target[0] and max(seconds) <= target[1] else "no"
        print(
            f"| {preset} | {len(runs)} | {statistics.mean(accuracy):.2f} % ({min(accuracy):.2f}-{max(accuracy):.2f})"
            f" | {statistics.mean(seconds):.0f} s ({min(seconds):.0f}-{max(seconds):.0f})"
            f" | {f'>= {target[0]} % in <= {target[1]:.0f} s' if target else '-'} | {met} |"
        )


if __name__ == "__main__":
    main()
