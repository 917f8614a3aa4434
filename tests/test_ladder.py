import json
import re

import pytest
import torch
from safetensors.torch import load_file

from cifarlab.cli import main
from cifarlab.ladder import SEED_LADDER, default_presets, plan_ladder, run_ladder
from tests.factories import make_dataset, write_image_folder
from tests.test_resume import InterruptAt

LADDER = dict(
    presets=["proyecto1", "proyecto4"],
    seeds=[0],
    epochs_scale=0.015,
    quiet=True,
    compare=False,
    val_size=32,
    precision="fp32",
)  # fmt: skip  (proyecto1: 3 epochs, proyecto4: 2)


class InterruptProyecto4(InterruptAt):
    def on_train_batch_end(self, step, logs):
        if self.trainer.config.preset == "proyecto4":
            super().on_train_batch_end(step, logs)


def weights(run_dir):
    return load_file(str(run_dir / "model.safetensors"))


def test_a_shortened_ladder_scales_epochs_and_patience(tmp_path):
    runs = plan_ladder(["proyecto1", "proyecto5"], [0, 1], tmp_path, epochs_scale=0.1)
    assert [(run.preset, run.seed, run.run_dir.name) for run in runs] == [
        ("proyecto1", 0, "proyecto1-s0"), ("proyecto1", 1, "proyecto1-s1"),
        ("proyecto5", 0, "proyecto5-s0"), ("proyecto5", 1, "proyecto5-s1"),
    ]  # fmt: skip
    p1, p5 = runs[0].config.train, runs[2].config.train
    assert (p1.epochs, p5.epochs, p5.patience) == (20, 10, 1)
    assert runs[1].config.seed == 1
    assert plan_ladder(["proyecto5"], [0], tmp_path, epochs_scale=0.001)[0].config.train.epochs == 1  # at least 1


def test_the_default_ladder_is_the_seed_steps_and_adds_proyecto10_with_weights(tmp_path):
    assert default_presets() == list(SEED_LADDER) == [f"proyecto{n}" for n in range(1, 10)]
    assert default_presets(weights=str(tmp_path / "vgg16.pth"))[-1] == "proyecto10"


def test_an_interrupted_ladder_skips_finished_runs_and_resumes_the_stopped_one(tmp_path):
    dataset = make_dataset(train=160, test=32)
    whole = run_ladder(runs_dir=tmp_path / "whole", dataset=dataset, **LADDER)
    assert all(result is not None for result in whole)

    with pytest.raises(KeyboardInterrupt):  # Ctrl-C in proyecto4's second epoch
        run_ladder(
            runs_dir=tmp_path / "cut", dataset=dataset, callbacks=[InterruptProyecto4(epoch=2, step=1)], **LADDER
        )
    cut = tmp_path / "cut"
    assert (cut / "proyecto1-s0" / "metrics.json").is_file()
    assert (cut / "proyecto4-s0" / "resume.pt").is_file() and not (cut / "proyecto4-s0" / "metrics.json").exists()
    finished_p1 = weights(cut / "proyecto1-s0")

    again = run_ladder(runs_dir=cut, dataset=dataset, **LADDER)
    assert again[0] is None  # proyecto1 had finished: skipped, not retrained
    assert all(torch.equal(finished_p1[k], v) for k, v in weights(cut / "proyecto1-s0").items())
    assert again[1].history.history["loss"] == whole[1].history.history["loss"]  # each epoch once, same values
    assert again[1].test.accuracy == whole[1].test.accuracy
    a, b = weights(tmp_path / "whole" / "proyecto4-s0"), weights(cut / "proyecto4-s0")
    assert all(torch.equal(a[key], b[key]) for key in a)
    assert json.loads((cut / "ladder.json").read_text())["epochs_scale"] == 0.015


