"""Why a short run of a seed CNN with BatchNorm can validate near chance: its moving statistics, not its weights.

    python benchmarks/bn_statistics.py ../shared/datasets/cifar10-jpeg runs/tune/seed-proxy/trials/trial-0003
    python benchmarks/bn_statistics.py DATA RUN_DIR [RUN_DIR ...] [--images 4000]

Keras' BatchNormalization (which the seed's steps use, and cifarlab's proyecto presets follow) starts its moving
variance at 1 and its moving mean at 0 and moves them 1 % per step (momentum 0.99), so after t steps a fraction
0.99**t of the starting values is left. The seed's inputs are pixels / 255, and the first conv's outputs vary far
less than 1: after a few hundred steps the leftover 1 can still outweigh the true variance many times over, and
inference, which divides by the moving variance, sees the features squashed towards zero.

For each run this prints the optimiser steps behind its saved weights, per BatchNorm layer the median ratio of the
saved moving variance to the variance the same weights give on training images, and the test accuracy with the
saved statistics and with statistics recomputed over `--images` training images (training mode, Dropout off, a
plain average).
The weights are not changed; only the statistics are recomputed.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from torch import nn

from cifarlab.data import load_dataset
from cifarlab.device import describe_hardware
from cifarlab.inference.classifier import Classifier

BATCH = 250


def batchnorms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The model's BatchNorm layers, in order."""
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def recompute_statistics(classifier: Classifier, images: torch.Tensor) -> None:
    """Replace every BatchNorm layer's moving statistics by their plain average over `images` (uint8, N x 3 x H x W).

    The model runs in training mode so that BatchNorm normalises with batch statistics and records them, with
    every other module (Dropout above all) in inference mode.
    """
    model = classifier.model
    layers = batchnorms(model)
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None  # a cumulative average over the batches
    model.eval()
    for layer in layers:
        layer.train()
    memory = torch.channels_last if classifier.channels_last else torch.contiguous_format
    for start in range(0, len(images), BATCH):
        pixels = images[start : start + BATCH].to(classifier.device).float()
        model(classifier.normalization(pixels).contiguous(memory_format=memory))
    model.eval()


def steps_trained(run_dir: Path) -> int:
    """Optimiser steps behind a run's saved weights: its best epoch's when it kept the best checkpoint."""
    record = json.loads((run_dir / "config.json").read_text())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    train, images = record["config"]["train"], record["dataset"]["train"]
    epochs = metrics["best_epoch"] if train["checkpoint_best"] and metrics.get("best_epoch") else metrics["epochs_run"]
    per_epoch = train["steps_per_epoch"] or -(-images // train["batch_size"])
    return epochs * per_epoch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", help="the image folder (or 'cifar10') the runs trained on")
    parser.add_argument("runs", nargs="+", type=Path, help="run directories with model.safetensors")
    parser.add_argument("--images", type=int, default=4000, help="training images the statistics are recomputed on")
    args = parser.parse_args()
    dataset = load_dataset(args.data, progress=False)
    pick = torch.randperm(len(dataset.train), generator=torch.Generator().manual_seed(0))[: args.images]
    images = dataset.train.images[pick]
    print(f"{describe_hardware(torch.device('cpu'))}; test images: {len(dataset.test)}")
    for run_dir in args.runs:
        classifier = Classifier.load(run_dir, device="cpu", precision="fp32")
        layers = batchnorms(classifier.model)
        if not layers:
            print(f"{run_dir}: no BatchNorm layer")
            continue
        saved = [layer.running_var.clone() for layer in layers]
        before = classifier.evaluate(dataset.test).accuracy * 100
        recompute_statistics(classifier, images)
        after = classifier.evaluate(dataset.test).accuracy * 100
        ratios = ", ".join(f"{(old / new.clamp_min(1e-12)).median():.3g}" for old, new in
                           zip(saved, (layer.running_var for layer in layers), strict=True))  # fmt: skip
        steps = steps_trained(run_dir)
        print(f"{run_dir}: weights of step {steps} (0.99^steps = {0.99**steps:.2g}); "
              f"saved / true moving variance, median per layer: {ratios}; test accuracy {before:.2f} % with the "
              f"saved statistics, {after:.2f} % recomputed")  # fmt: skip


if __name__ == "__main__":
    main()
