"""`train --budget` and training by the clock: the budget's arithmetic, the choice from the front, the clock's stop."""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

import cifarlab
from cifarlab.budget import planner
from cifarlab.budget.frontier import load_frontier
from cifarlab.cli import main
from cifarlab.config import TrainConfig
from cifarlab.training.callbacks import Callback
from cifarlab.training.clock import TrainingClock
from cifarlab.training.cost import data_sizes, image_flops, run_cost
from cifarlab.training.schedules import lr_factor
from tests.factories import make_dataset

TINY = {"arch.widths": [4, 8, 8], "train.batch_size": 32}


def _front(path: Path, points: list[tuple[str, dict, float]], image_size: int = 32) -> Path:
    """A front.json of (name, overrides, accuracy) points over fast88, its flops counted on 64/16/32 images."""
    entries = []
    for name, overrides, accuracy in points:
        config = cifarlab.resolve_config("fast88", **overrides)
        flops = run_cost(config, 64, 16, 32, image_size, 4).to_dict()
        entries.append({"name": name, "overrides": overrides, "flops": flops, "seconds": {"mean": 10.0},
                        "test_accuracy": {"mean": accuracy, "std": 0.1, "values": [accuracy] * 3}})  # fmt: skip
    record = {"preset": "fast88", "points": entries, "measured": {"cpu": "a test CPU"},
              "data": {"source": "cifar10", "image_size": image_size}}  # fmt: skip
    path.write_text(json.dumps(record))
    return path


class _StepClock(Callback):
    """Makes a run's clock read one second per optimiser step: training by the clock without timing anything."""

    def __init__(self) -> None:
        self.steps = 0

    def on_train_begin(self) -> None:
        clock = self.trainer.clock
        clock.elapsed = lambda: float(self.steps)  # type: ignore[method-assign]

    def on_train_batch_end(self, step: int, logs: dict) -> None:
        self.steps += 1


def test_a_run_by_the_clock_trains_until_its_time_is_spent_and_decays_the_lr_to_0(tmp_path):
    dataset = make_dataset(train=64, test=32, size=16)
    clock = _StepClock()
    result = cifarlab.train("fast88", dataset=dataset, epochs=2, batch_size=32, val_size=0, quiet=True,
                            precision="fp32", out=str(tmp_path / "run"), callbacks=[clock],
                            **{"train.duration": 7.0, "train.low_res_epochs": 1})  # fmt: skip
    # 2 steps an epoch, a second each: after the 6th step a 7th would end at the 7 s, so the run stops there, in
    # epoch 3, one past the 2 planned
    assert clock.steps == 6
    assert len(result.history) == 3
    lrs = result.history.history["lr"]
    assert lrs[0] == lrs[1] > lrs[2] > 0  # each epoch's first lr: flat through the warmup share, then down
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["stopped"].startswith("training time ran out (6 of 7 s, train.duration; a step takes 1.0 s) during "
                                         "epoch 3")  # fmt: skip
    assert result.test is not None


def test_the_clock_schedule_reaches_0_when_the_time_runs_out_and_warms_up_by_steps():
    recipe = TrainConfig(epochs=10, schedule="warmup_linear", warmup_epochs=1, duration=100.0)
    assert lr_factor(0, 100, recipe, 10, progress=0.0) == pytest.approx(0.1)  # warmup: 10 steps
    assert lr_factor(20, 100, recipe, 10, progress=0.2) == pytest.approx(0.8 / 0.9)
    assert lr_factor(20, 100, recipe, 10, progress=1.0) == 0.0
    assert lr_factor(20, 100, recipe, 10, progress=1.3) == 0.0
    assert lr_factor(5, 100, recipe, 10, progress=0.95) == pytest.approx(0.05 / 0.9)  # late warmup: the clock wins


def test_a_resumed_clock_continues_its_count():
    clock = TrainingClock(60.0)
    clock.load_state_dict({"seconds": 45.0})
    assert clock.progress() == pytest.approx(0.75)
    clock.start()
    assert 45.0 <= clock.state_dict()["seconds"] < 46.0
    with pytest.raises(ValueError, match="train.duration must be a positive number of seconds"):
        TrainConfig(duration=0.0)


def test_run_cost_counts_steps_resolutions_validation_and_tta_views():
    config = cifarlab.resolve_config("fast88", epochs=4, **{"train.low_res_epochs": 1, "train.low_res_size": 24},
                                     **{"arch.widths": [8, 16, 16], "train.tta": 2})  # fmt: skip
    arch = {"widths": [8, 16, 16]}
    full, low = image_flops("airnet94", 32, 10, arch), image_flops("airnet94", 24, 10, arch)
    assert low.train < full.train < 4 * full.forward  # forward and backward: about 3 forwards
    cost = run_cost(config, train_images=100, val_images=10, test_images=20)
    assert cost.train == pytest.approx(100 * (low.train + 3 * full.train))
    assert cost.evaluation == pytest.approx(4 * 10 * full.forward + (10 + 20) * 6 * full.forward)
    assert cost.total == cost.train + cost.evaluation


