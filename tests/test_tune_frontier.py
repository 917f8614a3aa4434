"""cifarlab tune --frontier: accuracy against cost, the Pareto front re-run over seeds, front.json and its report."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

optuna = pytest.importorskip("optuna")

from cifarlab import api  # noqa: E402
from cifarlab.cli import main  # noqa: E402
from cifarlab.config import apply_overrides  # noqa: E402
from cifarlab.training.cost import run_cost  # noqa: E402
from cifarlab.tuning import search as search_module  # noqa: E402
from cifarlab.tuning import tune  # noqa: E402
from cifarlab.tuning.frontier import spread  # noqa: E402
from cifarlab.tuning.rerun import _train_or_reuse  # noqa: E402
from cifarlab.tuning.space import FAST_SPACE, config_overrides  # noqa: E402
from tests.factories import make_dataset, tune_setup  # noqa: E402
from tests.test_resume import InterruptAt  # noqa: E402

# a few small AirNets for one or two epochs: every knob the frontier trades, at sizes a CPU trains in seconds
TINY_FAST_SPACE = """
base_width = [4, 8]
epochs = [1, 2]
low_res_epochs = [0, 1]
low_res_size = [16, 24]
batch_size = [20, 60]
tta = [0, 2]
"""


@pytest.fixture
def setup(image_folder, tmp_path):
    return tune_setup(image_folder, tmp_path, TINY_FAST_SPACE)


def dominated(point, others):
    """Whether another (accuracy, cost) point is at least as good on both and better on one."""
    return any(a >= point[0] and c <= point[1] and (a, c) != point for a, c in others)


def test_a_frontier_study_rerun_its_front_and_writes_front_json(setup):
    study_dir, options = setup
    result = tune("fast88", trials=4, epochs=2, top_k=2, seeds=1, frontier=True, study_dir=study_dir, **options)
    assert result.best is None and result.best_toml is None and not (study_dir / "best.toml").exists()
    complete = [t for t in result.trials if t.state.name == "COMPLETE"]
    assert len(complete) == 4  # no pruning in a frontier study
    assert any("a --frontier study has two objectives" in note for note in result.notes)
    record = json.loads((study_dir / "study.json").read_text())
    assert record["objectives"] == ["val_accuracy", "tflops"] and "low_res_size" in record["space"]

    front = json.loads(result.front_json.read_text())
    assert front["study"] == "fast88" and front["preset"] == "fast88"
    assert front["data"] == {"source": front["data"]["source"], "train": 60, "val": 20, "test": 40, "image_size": 32,
                             "classes": 4}  # fmt: skip
    assert front["measured"]["seeds"] == [1] and front["measured"]["torch"] and front["measured"]["cpu"]
    points = front["points"]
    assert 1 <= len(points) <= 2 and points[-1]["trial"] == result.front[-1]  # the most accurate always kept
    assert [p["flops"]["total"] for p in points] == sorted(p["flops"]["total"] for p in points)
    searched = [(t.values[0], t.values[1]) for t in complete]
    base = api.resolve_config("fast88", data=options["data"], val_size=20, precision="fp32")
    trials = {t.number: t for t in complete}
    candidates = {c.name: c for c in result.candidates}
    for point in points:
        trial = trials[point["trial"]]
        assert not dominated((trial.values[0], trial.values[1]), searched)
        assert point["search_val_accuracy"] == pytest.approx(trial.values[0] * 100)
        config = apply_overrides(base, point["overrides"])  # the overrides rebuild the trial's recipe
        assert config.to_dict()["train"] == candidates[point["name"]].config.to_dict()["train"]
        assert point["flops"] == pytest.approx(run_cost(config, 60, 20, 40, 32, 4).to_dict())
        assert point["flops"] == pytest.approx(trial.user_attrs["flops"])  # the trial counted the same recipe
        assert trial.values[1] == pytest.approx(point["flops"]["total"] / 1e12)
        assert trial.user_attrs["train_seconds"] > 0
        for key in ("val_accuracy", "test_accuracy"):
            assert len(point[key]["values"]) == 1 and 0 <= point[key]["mean"] <= 100 and point[key]["std"] == 0
        assert len(point["seconds"]["values"]) == 1 and point["seconds"]["mean"] > 0
        assert point["train_seconds"]["values"] == [candidates[point["name"]].train_seconds[0]]
        assert (study_dir / "reruns" / f"trial-{trial.number}-s1").is_dir()
    reference = front["reference"]
    assert reference["name"] == "fast88" and reference["trial"] is None and reference["search_val_accuracy"] is None
    assert reference["overrides"] == {"train.epochs": 2, "train.low_res_epochs": 1, "train.low_res_size": 24}
    assert len(reference["test_accuracy"]["values"]) == 1

    html = result.report.read_text()
    assert "Front: accuracy against cost" in html and 'alt="accuracy against TFLOPs and against seconds' in html
    assert "cifarlab train --budget" in html and "TFLOPs" in html
    assert "fast88 (preset)" in result.table and "TFLOPs" in result.table

    # continued with no new trial: the finished re-runs are reused and keep the seconds measured when they ran
    again = tune("fast88", trials=0, epochs=2, top_k=2, seeds=1, frontier=True, study_dir=study_dir, **options)
    assert json.loads(again.front_json.read_text())["points"] == points


def test_a_resumed_rerun_has_no_seconds_since_no_one_timed_it_whole(tmp_path):
    dataset = make_dataset(train=96, test=32)

    def config(name):
        return api.resolve_config("proyecto1", epochs=2, batch_size=32, val_size=32, precision="fp32", quiet=True,
                                  out=str(tmp_path / name))  # fmt: skip

    accuracy, seconds = _train_or_reuse(config("whole"), tmp_path / "whole", dataset, True)
    assert 0 <= accuracy <= 1 and seconds > 0  # trained here from start to end: timed
    assert _train_or_reuse(config("whole"), tmp_path / "whole", dataset, True) == (accuracy, None)  # read, not run
    with pytest.raises(KeyboardInterrupt):  # cut in its second epoch, as a session's end cuts a re-run
        api.train(config=config("cut"), dataset=dataset, callbacks=[InterruptAt(epoch=2, step=1)])
    assert (tmp_path / "cut" / "resume.pt").is_file()
    accuracy, seconds = _train_or_reuse(config("cut"), tmp_path / "cut", dataset, True)
    assert (tmp_path / "cut" / "metrics.json").is_file() and seconds is None  # resumed: only its end was timed


def fake_trial(search, trial, dataset, sizes=None):
    """A trial that samples its point and trains nothing: the study's bookkeeping alone."""
    for param in search.space.values():
        param.suggest(trial)
    return (0.5, 1.0) if search.frontier else 0.5


