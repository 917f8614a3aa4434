"""Grad-CAM: it finds a planted patch, it passes the parameter-randomisation sanity check, and runs show it."""

import html
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from cifarlab import api
from cifarlab.cli import main
from cifarlab.evaluation.mistakes import confident_mistakes
from cifarlab.inference.classifier import Classifier
from cifarlab.inference.explain import (
    EXPLAIN_SUFFIX,
    VIEW_SIDE,
    ExplanationWriter,
    colormap,
    explain,
    explain_top,
    explanation_png,
    overlay,
)
from cifarlab.models.registry import create_model
from cifarlab.predicting import predict
from cifarlab.reports.report import write_report
from cifarlab.training.run_dir import RunFiles
from tests.deploy_fixtures import train_tiny_run
from tests.factories import make_dataset

PATCH = 8  # side of the bright square that makes an image class 1
NORMALIZATION = {"mean": [0.3] * 3, "std": [0.2] * 3}


def _patch_images(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """Noise images; every second one (class 1) has a white PATCH x PATCH square at a random place."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 128, size=(n, 3, 32, 32), dtype=np.uint8)
    labels = np.arange(n) % 2
    corners = rng.integers(0, 32 - PATCH + 1, size=(n, 2))
    for i in np.flatnonzero(labels == 1):
        y, x = corners[i]
        images[i, :, y : y + PATCH, x : x + PATCH] = 255
    return torch.from_numpy(images), torch.from_numpy(labels), corners


def _classifier(model: nn.Module, name: str, classes: int) -> Classifier:
    meta = {"model": name, "class_names": [f"c{i}" for i in range(classes)], "image_size": 32,
            "normalization": NORMALIZATION}  # fmt: skip
    return Classifier(model, meta, device="cpu", precision="fp32")


@pytest.fixture(scope="module")
def patch_model():
    """A small proyecto1 (8 and 16 filters, Dense(16)) trained to tell the patched images from plain noise."""
    torch.manual_seed(0)
    images, labels, _ = _patch_images(256, seed=0)
    model = create_model("proyecto1", num_classes=2, widths=[8, 16], dense=[16])
    clf = _classifier(model, "proyecto1", 2)
    inputs = clf.normalization(images.float())
    optimizer = torch.optim.Adam(model.parameters(), 3e-3)
    order = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(4):
        for batch in torch.randperm(len(images), generator=order).split(32):
            loss = F.cross_entropy(model(inputs[batch]), labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    test_images, test_labels, corners = _patch_images(64, seed=99)
    assert (clf.predict(test_images, tta=False).argmax(1) == test_labels).float().mean() >= 0.95
    return clf, test_images, test_labels, corners


def test_the_map_of_the_patch_class_lies_on_the_planted_patch(patch_model):
    clf, images, labels, corners = patch_model
    ones = np.flatnonzero(labels.numpy() == 1)
    maps = explain(clf, images[ones], [1] * len(ones)).numpy()
    inside, peak_inside = [], []
    for heat, (y, x) in zip(maps, corners[ones]):
        patch = np.zeros((32, 32), dtype=bool)
        patch[y : y + PATCH, x : x + PATCH] = True
        inside.append(heat[patch].sum() / heat.sum())
        peak_inside.append(patch.flat[heat.argmax()])
    # the patch is 1/16 of the image; an 8x8 feature map upsampled smears it over its neighbouring cells
    assert np.mean(peak_inside) == 1.0
    assert np.median(inside) > 0.4 and min(inside) > 0.3


def _spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    """Spearman's rank correlation of two maps (ties share their average rank); None if one is constant."""
    ranks = []
    for values in (a.ravel(), b.ravel()):
        _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
        if len(counts) == 1:
            return None
        ends = np.cumsum(counts)
        ranks.append(((ends - counts + ends - 1) / 2)[inverse])
    return float(np.corrcoef(*ranks)[0, 1])


def test_randomising_the_last_conv_layer_changes_the_maps(patch_model):
    """Adebayo et al. (NeurIPS 2018): a map that survives re-initialising the weights does not explain the model."""
    clf, images, labels, _ = patch_model
    before = explain(clf, images, labels).numpy()
    again = explain(clf, images, labels).numpy()
    assert np.array_equal(before, again)  # deterministic: the change below is the weights'
    trained = {key: value.clone() for key, value in clf.model.state_dict().items()}
    last_conv = [m for m in clf.model.features if isinstance(m, nn.Conv2d)][-1]
    try:
        torch.manual_seed(1234)
        with torch.no_grad():
            nn.init.xavier_uniform_(last_conv.weight)  # the layer's own initialisation, as a fresh model has it
            nn.init.zeros_(last_conv.bias)
        after = explain(clf, images, labels).numpy()
    finally:
        clf.model.load_state_dict(trained)
    spearman = [rho for a, b in zip(before, after) if (rho := _spearman(a, b)) is not None]  # all-zero maps: none
    assert len(spearman) > len(before) // 2
    assert np.mean(spearman) < 0.75, np.mean(spearman)
    assert np.array_equal(explain(clf, images, labels).numpy(), before)  # the weights are back


@pytest.mark.parametrize("name", ["airnet94", "proyecto4"])
def test_airnet_and_the_seed_cnns_give_one_map_per_image_in_0_1(name):
    torch.manual_seed(0)
    clf = _classifier(create_model(name), name, 10)
    images = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    maps = explain(clf, images, [0, 3, 9])
    assert maps.shape == (3, 32, 32) and maps.dtype == torch.float32
    assert maps.min() >= 0 and maps.max() <= 1 and torch.isfinite(maps).all()
    peaks = maps.amax(dim=(1, 2))
    assert torch.all(torch.isclose(peaks, torch.ones(3)) | (peaks == 0))  # 1 at the peak; 0: no positive evidence
    both = explain(clf, images, [[0, 1], [3, 4], [9, 2]])  # two classes per image from one forward pass
    assert both.shape == (3, 2, 32, 32) and torch.allclose(both[:, 0], maps)
    assert clf.model.training is False  # left in eval mode, as predict needs it
    top = explain_top(clf, images, 2)
    assert top.maps.shape == (3, 2, 32, 32) and top.classes.shape == (3, 2)
    assert torch.equal(top.classes[:, 0], clf.predict(images, tta=False).argmax(1))


def test_a_model_without_a_spatial_feature_map_is_a_one_line_error():
    clf = _classifier(nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10)), "mlp", 10)
    with pytest.raises(ValueError, match="^model 'mlp' has no spatial feature map to explain") as error:
        explain(clf, torch.zeros((2, 3, 32, 32), dtype=torch.uint8), [0, 1])
    assert "\n" not in str(error.value)


