"""VGG16: the architecture, and its ImageNet weights (download, cache, hash and layout checks). Network: 127.0.0.1."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from cifarlab._download import cache_home
from cifarlab.cli import main
from cifarlab.models import count_params, create_model
from cifarlab.models.vgg import VGG16_BASE_PARAMS
from cifarlab.transfer import weights as weights_module
from cifarlab.transfer.weights import hash_prefix, pretrained_weights, read_state_dict, vgg16_base_state
from tests.data.conftest import http_server, isolated_home  # noqa: F401  (fixtures)

# The 26 tensors of the 13 convolutions in torchvision's vgg16-397923af.pth, in its order.
PUBLISHED_CONVS = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
PUBLISHED_BASE_KEYS = [f"features.{i}.{kind}" for i in PUBLISHED_CONVS for kind in ("weight", "bias")]


@pytest.fixture(scope="session")
def vgg16_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random VGG16 in the published layout: the 13 convolutions and a `classifier.*` top.

    The real top is 7x7x512 -> 4096 -> 4096 -> 1000 (0.5 GB); it is shrunk here, which is harmless since the
    loader drops the top whatever its shapes (include_top=False).
    """
    torch.manual_seed(123)
    state = {f"features.{key}": value for key, value in create_model("vgg16").features.state_dict().items()}
    for index, (rows, cols) in zip((0, 3, 6), ((8, 16), (8, 8), (10, 8))):
        state[f"classifier.{index}.weight"] = torch.randn(rows, cols)
        state[f"classifier.{index}.bias"] = torch.randn(rows)
    path = tmp_path_factory.mktemp("weights") / "vgg16.pth"
    torch.save(state, path)
    return path


def test_vgg16_base_has_keras_count_and_torchvision_names():
    model = create_model("vgg16", num_classes=7)
    assert count_params(model.features).total == VGG16_BASE_PARAMS == 14_714_688
    assert list(model.features.state_dict()) == [key.removeprefix("features.") for key in PUBLISHED_BASE_KEYS]
    assert [sum(isinstance(m, torch.nn.Conv2d) for m in block) for block in model.blocks()] == [2, 2, 3, 3, 3]
    with torch.no_grad():
        x = torch.randn(4, 3, 32, 32)
        assert model.forward_features(x).shape == (4, 512)  # 32x32 -> 1x1x512: the seed's Flatten
        assert model(x).shape == (4, 7)


def test_vgg16_needs_32_pixels():
    with pytest.raises(ValueError, match="at least 32 pixels"):
        create_model("vgg16", image_size=16)
    with pytest.raises(ValueError, match="--input-size"):
        create_model("transfer_net", backbone="vgg16", image_size=32, input_size=16)


def test_weights_load_as_published_and_the_top_is_ignored(vgg16_file):
    state = vgg16_base_state(vgg16_file)
    assert list(state) == PUBLISHED_BASE_KEYS
    model = create_model("vgg16")
    model.features.load_state_dict({key.removeprefix("features."): value for key, value in state.items()})
    assert torch.equal(model.features[28].bias, read_state_dict(vgg16_file)["features.28.bias"])


def test_download_once_into_the_cache_then_offline(http_server, vgg16_file, monkeypatch):  # noqa: F811
    body = vgg16_file.read_bytes()
    name = f"vgg16-{hashlib.sha256(body).hexdigest()[:8]}.pth"
    url = http_server.serve(name, body)
    monkeypatch.setitem(weights_module.PRETRAINED_URLS, "vgg16", url)
    path = pretrained_weights("vgg16", progress=False)
    assert path == cache_home() / "weights" / name and path.read_bytes() == body
    assert hash_prefix(url) == name[6:14]
    assert pretrained_weights("vgg16", progress=False) == path  # cache hit: the hash is checked, nothing fetched
    assert len(http_server.requests) == 1
    http_server.stop()
    assert pretrained_weights("vgg16", progress=False) == path
    assert [p.name for p in path.parent.iterdir()] == [name]  # no .part or temporary file left


def test_hash_mismatch_is_a_clear_error_and_caches_nothing(http_server, vgg16_file, monkeypatch):  # noqa: F811
    url = http_server.serve("vgg16-deadbeef.pth", vgg16_file.read_bytes())
    monkeypatch.setitem(weights_module.PRETRAINED_URLS, "vgg16", url)
    with pytest.raises(ValueError, match="expected sha256 starting with deadbeef"):
        pretrained_weights("vgg16", progress=False)
    folder = cache_home() / "weights"
    assert not folder.exists() or list(folder.iterdir()) == []


def test_offline_without_weights_says_to_pass_them(http_server, monkeypatch):  # noqa: F811
    url = http_server.serve("other.bin", b"x")  # the server knows nothing of the weights: 404
    monkeypatch.setitem(weights_module.PRETRAINED_URLS, "vgg16", url.replace("other.bin", "vgg16-397923af.pth"))
    with pytest.raises(OSError, match="pass it with --weights PATH"):
        pretrained_weights("vgg16", progress=False)
    with pytest.raises(FileNotFoundError, match="--weights /no/such.pth: no such file"):
        pretrained_weights("vgg16", "/no/such.pth")


def test_wrong_layout_lists_missing_and_unexpected_keys(tmp_path, vgg16_file):
    state = read_state_dict(vgg16_file)
    state["block1_conv1.kernel"] = state.pop("features.0.weight")  # a Keras-style name
    del state["features.28.bias"]
    path = tmp_path / "renamed.pth"
    torch.save(state, path)
    with pytest.raises(ValueError) as info:
        vgg16_base_state(path)
    message = str(info.value)
    assert "not a VGG16 checkpoint" in message and str(path) in message
    assert "missing keys [features.0.weight, features.28.bias]" in message
    assert "unexpected keys [block1_conv1.kernel]" in message


def test_shapes_and_unreadable_files_are_clear_errors(tmp_path, vgg16_file):
    state = read_state_dict(vgg16_file)
    state["features.0.weight"] = torch.zeros(64, 1, 3, 3)
    torch.save(state, tmp_path / "gray.pth")
    with pytest.raises(ValueError, match=r"shapes differ for features.0.weight \(64, 1, 3, 3\) vs \(64, 3, 3, 3\)"):
        vgg16_base_state(tmp_path / "gray.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pth is not a readable weights file"):
        read_state_dict(tmp_path / "junk.pth")
    torch.save({"model": Path("anything")}, tmp_path / "pickled.pth")  # an arbitrary object: never unpickled
    with pytest.raises(ValueError, match="pickled.pth is not a readable weights file"):
        read_state_dict(tmp_path / "pickled.pth")


def test_cli_reports_a_bad_weights_file_in_one_line(image_folder, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # where a default runs/ folder would go
    bad = tmp_path / "bad.pth"
    torch.save({"conv.weight": torch.zeros(1)}, bad)
    argv = ["train", "--preset", "proyecto10", "--data", str(image_folder), "--weights", str(bad), "--quiet"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "missing keys [features.0.weight" in err and "unexpected keys [conv.weight]" in err
