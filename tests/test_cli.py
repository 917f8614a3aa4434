import os
import re
from pathlib import Path

import pytest

from cifarlab.cli import build_parser, main

SNAPSHOTS = Path(__file__).parent / "snapshots"
SUBCOMMANDS = [
    "presets",
    "models",
    "train",
    "ladder",
    "tune",
    "audit",
    "evaluate",
    "robustness",
    "predict",
    "export",
    "serve",
    "report",
    "compare",
    "cache",
]


@pytest.mark.parametrize("command", [None, *SUBCOMMANDS])
def test_help_matches_snapshot(command, monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    parser = build_parser()
    if command is not None:
        parser = parser._subparsers._group_actions[0].choices[command]
    text = parser.format_help()
    path = SNAPSHOTS / f"help_{command or 'cifarlab'}.txt"
    if os.environ.get("CIFARLAB_UPDATE_SNAPSHOTS"):
        path.write_text(text)
    hint = f"'cifarlab {command} --help' changed; if on purpose, rerun with CIFARLAB_UPDATE_SNAPSHOTS=1"
    assert text == path.read_text(), hint


def test_presets_lists_the_seed_counts(capsys):
    assert main(["presets", "proyecto*"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"proyecto4\s+proyecto4\s+551,978\s+551,274\s+704\s+83\.32", out)
    assert re.search(r"proyecto9\s+proyecto6\s+3,252,042\s+3,250,122\s+1,920\s+88\.37", out)


def test_presets_details_show_the_choices(capsys):
    assert main(["presets", "proyecto9", "--details"]) == 0
    out = capsys.readouterr().out
    assert "156 steps/epoch" in out and "rotation_deg" in out
    assert (
        "callbacks: checkpoint of the best val_accuracy; early stopping on loss and on accuracy (patience 3, "
        "last weights kept); tested on the weights in memory at the end"
    ) in out
    assert main(["presets", "proyecto4", "--details"]) == 0
    assert "callbacks:" not in capsys.readouterr().out  # the seed's proyecto4 has none


def test_models_lists_the_registry(capsys):
    assert main(["models", "proyecto[12]"]) == 0
    assert capsys.readouterr().out.split() == ["proyecto1", "proyecto2"]


def test_train_then_evaluate_on_an_image_folder(image_folder, tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["train", "--preset", "proyecto1", "--data", str(image_folder), "--epochs", "2", "--batch-size", "16",
            "--val-size", "20", "--out", str(run), "--quiet", "--precision", "fp32"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out.splitlines()
    percent = [line for line in out if line.startswith("> ")]
    assert len(percent) == 1 and re.fullmatch(r"> \d{1,3}\.\d{3}", percent[0])
    assert out[-1] == f"run saved to {run}"
    assert main(["evaluate", str(run), "--quiet", "--precision", "fp32"]) == 0
    assert capsys.readouterr().out.strip() == percent[0]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--preset", "proyecto44"], "unknown preset 'proyecto44'; did you mean proyecto4"),
        (["train", "--data", "/no/such/folder"], "--data /no/such/folder: no such folder"),
        (["train", "--epochs", "0"], "--epochs must be at least 1"),
        (["evaluate", "/no/such/run"], "no checkpoint at /no/such/run"),
        (["presets", "nothing*"], "no preset matches 'nothing*'"),
    ],
)
def test_bad_input_is_one_clear_line_and_a_nonzero_exit(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "Traceback" not in err


def test_train_refuses_a_non_empty_out_dir(image_folder, tmp_path, capsys):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "file").write_text("x")
    assert main(["train", "--data", str(image_folder), "--out", str(out), "--quiet"]) == 2
    assert "exists and is not empty" in capsys.readouterr().err


def test_train_on_official_format_cifar10_from_data_dir_without_network(tmp_path, capsys):
    from tests.data.conftest import build_fake_cifar

    fake = build_fake_cifar(tmp_path / "archive" / "cifar-10-python.tar.gz", rows_per_batch=20)
    fake.write_folder(tmp_path / "data" / "cifar-10-batches-py")
    run = tmp_path / "run"
    argv = ["train", "--preset", "proyecto1", "--data-dir", str(tmp_path / "data"), "--epochs", "1",
            "--val-size", "20", "--out", str(run), "--quiet", "--precision", "fp32"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "> " in out
    import json

    meta = json.loads((run / "model.json").read_text())
    assert meta["data_source"] == "cifar10" and meta["class_names"][0] == "airplane"
    config = json.loads((run / "config.json").read_text())
    assert config["dataset"] == {"source": "cifar10", "class_names": meta["class_names"], "train": 80, "val": 20,
                                 "test": 20}  # fmt: skip
    assert main(["evaluate", str(run), "--quiet", "--precision", "fp32"]) == 0  # finds the data where training did
    assert capsys.readouterr().out.strip() in out


def test_corrupt_official_archive_is_a_one_line_error(tmp_path, capsys):
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "cifar-10-python.tar.gz").write_bytes(b"not really a tarball")
    assert main(["train", "--data-dir", str(folder), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cifar-10-python.tar.gz" in err
