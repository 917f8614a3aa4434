"""proyecto9's gap to the seed (issue 32, point 5): its trained network, evaluated in ways a training change would act.

    python benchmarks/proyecto9_gap.py runs/full/proyecto9-s0            # the run's own data (config.json)

No training: on the run's final weights (model.safetensors) and its own splits, it prints the test accuracy

- at fp32 and at the run's precision (bf16 autocast where the CPU has bf16): what the precision costs at test;
- after BatchNorm's moving statistics are re-estimated (a cumulative average, dropout off) on the clean training
  split, and, as the control, on the training split through the preset's own augmentation: a large gain from the
  clean ones alone says the moving averages gathered under the augmentation misfit clean test images;
- on test images stretched to their own min..max, as Keras up to 2.8 stretched each training image inside its
  brightness shift (`array_to_img(scale=True)`): how far apart the two input distributions are for this network.

Each figure is one evaluation of the 10,000 test images; the run's figure (metrics.json) is printed beside them.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import torch
from torch import nn

from cifarlab.api import load_training_data
from cifarlab.config import config_from_dict
from cifarlab.data.augment import Augmenter
from cifarlab.data.augment_ops import min_max_stretch
from cifarlab.data.dataset import Split, with_validation
from cifarlab.device import describe_hardware
from cifarlab.inference.classifier import Classifier

BATCH = 500


@torch.no_grad()
def reestimate_batchnorm(classifier: Classifier, images: torch.Tensor, augment: Augmenter | None, seed: int) -> None:
    """Replace every BatchNorm's moving statistics by their cumulative average over `images` (train-mode batch
    statistics, dropout off), optionally through `augment` as the training saw them."""
    model = classifier.model
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative moving average
    generator = torch.Generator(device=images.device).manual_seed(seed)
    order = torch.randperm(len(images), generator=generator)
    for norm in norms:
        norm.train()
    for start in range(0, len(images), BATCH):
        pixels = images[order[start : start + BATCH]].float()
        if augment is not None:
            pixels = augment(pixels, generator)
        model(classifier.normalization(pixels))
    model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    args = parser.parse_args()
    record = json.loads((args.run_dir / "config.json").read_text())
    config = config_from_dict(record["config"])
    metrics = json.loads((args.run_dir / "metrics.json").read_text())
    data = with_validation(load_training_data(config), config.data.val_size, config.seed)
    ran = f"{metrics['epochs_run']} epochs, test {100 * metrics['test_accuracy']:.2f} % as run ({record['precision']})"
    print(f"{args.run_dir}: {config.preset}, {ran}; {describe_hardware(torch.device('cpu'))}")

    def accuracy(classifier: Classifier, split: Split) -> str:
        return f"{100 * classifier.evaluate(split).accuracy:.2f} %"

    base = {p: Classifier.load(args.run_dir, precision=p) for p in ("fp32", record["precision"])}
    rows = [(f"as trained, {p}", accuracy(c, data.test)) for p, c in base.items()]
    test_stretched = Split(min_max_stretch(data.test.images.float()).to(torch.uint8), data.test.labels)
    rows.append(("test images stretched to their min..max, fp32", accuracy(base["fp32"], test_stretched)))
    for name, augment in (("clean", None), ("augmented (control)", Augmenter(config.train.augment))):
        classifier = copy.deepcopy(base["fp32"])
        reestimate_batchnorm(classifier, data.train.images, augment, config.seed)
        rows.append((f"BatchNorm statistics re-estimated on the {name} training split, fp32",
                     accuracy(classifier, data.test)))  # fmt: skip
    width = max(len(name) for name, _ in rows)
    for name, shown in rows:
        print(f"  {name.ljust(width)}  {shown}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
