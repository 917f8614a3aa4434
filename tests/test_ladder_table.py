"""scripts/ladder_table.py: README's table of the seed's steps, written from the ladder's run directories."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.factories import load_script


@pytest.fixture(scope="module")
def ladder_table():
    return load_script("ladder_table")


def _history(run_dir: Path, rows: list[tuple[int, float, float]]) -> None:
    lines = ["epoch,loss,accuracy,val_loss,val_accuracy,lr,seconds"]
    lines += [f"{e},1.0,0.5,1.1,{val},0.001,{sec}" for e, val, sec in rows]
    (run_dir / "history.csv").write_text("\n".join(lines) + "\n")


def _runs(tmp_path: Path) -> Path:
    runs = tmp_path / "ladder"
    finished, stopped, running = (runs / f"proyecto{i}-s0" for i in (1, 2, 3))
    for run_dir in (finished, stopped, running):
        run_dir.mkdir(parents=True)
        (run_dir / "config.json").write_text("{}")
    (finished / "config.json").write_text(json.dumps({"hardware": "AMD EPYC, 2 threads, AVX512-BF16"}))
    _history(finished, [(e, 0.6, 6.0) for e in range(1, 201)])
    metrics = {"test_accuracy": 0.6475, "epochs_run": 200, "best_epoch": 200, "train_seconds": 7200.0}
    (finished / "metrics.json").write_text(json.dumps(metrics))
    _history(stopped, [(e, 0.7, 60.0) for e in range(1, 23)])
    metrics = {"test_accuracy": 0.734, "epochs_run": 22, "best_epoch": 12, "train_seconds": 1397.5}
    (stopped / "metrics.json").write_text(json.dumps(metrics))
    _history(running, [(1, 0.4, 30.0), (2, 0.55, 30.0), (3, 0.5, 30.0)])
    return runs


def test_rows_say_what_ran_and_what_is_left(ladder_table, tmp_path):
    rows = ladder_table.table(_runs(tmp_path)).splitlines()
    assert len(rows) == 2 + 9
    assert rows[2] == (
        "| proyecto1 | 65.74 % | **64.75 %** | – | -0.99 | 200 / 200 | 120 min | AMD EPYC, 2 threads, AVX512-BF16 "
        "| full length | none: no callbacks in the seed |"
    )
    assert "**73.40 %** | – | +0.54 | 22 / 200 | 23 min | – | full recipe: early stopping (best epoch 12)" in rows[3]
    assert "partial: val. 50.00 % at epoch 3 (best 55.00 %) | – | – | 3 / 200 | 2 min so far | – | stopped" in rows[4]
    assert all("not started" in row and "queued" in row for row in rows[5:])


def test_keep_copies_records_and_readme_is_rewritten_between_markers(ladder_table, tmp_path, monkeypatch):
    runs = _runs(tmp_path)
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{ladder_table.START}\nold table\n{ladder_table.END}\noutro\n")
    keep = tmp_path / "kept"
    argv = ["ladder_table.py", "--runs-dir", str(runs), "--keep", str(keep), "--readme", str(readme)]
    monkeypatch.setattr("sys.argv", argv)
    ladder_table.main()
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith("\noutro\n") and "old table" not in text
    assert "| proyecto2 | 72.86 % | **73.40 %**" in text
    assert sorted(p.name for p in (keep / "proyecto1-s0").iterdir()) == ["config.json", "history.csv", "metrics.json"]
    assert sorted(p.name for p in (keep / "proyecto3-s0").iterdir()) == ["config.json", "history.csv"]


def test_keep_never_replaces_a_record_that_went_further(ladder_table, tmp_path, monkeypatch):
    """A session's fresh restart of a row (fewer epochs) leaves the earlier, longer record, and the table shows it."""
    kept = _runs(tmp_path)  # proyecto3 ran 3 epochs in an earlier session; proyecto1 finished
    fresh = tmp_path / "fresh"
    for name, epochs in (("proyecto1-s0", 5), ("proyecto3-s0", 2), ("proyecto4-s0", 1)):
        (fresh / name).mkdir(parents=True)
        (fresh / name / "config.json").write_text("{}")
        _history(fresh / name, [(e, 0.3, 10.0) for e in range(1, epochs + 1)])
    readme = tmp_path / "README.md"
    readme.write_text(f"{ladder_table.START}\n{ladder_table.END}\n")
    monkeypatch.setattr("sys.argv", ["x", "--runs-dir", str(fresh), "--keep", str(kept), "--readme", str(readme)])
    ladder_table.main()
    text = readme.read_text()
    assert "**64.75 %**" in text and "at epoch 3 (best 55.00 %)" in text  # the longer records stay
    assert "| proyecto4 | 83.32 % | partial: val. 30.00 % at epoch 1" in text  # a new row is kept
    assert (kept / "proyecto4-s0" / "history.csv").exists()
    assert len((kept / "proyecto3-s0" / "history.csv").read_text().splitlines()) == 1 + 3