def test_the_plan_takes_the_most_accurate_point_that_fits_and_trains_it_by_the_clock(tmp_path, monkeypatch):
    dataset = make_dataset(train=80, test=32)
    small = {**TINY, "train.epochs": 2, "train.low_res_epochs": 1, "train.low_res_size": 24}
    large = {**TINY, "arch.widths": [8, 32, 32], "train.epochs": 4, "train.low_res_epochs": 2, "train.low_res_size": 24}
    front = load_frontier(_front(tmp_path / "front.json", [("small", small, 80.0), ("large", large, 85.0)]))
    measured = []

    def speed(config, data):  # 1 ms per MFLOP, whatever the network: the arithmetic alone
        measured.append(tuple(config.arch.widths))
        return planner.Speed(full=1e-9, low=1e-9, setup=0.5)

    monkeypatch.setattr(planner, "measure_speed", speed)
    started = time.perf_counter() - 5.0  # 5 s of the budget already gone to loading the data
    base = cifarlab.resolve_config("fast88", quiet=True, val_size=16)
    fixed, sizes = planner.Speed(1e-9, 1e-9, 0.5), data_sizes(base, dataset)
    need = {p.name: planner._estimate(planner.point_config(front, p, base, 32), fixed, sizes)
            for p in front.points}  # fmt: skip
    whole = {name: e.train + e.finish + e.setup for name, e in need.items()}
    assert whole["small"] < whole["large"]
    budget = (5.0 + whole["large"]) / (1 - planner.MARGIN) + 1.0
    plan = planner.plan_budget(budget, front, base, dataset, started)
    assert plan.point.name == "large" and measured == [(4, 8, 8), (8, 32, 32)]  # the cheapest first, as the probe
    assert plan.config.train.duration == pytest.approx(budget * (1 - planner.MARGIN) - 5.0 - need["large"].finish
                                                       - need["large"].setup, abs=0.1)  # fmt: skip
    assert plan.config.train.epochs >= 4 and plan.config.train.low_res_epochs >= 2
    assert any("expect about 85.0 %" in line for line in plan.lines)

    plan = planner.plan_budget((5.0 + whole["small"]) / (1 - planner.MARGIN) + 0.5, front, base, dataset, started)
    assert plan.point.name == "small"
    assert any("the next point up, 85.0 %" in line for line in plan.lines)
    with pytest.raises(ValueError, match=r"--budget 0m05s is too small for any recipe on this machine"):
        planner.plan_budget(5.0, front, base, dataset, started)
    # from Python the budget counts from the call, not from when the process (here pytest's) started
    plan = planner.plan_budget(whole["large"] / (1 - planner.MARGIN) + 1.0, front, base, dataset)
    assert plan.point.name == "large" and plan.spent < 1.0


def test_by_the_clock_plans_more_epochs_in_proportion_and_never_fewer():
    config = cifarlab.resolve_config("fast94")  # 10 epochs, 4 at 24px
    longer = planner.by_the_clock(config, seconds=300.0, estimated=150.0).train
    assert (longer.epochs, longer.low_res_epochs, longer.duration) == (20, 8, 300.0)
    shorter = planner.by_the_clock(config, seconds=100.0, estimated=150.0).train
    assert (shorter.epochs, shorter.low_res_epochs, shorter.duration) == (10, 4, 100.0)


def test_progressive_resizing_keeps_its_share_of_the_side_on_other_image_sizes(tmp_path):
    front = load_frontier(_front(tmp_path / "front.json", [("p", {**TINY, "train.low_res_size": 24,
                                                                   "train.low_res_epochs": 1}, 80.0)]))  # fmt: skip
    base = cifarlab.resolve_config("fast88")
    assert planner.point_config(front, front.points[0], base, 64).train.low_res_size == 48
    off = planner.point_config(front, front.points[0], base, 8).train
    assert (off.low_res_size, off.low_res_epochs) == (0, 0)  # 6 px is too small to train on


def test_the_shipped_front_loads_and_names_its_machine():
    front = load_frontier()
    assert front.preset in cifarlab.list_presets()
    assert [p.flops for p in front.points] == sorted(p.flops for p in front.points)
    assert all(p.seeds >= 3 and 0 < p.accuracy < 100 for p in front.points)
    assert front.machine()


def test_a_file_that_is_not_a_front_is_one_line(tmp_path):
    path = tmp_path / "front.json"
    path.write_text(json.dumps({"preset": "fast88", "points": [{"name": "x"}]}))
    with pytest.raises(ValueError, match=r"front.json is not an accuracy-cost front .*KeyError"):
        load_frontier(path)


