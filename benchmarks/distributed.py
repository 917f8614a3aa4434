"""Distributed against one process on this machine: N ranks x T threads vs 1 process x N*T threads.

    python benchmarks/distributed.py                                  # proyecto4, 2 ranks x 1 thread vs 1 x 2
    python benchmarks/distributed.py --preset fast88 --epochs 3 --per-class-limit 300 --repeats 3
    python benchmarks/distributed.py --device cuda --nproc 1          # a lent GPU: torchrun with 1 rank vs plain

Both sides run the real command (`cifarlab train`, the distributed one with `--nproc`) on the same preset, global
batch, seed and data (a per-class subset of an image folder, cached after the first load), alternating within each
repeat so that drifts in machine speed hit both alike. The figure is the median epoch time over epochs 2 and on
(the first holds one-off set-up) and the whole command's wall time, start-up included. Timings on a shared machine
are noisy: run nothing else meanwhile, and say so when you quote them.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run_once(args: argparse.Namespace, nproc: int, out: Path) -> dict[str, float]:
    """One `cifarlab train`, as `nproc` ranks (0 = one plain process); its epoch times, wall time and accuracy."""
    threads = args.threads * (args.nproc if nproc == 0 else 1)  # the same cores for both sides
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    argv = [sys.executable, "-m", "cifarlab", "train", "--preset", args.preset, "--data", args.data, "--epochs",
            str(args.epochs), "--per-class-limit", str(args.per_class_limit), "--val-size", str(args.val_size),
            "--device", args.device, "--precision", args.precision, "--out", str(out), "--quiet", "--seed", "0",
            "--no-early-stop"]  # fmt: skip
    if args.batch_size:
        argv += ["--batch-size", str(args.batch_size)]
    if nproc:
        argv += ["--nproc", str(nproc)]
    started = time.perf_counter()
    result = subprocess.run(argv, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({result.returncode}):\n{result.stderr[-2000:]}")
    with (out / "history.csv").open() as f:
        seconds = [float(row["seconds"]) for row in csv.DictReader(f)]
    accuracy = json.loads((out / "metrics.json").read_text())["test_accuracy"]
    return {"epoch_s": statistics.median(seconds[1:] or seconds), "wall_s": wall, "test_accuracy": accuracy}


def main() -> None:
    """Parse the options, alternate the two sides, print the medians."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="proyecto4")
    parser.add_argument("--data", default="../shared/datasets/cifar10-jpeg", help="an image folder")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--per-class-limit", type=int, default=200, help="training images per class")
    parser.add_argument("--val-size", type=int, default=200)
    parser.add_argument("--batch-size", type=int, help="global batch (default: the preset's)")
    parser.add_argument("--nproc", type=int, default=2, help="ranks of the distributed side")
    parser.add_argument("--threads", type=int, default=1, help="threads per rank (the single process gets nproc x)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--precision", default="fp32", choices=["auto", "bf16", "fp32"])
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    if not Path(args.data).is_dir():
        raise SystemExit(f"--data {args.data}: no such folder")

    sides = {
        f"1 process x {args.threads * args.nproc} threads": 0,
        f"{args.nproc} ranks x {args.threads} threads": args.nproc,
    }
    if args.device == "cuda":  # one GPU: torchrun with nproc ranks against the plain process
        sides = {"1 process": 0, f"torchrun, {args.nproc} rank(s)": args.nproc}
    results: dict[str, list[dict[str, float]]] = {name: [] for name in sides}
    with tempfile.TemporaryDirectory(prefix="cifarlab-dist-bench-") as tmp:
        for repeat in range(args.repeats):
            order = list(sides.items()) if repeat % 2 == 0 else list(reversed(sides.items()))
            for name, nproc in order:
                results[name].append(run_once(args, nproc, Path(tmp) / f"{repeat}-{nproc}"))
                print(f"repeat {repeat + 1}, {name}: {results[name][-1]}", flush=True)
    print(f"\n{args.preset}, {args.epochs} epochs on {args.per_class_limit}/class of {args.data}, "
          f"device {args.device}, {args.precision}, medians of {args.repeats}")  # fmt: skip
    base = statistics.median(r["epoch_s"] for r in results[next(iter(sides))])
    for name, runs in results.items():
        epoch = statistics.median(r["epoch_s"] for r in runs)
        wall = statistics.median(r["wall_s"] for r in runs)
        accuracy = statistics.median(r["test_accuracy"] for r in runs)
        print(f"{name:<26} epoch {epoch:7.2f} s ({base / epoch:4.2f}x)  command {wall:7.1f} s  test acc {accuracy:.4f}")


if __name__ == "__main__":
    main()