def test_a_run_directory_of_another_config_is_refused(tmp_path):
    dataset = make_dataset(train=160, test=32)
    run_ladder(runs_dir=tmp_path, dataset=dataset, **{**LADDER, "presets": ["proyecto1"]})
    with pytest.raises(ValueError, match=r"proyecto1-s0 holds a run of another config \(train.epochs, "):
        plan_ladder(["proyecto1"], [0], tmp_path, epochs_scale=0.5, val_size=32, precision="fp32")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--seeds", "0,x"], "--seeds: expected comma-separated integers"),
        (["--seeds", "1,1"], "--seeds: each seed once"),
        (["--epochs-scale", "0"], "--epochs-scale must be a positive number"),
        (["--presets", "proyecto11"], "unknown preset 'proyecto11'"),
    ],
)
def test_ladder_command_errors_are_one_line(args, message, tmp_path, capsys):
    assert main(["ladder", "--runs-dir", str(tmp_path), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_a_run_recorded_before_an_option_existed_is_the_same_run(tmp_path):
    dataset = make_dataset(train=160, test=32)
    run_ladder(runs_dir=tmp_path, dataset=dataset, **{**LADDER, "presets": ["proyecto1"]})
    record_path = tmp_path / "proyecto1-s0" / "config.json"
    record = json.loads(record_path.read_text())
    del record["config"]["train"]["loss"]  # as written by an older cifarlab
    record_path.write_text(json.dumps(record))
    assert plan_ladder(["proyecto1"], [0], tmp_path, epochs_scale=0.015, val_size=32, precision="fp32")


def test_the_time_left_counts_the_epochs_not_yet_run(tmp_path):
    from cifarlab.ladder import _CostModel

    dataset = make_dataset(train=160, test=32)
    run_ladder(runs_dir=tmp_path, dataset=dataset, **{**LADDER, "presets": ["proyecto1"]})
    runs = plan_ladder(["proyecto1", "proyecto4"], [0], tmp_path, epochs_scale=0.015, val_size=32, precision="fp32")
    estimate = _CostModel(runs, train_images=len(dataset.train))
    estimate.done(runs[0])  # finished: nothing left of it
    assert re.fullmatch(r"at most about \d+h\d\dm left", estimate.describe_left())
    assert estimate.epochs_left == {runs[0].run_dir: 0, runs[1].run_dir: 2}
    assert estimate.epoch_seconds[runs[1].run_dir] > 0  # proyecto4's step was timed


def test_the_ladder_runs_on_a_small_image_folder_with_the_presets_own_hold_out(tmp_path, capsys):
    # ~1,400 training images (as sklearn's digits): the seed's 10,000 would leave none; its 20 % leaves 1,120
    folder = write_image_folder(tmp_path / "digits", make_dataset(train=1400, test=80))
    runs_dir = tmp_path / "ladder"
    args = ["ladder", "--presets", "proyecto1,proyecto4", "--epochs-scale", "0.01", "--data", str(folder),
            "--runs-dir", str(runs_dir), "--precision", "fp32", "--quiet"]  # fmt: skip
    assert main(args) == 0, capsys.readouterr().err
    for preset in ("proyecto1", "proyecto4"):
        record = json.loads((runs_dir / f"{preset}-s0" / "config.json").read_text())
        assert record["dataset"]["train"] == 1120 and record["dataset"]["val"] == 280
        assert (runs_dir / f"{preset}-s0" / "metrics.json").is_file()


def test_a_preset_with_an_earlier_ones_code_runs_at_the_next_seeds(tmp_path):
    """proyecto8 only writes out Adam's default lr: proyecto7's recipe. The ladder adds seeds instead of a copy."""
    from cifarlab.ladder import plan_ladder

    runs = plan_ladder(["proyecto7", "proyecto8"], [0], tmp_path / "runs")
    assert [(r.preset, r.seed, r.same_code_as) for r in runs] == [("proyecto7", 0, None), ("proyecto8", 1, "proyecto7")]
    assert runs[1].run_dir.name == "proyecto8-s1"
    three = plan_ladder(["proyecto7", "proyecto8", "proyecto4"], [0, 1, 2], tmp_path / "runs")
    assert [r.seed for r in three if r.preset == "proyecto8"] == [3, 4, 5]
    assert [r.seed for r in three if r.preset == "proyecto4"] == [0, 1, 2]
    alone = plan_ladder(["proyecto8"], [0], tmp_path / "runs")  # without proyecto7 it is no copy
    assert alone[0].seed == 0 and alone[0].same_code_as is None
