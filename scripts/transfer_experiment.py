r"""Transfer that can be measured offline: a backbone learnt on 5 CIFAR-10 classes, reused for the other 5.

1. source: proyecto4 trained on all the images of airplane, automobile, bird, cat and deer;
2. target: dog, frog, horse, ship and truck with only 100 labelled training images per class (500 in all), the
   full test split of those classes (5,000 images), and four ways to learn them:
   (a) frozen:   the source's layers up to its classifier, frozen (features computed once), a new Linear head;
   (b) finetune: the same, all 4 backbone blocks fine-tuned at 0.1x the head's learning rate;
   (b2) partial: only the last conv block and the Dense layer fine-tuned (--finetune 2);
   (c) scratch:  the same proyecto4 network trained from scratch on the 500 images.

A fifth row re-tests the scratch network after recomputing its BatchNorm running statistics on its 500 training
images (no training): with Keras' BatchNorm momentum (0.99) and only 8 steps per epoch, the running statistics
lag the weights, and in inference mode the scratch network gets even its own training images wrong. The
transfer runs keep the source's statistics (BatchNorm frozen), so they do not suffer from it.

Every target run uses the same 500 images (the seeded --per-class-limit choice), no validation split (all 500
train; the last weights are tested, no model selection on the test set) and proyecto4's Adam(1e-3) at batch 64.
The same runs from the command line:

    cifarlab train --preset proyecto4 --data D --classes airplane,automobile,bird,cat,deer --val-size 2500 \
        --epochs 12 --out OUT/source
    T="--data D --classes dog,frog,horse,ship,truck --per-class-limit 100 --val-size 0 --batch-size 64"
    cifarlab train --preset proyecto4 $T --backbone OUT/source --epochs 100 --out OUT/frozen
    cifarlab train --preset proyecto4 $T --backbone OUT/source --finetune 4 --epochs 30 --out OUT/finetune
    cifarlab train --preset proyecto4 $T --backbone OUT/source --finetune 2 --epochs 30 --out OUT/partial
    cifarlab train --preset proyecto4 $T --epochs 60 --out OUT/scratch

Usage: python scripts/transfer_experiment.py [--data ../shared/datasets/cifar10-jpeg] [--out runs/transfer-5x5]
The table goes to stdout and, with the settings, to OUT/summary.json and OUT/summary.md. Runs already finished in
OUT are reused, so a second call only redoes what is missing.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch import nn

import cifarlab
from cifarlab._io.atomic import write_json, write_text
from cifarlab.data import Split
from cifarlab.data.dataset import select_classes
from cifarlab.device import autocast

SOURCE = ("airplane", "automobile", "bird", "cat", "deer")
TARGET = ("dog", "frog", "horse", "ship", "truck")


def _seconds(row: dict) -> str:
    """A row's training time for the table ('-' when it did not train)."""
    return f"{row['train_seconds']:.0f} s" if "train_seconds" in row else "-"


def recalibrated_accuracy(run_dir: Path, train: Split, test: Split, passes: int = 3, seed: int = 0) -> float:
    """Test accuracy of a saved run after recomputing its BatchNorm running statistics on `train` (dropout off)."""
    classifier = cifarlab.load(run_dir)
    model = classifier.model
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # a plain average over every batch of the passes
    model.train()
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.eval()
    inputs = classifier.normalization(train.images.float().to(classifier.device))
    if classifier.channels_last:
        inputs = inputs.contiguous(memory_format=torch.channels_last)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad(), autocast(classifier.device, classifier.precision):
        for _ in range(passes):
            for index in torch.randperm(len(train), generator=generator).split(64):
                model(inputs[index])
    model.eval()
    return classifier.evaluate(test).accuracy


def main() -> None:
    """Run the source training and the target runs, then print and save the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="../shared/datasets/cifar10-jpeg", help="CIFAR-10 source or image folder")
    parser.add_argument("--out", default="runs/transfer-5x5", help="folder for the runs and the summary")
    parser.add_argument("--per-class-limit", type=int, default=100, help="labelled target images per class")
    parser.add_argument("--source-epochs", type=int, default=12)
    parser.add_argument("--source-val-size", type=int, default=2500, help="source images held out for validation")
    parser.add_argument("--frozen-epochs", type=int, default=100)
    parser.add_argument("--finetune-epochs", type=int, default=30)
    parser.add_argument("--scratch-epochs", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    out = Path(args.out)
    started = time.perf_counter()
    dataset = cifarlab.load_dataset(args.data)  # decoded once, shared by every run
    common = {"dataset": dataset, "quiet": True, "seed": args.seed}

    source = out / "source"
    if not (source / "model.json").is_file():  # rerunning the script reuses a finished source run
        result = cifarlab.train("proyecto4", classes=SOURCE, val_size=args.source_val_size, epochs=args.source_epochs,
                                out=str(source), **common)  # fmt: skip
        print(result.summary(), flush=True)
    source_metrics = json.loads((source / "metrics.json").read_text())

    target = {"classes": TARGET, "per_class_limit": args.per_class_limit, "val_size": 0, "batch_size": 64, **common}
    runs = {
        "frozen": {"backbone": str(source), "epochs": args.frozen_epochs},
        "finetune": {"backbone": str(source), "finetune": 4, "epochs": args.finetune_epochs},
        "partial": {"backbone": str(source), "finetune": 2, "epochs": args.finetune_epochs},
        "scratch": {"epochs": args.scratch_epochs},
    }
    rows = []
    for name, options in runs.items():
        if not (out / name / "metrics.json").is_file():
            result = cifarlab.train("proyecto4", out=str(out / name), **target, **options)
            print(f"{name}: {result.summary()}", flush=True)
        metrics = json.loads((out / name / "metrics.json").read_text())
        settings = {key: value for key, value in options.items() if key != "epochs"}
        rows.append({"run": name, "test_accuracy": metrics["test_accuracy"], "epochs": metrics["epochs_run"],
                     "train_seconds": metrics["train_seconds"], **settings})  # fmt: skip
    chosen = select_classes(dataset, TARGET, args.per_class_limit, args.seed)  # the 500 images every run used
    recalibrated = recalibrated_accuracy(out / "scratch", chosen.train, chosen.test, seed=args.seed)
    rows.append({"run": "scratch, BatchNorm statistics recomputed", "test_accuracy": recalibrated})

    minutes = (time.perf_counter() - started) / 60
    test_count = sum(dataset.class_names[label] in TARGET for label in dataset.test.labels.tolist())
    lines = [
        f"source: proyecto4 on {', '.join(SOURCE)}, {args.source_epochs} epochs, "
        f"test accuracy {source_metrics['test_accuracy'] * 100:.2f} % (5 classes)",
        f"target: {', '.join(TARGET)}, {args.per_class_limit} training images per class, {test_count:,} test images",
        "",
        "| run | test accuracy | epochs | train time |",
        "|---|---:|---:|---:|",
        *(f"| {r['run']} | {r['test_accuracy']:.2%} | {r.get('epochs', '-')} | {_seconds(r)} |" for r in rows),
        "",
        f"wall time of this call {minutes:.1f} min (data loading, training, features and evaluations included)",
    ]
    text = "\n".join(lines)
    print(text)
    write_text(out / "summary.md", text + "\n")
    write_json(out / "summary.json", {"settings": vars(args), "source": source_metrics["test_accuracy"],
                                      "runs": rows, "wall_minutes": minutes})  # fmt: skip


if __name__ == "__main__":
    main()
