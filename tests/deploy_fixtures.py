"""A tiny trained run for the predict, export and serve tests (trained once per test module)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import cifarlab
from tests.factories import make_dataset, write_image_folder

CLASS_NAMES = ["class0", "class1", "class2", "class3"]


def train_tiny_run(root: Path, **overrides: Any) -> Path:
    """Train proyecto1 (2 epochs unless `overrides` say otherwise) on a 4-class image folder under `root`; its run."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CIFARLAB_HOME", str(root / "home"))
        folder = write_image_folder(root / "images", make_dataset(train=80, test=40))
        run = root / "run"
        options = {"epochs": 2, "batch_size": 16, "val_size": 20, "precision": "fp32", "seed": 0} | overrides
        cifarlab.train("proyecto1", data=str(folder), out=str(run), quiet=True, **options)
    return run