def test_train_budget_on_an_image_folder_chooses_trains_and_saves(image_folder, tmp_path, monkeypatch, capsys):
    small = {**TINY, "train.epochs": 2}
    started = time.perf_counter()
    monkeypatch.setattr(planner, "process_started", lambda: started)  # the command's process starts now
    front = load_frontier(_front(tmp_path / "front.json", [("small", small, 80.0)]))
    monkeypatch.setattr(planner, "load_frontier", lambda: front)
    out = tmp_path / "run"
    status = main(["train", "--budget", "25s", "--data", str(image_folder), "--out", str(out), "--quiet",
                   "--precision", "fp32"])  # fmt: skip
    printed = capsys.readouterr()
    assert status == 0, printed.err
    assert "budget 0m25s: done in" in printed.out
    assert "small of the front (fast88's family): " in printed.out  # the run is named by the point it trained
    config = json.loads((out / "config.json").read_text())
    assert config["config"]["train"]["duration"] > 0 and config["config"]["arch"]["widths"] == [4, 8, 8]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["stopped"].startswith("training time ran out")
    assert metrics["train_seconds"] <= config["config"]["train"]["duration"] + 2.0  # one step past, at most


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--budget", "0"], "--budget '0': give a positive duration"),
        (["--budget", "abc"], "--budget 'abc': give a duration such as 90m"),
        (["--budget", "5m", "--preset", "fast94"], "--budget chooses the recipe and trains it in one process; drop"),
        (["--budget", "5m", "--epochs", "3"], "--budget chooses the recipe itself; drop --epochs"),
        (["--budget", "5m", "--nproc", "2"], "--budget chooses the recipe and trains it in one process; drop --nproc"),
    ],
)
def test_bad_budgets_are_one_line_and_exit_2(argv, message, capsys):
    assert main(["train", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err


def test_a_budget_too_small_for_any_recipe_is_refused_before_loading_anything(tmp_path, capsys):
    out, missing = tmp_path / "run", tmp_path / "no-such-folder"  # refused before the data would be looked at
    assert main(["train", "--budget", "1s", "--data", str(missing), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--budget 0m01s is too small for any recipe: setting up, evaluating and saving" in err
    assert len(err.splitlines()) == 1 and not out.exists()


def test_a_budget_under_torchrun_is_refused_in_one_line(monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["train", "--budget", "5m", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("--budget plans and trains in one process; run it without torchrun") and "\n" not in err


def test_the_deadline_sets_the_clock_to_what_is_left_when_training_begins():
    clock = TrainingClock(100.0)
    deadline = planner.Deadline(time.perf_counter() + 10.0)  # the set-up took longer than planned: 10 s are left
    deadline.set_trainer(SimpleNamespace(clock=clock))
    deadline.on_train_begin()
    assert 9.0 < clock.duration <= 10.0


def test_a_clock_stops_where_one_more_step_would_end_past_its_time():
    clock, now = TrainingClock(10.0), [0.0]
    clock.elapsed = lambda: now[0]  # type: ignore[method-assign]
    clock.mark()
    for now[0] in (3.0, 6.0):  # two steps of 3 s
        clock.lap()
    assert clock.step == 3.0 and not clock.is_over()  # 6 + 3 < 10: one more fits
    now[0] = 7.5
    clock.lap()  # a 1.5 s step
    assert clock.is_over() is False and clock.stop_reason(1, 2) is None  # 7.5 + 1.5 < 10
    now[0] = 9.0
    clock.lap()
    assert clock.is_over() and "9 of 10 s" in clock.stop_reason(1, 2)  # 9 + 1.5 would end past 10


def test_the_probe_measures_fewer_images_per_step_on_larger_images():
    config = cifarlab.resolve_config("fast94")  # batch 1000
    assert [planner.probe_batch(config, side) for side in (32, 64, 224)] == [256, 64, 8]
    assert planner.probe_batch(config, 224, "cuda") == 1000  # a GPU measured at the recipe's own batch
    half = cifarlab.resolve_config("fast94", batch_size=500)
    assert planner._network(config, 32) == planner._network(half, 32)  # one probe of 256 serves both batches


def test_the_probe_times_an_evaluation_and_the_estimate_counts_evaluations_at_that_speed():
    dataset = make_dataset(train=64, test=16)
    config = cifarlab.resolve_config("fast88", quiet=True, val_size=16, precision="fp32",
                                     **{**TINY, "train.low_res_epochs": 0, "train.low_res_size": 0})  # fmt: skip
    speed = planner.measure_speed(config, dataset)
    assert speed.full > 0 and speed.evaluate is not None and 0 < speed.evaluate < 1
    sizes = data_sizes(config, dataset)
    as_training = planner._estimate(config, planner.Speed(1e-9, 1e-9, 0.5), sizes)
    faster = planner._estimate(config, planner.Speed(1e-9, 1e-9, 0.5, evaluate=0.5e-9), sizes)
    # evaluations (each epoch's validation, the final ones with their TTA views) at half the cost; steps unchanged
    assert faster.finish - planner.FINISH_SECONDS == pytest.approx((as_training.finish - planner.FINISH_SECONDS) / 2)
    assert as_training.train > faster.train > as_training.train / 2
