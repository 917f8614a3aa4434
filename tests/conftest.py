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