def test_a_step_with_several_finished_seeds_shows_their_spread(ladder_table, tmp_path):
    runs = _runs(tmp_path)
    for seed, accuracy in ((1, 0.6575), (2, 0.6375)):
        run_dir = runs / f"proyecto1-s{seed}"
        run_dir.mkdir()
        (run_dir / "config.json").write_text("{}")
        _history(run_dir, [(e, 0.6, 6.0) for e in range(1, 201)])
        metrics = {"test_accuracy": accuracy, "epochs_run": 200, "best_epoch": 200, "train_seconds": 7000.0}
        (run_dir / "metrics.json").write_text(json.dumps(metrics))
    rows = ladder_table.table(runs).splitlines()
    assert "| **64.75 %** | 64.75 ± 1.00 (3) | -0.99 |" in rows[2]  # seeds 0, 1, 2: 64.75, 65.75, 63.75
    assert "**73.40 %** | – |" in rows[3]  # one seed: no spread


def test_a_step_with_a_full_length_record_is_read_under_the_chosen_reading(ladder_table, tmp_path):
    """proyecto2's full record: val_accuracy peaks at epoch 4 and never again; the test column tells each reading."""
    from cifarlab.presets import get_preset

    runs = _runs(tmp_path)
    full = runs / "proyecto2-full-s0"
    full.mkdir()
    config = get_preset("proyecto2").config.to_dict()
    config["train"]["epochs"] = 20
    (full / "config.json").write_text(json.dumps({"config": config, "hardware": "Intel Xeon, AMX-BF16"}))
    lines = ["epoch,loss,accuracy,val_loss,val_accuracy,lr,seconds,test_loss,test_accuracy"]
    for epoch in range(1, 21):
        val = 0.8 if epoch == 4 else 0.5
        lines.append(f"{epoch},{1 / epoch},{0.5},{0.5 if epoch == 4 else 1.0},{val},0.001,60,1.0,{epoch / 100}")
    (full / "history.csv").write_text("\n".join(lines) + "\n")
    row = ladder_table.table(runs).splitlines()[3]
    # keras_p3 (the presets'): the training loss improves every epoch, the accuracy never: stops at 4, last weights
    assert "| proyecto2 | 72.86 % | **4.00 %** |" in row and "| 4 / 200 | 4 min |" in row
    assert "replayed (keras_p3): early stopping, epoch 4's weights tested" in row
    # val_p10: both stoppers run out at epoch 14, the checkpoint (epoch 4) is tested; none: epoch 20
    assert "val_p10 4.00" in row and "none 20.00" in row and "none_best 4.00" in row
    # a row still running answers the presets' reading as soon as its record passes the stop; the others wait
    (full / "history.csv").write_text("\n".join(lines[:11]) + "\n")
    row = ladder_table.table(runs).splitlines()[3]
    assert "| **4.00 %** |" in row and "replayed (keras_p3): early stopping, epoch 4's weights tested" in row
    assert "none – (record ends at 10)" in row and "val_p10 – (record ends at 10)" in row
    (full / "history.csv").write_text("\n".join(lines[:3]) + "\n")  # 2 epochs: not even keras_p3 has stopped
    assert "| **73.40 %** |" in ladder_table.table(runs).splitlines()[3]  # the run that finished, as it ran


