"""Transfer learning: frozen and fine-tuned backbones, the feature cache, and --backbone between datasets."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import cifarlab
from cifarlab.cli import main
from cifarlab.config import config_from_dict
from cifarlab.data import Dataset, Split
from cifarlab.data.loader import Normalization
from cifarlab.models import create_model
from cifarlab.transfer.features import cached_features
from cifarlab.transfer.weights import read_state_dict
from tests.factories import make_dataset, make_split, write_image_folder
from tests.test_vgg import vgg16_file  # noqa: F401  (session fixture: a random VGG16 in the published layout)

FAST = {"quiet": True, "precision": "fp32", "batch_size": 16}


def renamed(dataset: Dataset, names: list[str]) -> Dataset:
    """The same images under other class names."""
    return Dataset(names, dataset.train, dataset.test, dataset.val, dataset.source)


def test_proyecto10_trains_the_head_on_cached_features_and_keeps_the_backbone(vgg16_file, tmp_path):  # noqa: F811
    dataset = make_dataset(train=64, test=16)
    result = cifarlab.train("proyecto10", dataset=dataset, weights=str(vgg16_file), epochs=2, val_size=16,
                            out=str(tmp_path / "run"), **FAST)  # fmt: skip
    assert any("computed" in note and "cached" in note for note in result.notes)
    saved = load_file(str(result.run_dir / "model.safetensors"))
    published = read_state_dict(vgg16_file)
    for key, value in published.items():
        if key.startswith("features."):
            assert torch.equal(saved[f"backbone.{key}"], value), key  # bit-identical after head training
    assert sorted(k for k in saved if not k.startswith("backbone.")) == [
        f"{part}.{kind}" for part in ("head", "neck.0", "neck.3", "neck.6") for kind in ("bias", "weight")
    ]
    meta = json.loads((result.run_dir / "model.json").read_text())
    assert meta["model"] == "transfer_net" and meta["model_kwargs"]["hidden"] == [1024, 1024, 512]
    assert meta["normalization"] == {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    config = json.loads((result.run_dir / "config.json").read_text())
    assert config["config"]["model"] == "vgg16" and config["config"]["transfer"]["backbone"] == "imagenet"
    assert {"history.csv", "metrics.json", "loss.png", "accuracy.png"} <= {p.name for p in result.run_dir.iterdir()}
    # the saved network, images in, reproduces the test accuracy the run printed
    assert cifarlab.load(result.run_dir, precision="fp32").evaluate(dataset.test).percent() == result.test.percent()


def test_finetune_changes_exactly_the_unfrozen_blocks(vgg16_file, tmp_path):  # noqa: F811
    result = cifarlab.train("proyecto10", dataset=make_dataset(train=32, test=8), weights=str(vgg16_file),
                            finetune=1, epochs=1, val_size=0, out=str(tmp_path / "run"), **FAST)  # fmt: skip
    saved = load_file(str(result.run_dir / "model.safetensors"))
    published = read_state_dict(vgg16_file)
    last_block = {f"features.{i}.{kind}" for i in (24, 26, 28) for kind in ("weight", "bias")}
    for key, value in published.items():
        if key.startswith("features."):
            changed = not torch.equal(saved[f"backbone.{key}"], value)
            assert changed == (key in last_block), key


def test_feature_cache_is_keyed_by_backbone_data_and_input_size(tmp_path):
    torch.manual_seed(0)
    net = create_model("transfer_net", backbone="vgg16", num_classes=3)
    net.freeze(0)
    split = make_split(8, num_classes=4)
    scaling = Normalization()

    def features(split: Split = split) -> tuple[torch.Tensor, bool]:
        return cached_features(net, split, scaling, batch_size=8, cache_dir=tmp_path)

    first, hit = features()
    assert not hit and first.shape == (8, 512)
    again, hit = features()
    assert hit and torch.equal(again, first)
    with torch.no_grad():
        net.backbone.features[28].bias[0] += 1.0  # another backbone
    assert features()[1] is False
    images = split.images.clone()
    images[0, 0, 0, 0] ^= 1  # other data: one bit of one pixel
    assert features(Split(images, split.labels))[1] is False
    net.input_size = 64  # upsampled before the backbone
    upsampled, hit = features()
    assert not hit and not torch.equal(upsampled, first)
    assert features()[1] is True
    assert len(list((tmp_path / "features").iterdir())) == 4


def test_backbone_from_a_run_transfers_to_other_classes_end_to_end(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CIFARLAB_HOME", str(tmp_path / "home"))
    source = write_image_folder(tmp_path / "fruit", renamed(make_dataset(80, 20), ["apple", "fig", "kiwi", "lime"]))
    target = write_image_folder(tmp_path / "ships", renamed(make_dataset(30, 15, 3), ["sloop", "yawl", "junk"]))
    common = ["--quiet", "--precision", "fp32", "--batch-size", "16"]
    assert main(["train", "--preset", "proyecto4", "--data", str(source), "--epochs", "1", "--val-size", "20",
                 "--out", str(tmp_path / "src"), *common]) == 0  # fmt: skip
    capsys.readouterr()

    for name, extra, classes in (("frozen", ["--classes", "yawl,sloop"], ["yawl", "sloop"]),
                                 ("tuned", ["--finetune", "2"], ["junk", "sloop", "yawl"])):  # fmt: skip
        run = tmp_path / name
        argv = ["train", "--preset", "proyecto4", "--backbone", str(tmp_path / "src"), "--data", str(target),
                "--epochs", "2", "--val-size", "6", "--out", str(run), *extra, *common]  # fmt: skip
        assert main(argv) == 0
        printed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("> ")]
        assert len(printed) == 1 and re.fullmatch(r"> \d{1,3}\.\d{3}", printed[0])
        meta = json.loads((run / "model.json").read_text())
        assert meta["class_names"] == classes and meta["model"] == "transfer_net"
        assert meta["model_kwargs"]["backbone"] == "proyecto4" and meta["model_kwargs"]["num_classes"] == len(classes)
        assert list(json.loads((run / "metrics.json").read_text())["test"]["per_class_accuracy"]) == classes
        assert main(["evaluate", str(run), "--quiet", "--precision", "fp32"]) == 0
        assert capsys.readouterr().out.strip() == printed[0]

    source_state = load_file(str(tmp_path / "src" / "model.safetensors"))
    tuned = load_file(str(tmp_path / "tuned" / "model.safetensors"))
    for key, value in source_state.items():
        if key.startswith("head."):
            continue
        # the last block (conv 14, conv 16, BatchNorm 20) and the Dense neck train, BatchNorm statistics stay frozen
        trainable = key.startswith(("features.14.", "features.16.", "features.20.", "neck."))
        trainable = trainable and not key.endswith(("running_mean", "running_var", "num_batches_tracked"))
        assert torch.equal(tuned[f"backbone.{key}"], value) != trainable, key


def test_batchnorm_statistics_frozen_or_training():
    torch.manual_seed(0)
    x = torch.randn(8, 3, 32, 32)
    for mode, moves in (("frozen", False), ("train", True)):
        net = create_model("transfer_net", backbone="proyecto4", num_classes=2)
        net.freeze(1, batchnorm=mode)  # the Dense neck (Linear, ReLU, Dropout, BatchNorm1d) trains
        norm = net.backbone.neck[-1]
        before = norm.running_mean.clone()
        net.train()
        net(x)
        assert (not torch.equal(norm.running_mean, before)) == moves
        assert not any(m.training for m in net.backbone.features)  # the frozen conv blocks stay in inference mode
        assert norm.weight.requires_grad and not net.backbone.features[0].weight.requires_grad


def test_presets_show_the_head_and_the_frozen_backbone(capsys):
    assert main(["presets", "proyecto10"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"proyecto10\s+vgg16\s+16,819,530\s+2,104,842\s+14,714,688\s+61\.79", out)
    assert main(["presets", "vgg16-finetune", "--details"]) == 0
    assert "fine-tuned" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--preset", "proyecto4", "--weights", "w.pth"], "--weights (a local ImageNet weights file) needs --backbone"),
        (["--preset", "proyecto4", "--finetune", "2"], "apply to transfer runs: add --backbone"),
        (["--preset", "proyecto4", "--backbone", "imagenet"], "no published ImageNet weights for model 'proyecto4'"),
        (["--preset", "proyecto10", "--backbone", "/no/run"], "--backbone /no/run: give 'imagenet' or a cifarlab run"),
        (["--preset", "proyecto10", "--finetune", "-1"], "--finetune must be 0"),
    ],
)
def test_bad_transfer_options_are_one_clear_line(argv, message, image_folder, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # where a default runs/ folder would go
    assert main(["train", "--data", str(image_folder), "--quiet", *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_too_many_finetune_blocks_is_a_clear_error(vgg16_file, tiny_dataset, tmp_path):  # noqa: F811
    with pytest.raises(ValueError, match="--finetune 6: the backbone has 5 blocks"):
        cifarlab.train("proyecto10", dataset=tiny_dataset, weights=str(vgg16_file), finetune=6, val_size=0,
                       out=str(tmp_path / "run"), **FAST)  # fmt: skip


def test_transfer_config_round_trips_and_reads_toml(tmp_path: Path):
    toml = tmp_path / "run.toml"
    toml.write_text("[transfer]\nhead = [256]\nhead_dropout = 0.25\ninput_size = 64\n")
    config = cifarlab.resolve_config("proyecto10", config_file=toml, finetune=2)
    assert config.transfer.head == (256,) and config.transfer.input_size == 64 and config.transfer.finetune == 2
    assert config_from_dict(json.loads(json.dumps(config.to_dict()))) == config
