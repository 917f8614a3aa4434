"""Evaluation throughput of a saved run at several batch sizes, and how much of it the kernel takes.

    python benchmarks/eval_batch.py runs/fast94-...                      # 2,000 images, batches 1000,250,125
    python benchmarks/eval_batch.py runs/ladder/proyecto9-s0 --batch-sizes 1000,250 --repeats 3

Times `Classifier.evaluate` (the run's own precision and test-time augmentation) on random uint8 images of the
model's size, batch sizes alternating, after one warm-up, and prints per batch size the median images per second,
the user and kernel CPU seconds of the process and its page faults. Large batches of 32x32 images allocate
activations of 100 MB and more; the allocator gives such blocks back to the kernel after each batch and maps them
afresh for the next, so the page faults show as kernel time. Run it alone: two timed jobs on 2 cores spoil each
other.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time

import torch

from cifarlab.data.dataset import Split
from cifarlab.device import describe_hardware
from cifarlab.inference.classifier import Classifier


def time_evaluate(classifier: Classifier, split: Split, batch_size: int) -> tuple[float, float, float, int]:
    """(images per second, user s, kernel s, page faults) of one evaluation of `split`."""
    before = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    classifier.evaluate(split, batch_size=batch_size)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    return (
        len(split) / seconds,
        after.ru_utime - before.ru_utime,
        after.ru_stime - before.ru_stime,
        after.ru_minflt - before.ru_minflt,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="a finished run directory or its model.safetensors")
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--batch-sizes", default="1000,250,125", help="comma-separated")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    sizes = [int(size) for size in args.batch_sizes.split(",")]

    classifier = Classifier.load(args.run)
    generator = torch.Generator().manual_seed(0)
    side = classifier.image_size
    images = torch.randint(0, 256, (args.images, 3, side, side), dtype=torch.uint8, generator=generator)
    labels = torch.randint(0, len(classifier.class_names), (args.images,), generator=generator)
    split = Split(images, labels)
    print(
        f"{describe_hardware(classifier.device)}; precision {classifier.precision}, TTA level {classifier.tta}, "
        f"{args.images} images, {torch.get_num_threads()} threads"
    )
    classifier.evaluate(Split(images[:200], labels[:200]), batch_size=min(sizes))  # warm-up

    results: dict[int, list[tuple[float, float, float, int]]] = {size: [] for size in sizes}
    for _ in range(args.repeats):
        for size in sizes:
            results[size].append(time_evaluate(classifier, split, size))
    print("| batch | img/s (median) | img/s (each) | user s | kernel s | page faults |")
    print("|---:|---:|---:|---:|---:|---:|")
    for size, rows in results.items():
        rates = [row[0] for row in rows]
        print(
            f"| {size} | {statistics.median(rates):.0f} | {', '.join(f'{rate:.0f}' for rate in rates)} | "
            f"{statistics.median(row[1] for row in rows):.1f} | {statistics.median(row[2] for row in rows):.1f} | "
            f"{statistics.median(row[3] for row in rows):.0f} |"
        )


if __name__ == "__main__":
    main()
