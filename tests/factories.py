"""Small, learnable datasets made on the fly, in memory and as image folders."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import torch
from PIL import Image

from cifarlab import api
from cifarlab.data import Dataset, Split
from cifarlab.training.history import History


def make_split(n: int, num_classes: int = 4, size: int = 32, seed: int = 0) -> Split:
    """Images whose class shows as a colour and a stripe direction, plus noise: easy but not trivial."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % num_classes
    palette = np.random.default_rng(1234).integers(30, 225, size=(num_classes, 3))
    yy, xx = np.mgrid[0:size, 0:size]
    images = np.empty((n, 3, size, size), dtype=np.uint8)
    for i, label in enumerate(labels):
        stripes = ((xx if label % 2 else yy) // 4 % 2) * 40.0
        noise = rng.normal(0, 25, size=(3, size, size))
        images[i] = np.clip(palette[label][:, None, None] + stripes + noise, 0, 255).astype(np.uint8)
    return Split(torch.from_numpy(images), torch.from_numpy(labels).long())


def make_dataset(train: int = 160, test: int = 40, num_classes: int = 4, size: int = 32) -> Dataset:
    """A Dataset with `num_classes` classes named class0, class1, ..."""
    return Dataset(
        class_names=[f"class{i}" for i in range(num_classes)],
        train=make_split(train, num_classes, size, seed=0),
        test=make_split(test, num_classes, size, seed=1),
        source="synthetic",
    )


def write_image_folder(root: Path, dataset: Dataset) -> Path:
    """Write `dataset` as root/{train,test}/<class>/NNNN.png."""
    for split_name in ("train", "test"):
        split = getattr(dataset, split_name)
        for i, (image, label) in enumerate(zip(split.images, split.labels)):
            folder = root / split_name / dataset.class_names[int(label)]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image.permute(1, 2, 0).numpy()).save(folder / f"{i:04d}.png")
    return root


def fake_run(root: Path, name: str, preset: str, seed: int, accuracy: float, seconds: float = 60.0,
             **overrides) -> Path:  # fmt: skip
    """A finished run's files as `cifarlab train` writes them, with chosen numbers (no training)."""
    run = root / name
    run.mkdir(parents=True)
    config = api.resolve_config(preset, seed=seed, out=str(run), **overrides)
    dataset = {"source": "synthetic", "class_names": ["a", "b"], "train": 400, "val": 100, "test": 100}
    record = {"config": config.to_dict(), "device": "cpu", "precision": "fp32", "dataset": dataset}
    (run / "config.json").write_text(json.dumps(record))
    history = History()
    for epoch in (1, 2, 3):
        history.append({"epoch": epoch, "loss": 1 / epoch, "accuracy": 0.5, "val_loss": 1.0,
                        "val_accuracy": accuracy - 0.01 * (3 - epoch), "lr": 1e-3, "seconds": seconds / 3})  # fmt: skip
    history.to_csv(run / "history.csv")
    metrics = {"test_accuracy": accuracy, "epochs_run": 3, "best_epoch": 3, "train_seconds": seconds,
               "val_accuracy": accuracy, "val_loss": 1.0, "params": {"total": 1000, "trainable": 900,
               "non_trainable": 100}, "stopped": "last epoch (3 of 3)",
               "test": {"loss": 1.0, "accuracy": accuracy, "class_names": ["a", "b"]}}  # fmt: skip
    (run / "metrics.json").write_text(json.dumps(metrics))
    return run


def load_script(name: str) -> ModuleType:
    """Import `scripts/<name>.py` (the scripts are not a package) so that tests can call its functions."""
    path = Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # as importlib's recipe does: dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


# a narrow, fast slice of the seed's search space for `cifarlab tune` tests: small networks, lr and flip searched
NARROW_SEED_SPACE = """
base_width = 8
stages = 2
convs = 1
dense = 16
batch_size = 16
bn = true
shift = 0.0
rotation = 0.0
flip = [true, false]
lr = {low = 1e-3, high = 1e-2, log = true}
"""


def tune_setup(image_folder: Path, tmp_path: Path, space_text: str) -> tuple[Path, dict]:
    """A tune test's study folder and options: `space_text` as the space file, the tiny folder, fp32, quiet."""
    space = tmp_path / "space.toml"
    space.write_text(space_text)
    options = {"space": space, "data": str(image_folder), "val_size": 20, "precision": "fp32", "quiet": True}
    return tmp_path / "study", options
