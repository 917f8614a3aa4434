"""A tiny trained run for the predict, export and serve tests (trained once per test module)."""

from __future__ import annotations

from pathlib import Path

import pytest

import cifarlab
from tests.factories import make_dataset, write_image_folder

CLASS_NAMES = ["class0", "class1", "class2", "class3"]


def train_tiny_run(root: Path) -> Path:
    """Train proyecto1 for 2 epochs on a 4-class image folder under `root`; returns the run directory."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CIFARLAB_HOME", str(root / "home"))
        folder = write_image_folder(root / "images", make_dataset(train=80, test=40))
        run = root / "run"
        cifarlab.train("proyecto1", data=str(folder), epochs=2, batch_size=16, val_size=20, out=str(run), quiet=True,
                       precision="fp32", seed=0)  # fmt: skip
    return run
