import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

import cifarlab
from cifarlab.cli import main
from cifarlab.data.folder import load_image_folder
from cifarlab.inference.images import decode_image
from tests.deploy_fixtures import CLASS_NAMES, train_tiny_run

COLOUR = (200, 60, 30)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return train_tiny_run(tmp_path_factory.mktemp("predict"))


@pytest.fixture(scope="module")
def clf(run):
    return cifarlab.load(run, device="cpu", precision="fp32")


def _solid(mode, size=(48, 40)):
    rgb = Image.new("RGB", size, COLOUR)
    if mode == "P":
        return rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    return rgb.convert(mode) if mode != "RGB" else rgb


# (file name, image, save options, expected RGB of every pixel after decoding)
GRAY = round(0.299 * 200 + 0.587 * 60 + 0.114 * 30)  # ITU-R 601-2 luma, as Pillow's L
KINDS = [
    ("rgb.png", lambda: _solid("RGB"), {}, COLOUR),
    ("gray.png", lambda: _solid("L"), {}, (GRAY,) * 3),
    ("palette.gif", lambda: _solid("P"), {}, COLOUR),
    ("bitmap.bmp", lambda: _solid("RGB"), {}, COLOUR),
    ("photo.jpg", lambda: _solid("RGB"), {"quality": 100}, COLOUR),
    ("cmyk.jpg", lambda: _solid("CMYK"), {"quality": 100}, COLOUR),
    ("lossless.webp", lambda: _solid("RGB"), {"lossless": True}, COLOUR),
    ("scan.tiff", lambda: _solid("RGB"), {}, COLOUR),
    ("clear.png", lambda: Image.new("RGBA", (30, 50), (*COLOUR, 0)), {}, (255, 255, 255)),  # onto white
    ("half.png", lambda: Image.new("RGBA", (30, 50), (*COLOUR, 128)), {}, (227, 157, 142)),
    ("deep.png", lambda: Image.fromarray(np.full((40, 40), 51400, np.uint16)), {}, (200, 200, 200)),  # 16-bit
    ("big.png", lambda: _solid("RGB", (1600, 900)), {}, COLOUR),
    ("float.tiff", lambda: Image.fromarray(np.full((40, 40), 0.4, np.float32)), {}, (102, 102, 102)),  # [0, 1]
    ("int32.tiff", lambda: Image.fromarray(np.full((40, 40), 51400, np.int32)), {}, (200, 200, 200)),  # 16-bit range
]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (np.full((8, 8), 70000, np.int32), "32-bit integer image with values up to 70000: convert it to 8 or 16 bits"),
        (np.full((8, 8), 200.0, np.float32), "floating-point image with values in [200, 200], not [0, 1]"),
        (np.full((8, 8), np.nan, np.float32), "floating-point image with values in [nan, nan], not [0, 1]"),
    ],
)
def test_deep_images_without_a_known_white_level_are_refused(tmp_path, values, message):
    path = tmp_path / "deep.tiff"
    Image.fromarray(values).save(path)
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        decode_image(path, 32)


@pytest.mark.parametrize(("name", "make", "options", "expected"), KINDS, ids=[k[0] for k in KINDS])
def test_every_format_and_mode_decodes_as_expected(tmp_path, clf, name, make, options, expected):
    path = tmp_path / name
    make().save(path, **options)
    pixels = decode_image(path, 32)
    assert pixels.shape == (32, 32, 3) and pixels.dtype == np.uint8
    assert np.abs(pixels.astype(int) - expected).max() <= (3 if name.endswith(".jpg") else 1)
    (prediction,) = clf.predict_files([path], top_k=4)
    assert prediction.error is None and sorted(prediction.classes) == CLASS_NAMES
    reference = clf.predict(torch.from_numpy(pixels).permute(2, 0, 1)[None].contiguous())[0]
    assert prediction.classes[0] == CLASS_NAMES[int(reference.argmax())]
    assert prediction.probabilities == pytest.approx(sorted(reference.tolist(), reverse=True), abs=1e-5)


def test_exif_orientation_is_applied(tmp_path):
    array = np.zeros((32, 64, 3), np.uint8)
    array[:, :32] = (255, 0, 0)  # left half red, right half blue, as stored
    array[:, 32:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 3  # orientation: rotated 180 degrees
    Image.fromarray(array).save(tmp_path / "turned.png", exif=exif)
    pixels = decode_image(tmp_path / "turned.png", 32)
    assert pixels[:, :12, 2].min() > 200 and pixels[:, -12:, 0].min() > 200  # shown blue left, red right


def test_predict_decodes_exactly_as_the_folder_loader(tmp_path):
    """One shared function: a non-square RGBA photo becomes the same pixels in training and in predict."""
    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.integers(0, 256, (45, 70, 4), dtype=np.uint8), "RGBA")
    for split in ("train", "test"):
        (tmp_path / "data" / split / "x").mkdir(parents=True)
        photo.save(tmp_path / "data" / split / "x" / "photo.png")
    loaded = load_image_folder(tmp_path / "data", progress=False, cache_dir=tmp_path / "cache").test.images[0]
    predicted = decode_image(tmp_path / "data" / "test" / "x" / "photo.png", 32)
    assert np.array_equal(loaded.permute(1, 2, 0).numpy(), predicted)


def test_predict_image_matches_predict_files(tmp_path, clf):
    _solid("RGBA").save(tmp_path / "a.png")
    from_file = clf.predict_files([tmp_path / "a.png"])[0]
    with Image.open(tmp_path / "a.png") as image:
        from_image = clf.predict_image(image)
    assert from_image.classes == from_file.classes
    assert from_image.probabilities == pytest.approx(from_file.probabilities, abs=1e-6)


