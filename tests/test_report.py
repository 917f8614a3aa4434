import base64
import html as html_module
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cifarlab import api
from cifarlab.cli import main
from cifarlab.evaluation.calibration import (
    apply_temperature,
    expected_calibration_error,
    fit_temperature,
    reliability_bins,
)
from cifarlab.reports.report import write_report
from tests.factories import make_dataset

SECTIONS = ("what-ran", "result", "curves", "classes", "mistakes", "calibration", "config")
CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """One tiny finished run with a validation split and a best-epoch checkpoint (trained once per module)."""
    out = tmp_path_factory.mktemp("report") / "run"
    api.train(
        "proyecto1", dataset=make_dataset(train=160, test=40), epochs=3, batch_size=32, val_size=40, lr=3e-4,
        checkpoint_best=True, out=str(out), quiet=True, precision="fp32",
    )  # fmt: skip
    return out


def test_a_run_saves_its_predictions(run_dir):
    metrics = json.loads((run_dir / "metrics.json").read_text())
    with np.load(run_dir / "predictions.npz") as data:
        arrays = {key: data[key] for key in data.files}
    assert set(arrays) == {"test_probabilities", "test_labels", "test_index", "val_probabilities", "val_labels"}
    probabilities = arrays["test_probabilities"]
    assert probabilities.shape == (40, 4) and probabilities.dtype == np.float32
    assert np.allclose(probabilities.sum(axis=1), 1, atol=1e-5)
    assert np.array_equal(arrays["test_labels"], make_dataset(train=160, test=40).test.labels.numpy())
    assert np.array_equal(arrays["test_index"], np.arange(40))
    accuracy = (probabilities.argmax(axis=1) == arrays["test_labels"]).mean()
    assert accuracy == pytest.approx(metrics["test_accuracy"])
    assert arrays["val_probabilities"].shape == (40, 4) and len(arrays["val_labels"]) == 40
    best = metrics["best_epoch"]
    val_accuracy = (arrays["val_probabilities"].argmax(axis=1) == arrays["val_labels"]).mean()
    assert val_accuracy == pytest.approx(metrics["val_accuracy"])  # the best epoch's weights, as the checkpoint
    assert best is not None and metrics["stopped"] == "last epoch (3 of 3)"
    assert metrics["params"]["total"] > 0 and isinstance(metrics["notes"], list)


def test_a_run_that_tests_its_last_weights_says_which_and_where_the_best_went(tmp_path):
    """The seed's presets (keras_p3): the last weights are tested; the report names them and the kept best epoch."""
    run = api.train("proyecto2", dataset=make_dataset(train=160, test=40), epochs=3, batch_size=32, val_size=40,
                    out=str(tmp_path / "run"), quiet=True, precision="fp32").run_dir  # fmt: skip
    html = html_module.unescape((run / "report.html").read_text())
    best = json.loads((run / "model-best.json").read_text())
    assert (
        f"weights tested</th><td>epoch 3's, those in memory when training ended (as Keras' model.evaluate after "
        f"fit), saved as model.safetensors; the best val_accuracy, epoch {best['epoch']} "
        f"({best['metrics']['val_accuracy']:.4f}), is kept beside them as model-best.safetensors"
    ) in html
    assert "best epoch</th>" not in html


def test_the_report_has_every_section_and_the_numbers_of_metrics_json(run_dir):
    html = (run_dir / "report.html").read_text()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for anchor in SECTIONS:
        assert f'<section id="{anchor}">' in html
    assert f"&gt; {metrics['test_accuracy'] * 100:.3f}" in html
    assert f"{metrics['test']['loss']:.4f}" in html
    assert f"best epoch</th><td>{metrics['best_epoch']} (val_accuracy {metrics['val_accuracy']:.4f}" in html
    assert "3 of 3" in html and "65.74 %" in html  # epochs run of planned; the seed's proyecto1
    with np.load(run_dir / "predictions.npz") as data:
        ece = expected_calibration_error(data["test_probabilities"], data["test_labels"])
    assert f'<td>this run</td><td class="num">{ece * 100:.2f}</td>' in html
    assert "4.60" in html and "3.02" in html  # Guo et al. 2017 beside ours
    assert "no validation split of 200 images or more, so no temperature was fitted" in html  # 40 is too few
    wrong = int(round((1 - metrics["test_accuracy"]) * 40))
    assert wrong > 0  # a slow learning rate leaves mistakes to show
    assert html.count('class="thumb"') == min(wrong, 32)


def test_the_report_references_nothing_outside_itself(run_dir):
    html = (run_dir / "report.html").read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:|//|file:)""", html, re.I)
    assert "<script" not in html.lower() and "@import" not in html and "url(" not in html
    sources = re.findall(r'<img [^>]*src="([^"]+)"', html)
    assert len(sources) >= 5
    for src in sources:
        assert src.startswith("data:image/png;base64,")
        Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))).verify()