@pytest.mark.parametrize("first", [True, False])
def test_a_study_continued_in_the_other_mode_is_refused_in_one_line(setup, monkeypatch, capsys, first):
    study_dir, options = setup
    monkeypatch.setattr("cifarlab.tuning.workers.run_trial", fake_trial)
    tune("fast88", trials=1, epochs=2, top_k=0, frontier=first, study_dir=study_dir, **options)
    flag = [] if first else ["--frontier"]
    code = main(["tune", "--preset", "fast88", "--space", str(options["space"]), "--epochs", "2", "--top-k", "0",
                 "--study-dir", str(study_dir), "--data", options["data"], "--val-size", "20", "--quiet",
                 *flag])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    said = "a --frontier study" if first else "a study of validation accuracy alone"
    assert f"holds {said}" in err and "another --study-dir" in err


def test_spread_keeps_the_cheapest_and_the_most_accurate_and_spaces_the_rest_on_log_cost():
    front = [SimpleNamespace(values=[0.5 + i / 100, cost]) for i, cost in enumerate([1, 2, 10, 11, 100, 1000])]
    assert spread(front, None) == front and spread(front, 9) == front and spread(front, 0) == []
    assert spread(front, 1) == front[-1:]
    assert spread(front, 2) == [front[0], front[-1]]
    assert [t.values[1] for t in spread(front, 3)] == [1, 11, 1000]  # 31.6 on the log axis: 11 is the nearest
    assert [t.values[1] for t in spread(front, 4)] == [1, 10, 100, 1000]


def test_the_fast_space_searches_batch_low_res_side_and_tta():
    assert FAST_SPACE["batch_size"].choices == (500, 1000, 1500)
    assert FAST_SPACE["low_res_size"].choices == (16, 20, 24) and FAST_SPACE["tta"].choices == (0, 1, 2)
    fast88 = api.resolve_config("fast88")  # 5 epochs, 2 at 24 px
    assert config_overrides({"low_res_size": 16}, fast88) == {"train.low_res_epochs": 2, "train.low_res_size": 16}
    low = config_overrides({"low_res_epochs": 3, "low_res_size": 20, "batch_size": 1500, "tta": 1}, fast88)
    assert low == {"train.low_res_epochs": 3, "train.low_res_size": 20, "train.batch_size": 1500, "train.tta": 1}
    assert config_overrides({"low_res_epochs": 0, "low_res_size": 20}, fast88)["train.low_res_size"] == 0
    config = apply_overrides(fast88, low)
    assert (config.train.low_res_size, config.train.batch_size, config.train.tta) == (20, 1500, 1)


def test_a_frontier_search_samples_with_two_directions_and_no_pruner(setup, tmp_path):
    _, options = setup
    search, notes = search_module.prepare_search(
        "fast88", space=options["space"], workers=1, storage=None, study=None, study_dir=tmp_path / "s", epochs=2,
        seed=0, pruner="median", heartbeat_seconds=None, quiet=True, overrides={}, frontier=True,
    )  # fmt: skip
    assert search.pruner == "none" and search.study_name == "fast88"
    with search_module.opened_study(search) as study:
        assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
        assert isinstance(study.sampler, optuna.samplers.TPESampler)
        assert isinstance(study.pruner, optuna.pruners.NopPruner)
