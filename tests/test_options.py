"""Run options are declared once, on their config field: flags, short names and TOML keys follow from it."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

import pytest

from cifarlab import options
from cifarlab.api import resolve_config
from cifarlab.cli import RUN_OPTIONS, build_parser
from cifarlab.config import SHORT_KEYS, DataConfig, RunConfig, apply_overrides
from cifarlab.data.dataset import validation_count, with_validation
from tests.factories import make_dataset


def subparser(name: str) -> argparse.ArgumentParser:
    return build_parser()._subparsers._group_actions[0].choices[name]


def flags_of(parser: argparse.ArgumentParser) -> set[str]:
    return {flag for action in parser._actions for flag in action.option_strings}


def test_every_run_option_is_a_train_flag_and_the_data_and_machine_ones_are_ladder_flags():
    names = {run_option.name for run_option in RUN_OPTIONS}
    assert {"--data", "--val-size", "--epochs", "--no-early-stop", "--no-channels-last", "--seed"} <= names
    assert names <= flags_of(subparser("train"))
    ladder = flags_of(subparser("ladder"))
    wanted = {o.name for o in RUN_OPTIONS if o.group in ("data", "machine")} | {"--weights", "--quiet", "--config"}
    assert wanted <= ladder
    assert not {"--epochs", "--seed", "--out"} & ladder  # the ladder sets these per run itself


def test_flags_reach_the_config_through_their_fields():
    line = "train --val-size 0.25 --classes cat,dog --no-early-stop --no-channels-last --epochs 3 --data dir --compile"
    args = build_parser().parse_args(line.split())
    overrides = options.overrides_from_args(args, RUN_OPTIONS)
    assert overrides == {"data.source": "dir", "data.val_size": 0.25, "data.classes": ("cat", "dog"),
                         "train.epochs": 3, "train.early_stopping": (), "channels_last": False,
                         "compile": True}  # fmt: skip
    config = resolve_config("proyecto5", **overrides)
    assert config.data.val_size == 0.25 and config.train.early_stopping == () and not config.channels_last
    assert resolve_config("proyecto5").train.early_stopping  # unset flags leave the preset's values


def test_val_size_takes_a_count_or_a_fraction():
    assert build_parser().parse_args(["train", "--val-size", "300"]).data__val_size == 300
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--val-size", "a fifth"])
    with pytest.raises(ValueError, match="--val-size must be a count of images or a fraction between 0 and 1"):
        DataConfig(val_size=1.5)
    assert validation_count(0.2, 50_000) == 10_000 and validation_count(0.2, 1_400) == 280
    assert validation_count(300, 1_400) == 300
    split = with_validation(make_dataset(train=200, test=8), 0.2, seed=0)
    assert (len(split.train), len(split.val)) == (160, 40)


def test_the_seed_presets_hold_out_10000_of_cifar10s_50000():
    assert validation_count(resolve_config("proyecto4").data.val_size, 50_000) == 10_000


def test_short_names_follow_the_fields():
    assert SHORT_KEYS["epochs"] == "train.epochs" and SHORT_KEYS["data"] == "data.source"
    assert SHORT_KEYS["val_size"] == "data.val_size" and SHORT_KEYS["finetune"] == "transfer.finetune"
    assert resolve_config("proyecto4", val_size=0.1, data="somewhere").data.source == "somewhere"


# toy configs shaped as RunConfig (at module level: their annotations are resolved by name)
@dataclass(frozen=True)
class ToySection:
    width: int = options.option(8, metavar="N", help="channels of the first block")
    depth: int = 2  # no flag: still a short name and a TOML key


@dataclass(frozen=True)
class Toy:
    section: ToySection = field(default_factory=ToySection)
    fast: bool = options.option(False, const=True, group="machine", help="go fast")


@dataclass(frozen=True)
class SizeA:
    size: int = 1


@dataclass(frozen=True)
class SizeB:
    size: int = 2


@dataclass(frozen=True)
class Clash:
    a: SizeA = field(default_factory=SizeA)
    b: SizeB = field(default_factory=SizeB)


def test_a_new_option_is_one_declaration():
    # one field declared with option() gets its flag, its short name and its TOML key
    found = options.run_options(Toy)
    assert [(o.key, o.name, o.group) for o in found] == [("section.width", "--width", "section"),
                                                           ("fast", "--fast", "machine")]  # fmt: skip
    parser = argparse.ArgumentParser()
    options.add_flags(parser, found, grouped=False)
    args = parser.parse_args(["--width", "16", "--fast"])
    assert options.overrides_from_args(args, found) == {"section.width": 16, "fast": True}
    assert options.short_keys(Toy) == {"width": "section.width", "depth": "section.depth"}


def test_two_fields_with_one_short_name_are_refused():
    with pytest.raises(ValueError, match="share the name size"):
        options.short_keys(Clash)


def test_toml_keys_are_the_field_names():
    config = apply_overrides(RunConfig(), {"data": {"val_size": 0.3}, "train": {"epochs": 4}})
    assert config.data.val_size == 0.3 and config.train.epochs == 4


def test_label_smoothing_is_a_flag_declared_on_its_field_alone(tmp_path):
    # the example of adding a run option: TrainConfig.label_smoothing = option(...) was the only edit
    args = build_parser().parse_args(["train", "--preset", "proyecto4", "--label-smoothing", "0.1"])
    overrides = options.overrides_from_args(args, RUN_OPTIONS)
    assert overrides == {"train.label_smoothing": 0.1}
    assert resolve_config("proyecto4", **overrides).train.label_smoothing == 0.1
    assert resolve_config("proyecto4", label_smoothing=0.05).train.label_smoothing == 0.05  # the short name
    toml = tmp_path / "run.toml"
    toml.write_text("[train]\nlabel_smoothing = 0.2\n")  # the TOML key
    assert resolve_config("proyecto4", toml).train.label_smoothing == 0.2
    with pytest.raises(ValueError, match="train.label_smoothing must be in"):
        resolve_config("proyecto4", label_smoothing=1.5)
    assert "--label-smoothing" in flags_of(subparser("train"))
    assert "--label-smoothing" not in flags_of(subparser("ladder"))  # a training option: the ladder keeps the preset's


def test_a_flag_without_a_metavar_shows_its_field_name():
    help_text = subparser("train").format_help()
    assert "--lr LR" in help_text and "__" not in help_text