@pytest.fixture
def tree_with_bad_files(tmp_path, monkeypatch):
    root = tmp_path / "photos"
    (root / "deeper" / "deepest").mkdir(parents=True)
    _solid("RGB").save(root / "good.png")
    _solid("L").save(root / "deeper" / "good.JPG")
    _solid("RGB").save(root / "deeper" / "deepest" / "good.webp")
    (root / "notes.txt").write_text("not an image and not an image suffix: ignored")
    (root / "text.png").write_text("hello, not an image")
    (root / "empty.jpg").write_bytes(b"")
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buffer, "PNG")
    (root / "deeper" / "truncated.png").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    Image.new("L", (300, 300)).save(root / "deeper" / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100 * 100)  # 300x300 is a bomb over 2x this limit
    return root


def test_cli_predicts_a_tree_and_skips_bad_files(run, tree_with_bad_files, capsys):
    root = tree_with_bad_files
    status = main(["predict", str(run), str(root), str(root / "missing.png"), "--top-k", "2", "--precision", "fp32"])
    assert status == 1
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert [line.split("  ")[0] for line in lines] == [
        str(root / "deeper" / "deepest" / "good.webp"),
        str(root / "deeper" / "good.JPG"),
        str(root / "good.png"),
    ]
    for line in lines:
        fields = line.split("  ")
        assert len(fields) == 3
        assert all(f.split()[0] in CLASS_NAMES and 0 <= float(f.split()[1]) <= 1 for f in fields[1:])
    assert f"skipped {root / 'text.png'}: not an image" in err
    assert f"skipped {root / 'empty.jpg'}: empty file" in err
    assert f"skipped {root / 'deeper' / 'truncated.png'}: unreadable image" in err
    assert f"skipped {root / 'deeper' / 'bomb.png'}: image too large" in err
    assert f"skipped {root / 'missing.png'}: no such file" in err
    assert "notes.txt" not in err and "5 files skipped" in err


def test_cli_json_lines_and_exit_status_zero(run, tmp_path, capsys):
    _solid("RGB").save(tmp_path / "a.bmp")
    _solid("P").save(tmp_path / "b.gif")
    assert main(["predict", str(run), str(tmp_path / "a.bmp"), str(tmp_path / "b.gif"), "--json", "--top-k", "3"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["file"] for r in records] == [str(tmp_path / "a.bmp"), str(tmp_path / "b.gif")]
    for record in records:
        probabilities = [entry["probability"] for entry in record["top_k"]]
        assert len(probabilities) == 3 and probabilities == sorted(probabilities, reverse=True)
        assert {entry["class"] for entry in record["top_k"]} <= set(CLASS_NAMES)


def test_tta_changes_the_views(tmp_path, clf):
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(tmp_path / "noise.png")
    plain = clf.predict_files([tmp_path / "noise.png"], top_k=4, tta=False)[0]
    tta = clf.predict_files([tmp_path / "noise.png"], top_k=4, tta=True)[0]
    assert dict(zip(plain.classes, plain.probabilities)) != pytest.approx(dict(zip(tta.classes, tta.probabilities)))


@pytest.mark.parametrize(("argv", "message"), [(["--top-k", "0"], "--top-k must be 1 or more"),
                                               (["--batch-size", "0"], "--batch-size must be 1 or more")])  # fmt: skip
def test_cli_rejects_bad_options(run, tmp_path, capsys, argv, message):
    assert main(["predict", str(run), str(tmp_path), *argv]) == 2
    assert message in capsys.readouterr().err


def test_cli_refuses_a_folder_without_images(run, tmp_path, capsys):
    (tmp_path / "empty" / "notes").mkdir(parents=True)
    (tmp_path / "empty" / "notes" / "readme.txt").write_text("no pictures here")
    assert main(["predict", str(run), str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert "empty: no image files in this folder or below" in err and len(err.strip().splitlines()) == 1


def test_a_fitted_temperature_divides_the_logits_of_what_the_model_gives(tmp_path):
    """Runs with 200+ validation images ship softmax(logits / T); predict and evaluate use it, accuracy unchanged."""
    import json

    import torch

    from cifarlab import api
    from cifarlab.inference.classifier import Classifier
    from tests.factories import make_dataset

    dataset = make_dataset(train=480, test=40)
    result = api.train("proyecto1", dataset=dataset, epochs=1, batch_size=32, val_size=240, out=str(tmp_path / "r"),
                       quiet=True, precision="fp32")  # fmt: skip
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    meta = json.loads((result.run_dir / "model.json").read_text())
    temperature = metrics["temperature"]
    assert temperature is not None and temperature > 0 and meta["temperature"] == temperature
    calibrated = Classifier.load(result.run_dir, device="cpu", precision="fp32")
    plain = Classifier(calibrated.model, {**calibrated.meta, "temperature": None}, device="cpu", precision="fp32")
    images = dataset.test.images[:8]
    p, q = calibrated.predict(images), plain.predict(images)
    expected = torch.softmax(torch.log(q) / temperature, dim=1)
    torch.testing.assert_close(p, expected, atol=1e-5, rtol=1e-4)
    assert calibrated.evaluate(dataset.test).accuracy == plain.evaluate(dataset.test).accuracy
    report = (result.run_dir / "report.html").read_text()
    assert f"Temperature T = {temperature:.3f} was fitted on the validation split (240 images" in report
