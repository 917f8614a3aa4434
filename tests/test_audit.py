"""`cifarlab audit`: the folds, confident learning, near-duplicates, the files, resuming, and bad input."""

from __future__ import annotations

import csv
import html
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import cifarlab.auditing.duplicates as duplicates_module
from cifarlab import api
from cifarlab.auditing import audit
from cifarlab.auditing.duplicates import DEFAULT_THRESHOLD, aligned_similarity, embed, find_duplicates
from cifarlab.auditing.edits import make_near_duplicates, shift
from cifarlab.auditing.folds import FOLD_VAL_SIZE, assign_folds
from cifarlab.auditing.label_issues import find_label_issues, loss_ranking, recall_at
from cifarlab.cli import main
from cifarlab.data import Split
from cifarlab.inference.classifier import Classifier, _middle_layer
from cifarlab.models.registry import create_model
from tests.factories import load_script, make_dataset, write_image_folder

FOLD_RUN = ["--preset", "proyecto1", "--epochs", "6", "--folds", "3", "--precision", "fp32", "--quiet"]


def test_folds_deal_each_class_evenly_and_the_same_way_each_time():
    labels = torch.tensor([0] * 10 + [1] * 7 + [2] * 5)
    fold = assign_folds(labels, 3, seed=4)
    assert sorted(np.bincount(fold).tolist()) == [7, 7, 8]  # the deal carries on across classes
    for cls in range(3):
        counts = np.bincount(fold[labels.numpy() == cls], minlength=3)
        assert counts.max() - counts.min() <= 1
    assert np.array_equal(fold, assign_folds(labels, 3, seed=4))
    assert not np.array_equal(fold, assign_folds(labels, 3, seed=5))


def test_confident_learning_finds_planted_flips_among_noisy_probabilities():
    rng = np.random.default_rng(0)
    n, k = 600, 4
    truth = rng.integers(0, k, n)
    logits = rng.normal(0, 1, (n, k))
    logits[np.arange(n), truth] += 4.0  # a model that is mostly right and never sure
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    given = truth.copy()
    planted = rng.choice(n, 12, replace=False)
    given[planted] = (truth[planted] + rng.integers(1, k, 12)) % k
    issues = find_label_issues(given, probabilities)
    assert set(issues.index) <= set(planted) and recall_at(issues.index, planted) >= 0.8
    assert np.all(np.diff(issues.score) >= 0)  # worst first
    assert np.array_equal(issues.suggested, probabilities[issues.index].argmax(axis=1))
    baseline = loss_ranking(given, probabilities)
    assert sorted(baseline.tolist()) == list(range(n))
    assert probabilities[baseline[0], given[baseline[0]]] == probabilities[np.arange(n), given].min()


