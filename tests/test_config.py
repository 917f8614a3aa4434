import pytest

from cifarlab.api import resolve_config
from cifarlab.config import RunConfig, apply_overrides, config_from_dict


def test_preset_then_toml_then_flags(tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text("seed = 7\n[train]\nepochs = 3\nbatch_size = 32\n[data]\nval_size = 100\n")
    config = resolve_config("proyecto9", config_file=toml, epochs=2, lr=None)
    assert config.train.epochs == 2  # the flag wins over the file
    assert config.train.batch_size == 32  # the file wins over the preset
    assert config.data.val_size == 100 and config.seed == 7
    assert config.train.steps_per_epoch == 156  # the preset's own value survives
    assert config.train.lr == 1e-3  # None never hides a preset default


def test_unknown_key_names_the_closest():
    with pytest.raises(ValueError, match="unknown config key 'train.epoch'; did you mean epochs"):
        apply_overrides(RunConfig(), {"train.epoch": 3})


def test_invalid_values_name_the_flag():
    with pytest.raises(ValueError, match="--epochs must be at least 1"):
        resolve_config("proyecto1", epochs=0)
    with pytest.raises(ValueError, match="--precision must be one of"):
        resolve_config("proyecto1", precision="fp8")
    with pytest.raises(ValueError, match="unknown augmentation option"):
        apply_overrides(RunConfig(), {"train": {"augment": {"rotaton": 3}}})


def test_bad_toml_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("epochs = [")
    with pytest.raises(ValueError, match="bad.toml is not valid TOML"):
        resolve_config("proyecto1", config_file=bad)
    with pytest.raises(FileNotFoundError, match="missing.toml does not exist"):
        resolve_config("proyecto1", config_file=tmp_path / "missing.toml")


def test_config_round_trips_through_a_dict():
    config = resolve_config("proyecto9", epochs=4)
    assert config_from_dict(config.to_dict()) == config


def test_unknown_preset_suggests():
    with pytest.raises(KeyError, match="did you mean proyecto4"):
        resolve_config("proyecto44")


def test_an_augmentation_table_changes_the_presets_augmentation_key_by_key(tmp_path):
    toml = tmp_path / "augmix.toml"
    toml.write_text("[train.augment]\naugmix = 3\n")
    preset = resolve_config("fast94").train.augment
    for config in (resolve_config("fast94", toml), resolve_config("fast94", **{"train.augment.augmix": 3})):
        augment = config.train.augment
        assert augment.augmix == 3 and (augment.horizontal_flip, augment.crop_padding) == (True, preset.crop_padding)
    with pytest.raises(ValueError, match="unknown augmentation option 'augmx'; did you mean augmix"):
        resolve_config("fast94", **{"train.augment.augmx": 3})
