"""Property-based tests (hypothesis): the run config, its overrides and the image-folder loader under any input.

Whatever a TOML file, an override or a folder of files holds, cifarlab either accepts it and means it, or raises
ValueError, KeyError or FileNotFoundError with one line; nothing else escapes.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import os
import re
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from cifarlab.api import resolve_config
from cifarlab.config import (
    DataConfig,
    RunConfig,
    TrainConfig,
    TransferConfig,
    apply_overrides,
    config_from_dict,
    load_toml,
)
from cifarlab.data.folder import load_image_folder

USER_ERRORS = (ValueError, KeyError, FileNotFoundError)
EXAMPLES = int(os.environ.get("CIFARLAB_EXAMPLES", "60"))  # examples per property; raise it for a deeper search
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def one_line(error: BaseException) -> str:
    message = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
    assert "\n" not in str(message) and message, repr(error)
    return str(message)


# TOML written from Python values (tomllib reads TOML but does not write it)

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def toml_key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else toml_value(key)


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")  # JSON string = TOML string, DEL aside
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(value)


def to_toml(document: dict[str, Any]) -> str:
    """Top-level keys first, then one [table] per dict value (nested dicts inline)."""
    lines = [f"{toml_key(k)} = {toml_value(v)}" for k, v in document.items() if not isinstance(v, dict)]
    for name, table in document.items():
        if isinstance(table, dict):
            lines.append(f"[{toml_key(name)}]")
            lines += [f"{toml_key(k)} = {toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


SECTIONS = {"data": DataConfig, "train": TrainConfig, "transfer": TransferConfig}
FIELDS = {name: [f.name for f in dataclasses.fields(cls)] for name, cls in SECTIONS.items()}
TOP_FIELDS = [f.name for f in dataclasses.fields(RunConfig) if f.name not in SECTIONS]
ALL_NAMES = sorted({*TOP_FIELDS, *SECTIONS, *(n for names in FIELDS.values() for n in names), "epoch", "lr_peak"})


def floats(low: float, high: float) -> st.SearchStrategy[float]:
    # no subnormals: a trained model may have turned on flush-to-zero, under which hypothesis cannot make them
    return st.floats(low, high, allow_subnormal=False)


text = st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=12)
scalars = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=False),
    st.booleans(),
    text,
    st.sampled_from(["adam", "sgd", "muon", "val_loss", "val_accuracy", "cifar10", "cpu", "auto", "imagenet"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(ALL_NAMES) | text, inner, max_size=3)
    ),
    max_leaves=6,
)
names = st.sampled_from(ALL_NAMES) | text


@st.composite
def toml_documents(draw: st.DrawFn) -> dict[str, Any]:
    document = draw(st.dictionaries(names, values, max_size=4))
    for section in draw(st.lists(st.sampled_from(sorted(SECTIONS)), max_size=3, unique=True)):
        pool = st.sampled_from(FIELDS[section]) | text
        document[section] = draw(st.dictionaries(pool, values, max_size=4))
    return document


@pytest.fixture(scope="module")
def toml_dir():
    folder = Path(tempfile.mkdtemp(prefix="cifarlab-toml-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def write_toml(folder: Path, document: dict[str, Any] | str | bytes) -> Path:
    path = folder / "run.toml"
    if isinstance(document, bytes):
        path.write_bytes(document)
    else:
        path.write_text(document if isinstance(document, str) else to_toml(document))
    return path


def assert_round_trips(config: RunConfig) -> None:
    """What config.json holds rebuilds the same config."""
    assert config_from_dict(json.loads(json.dumps(config.to_dict()))) == config


@SETTINGS
@given(document=toml_documents())
def test_any_toml_config_is_accepted_whole_or_refused_in_one_line(document, toml_dir):
    path = write_toml(toml_dir, document)
    try:
        config = resolve_config(config_file=path)
    except USER_ERRORS as error:
        one_line(error)
        return
    assert isinstance(config, RunConfig)
    assert_round_trips(config)


@SETTINGS
@given(raw=st.binary(max_size=200) | text.map(str.encode))
def test_any_bytes_as_a_config_file_are_read_or_refused_naming_the_file(raw, toml_dir):
    path = write_toml(toml_dir, raw)
    try:
        load_toml(path)
    except ValueError as error:
        assert str(path) in one_line(error)


VALID = {
    "train.epochs": st.integers(1, 1000),
    "train.batch_size": st.integers(1, 4096),
    "train.lr": floats(1e-6, 10),
    "train.momentum": floats(0, 0.99),
    "train.weight_decay": floats(0, 1),
    "train.label_smoothing": floats(0, 0.9),
    "train.patience": st.integers(1, 100),
    "train.optimizer": st.sampled_from(["adam", "sgd", "muon"]),
    "train.schedule": st.sampled_from(["constant", "warmup_linear"]),
    "train.warmup_epochs": floats(0, 10),
    "train.tta": st.integers(0, 2),
    "train.ema": floats(0, 0.999),
    "train.early_stopping": st.lists(st.sampled_from(["val_loss", "val_accuracy"]), max_size=2, unique=True),
    "train.augment": st.fixed_dictionaries(
        {}, optional={"horizontal_flip": st.booleans(), "crop_padding": st.integers(0, 8), "zoom": floats(0, 0.5)}
    ),  # fmt: skip
    "data.val_size": st.integers(0, 10_000),
    "data.image_size": st.integers(8, 256),
    "data.normalize": st.sampled_from(["scale", "standardize"]),
    "data.classes": st.lists(st.text(min_size=1, max_size=6), min_size=1, max_size=4, unique=True),
    "data.per_class_limit": st.integers(1, 1000),
    "data.skip_bad_images": st.booleans(),
    "transfer.backbone_lr_scale": floats(1e-3, 1),
    "seed": st.integers(0, 2**63 - 1),
    "device": st.sampled_from(["auto", "cpu", "cuda"]),
    "precision": st.sampled_from(["auto", "bf16", "fp32"]),
    "channels_last": st.booleans(),
    "compile": st.booleans(),
}


@st.composite
def valid_settings(draw: st.DrawFn) -> dict[str, Any]:
    keys = draw(st.lists(st.sampled_from(sorted(VALID)), min_size=1, max_size=6, unique=True))
    return {key: draw(VALID[key]) for key in keys}


def nest(flat: dict[str, Any]) -> dict[str, Any]:
    document: dict[str, Any] = {}
    for key, value in flat.items():
        section, _, name = key.rpartition(".")
        (document.setdefault(section, {}) if section else document)[name] = value
    return document


def field(config: RunConfig, key: str) -> Any:
    section, _, name = key.rpartition(".")
    value = getattr(getattr(config, section) if section else config, name)
    return value.to_dict() if hasattr(value, "to_dict") and section == "train" and name == "augment" else value


def expected(key: str, value: Any, preset: str | None = None) -> Any:
    if key == "train.augment":  # a [train.augment] table changes the preset's augmentation key by key
        from cifarlab.data.augment import AugmentConfig

        return AugmentConfig.from_dict({**resolve_config(preset).train.augment.to_dict(), **value}).to_dict()
    return tuple(value) if isinstance(value, list) else value


@SETTINGS
@given(chosen=valid_settings(), preset=st.sampled_from(["proyecto1", "proyecto9", "fast88", None]))
def test_valid_toml_settings_are_applied_as_written_and_flags_win(chosen, preset, toml_dir):
    path = write_toml(toml_dir, nest(chosen))
    config = resolve_config(preset, config_file=path)
    for key, value in chosen.items():
        assert field(config, key) == expected(key, value, preset), key
    assert_round_trips(config)
    flagged = resolve_config(preset, config_file=path, epochs=7, seed=3)  # flags over the file
    assert flagged.train.epochs == 7 and flagged.seed == 3


@SETTINGS
@given(overrides=st.dictionaries(st.sampled_from([*VALID, *ALL_NAMES]) | text, values, max_size=3))
def test_any_override_is_applied_or_refused_in_one_line(overrides):
    try:
        config = apply_overrides(RunConfig(), overrides)
    except USER_ERRORS as error:
        one_line(error)
        return
    assert_round_trips(config)
    assert apply_overrides(config, overrides) == config  # applying the same overrides again changes nothing


@SETTINGS
@given(short=st.sampled_from(["epochs", "lr", "val_size", "classes", "data", "seed", "patience", "finetune"]),
       value=values)  # fmt: skip
def test_short_override_names_accept_or_refuse_any_value(short, value):
    try:
        resolve_config("proyecto1", **{short: value})
    except USER_ERRORS as error:
        one_line(error)


# the image-folder loader over random trees

KINDS = ["rgb", "odd_mode", "jpeg_named_png", "empty", "truncated", "garbage", "not_an_image", "hidden"]
GOOD, BAD = {"rgb", "odd_mode", "jpeg_named_png"}, {"empty", "truncated", "garbage"}  # the rest is ignored
ODD_MODES = ["1", "L", "LA", "P", "RGBA", "I;16", "CMYK", "PA"]


def image_bytes(kind: str, mode: str, size: tuple[int, int], seed: int) -> tuple[str, bytes]:
    """(file suffix, content) of one file of the given kind."""
    rng = np.random.default_rng(seed)
    rgb = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    buffer = io.BytesIO()
    if kind in ("rgb", "truncated", "hidden"):
        rgb.save(buffer, format="PNG")
    elif kind == "odd_mode":
        if mode == "I;16":
            image = Image.fromarray(rng.integers(0, 65536, (size[1], size[0])).astype(np.uint16))
        elif mode == "PA":
            image = rgb.convert("P").convert("PA")
        else:
            image = rgb.convert(mode)
        fmt = "JPEG" if mode == "CMYK" else "TIFF" if mode == "PA" else "PNG"
        image.save(buffer, format=fmt)
        return {"JPEG": ".jpg", "TIFF": ".tif", "PNG": ".png"}[fmt], buffer.getvalue()
    elif kind == "jpeg_named_png":
        rgb.save(buffer, format="JPEG")
    data = buffer.getvalue()
    if kind == "truncated":
        data = data[: len(data) // 2]
    elif kind == "empty":
        data = b""
    elif kind == "garbage":
        data = rng.integers(0, 256, 64, dtype=np.uint8).tobytes()
    elif kind == "not_an_image":
        return ".txt", b"notes about the pictures"
    return ".png", data


file_specs = st.tuples(st.sampled_from(KINDS), st.sampled_from(ODD_MODES), st.tuples(st.integers(1, 24),
                                                                                      st.integers(1, 24)))  # fmt: skip


@st.composite
def folder_trees(draw: st.DrawFn) -> dict[str, dict[str, list]]:
    """{split: {class: [(kind, mode, size), ...]}} with the same classes in every split."""
    classes = draw(st.lists(st.sampled_from(["cat", "dog", "elk", "fox"]), min_size=1, max_size=3, unique=True))
    splits = ["train", "test"] + (["val"] if draw(st.booleans()) else [])
    return {split: {name: draw(st.lists(file_specs, max_size=3)) for name in classes} for split in splits}


def write_tree(root: Path, tree: dict[str, dict[str, list]]) -> None:
    for split, classes in tree.items():
        for name, specs in classes.items():
            folder = root / split / name
            folder.mkdir(parents=True)
            for i, (kind, mode, size) in enumerate(specs):
                suffix, data = image_bytes(kind, mode, size, seed=i)
                (folder / f"{'.' if kind == 'hidden' else ''}{i}{suffix}").write_bytes(data)


@settings(max_examples=max(10, EXAMPLES // 2), deadline=None)
@given(tree=folder_trees(), skip=st.booleans())
def test_any_image_tree_loads_what_is_readable_or_says_what_is_wrong(tree, skip):
    root = Path(tempfile.mkdtemp(prefix="cifarlab-tree-"))
    try:
        write_tree(root / "data", tree)
        options = dict(image_size=8, skip_bad_images=skip, cache_dir=root / "cache", workers=1, progress=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the skipped-files note
            try:
                data = load_image_folder(root / "data", **options)
            except USER_ERRORS as error:
                check_refusal(tree, skip, one_line(error))
                return
            again = load_image_folder(root / "data", **options)  # from the cache
        check_loaded(tree, skip, data)
        for split in tree:
            first, second = getattr(data, split), getattr(again, split)
            assert (first.images == second.images).all() and (first.labels == second.labels).all()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def counts(tree: dict, kinds: set[str]) -> dict[str, dict[str, int]]:
    return {split: {c: sum(k in kinds for k, _, _ in specs) for c, specs in classes.items()}
            for split, classes in tree.items()}  # fmt: skip


def check_refusal(tree: dict, skip: bool, message: str) -> None:
    listed = counts(tree, GOOD | BAD)
    good = counts(tree, GOOD)
    bad = counts(tree, BAD)
    if any(n == 0 for classes in listed.values() for n in classes.values()):
        assert "is empty" in message, message
    elif not skip:
        assert any(n for classes in bad.values() for n in classes.values()), message
        assert message.startswith("cannot read image"), message
    else:
        assert any(sum(classes.values()) == 0 for classes in good.values()), message
        assert "no readable images" in message, message


def check_loaded(tree: dict, skip: bool, data) -> None:
    good, bad = counts(tree, GOOD), counts(tree, BAD)
    assert all(n for classes in counts(tree, GOOD | BAD).values() for n in classes.values())  # no empty class
    assert skip or not any(n for classes in bad.values() for n in classes.values())
    assert data.class_names == sorted(next(iter(tree.values())))
    for split, classes in good.items():
        loaded = getattr(data, split)
        assert loaded.images.shape == (sum(classes.values()), 3, 8, 8) and str(loaded.images.dtype) == "torch.uint8"
        per_class = np.bincount(loaded.labels.numpy(), minlength=len(classes))
        assert per_class.tolist() == [classes[name] for name in data.class_names], split
    skipped = sum(n for classes in bad.values() for n in classes.values())
    assert (f"skipped {skipped} unreadable images" in " ".join(data.notes)) == bool(skipped)


@pytest.mark.parametrize("mode", ODD_MODES)
def test_every_odd_mode_decodes_to_rgb(mode, tmp_path):
    tree = {split: {"a": [("odd_mode", mode, (5, 3))]} for split in ("train", "test")}
    write_tree(tmp_path / "data", tree)
    data = load_image_folder(tmp_path / "data", image_size=8, cache_dir=tmp_path / "cache", workers=1, progress=False)
    assert data.train.images.shape == (1, 3, 8, 8) and not data.notes
