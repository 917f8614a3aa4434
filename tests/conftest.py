"""Shared fixtures: small, learnable datasets made on the fly, and an isolated cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from cifarlab.data import Dataset
from tests.factories import make_dataset, write_image_folder


@pytest.fixture
def tiny_dataset() -> Dataset:
    return make_dataset()


@pytest.fixture
def image_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CIFARLAB_HOME", str(tmp_path / "home"))
    return write_image_folder(tmp_path / "images", make_dataset(train=80, test=40))


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test touches the real cache in the home directory."""
    monkeypatch.setenv("CIFARLAB_HOME", str(tmp_path_factory.mktemp("cifarlab-home")))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip `gpu` tests without CUDA and `slow` tests unless CIFARLAB_SLOW=1."""
    import os

    import torch

    for item in items:
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(pytest.mark.skip(reason="needs a CUDA device"))
        if "slow" in item.keywords and os.environ.get("CIFARLAB_SLOW") != "1":
            item.add_marker(pytest.mark.skip(reason="slow: set CIFARLAB_SLOW=1 to run"))