def test_report_without_the_test_images_says_what_is_missing_and_draws_the_rest(run_dir, tmp_path, capsys):
    out = tmp_path / "again.html"
    assert main(["report", str(run_dir), "--data", str(tmp_path / "moved"), "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == f"report written to {out}"
    html = out.read_text()
    mistakes = html.split('<section id="mistakes">')[1].split("</section>")[0]
    assert 'class="missing"' in mistakes and "--data SOURCE" in mistakes and "thumb" not in mistakes
    assert "<th>test index</th>" in mistakes  # the mistakes are still listed, without their pictures
    for anchor in SECTIONS:
        assert f'<section id="{anchor}">' in html
    assert html.count("<img ") == 4  # curves, per-class accuracy, confusion matrix, reliability diagram


def test_report_of_a_run_saved_before_predictions_were_kept(run_dir, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(run_dir, old)
    (old / "predictions.npz").unlink()
    metrics = json.loads((old / "metrics.json").read_text())
    for key in ("stopped", "notes", "params", "finished_at"):
        del metrics[key]
    (old / "metrics.json").write_text(json.dumps(metrics))
    html = write_report(old).read_text()
    assert html.count('class="missing"') == 2  # mistakes and calibration
    assert "not recorded" in html and "Most confused pairs" in html
    assert "1,000,394" not in html and "total" in html  # counts rebuilt from the config's model


def test_report_redraws_the_mistakes_from_the_image_folder_it_trained_on(image_folder, tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["train", "--preset", "proyecto1", "--data", str(image_folder), "--epochs", "1", "--batch-size", "16",
            "--val-size", "20", "--out", str(run), "--quiet", "--precision", "fp32"]  # fmt: skip
    assert main(argv) == 0
    (run / "report.html").unlink()
    assert main(["report", str(run)]) == 0
    html = (run / "report.html").read_text()
    assert 'class="thumb"' in html and 'class="missing"' not in html


def test_report_of_a_folder_that_is_not_a_run_is_a_one_line_error(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "lacks config.json" in err


def test_ece_and_reliability_bins_by_hand():
    probabilities = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.45, 0.55]])
    labels = np.array([0, 1, 1, 1])
    bins = reliability_bins(probabilities, labels, bins=2)  # (0, 0.5] is empty, (0.5, 1] holds all four
    assert [b.count for b in bins] == [0, 4]
    assert bins[1].accuracy == pytest.approx(0.75) and bins[1].confidence == pytest.approx((0.9 + 0.8 + 0.7 + 0.55) / 4)
    assert expected_calibration_error(probabilities, labels, bins=2) == pytest.approx(abs(0.75 - 0.7375))
    ten = reliability_bins(probabilities, labels, bins=10)
    assert [b.count for b in ten if b.count] == [1, 1, 1, 1]
    assert expected_calibration_error(probabilities, labels, bins=10) == pytest.approx((0.1 + 0.8 + 0.3 + 0.45) / 4)


def test_temperature_scaling_recovers_a_known_overconfidence():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, size=(20000, 10))
    true = np.exp(logits / 2.5)
    true /= true.sum(axis=1, keepdims=True)
    labels = np.array([rng.choice(10, p=p) for p in true])  # drawn from softmax(logits / 2.5)
    overconfident = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    temperature = fit_temperature(overconfident, labels)
    assert temperature == pytest.approx(2.5, rel=0.05)
    before = expected_calibration_error(overconfident, labels)
    after = expected_calibration_error(apply_temperature(overconfident, temperature), labels)
    assert after < before / 3


def _chromium(*args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=10000"]  # fmt: skip
    return subprocess.run([str(CHROMIUM), *flags, *args], capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(
    not CHROMIUM.is_file(), reason="needs Debian's chromium at /usr/bin/chromium (apt install chromium)"
)
def test_the_report_renders_in_a_headless_browser_with_its_images(run_dir, tmp_path):
    probe = tmp_path / "probe.html"
    check = ("<script>window.addEventListener('load', () => { const all = [...document.images]; "
             "const ok = all.filter(i => i.complete && i.naturalWidth > 0); "
             "document.body.setAttribute('data-images', all.length + '/' + ok.length); });</script>")  # fmt: skip
    probe.write_text((run_dir / "report.html").read_text().replace("</body>", check + "</body>"))
    dom = _chromium("--dump-dom", probe.as_uri(), tmp_path=tmp_path).stdout
    found = re.search(r'data-images="(\d+)/(\d+)"', dom)
    assert found, dom[-500:]
    total, loaded = map(int, found.groups())
    assert total >= 5 and loaded == total
    shot = tmp_path / "report.png"
    _chromium(f"--screenshot={shot}", "--window-size=1200,3000", (run_dir / "report.html").as_uri(), tmp_path=tmp_path)
    picture = np.asarray(Image.open(shot).convert("L"))
    assert picture.shape == (3000, 1200) and (picture < 128).mean() > 0.01  # text and plots, not a blank page