def test_a_run_under_an_earlier_reading_says_so_and_leaves_the_spread(ladder_table, tmp_path):
    """proyecto2's seeds ran the presets' earlier reading (val_p10): their row says so, and no spread mixes them."""
    from cifarlab.presets import get_preset

    runs = _runs(tmp_path)
    config = get_preset("proyecto2").config.to_dict()
    config["train"] |= {"early_stopping": ["val_loss", "val_accuracy"], "patience": 10,
                        "restore_best_weights": True, "test_weights": "checkpoint"}  # fmt: skip
    for seed in (0, 1):
        run_dir = runs / f"proyecto2-s{seed}"
        run_dir.mkdir(exist_ok=True)
        (run_dir / "config.json").write_text(json.dumps({"config": config}))
        _history(run_dir, [(e, 0.7, 60.0) for e in range(1, 23)])
        metrics = {"test_accuracy": 0.734 - seed / 100, "epochs_run": 22, "best_epoch": 12, "train_seconds": 1397.5}
        (run_dir / "metrics.json").write_text(json.dumps(metrics))
    row = ladder_table.table(runs).splitlines()[3]
    assert "**73.40 %** | – | +0.54 | 22 / 200 |" in row
    assert "earlier reading (val_p10): early stopping at epoch 22, best epoch tested" in row
    config["train"] |= get_preset("proyecto2").config.to_dict()["train"]  # the same seeds under today's reading
    for seed in (0, 1):
        (runs / f"proyecto2-s{seed}" / "config.json").write_text(json.dumps({"config": config}))
    row = ladder_table.table(runs).splitlines()[3]
    assert "**73.40 %** | 72.90 ± 0.71 (2) |" in row and "full recipe: early stopping (best epoch 12)" in row


def test_a_record_of_another_recipe_is_not_read_as_the_presets(ladder_table, tmp_path):
    """A full-length record, or a finished run, that trained something else (here Adam's lr) is named, not replayed."""
    from cifarlab.presets import get_preset

    runs = _runs(tmp_path)
    full = runs / "proyecto2-full-s0"
    full.mkdir()
    config = get_preset("proyecto2").config.to_dict()
    config["train"] |= {"epochs": 20, "test_each_epoch": True}  # how long it ran and what it measured: not the recipe
    lines = ["epoch,loss,accuracy,val_loss,val_accuracy,lr,seconds,test_loss,test_accuracy"]
    lines += [f"{e},{1 / e},0.5,1.0,0.5,0.001,60,1.0,{e / 100}" for e in range(1, 21)]
    (full / "history.csv").write_text("\n".join(lines) + "\n")
    split = {"train": 40000, "val": 10000, "test": 10000}
    (full / "config.json").write_text(json.dumps({"config": config, "dataset": split}))
    assert "replayed (keras_p3)" in ladder_table.table(runs).splitlines()[3]
    assert ladder_table.recorded_recipe("proyecto2", full).differences == []
    config["data"]["val_size"] = 10000  # the presets' 0.2 of 50000, written as a count: the same images
    (full / "config.json").write_text(json.dumps({"config": config, "dataset": split}))
    assert ladder_table.recorded_recipe("proyecto2", full).differences == []
    config["train"]["lr"] = 0.01
    (full / "config.json").write_text(json.dumps({"config": config, "dataset": split}))
    assert ladder_table.recorded_recipe("proyecto2", full).differences == ["lr"]
    row = ladder_table.table(runs).splitlines()[3]
    assert "replayed" not in row and "| **73.40 %** |" in row  # the finished run, as it ran
    (runs / "proyecto2-s0" / "config.json").write_text(json.dumps({"config": config, "dataset": split}))
    assert "earlier recipe (differs in lr)" in ladder_table.table(runs).splitlines()[3]