def test_overlay_blends_the_jet_colormap_over_the_image():
    image = np.full((3, 4, 4), 200, dtype=np.uint8)
    heat = np.zeros((4, 4), dtype=np.float32)
    heat[0, 0] = 1.0
    out = overlay(image, heat)
    assert out.shape == (4, 4, 3) and out.dtype == np.uint8
    assert np.allclose(colormap(np.array([0.0, 0.5, 1.0])), [[0, 0, 0.5], [0.5, 1, 0.5], [0.5, 0, 0]])
    assert out[0, 0, 0] > out[0, 0, 2] and out[1, 1, 2] > out[1, 1, 0]  # hot is red, cold is blue
    assert overlay(image, np.zeros((2, 2), dtype=np.float32)).shape == (4, 4, 3)  # a coarse map is resized


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("explain")
    return train_tiny_run(root), root / "images" / "test"


def test_predict_explain_writes_one_picture_per_image(tiny_run, tmp_path, capsys):
    run, images = tiny_run
    out = tmp_path / "new" / "explained"  # made, parents included
    assert main(["predict", str(run), str(images), "--explain", str(out), "--top-k", "1", "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    files = sorted(images.rglob("*.png"))
    pictures = sorted(out.iterdir())
    assert len(pictures) == len(files) == len(captured.out.splitlines()) == 40
    assert all(p.name.endswith(EXPLAIN_SUFFIX) for p in pictures)  # 0000.png of each class folder: 0000-2-...
    written = [line for line in captured.err.splitlines() if line.startswith("cifarlab: wrote ")]
    assert len(written) == 40 and {line.split()[-1] for line in written} == {str(p) for p in pictures}
    picture = Image.open(out / f"0000{EXPLAIN_SUFFIX}")
    scale = VIEW_SIDE // 32
    assert picture.width > 3 * 32 * scale and picture.height > 32 * scale  # image, top class, second class
    source = np.asarray(Image.open(files[0]).convert("RGB"))
    panel = np.asarray(picture.convert("RGB"))[6 : 6 + 32 * scale : scale, 6 : 6 + 32 * scale : scale]
    assert np.array_equal(panel, source)  # the first panel is the image itself, upscaled 4x nearest


def test_predict_explain_refuses_onnx_and_a_file_in_one_line(tiny_run, tmp_path, capsys):
    run, images = tiny_run
    image = str(next(images.rglob("*.png")))
    assert main(["predict", str(tmp_path / "model.onnx"), image, "--explain", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--explain" in err and "ONNX" in err and "run directory" in err
    assert not (tmp_path / "out").exists()
    (tmp_path / "taken").write_text("a file")
    assert main(["predict", str(run), image, "--explain", str(tmp_path / "taken"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--explain {tmp_path / 'taken'}" in err and "is a file" in err


@pytest.fixture(scope="module")
def mistaken_run(tmp_path_factory):
    """A run stopped after one slow epoch, so that its test split has mistakes to explain."""
    out = tmp_path_factory.mktemp("mistakes") / "run"
    api.train("proyecto1", dataset=make_dataset(train=80, test=40), epochs=1, batch_size=16, val_size=20, lr=3e-4,
              out=str(out), quiet=True, precision="fp32", seed=0, device="cpu")  # fmt: skip
    return out


def test_a_run_saves_the_maps_of_the_mistakes_its_report_shows(mistaken_run):
    with np.load(mistaken_run / "predictions.npz") as data:
        probabilities, labels = data["test_probabilities"], data["test_labels"]
    with np.load(RunFiles(mistaken_run).explanations) as data:
        heatmaps, index, classes, note = data["heatmaps"], data["test_index"], data["classes"], str(data["note"])
    shown = confident_mistakes(probabilities, labels)
    assert len(shown) > 0 and note == ""
    assert heatmaps.dtype == np.float16 and heatmaps.shape == (len(shown), 2, 32, 32)
    assert 0 <= heatmaps.min() and heatmaps.max() <= 1
    assert np.array_equal(index, shown)
    assert np.array_equal(classes, np.stack([probabilities[shown].argmax(1), labels[shown]], axis=1))


def _mistakes_section(html: str) -> str:
    return html.split('<section id="mistakes">')[1].split("</section>")[0]


def test_the_report_shows_the_maps_under_each_mistake_and_works_without_them(mistaken_run, tmp_path):
    with np.load(RunFiles(mistaken_run).explanations) as data:
        shown = len(data["test_index"])
    mistakes = _mistakes_section((mistaken_run / "report.html").read_text())
    assert mistakes.count('class="thumb"') == shown and mistakes.count('class="cam"') == 2 * shown
    assert mistakes.count('alt="where it saw ') == 2 * shown
    assert "Grad-CAM" in mistakes
    older = tmp_path / "older"
    shutil.copytree(mistaken_run, older)
    RunFiles(older).explanations.unlink()  # a run saved before runs kept explanations
    mistakes = _mistakes_section(write_report(older, test_images=make_dataset(train=80, test=40).test.images)
                                 .read_text())  # fmt: skip
    assert mistakes.count('class="thumb"') == shown and 'class="cam"' not in mistakes and "Grad-CAM" not in mistakes
    note = "model 'mlp' has no spatial feature map to explain"
    RunFiles(older).write_explanations(np.zeros((0, 2, 32, 32)), [], np.zeros((0, 2)), ["a"], note=note)
    mistakes = _mistakes_section(write_report(older, test_images=make_dataset(train=80, test=40).test.images)
                                 .read_text())  # fmt: skip
    assert f'<p class="note">No Grad-CAM maps: {html.escape(note)}.</p>' in mistakes
    assert mistakes.count('class="thumb"') == shown


def test_a_failure_to_explain_leaves_the_run_whole(tmp_path, monkeypatch, capsys):
    def fail(*_, **__):
        raise RuntimeError("boom")

    monkeypatch.setattr(api, "explain_mistakes", fail)
    out = tmp_path / "run"
    api.train("proyecto1", dataset=make_dataset(train=40, test=20), epochs=1, batch_size=16, lr=3e-4, out=str(out),
              precision="fp32", seed=0, device="cpu")  # fmt: skip
    captured = capsys.readouterr()
    assert "note: explanations.npz not written (RuntimeError: boom)" in captured.out + captured.err
    assert (out / "report.html").is_file() and not RunFiles(out).explanations.exists()


@pytest.mark.parametrize("tta", [None, False])  # `cifarlab predict --explain DIR`, and with --no-tta
def test_predict_explain_draws_the_classes_predict_prints(tmp_path, monkeypatch, tta):
    torch.manual_seed(0)
    clf = _classifier(create_model("proyecto1", num_classes=4), "proyecto1", 4)
    path = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(path)
    plain = clf.predict

    def with_views(images, batch_size=64, tta=None):  # the run's test-time views, reversing the plain pass's ranking
        probabilities = plain(images, batch_size, tta=False)
        return probabilities if tta is False else (-probabilities.log()).softmax(dim=1)

    monkeypatch.setattr(clf, "predict", with_views)
    (printed,) = clf.predict_files([path], top_k=2, tta=tta)  # what `cifarlab predict` prints
    image = torch.from_numpy(np.asarray(Image.open(path))).permute(2, 0, 1).contiguous()
    classes = [clf.class_names.index(name) for name in printed.classes]
    named_by_plain_pass = classes[0] == int(plain(image[None], tta=False).argmax())
    assert named_by_plain_pass == (tta is False)  # with the run's views, the plain pass would have named another
    maps = explain(clf, image[None], [classes])[0].numpy()
    captions = ["input", *(f"{name}: {p:.2f}" for name, p in zip(printed.classes, printed.probabilities))]
    written = ExplanationWriter(clf, tmp_path / "explained", tta=tta).write(path)
    assert written.read_bytes() == explanation_png(image.numpy(), maps, captions)
    (drawn,) = predict(clf, [path], top_k=2, tta=tta, explain=True).explanations.values()  # the API's way
    assert drawn == written.read_bytes()
