"""What results show in a notebook: every `_repr_html_` is well-formed HTML holding its key figure and a real
picture, every `plot()` a matplotlib Figure; and a run in a notebook draws its curves live (off when quiet)."""

import base64
import io
import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure
from PIL import Image

import cifarlab
from cifarlab.display import live
from cifarlab.display.html import audit_html, study_html
from cifarlab.ladder import LadderResult
from cifarlab.predicting import predict
from cifarlab.reports.compare import compare
from cifarlab.scoring import RobustnessResult
from tests.factories import fake_run, make_dataset, write_image_folder

VOID = {"img", "br", "hr", "meta", "input", "link", "col", "source", "wbr"}


class Page(HTMLParser):
    """Parses a fragment, failing on a tag closed out of order or left open; keeps its text and images."""

    def __init__(self, fragment: str) -> None:
        super().__init__()
        self.open: list[str] = []
        self.text: list[str] = []
        self.images: list[bytes] = []
        self.classes: list[str] = []
        self.feed(fragment)
        self.close()
        assert not self.open, f"tags left open: {self.open}"

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.classes += (attrs.get("class") or "").split()
        if tag == "img":
            assert attrs["src"].startswith("data:image/png;base64,"), "an image that is not inline"
            self.images.append(base64.b64decode(attrs["src"].split(",", 1)[1]))
        if tag not in VOID:
            self.open.append(tag)

    def handle_endtag(self, tag):
        assert self.open and self.open[-1] == tag, f"</{tag}> closes {self.open[-1:]}"
        self.open.pop()

    def handle_data(self, data):
        self.text.append(data)

    @property
    def all_text(self) -> str:
        return " ".join(" ".join(self.text).split())


def shown(result) -> Page:
    page = Page(result._repr_html_())
    assert page.images, "no picture"
    for png in page.images:
        assert Image.open(io.BytesIO(png)).size[0] > 100  # a real PNG of a drawn figure
    return page


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return cifarlab.train("proyecto1", dataset=make_dataset(), epochs=2, batch_size=32, val_size=40, quiet=True,
                          out=str(tmp_path_factory.mktemp("display") / "run"), precision="fp32")  # fmt: skip


def test_a_run_shows_the_seeds_accuracy_line_its_curves_and_report(run):
    page = shown(run)
    assert "cifarlab-run" in page.classes
    assert run.test.percent() in page.all_text  # '> NN.NNN', as the seed prints it
    assert str(run.run_dir / "report.html") in page.all_text
    fig = run.plot()
    assert isinstance(fig, Figure)
    assert [ax.get_title() for ax in fig.axes] == ["Cross Entropy Loss", "Classification Accuracy"]
    assert list(fig.axes[0].lines[0].get_ydata()) == run.history.history["loss"]  # Keras' way still reads it
    assert len(run.history.history["loss"]) == 2


def test_a_comparison_and_a_ladder_show_the_best_configuration_and_a_row_each(tmp_path):
    runs = [fake_run(tmp_path, f"proyecto1-s{s}", "proyecto1", s, acc) for s, acc in ((0, 0.60), (1, 0.62))]
    runs.append(fake_run(tmp_path, "proyecto4-s0", "proyecto4", 0, 0.7))
    comparison = compare(runs, out_dir=tmp_path / "out")
    best = max(comparison.groups, key=lambda group: group.mean)
    page = shown(comparison)
    assert f"{best.mean:.2f} %" in page.all_text and best.label in page.all_text
    assert comparison._repr_html_().count("<tr>") == 1 + len(comparison.groups)
    assert str(comparison.html_path) in page.all_text and comparison.html_path.is_file()
    assert isinstance(comparison.plot(), Figure)
    assert str(comparison).startswith("run ")  # the terminal table, as `cifarlab compare` prints it

    ladder = LadderResult([None, None], runs_dir=tmp_path)
    with pytest.raises(ValueError, match="compare=False"):
        ladder.plot()
    ladder.comparison = comparison
    assert "cifarlab-ladder" in shown(ladder).classes and isinstance(ladder.plot(), Figure)


def test_a_robustness_result_shows_its_mean_against_clean(tmp_path):
    values = {"clean": 0.9, "accuracy": {"gaussian_noise": {"1": 0.7, "2": 0.5}, "fog": {"1": 0.85, "2": 0.8}},
              "mean_corruption_accuracy": 0.7125, "images": 40, "seed": 0}  # fmt: skip
    result = RobustnessResult(values, tmp_path)
    page = shown(result)
    assert "71.25 %" in page.all_text and "90.00 % clean" in page.all_text
    assert result["clean"] == 0.9 and json.loads(json.dumps(result)) == values  # still robustness.json's dict
    assert isinstance(result.plot(), Figure)


