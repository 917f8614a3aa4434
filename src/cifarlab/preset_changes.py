"""What a run's config changed from its preset's recipe, and whether it is a scaled-down ladder run of it."""

from __future__ import annotations

from typing import Any

from cifarlab.config import SHORT_KEYS, RunConfig
from cifarlab.data.dataset import validation_count
from cifarlab.presets import get_preset

# where the data comes from and how the machine runs: not what is trained
_NOT_THE_RECIPE = {"seed", "out", "quiet", "device", "precision", "channels_last", "compile", "sync_bn",
                   "save_every_steps", "data.source", "data.data_dir", "data.skip_bad_images"}  # fmt: skip


def preset_changes(config: RunConfig, train_images: int | None = None) -> dict[str, Any] | None:
    """What a run's config changed from its preset's recipe, by short name ({'epochs': 1, 'lr': 0.01}).

    Where the data comes from, the seed, the machine options and the output are not the recipe and are left out.
    Given `train_images` (the train split before validation was held out), a `--val-size` count and a fraction
    that hold out the same images are the same recipe (10000 of CIFAR-10 is the presets' 0.2).

    Returns:
        The changed options, or None for a config whose preset is not registered.
    """
    try:
        preset = get_preset(config.preset).config
    except KeyError:
        return None
    short = {dotted: name for name, dotted in SHORT_KEYS.items()}
    ours, theirs = config.dotted(), preset.dotted()
    if train_images is not None:
        for flat in (ours, theirs):
            flat["data.val_size"] = validation_count(flat["data.val_size"], train_images)
    return {
        short.get(key, key.removeprefix("train.")): value
        for key, value in ours.items()
        if key not in _NOT_THE_RECIPE and theirs.get(key) != value
    }


def ladder_config_scale(config: RunConfig, train_images: int | None = None) -> float | None:
    """The epochs scale of a run of `cifarlab ladder --epochs-scale S` (its epochs over its preset's), else None.

    Such a run changes its preset's epochs and early-stopping patience, both scaled down, and nothing else; a run
    that changes its epochs alone (`--epochs 1`) or anything besides is not one. `train_images` as in
    `preset_changes`.
    """
    changes = preset_changes(config, train_images)
    if not changes or set(changes) != {"epochs", "patience"}:
        return None
    return config.train.epochs / get_preset(config.preset).config.train.epochs
