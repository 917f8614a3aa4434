"""The study report of `cifarlab tune`: drawn from hand-made facts (no training), and from one small real study."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure
from PIL import Image

from cifarlab.reports import study_report
from cifarlab.reports.html import figure_png, plain_log_x
from cifarlab.reports.study_report import RerunRow, StudyFacts, TrialFacts, render_study_report, write_study_report
from tests.factories import NARROW_SEED_SPACE

SPACE = {
    "lr": "log-uniform in [0.001, 0.01]",
    "dropout": "uniform in [0, 0.5]",
    "convs": "integers in [1, 3]",
    "flip": "one of True, False",
    "batch_size": "one of 64, 128, 256",
    "bn": "= True",
}
VERDICT = ("accuracies in %, over 3 seeds; * the winner (best re-run validation accuracy): +1.10 points of test "
           "accuracy against proyecto4, within the seeds' spread (1.30)")  # fmt: skip


def trial(number: int, state: str, curve: list[float], lr: float = 0.003, flip: bool = True) -> TrialFacts:
    params = {"lr": lr, "dropout": 0.1 * (number % 5), "convs": 1 + number % 3, "flip": flip,
              "batch_size": (64, 128, 256)[number % 3], "bn": True}  # fmt: skip
    value = curve[-1] if state == "COMPLETE" else None
    return TrialFacts(number, state, value, params, dict(enumerate(curve, start=1)),
                      f"runs/tune/p4/trials/trial-{number:04d}", 12.5 * len(curve))  # fmt: skip


def facts(trials: list[TrialFacts], importances: dict[str, float], reruns: list[RerunRow]) -> StudyFacts:
    return StudyFacts(
        name="p4", preset="proyecto4", study_dir=Path("runs/tune/p4"), space=SPACE,
        storage="sqlite:///runs/tune/p4/study.db", epochs_cap=4, trials=trials, importances=importances,
        reruns=reruns, verdict=VERDICT if reruns else "", best_toml=Path("runs/tune/p4/best.toml") if reruns else None,
    )  # fmt: skip


def full_study() -> StudyFacts:
    trials = [
        trial(0, "COMPLETE", [40.0, 52.0, 58.0, 61.5], lr=0.002),
        trial(1, "COMPLETE", [45.0, 55.0, 60.0, 64.25], lr=0.008, flip=False),
        trial(2, "COMPLETE", [38.0, 47.0, 50.0, 53.0], lr=0.001),
        trial(3, "COMPLETE", [41.0, 50.0, 57.0, 59.0], lr=0.005),
        trial(4, "PRUNED", [30.0, 35.0]),
        trial(5, "FAIL", []),
        trial(6, "PRUNED", [33.0]),
        trial(7, "COMPLETE", [47.0, 58.0, 63.0, 66.0], lr=0.006),
        trial(8, "RUNNING", [44.0]),
    ]
    reruns = [
        RerunRow("trial 7", 66.0, 65.1, 64.2, 0.8, 3, is_winner=True, trial=7),
        RerunRow("trial 1", 64.25, 64.0, 63.9, 1.1, 3, trial=1),
        RerunRow("proyecto4", None, 63.5, 63.1, 1.0, 3, is_preset=True),
    ]
    importances = {"lr": 0.61, "dropout": 0.2, "convs": 0.1, "flip": 0.05, "batch_size": 0.04, "bn": 0.0}
    return facts(trials, importances, reruns)


def pngs(text: str) -> int:
    return text.count('src="data:image/png;base64,')


def assert_self_contained(text: str) -> None:
    assert "<script" not in text.lower()
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", text, re.IGNORECASE)


def test_the_report_is_one_self_contained_page_with_every_section(tmp_path, monkeypatch):
    drawn = []  # each chart's figure, kept to read what it shows
    monkeypatch.setattr(study_report, "figure_png", lambda fig: drawn.append(fig) or figure_png(fig))
    study = full_study()
    path = write_study_report(tmp_path / "report.html", study)
    text = path.read_text()
    assert_self_contained(text)
    assert pngs(text) == 5 == len(drawn)  # history, importances, parallel coordinates, per-epoch curves, re-runs
    for anchor in ("searched", "history", "importances", "parallel", "pruning", "reruns", "trials"):
        assert f'<section id="{anchor}">' in text
    assert "9 trials (5 complete, 2 pruned, 1 failed, 1 running)" in text
    assert "<tr><td>lr</td><td>log-uniform in [0.001, 0.01]</td></tr>" in text
    assert "<tr><th>epochs per trial</th><td>at most 4 (--epochs)</td></tr>" in text
    assert "* winner</td><td>trial 7</td>" in text and "+1.10" in text  # 64.2 - 63.1 against the preset
    assert VERDICT.replace("'", "&#x27;") in text
    assert "cifarlab train --config runs/tune/p4/best.toml" in text
    for t in study.trials:  # every trial has its row, with its run directory
        assert f'<tr><td class="num">{t.number}</td><td>{t.state.lower()}</td>' in text
        assert t.run_dir in text
    # a complete trial shows its final value, a pruned one none but its last epoch, a failed one neither
    for row in ("1</td><td>complete</td><td class=\"num\">64.25</td><td class=\"num\">64.25 (epoch 4)",
                "4</td><td>pruned</td><td class=\"num\">-</td><td class=\"num\">35.00 (epoch 2)",
                "5</td><td>fail</td><td class=\"num\">-</td><td class=\"num\">-"):  # fmt: skip
        assert f'<tr><td class="num">{row}</td>' in text
    # the importances: the searched parameters, smallest at the bottom; bn is fixed ('= True') and left out
    (chart,) = [fig for fig in drawn if fig.axes[0].get_title() == "Parameter importances"]
    bars = [label.get_text() for label in chart.axes[0].get_yticklabels()]
    assert bars == ["batch_size", "flip", "convs", "dropout", "lr"]
    assert "from 5 complete trials; fixed parameters are left out" in text


@pytest.mark.parametrize(
    ("states", "expected_pngs"),
    [
        (["PRUNED", "FAIL", "PRUNED"], 2),  # the history (crosses only) and the per-epoch curves
        (["FAIL", "FAIL"], 0),  # nothing reported at all
        (["COMPLETE", "FAIL"], 3),  # one complete trial: no importances, a one-line parallel plot
    ],
)
def test_a_study_without_two_complete_trials_still_reports(states, expected_pngs):
    trials = [trial(i, s, [] if s == "FAIL" else [20.0 + i, 25.0 + i]) for i, s in enumerate(states)]
    text = render_study_report(facts(trials, {}, []))
    assert_self_contained(text)
    assert pngs(text) == expected_pngs
    complete = states.count("COMPLETE")
    assert f"No parameter importances: they need at least 2 complete trials and the study has {complete}." in text
    assert "No re-runs" in text and "best.toml" in text
    for i in range(len(states)):
        assert f'<tr><td class="num">{i}</td>' in text


def test_a_real_study_writes_its_report(image_folder, tmp_path):
    pytest.importorskip("optuna")
    from cifarlab.tuning import tune

    space = tmp_path / "space.toml"
    space.write_text(NARROW_SEED_SPACE)
    study_dir = tmp_path / "study"
    result = tune("proyecto1", space=space, trials=3, epochs=1, top_k=1, seeds=2, study_dir=study_dir,
                  data=str(image_folder), val_size=20, precision="fp32", quiet=True)  # fmt: skip
    assert result.report == study_dir / "report.html" and result.report.is_file()
    text = result.report.read_text()
    assert_self_contained(text)
    assert [t.number for t in result.trials] == [0, 1, 2]
    for t in result.trials:
        assert f'<tr><td class="num">{t.number}</td><td>{t.state.name.lower()}</td>' in text
        assert f"trial-{t.number:04d}" in text
    assert f"* winner</td><td>{result.best.name}</td>" in text
    assert f"cifarlab train --config {result.best_toml}" in text
    assert "log-uniform in [0.001, 0.01]" in text
    assert pngs(text) >= 4  # the importances' chart too when Optuna could compute them from 3 trials


def test_a_study_with_every_trial_pruned_still_writes_its_report(image_folder, tmp_path, monkeypatch):
    optuna = pytest.importorskip("optuna")
    from cifarlab.tuning import search as search_module
    from cifarlab.tuning import tune

    always = optuna.pruners.ThresholdPruner(lower=1.01)  # no validation accuracy reaches it: prune at epoch 1
    monkeypatch.setattr(search_module, "_pruner", lambda name: always)
    space = tmp_path / "space.toml"
    space.write_text(NARROW_SEED_SPACE)
    study_dir = tmp_path / "study"
    with pytest.raises(ValueError, match="no completed trial yet .*report.html"):
        tune("proyecto1", space=space, trials=1, epochs=2, top_k=1, study_dir=study_dir, data=str(image_folder),
             val_size=20, precision="fp32", quiet=True)  # fmt: skip
    text = (study_dir / "report.html").read_text()
    assert "1 trial (1 pruned)" in text and "No re-runs (no trial has completed yet)" in text
    assert "they need at least 2 complete trials and the study has 0" in text


def _chart() -> Figure:
    fig = Figure(figsize=(8, 4))
    ax = fig.subplots()
    x = np.linspace(1, 300, 200)
    for k in range(6):
        ax.plot(x, np.log(x) * (k + 1), label=f"line {k}")
    ax.scatter(x[::7], np.sqrt(x[::7]), alpha=0.6)
    ax.legend()
    ax.set_title("a chart")
    return fig


def test_a_chart_is_a_palette_png_of_a_fraction_of_the_bytes_that_looks_the_same():
    full, compact = figure_png(_chart(), colours=None), figure_png(_chart())
    full_picture, compact_picture = Image.open(io.BytesIO(full)), Image.open(io.BytesIO(compact))
    assert full_picture.mode == "RGBA" and compact_picture.mode == "P"
    assert full_picture.size == compact_picture.size
    assert len(compact) < len(full) / 2
    difference = np.abs(np.asarray(full_picture.convert("RGB"), float) - np.asarray(compact_picture.convert("RGB")))
    assert difference.mean() < 1.0 and np.percentile(difference, 99) < 16


def test_a_log_axis_is_labelled_in_plain_numbers_at_1_2_5_steps_within_its_limits():
    fig = Figure()
    ax = fig.subplots()
    ax.plot([8, 30, 150], [1, 2, 3])
    plain_log_x(ax)
    fig.canvas.draw()
    assert ax.get_xscale() == "log"
    assert [tick.get_text() for tick in ax.get_xticklabels()] == ["10", "20", "50", "100"]
    assert all(not tick.get_text() for tick in ax.get_xticklabels(minor=True))