def test_a_study_shows_the_winner_over_seeds_and_every_trial():
    optuna = pytest.importorskip("optuna")
    from cifarlab.tuning.rerun import Candidate
    from cifarlab.tuning.tuner import TuneResult

    dist = {"lr": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)}
    trials = [optuna.trial.create_trial(params={"lr": 1e-3 * (n + 1)}, distributions=dist, value=0.5 + n / 100)
              for n in range(4)]  # fmt: skip
    for number, trial in enumerate(trials):
        trial.number = number
    config = cifarlab.resolve_config("proyecto1")
    winner = Candidate("trial 3", config, 0.53, val=[61.0, 62.0], test=[60.0, 61.5])
    preset = Candidate("proyecto1", config, None, val=[58.0, 59.0], test=[57.0, 58.0])
    result = TuneResult(Path("study"), trials, [winner, preset], winner, None, "", [], Path("study/report.html"))
    page = Page(study_html(result))
    assert page.images and "60.75 ± 1.06 %" in page.all_text and "trial 3" in page.all_text


def test_an_audit_shows_its_likely_label_errors(tmp_path):
    from cifarlab.auditing.auditor import AuditResult
    from cifarlab.auditing.duplicates import DuplicatePair
    from cifarlab.auditing.label_issues import LabelIssues

    (tmp_path / "audit.json").write_text(json.dumps({"classes": ["cat", "dog"]}))
    labels = np.array([0, 1, 0, 1, 0, 1])
    issues = LabelIssues(index=np.array([4, 1]), score=np.array([0.01, 0.2]), suggested=np.array([1, 0]))
    result = AuditResult(tmp_path, 6, 0.5, issues, [DuplicatePair("train-train", 0, 2, 0.99, 1.0)],
                         [f"train/{i}.png" for i in range(6)], labels, np.full((6, 2), 0.5), 1.0)  # fmt: skip
    page = Page(audit_html(result))
    assert page.images and "2 likely label errors (33.33 %)" in page.all_text
    assert "train/4.png cat dog" in page.all_text  # the worst first: given cat, suggested dog


def test_a_prediction_batch_shows_each_image_with_its_classes_and_maps(run, tmp_path):
    folder = write_image_folder(tmp_path / "images", make_dataset(train=4, test=4))
    (tmp_path / "images" / "notes.txt").write_text("not an image")
    predictions = predict(run.run_dir, [folder / "test", tmp_path / "images" / "notes.txt"], top_k=2, explain=True)
    page = Page(predictions._repr_html_())
    good = [p for p in predictions if p.error is None]
    assert len(good) == 4 and len(page.images) == 4  # one Grad-CAM picture each
    assert all(f"{p.classes[0]} {p.probabilities[0]:.2f}" in page.all_text for p in good)
    assert "skipped" in page.all_text
    assert isinstance(predictions.plot(), Figure)


class FakeDisplay:
    def __init__(self):
        self.shown, self.updates = [], []

    def display(self, obj, display_id=False):
        assert display_id is True
        self.shown.append(obj)
        return self

    def update(self, obj):
        self.updates.append(obj)


@pytest.mark.parametrize("quiet", [False, True])
def test_in_a_notebook_a_run_redraws_its_curves_after_each_epoch_unless_quiet(monkeypatch, tmp_path, quiet):
    import IPython.display

    screen = FakeDisplay()
    monkeypatch.setattr(IPython.display, "display", screen.display)
    monkeypatch.setattr(live, "in_notebook", lambda: True)
    cifarlab.train("proyecto1", dataset=make_dataset(train=64, test=16), epochs=3, batch_size=32, val_size=16,
                   quiet=quiet, out=str(tmp_path / "run"), precision="fp32")  # fmt: skip
    if quiet:
        assert not screen.shown and not screen.updates
        return
    assert len(screen.shown) == 1 and len(screen.updates) == 2  # drawn once, then redrawn in place
    assert all(Image.open(io.BytesIO(image.data)).size[0] > 100 for image in screen.shown + screen.updates)


def test_outside_a_notebook_a_run_gets_no_live_callbacks():
    assert live.notebook_callbacks(cifarlab.resolve_config("proyecto1")) == []