def smooth_images(n: int, seed: int) -> torch.Tensor:
    """(n, 3, 32, 32) uint8 images of smooth random shapes and colours, like photographs at this size (no noise)."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 6, 6, generator=generator) * 255
    return F.interpolate(coarse, size=(32, 32), mode="bicubic", align_corners=False).clamp(0, 255).round().byte()


def test_near_duplicates_are_the_same_shot_edited_and_not_a_new_image():
    train = Split(smooth_images(60, seed=0), torch.arange(60) % 4)
    edits = ("shift", "crop", "rescale", "colour", "jpeg")  # each alone (all at once: about half, docs/audit.md)
    made, sources, kinds = make_near_duplicates(train.images, per_edit=3, seed=0, edits=edits)
    strangers = smooth_images(12, seed=1)  # different photographs
    test = Split(torch.cat([made, strangers]), torch.zeros(len(made) + 12, dtype=torch.int64))
    train.images[40] = train.images[11]  # a copy within train
    pairs = find_duplicates(train, test, threshold=0.9)  # random colours: a saturation change moves them more
    found = {(p.kind, p.first, p.second): p for p in pairs}
    made_pairs = {("test-train", i, int(s)) for i, s in enumerate(sources)}
    assert set(found) == {("train-train", 11, 40)} | made_pairs, (kinds, pairs)
    assert found[("train-train", 11, 40)].pixel_difference == 0 and found[("train-train", 11, 40)].similarity > 0.999
    assert pairs[0].kind == "train-train"
    frame_only = embed(made) @ embed(train.images).T  # the finder before alignment: shifts and crops were lost
    shifted = [i for i, kind in enumerate(kinds) if kind in ("shift", "crop")]
    assert (frame_only[shifted, sources[shifted]] < 0.97).any()


def test_aligned_similarity_ignores_brightness_and_colour_balance_but_not_content():
    images = smooth_images(2, seed=3).float()
    recoloured = (images[:1] * torch.tensor([0.8, 1.0, 1.1])[:, None, None] + 20).clamp(0, 255).round().byte()
    similarity = aligned_similarity(torch.cat([recoloured, recoloured]), images.round().byte())
    assert similarity[0] > 0.99 and similarity[1] < 0.9
    flat = torch.full((1, 3, 32, 32), 128, dtype=torch.uint8)  # a blank image and its copy: a pair all the same
    assert find_duplicates(Split(torch.cat([flat, images.byte()]), torch.zeros(3, dtype=torch.int64)),
                           Split(flat.clone(), torch.zeros(1, dtype=torch.int64)))[-1].similarity == 1.0  # fmt: skip


def test_the_network_features_bring_candidates_the_frame_misses(monkeypatch):
    train = Split(smooth_images(200, seed=0), torch.zeros(200, dtype=torch.int64))
    shifted = torch.stack([shift(train.images[7].float(), np.random.default_rng(0))]).round().byte()
    test = Split(shifted, torch.zeros(1, dtype=torch.int64))
    monkeypatch.setattr(duplicates_module, "CANDIDATES", 1)
    frame_rank = (embed(train.images) @ embed(shifted)[0]).argsort(descending=True).tolist().index(7)
    assert frame_rank > 0  # the frame embedding alone does not put the source first
    assert [p.second for p in find_duplicates(train, test) if p.kind == "test-train"] == []  # never aligned with it
    features = (torch.eye(200), torch.eye(200)[7:8])  # a network that knows the shot
    (pair,) = [p for p in find_duplicates(train, test, features=features) if p.kind == "test-train"]
    assert pair.second == 7 and pair.similarity >= DEFAULT_THRESHOLD


@pytest.fixture(scope="module")
def planted_folder(tmp_path_factory):
    """A 4-class image folder with 4 images moved to a wrong class and one training image copied into test."""
    root = tmp_path_factory.mktemp("audit")
    folder = write_image_folder(root / "images", make_dataset(train=160, test=40))
    moved = []
    for i, (cls, wrong) in enumerate([("class0", "class2"), ("class1", "class3"), ("class2", "class0"),
                                      ("class3", "class1")]):  # fmt: skip
        name = sorted((folder / "train" / cls).iterdir())[i + 3].name
        target = folder / "train" / wrong / f"moved-{name}"
        shutil.move(folder / "train" / cls / name, target)
        moved.append(str(target))
    shutil.copy(folder / "train" / "class1" / "0001.png", folder / "test" / "class1" / "copy.png")
    return root, folder, moved


@pytest.fixture(scope="module")
def audited(planted_folder):
    root, folder, moved = planted_folder
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CIFARLAB_HOME", str(root / "home"))
        assert main(["audit", "--data", str(folder), "--out", str(root / "audit"), *FOLD_RUN]) == 0
    return root / "audit", folder, moved


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_the_planted_label_errors_top_the_list(audited):
    out, folder, moved = audited
    rows = _rows(out / "label_issues.csv")
    assert list(rows[0]) == ["rank", "path", "given", "suggested", "score", "p_given", "p_suggested"]
    top = [row["path"] for row in rows[: len(moved) + 2]]
    assert set(moved) <= set(top), (moved, rows[:8])
    row = next(r for r in rows if r["path"] == moved[0])  # class0's image, filed under class2
    assert (row["given"], row["suggested"]) == ("class2", "class0")
    assert [float(r["score"]) for r in rows] == sorted(float(r["score"]) for r in rows)
    figures = json.loads((out / "audit.json").read_text())
    assert figures["images"] == 160 and figures["folds"] == 3 and figures["label_issues"] == len(rows)
    assert figures["oof_accuracy"] > 0.9


def test_the_copied_test_image_is_a_duplicate_pair(audited, capsys):
    out, folder, _ = audited
    pairs = [r for r in _rows(out / "duplicates.csv") if r["kind"] == "test-train"]
    assert [(r["path_a"], r["path_b"], r["pixel_difference"]) for r in pairs] == [
        (str(folder / "test" / "class1" / "copy.png"), str(folder / "train" / "class1" / "0001.png"), "0.00")
    ]


def test_the_page_shows_the_flags_and_the_pair(audited):
    out, _, moved = audited
    page = html.unescape((out / "audit.html").read_text())
    assert "Likely label errors, worst first" in page and "Near-duplicates" in page
    assert all(path in page for path in moved)  # each flagged image's path is its alt text and tooltip
    assert "identical pixels" in page and page.count("data:image/png;base64,") >= len(moved) + 1
    assert "http://" not in page and "https://" not in page  # self-contained


def test_running_again_reuses_the_folds(audited, monkeypatch):
    out, folder, _ = audited
    before = (out / "label_issues.csv").read_text()

    def no_training(*args, **kwargs):
        raise AssertionError("a finished fold was trained again")

    monkeypatch.setattr(api, "train", no_training)
    monkeypatch.setattr(api, "resume", no_training)
    result = audit(str(folder), preset="proyecto1", epochs=6, folds=3, out=out, precision="fp32", quiet=True)
    assert (out / "label_issues.csv").read_text() == before and result.images == 160


def test_an_audit_folder_of_another_plan_is_refused(audited, capsys):
    out, folder, _ = audited
    other = [*FOLD_RUN, "--folds", "4"]  # the last --folds wins
    assert main(["audit", "--data", str(folder), "--out", str(out), *other]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--out {out} holds another audit (its folds differ)" in err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--folds", "1"], "--folds must be 2 or more"),
        (["--folds", "50"], "has 40 training images; --folds 50 needs at least 50 per class"),
        (["--val-size", "0.1"], "--val-size: an audit holds out each of its --folds in turn"),
        (["--duplicate-threshold", "1.5"], "--duplicate-threshold must be a similarity in (0, 1]"),
        (["--preset", "nonesuch"], "nonesuch"),
    ],
)
def test_bad_options_are_one_line(tmp_path, monkeypatch, capsys, extra, message):
    monkeypatch.setenv("CIFARLAB_HOME", str(tmp_path / "home"))
    folder = write_image_folder(tmp_path / "images", make_dataset(train=160, test=8))
    assert main(["audit", "--data", str(folder), "--out", str(tmp_path / "out"), "--quiet", *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "out" / "folds").exists()  # refused before anything trained


def test_a_folder_with_one_class_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CIFARLAB_HOME", str(tmp_path / "home"))
    folder = write_image_folder(tmp_path / "images", make_dataset(train=12, test=4, num_classes=1))
    assert main(["audit", "--data", str(folder), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "has one class ('class0'); an audit compares labels" in err


def test_the_planting_script_moves_the_share_asked_to_wrong_classes_by_links(tmp_path):
    plant = load_script("audit_planted").plant
    source = write_image_folder(tmp_path / "images", make_dataset(train=100, test=8))
    planted = plant(source, tmp_path / "work", share=0.1, per_class=None, seed=0)
    assert len(planted) == 10
    for path in map(Path, planted):
        original = path.resolve()
        assert path.is_symlink() and original.parent.name != path.parent.name  # filed under another class
        assert original.parent.parent == source.resolve() / "train"
    links = list((tmp_path / "work" / "images" / "train").rglob("*.png"))
    assert len(links) == 100 and (tmp_path / "work" / "images" / "test").resolve() == (source / "test").resolve()
    assert plant(source, tmp_path / "work", share=0.1, per_class=None, seed=0) == planted  # resuming: the same copy


def test_data_without_files_names_images_by_their_index(tmp_path):
    data = make_dataset(train=60, test=8)  # as CIFAR-10's batches: no files
    data.train.labels[5] = (data.train.labels[5] + 1) % 4  # one wrong label
    result = audit(dataset=data, preset="proyecto1", epochs=6, folds=2, out=tmp_path / "audit", precision="fp32",
                   quiet=True)  # fmt: skip
    assert result.paths[:2] == ["train[0]", "train[1]"] and result.label_issues.index[0] == 5
    rows = _rows(tmp_path / "audit" / "label_issues.csv")
    assert rows[0]["path"] == "train[5]"


def test_each_fold_run_validates_on_its_training_folds_and_the_plan_knows_the_images(tmp_path, monkeypatch):
    data = make_dataset(train=80, test=8)
    given = []  # the data each fold run is given
    finish_run = api.finish_run

    def spy(config, *, dataset=None, **kwargs):
        given.append(dataset)
        return finish_run(config, dataset=dataset, **kwargs)

    monkeypatch.setattr(api, "finish_run", spy)
    out = tmp_path / "audit"
    options = {"preset": "proyecto1", "epochs": 1, "folds": 2, "out": out, "precision": "fp32", "quiet": True}
    first = audit(dataset=data, **options)
    fold = assign_folds(data.train.labels, 2, seed=0)
    assert len(given) == 2
    for k, fold_data in enumerate(given):
        judged = {data.train.images[i].numpy().tobytes() for i in np.nonzero(fold == k)[0]}
        shown = [fold_data.train] + ([fold_data.val] if fold_data.val is not None else [])
        seen = {image.numpy().tobytes() for split in shown for image in split.images}
        assert not judged & seen  # the judged fold's images (and so its labels) never reach its run
        record = json.loads((out / "folds" / f"fold-{k}" / "config.json").read_text())
        assert record["dataset"]["val"] == round(FOLD_VAL_SIZE * 40) > 0  # held out of the 40 it trains on
    # the plan holds a digest of the images and labels: the same count with other pixels or labels is another audit
    monkeypatch.setattr(api, "finish_run", lambda *args, **kwargs: pytest.fail("a fold trained again"))
    assert np.array_equal(audit(dataset=data, **options).probabilities, first.probabilities)
    brighter = make_dataset(train=80, test=8)
    brighter.train.images[3] = brighter.train.images[3] // 2 + 100
    relabelled = make_dataset(train=80, test=8)
    relabelled.train.labels[3] = (relabelled.train.labels[3] + 1) % 4
    for other in (brighter, relabelled):
        with pytest.raises(ValueError, match=rf"--out {out} holds another audit \(its data_sha256 differ\)"):
            audit(dataset=other, **options)


@pytest.mark.parametrize("name", ["airnet88", "proyecto5"])
def test_descriptors_come_from_a_middle_feature_map_and_ignore_the_mirror(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=4)
    meta = {"model": name, "class_names": ["a", "b", "c", "d"], "image_size": 32,
            "normalization": {"mean": [0.5] * 3, "std": [0.25] * 3}}  # fmt: skip
    classifier = Classifier(model, meta, device="cpu", precision="fp32")
    images = smooth_images(6, seed=4)
    found = classifier.descriptors(images, batch_size=4)
    assert torch.allclose(found, classifier.descriptors(images.flip(3)), atol=1e-5)  # a shot and its mirror
    maps = []
    layer = _middle_layer(model, 32, torch.device("cpu"))
    hook = layer.register_forward_hook(lambda module, inputs, output: maps.append(output))
    model(torch.zeros(1, 3, 32, 32))
    hook.remove()
    assert found.shape == (6, 2 * maps[0].shape[1]) and 32 / 5 <= maps[0].shape[-1] < 32 / 2  # neither head nor input
    assert not any(m._forward_hooks for m in model.modules())  # nothing left behind
    assert (F.normalize(found, dim=1) @ F.normalize(found, dim=1).T).fill_diagonal_(0).max() < 0.9999  # apart
