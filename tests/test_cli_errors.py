"""User errors on the command line: each ends in one stderr line naming the problem and exit status 2.

Every row runs `cifarlab` in-process on small files made here; none trains, downloads or opens a socket (a row
that got past its error would fail the test rather than train). `--debug` adds the traceback.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from cifarlab import cli
from cifarlab.cli import main
from cifarlab.config import RunConfig
from cifarlab.extras import install_command
from cifarlab.inference.checkpoint import save_checkpoint
from cifarlab.models import create_model
from cifarlab.training.resume import RESUME_NAME, save_resume_state
from tests.factories import make_dataset, write_image_folder

CUDA = torch.cuda.is_available()
TOMLS = {
    "broken.toml": "[train\nepochs = 1",
    "str_epochs.toml": '[train]\nepochs = "five"',
    "float_epochs.toml": "[train]\nepochs = 2.5",
    "bool_epochs.toml": "[train]\nepochs = true",
    "top_epochs.toml": "epochs = 5",
    "section_value.toml": "train = 3",
    "unknown_section.toml": "[optimizer]\nname = 'adam'",
    "unknown_key.toml": "[train]\nepoch = 5",
    "classes_str.toml": '[data]\nclasses = "cat"',
    "monitor_str.toml": '[train]\nearly_stopping = "val_loss"',
    "augment_num.toml": "[train]\naugment = 3",
    "augment_key.toml": "[train.augment]\nflip = true",
    "augment_range.toml": "[train.augment]\nzoom = 1.5",
    "lr_inf.toml": "[train]\nlr = inf",
    "bad_choice.toml": '[train]\noptimizer = "adamw"',
    "unknown_model.toml": 'model = "resnet9000"',
    "preset_clash.toml": 'preset = "proyecto4"',
    "head_int.toml": "[transfer]\nhead = 5",
}

# (argv, what the one line must say); {d} is the folder of files made by the `files` fixture
# fmt: off
CASES = [
    # the command line itself (argparse)
    ([], "the following arguments are required: COMMAND"),
    (["fly"], "invalid choice: 'fly'"),
    (["train", "--epochs"], "argument --epochs: expected one argument"),
    (["train", "--epochs", "ten"], "argument --epochs: invalid int value: 'ten'"),
    (["train", "--lr", "fast"], "argument --lr: invalid float value: 'fast'"),
    (["train", "--device", "tpu"], "argument --device: invalid choice: 'tpu'"),
    (["train", "--bogus"], "unrecognized arguments: --bogus"),
    (["evaluate"], "the following arguments are required: RUN_DIR|CHECKPOINT"),
    # presets and models
    (["train", "--preset", "proyecto44", "--data", "{d}/img"], "unknown preset 'proyecto44'; did you mean proyecto4"),
    (["presets", "nothing*"], "no preset matches 'nothing*'"),
    (["models", "nothing*"], "no model matches 'nothing*'"),
    # values out of range
    (["train", "--data", "{d}/img", "--epochs", "0"], "--epochs must be at least 1, got 0"),
    (["train", "--data", "{d}/img", "--batch-size", "-5"], "--batch-size must be at least 1, got -5"),
    (["train", "--data", "{d}/img", "--lr", "0"], "--lr must be a positive number, got 0.0"),
    (["train", "--data", "{d}/img", "--lr", "nan"], "--lr must be a positive number, got nan"),
    (["train", "--data", "{d}/img", "--lr", "inf"], "--lr must be a positive number, got inf"),
    (["train", "--data", "{d}/img", "--patience", "0"], "--patience must be at least 1 epoch"),
    (["train", "--data", "{d}/img", "--val-size", "-1"], "--val-size must be 0 or more, got -1"),
    (["train", "--data", "{d}/img", "--image-size", "4"], "--image-size must be at least 8 pixels, got 4"),
    (["train", "--data", "{d}/img", "--seed", "-1"], "--seed must be between 0 and 2**63 - 1, got -1"),
    (["train", "--data", "{d}/img", "--per-class-limit", "0", "--quiet"], "--per-class-limit must be at least 1"),
    (["train", "--data", "{d}/img", "--finetune", "-1"], "--finetune must be 0 (frozen backbone) or more blocks"),
    (["train", "--data", "{d}/img", "--input-size", "16"], "--finetune, --input-size and transfer.head apply to "
     "transfer runs: add --backbone"),  # fmt: skip
    (["train", "--data", "{d}/img", "--weights", "{d}/afile"], "--weights (a local ImageNet weights file) needs "
     "--backbone imagenet"),  # fmt: skip
    (["train", "--data", "{d}/img", "--backbone", "imagenet", "--backbone-lr-scale", "0"],
     "--backbone-lr-scale must be positive, got 0.0"),  # fmt: skip
    # data
    (["train", "--data", "{d}/nowhere"], "--data {d}/nowhere: no such folder"),
    (["train", "--data", "{d}/afile"], "--data {d}/afile: no such folder"),
    (["train", "--data", "{d}/no_test", "--quiet"], "{d}/no_test has no test/ folder"),
    (["train", "--data", "{d}/empty_class", "--quiet"], "class 'b' in {d}/empty_class/train is empty"),
    (["train", "--data", "{d}/broken_images", "--quiet"], "cannot read image {d}/broken_images/"),
    (["train", "--data", "{d}/img", "--val-size", "100000", "--quiet"], "--val-size 100000 leaves no training"),
    (["train", "--data", "{d}/img", "--classes", "dragon", "--quiet"], "--classes: unknown class dragon"),
    (["train", "--data", "{d}/img", "--image-size", "100000", "--quiet"], "use a smaller --image-size"),
    (["train", "--data", "{d}/img", "--data-dir", "{d}"], "--data-dir is where the CIFAR-10 archive is"),
    (["train", "--data-dir", "{d}/nowhere"], "CIFAR-10 data folder {d}/nowhere does not exist"),
    (["train", "--data-dir", "{d}/img"], "no CIFAR-10 data in {d}/img"),
    (["train", "--data-dir", "{d}/bad_archive", "--quiet"], "cifar-10-python.tar.gz has md5"),
    (["train", "--data", "{d}/img", "--device", "cuda", "--quiet"] if not CUDA else ["models", "zz"],
     "no CUDA device" if not CUDA else "no model matches"),
    # run directories
    (["train", "--data", "{d}/img", "--out", "{d}/afile", "--quiet"], "{d}/afile"),
    (["train", "--data", "{d}/img", "--out", "{d}/run", "--quiet"], "--out {d}/run exists and is not empty"),
    # config files
    (["train", "--config", "{d}/nowhere.toml"], "config file {d}/nowhere.toml does not exist (--config)"),
    (["train", "--config", "{d}/broken.toml"], "is not valid TOML: Expected ']'"),
    (["train", "--config", "{d}/str_epochs.toml"], "train.epochs must be an integer, got 'five'"),
    (["train", "--config", "{d}/float_epochs.toml"], "train.epochs must be an integer, got 2.5"),
    (["train", "--config", "{d}/bool_epochs.toml"], "train.epochs must be an integer, got True"),
    (["train", "--config", "{d}/top_epochs.toml"], "unknown config key 'epochs'; did you mean [train] epochs?"),
    (["train", "--config", "{d}/section_value.toml"], "config key 'train' is a section: give a [train] table"),
    (["train", "--config", "{d}/unknown_section.toml"], "unknown config key 'optimizer'"),
    (["train", "--config", "{d}/unknown_key.toml"], "unknown config key 'train.epoch'; did you mean epochs"),
    (["train", "--config", "{d}/classes_str.toml"], "data.classes must be a list of strings, got 'cat'"),
    (["train", "--config", "{d}/monitor_str.toml"], "train.early_stopping must be a list of values from val_loss"),
    (["train", "--config", "{d}/augment_num.toml"], "train.augment must be a table, got 3"),
    (["train", "--config", "{d}/augment_key.toml"], "unknown augmentation option 'flip'"),
    (["train", "--config", "{d}/augment_range.toml"], "zoom must be in [0, 1)"),
    (["train", "--config", "{d}/lr_inf.toml"], "--lr must be a positive number, got inf"),
    (["train", "--config", "{d}/bad_choice.toml"], "train.optimizer must be one of adam, sgd, muon; got 'adamw'"),
    (["train", "--config", "{d}/unknown_model.toml"], "unknown model 'resnet9000'"),
    (["train", "--config", "{d}/preset_clash.toml", "--preset", "proyecto1"], "--preset proyecto1 and preset = "
     "'proyecto4' in {d}/preset_clash.toml disagree"),  # fmt: skip
    (["train", "--config", "{d}/head_int.toml"], "transfer.head must be a list of integers, got 5"),
    # resuming
    (["train", "--resume", "{d}/nowhere"], "{d}/nowhere is not a cifarlab run directory (no config.json)"),
    (["train", "--resume", "{d}/run", "--epochs", "3"], "--resume continues a run as it was configured; drop --epochs"),
    (["train", "--resume", "{d}/finished"], "run {d}/finished has finished; there is nothing to resume"),
    (["train", "--resume", "{d}/garbled_record"], "{d}/garbled_record/config.json is not a readable run record"),
    (["train", "--resume", "{d}/damaged_resume"], "{d}/damaged_resume/resume.pt is not a readable resume file"),
    (["train", "--data", "{d}/img", "--backbone", "{d}/nowhere", "--quiet"],
     "--backbone {d}/nowhere: give 'imagenet' or a cifarlab run"),
    # saved models
    (["evaluate", "{d}/nowhere"], "no checkpoint at {d}/nowhere"),
    (["evaluate", "{d}/img"], "no checkpoint at {d}/img/model.safetensors"),
    (["evaluate", "{d}/lonely"], "has no metadata file model.json beside it"),
    (["evaluate", "{d}/truncated"], "{d}/truncated/model.safetensors is not a readable safetensors file"),
    (["evaluate", "{d}/flipped"], "{d}/flipped/model.safetensors is damaged"),
    (["evaluate", "{d}/stale"], "{d}/stale/model.json belongs to other weights"),
    (["evaluate", "{d}/garbled_json"], "{d}/garbled_json/model.json is not valid JSON"),
    (["evaluate", "{d}/run", "--data", "{d}/other_classes", "--quiet"], "differ from the model's"),
    # ladder
    (["ladder", "--seeds", "a"], "--seeds: expected comma-separated integers"),
    (["ladder", "--seeds", ","], "--seeds: give at least one seed"),
    (["ladder", "--seeds", "0,0"], "--seeds: each seed once, got 0,0"),
    (["ladder", "--epochs-scale", "0"], "--epochs-scale must be a positive number"),
    (["ladder", "--presets", "nope"], "unknown preset 'nope'"),
    (["ladder", "--presets", ","], "--presets: give at least one preset name"),
    (["ladder", "--presets", "proyecto1", "--runs-dir", "{d}/afile"], "--runs-dir {d}/afile is a file"),
    # cache
    (["cache", "--prune", "--older-than", "-1"], "--older-than must be 0 or more days, got -1.0"),
    (["cache", "--prune", "--older-than", "nan"], "--older-than must be 0 or more days, got nan"),
    (["cache", "--older-than", "3"], "--older-than applies to --prune; add --prune"),
    (["cache", "--prune", "--older-than", "soon"], "argument --older-than: invalid float value: 'soon'"),
]

# commands other modules add; their rows run when the command exists
OPTIONAL_CASES = {
    "report": [(["report", "{d}/nowhere"], "{d}/nowhere: no such run directory"),
               (["report", "{d}/img"], "(not a cifarlab run)")],  # fmt: skip
    "compare": [(["compare", "{d}/nowhere"], "{d}/nowhere: no such run directory"),
                (["compare", "--runs-dir", "{d}/nowhere"], "--runs-dir {d}/nowhere: no such folder")],  # fmt: skip
    "predict": [(["predict", "{d}/nowhere", "{d}/img"], "no checkpoint at {d}/nowhere"),
                (["predict", "{d}/run", "{d}/img", "--top-k", "0"], "--top-k must be 1 or more, got 0")],  # fmt: skip
    "export": [(["export", "{d}/nowhere"], "no checkpoint at {d}/nowhere"),
               (["export", "{d}/flipped"], "is damaged")],  # fmt: skip
    "serve": [(["serve", "{d}/run", "--port", "-1"], "--port must be between 0 and 65535")],
}
# fmt: on


def _commands() -> set[str]:
    return set(cli.build_parser()._subparsers._group_actions[0].choices)


ALL_CASES = CASES + [case for name, rows in OPTIONAL_CASES.items() if name in _commands() for case in rows]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    """Every file the rows point at: image folders, config files, checkpoints and run directories, good and bad."""
    d = tmp_path_factory.mktemp("inputs")
    (d / "afile").write_text("not a folder")
    img = write_image_folder(d / "img", make_dataset(train=12, test=8, num_classes=2))
    other = replace(make_dataset(train=6, test=6, num_classes=3), class_names=["x", "y", "z"])
    write_image_folder(d / "other_classes", other)
    (d / "no_test" / "train" / "a").mkdir(parents=True)
    for split in ("train", "test"):
        for name in ("a", "b"):
            (d / "empty_class" / split / name).mkdir(parents=True)
        (d / "empty_class" / split / "a" / "x.png").write_bytes((img / split / "class0" / "0000.png").read_bytes())
        for name in ("a", "b"):
            (d / "broken_images" / split / name).mkdir(parents=True)
            (d / "broken_images" / split / name / "x.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (d / "bad_archive").mkdir()
    (d / "bad_archive" / "cifar-10-python.tar.gz").write_bytes(b"not a tarball")
    for name, text in TOMLS.items():
        (d / name).write_text(text)

    torch.manual_seed(0)
    meta = {"model": "proyecto1", "model_kwargs": {"num_classes": 2}, "class_names": ["class0", "class1"],
            "image_size": 32, "normalization": {"mean": [0.0] * 3, "std": [1.0] * 3},
            "data_source": str(img)}  # fmt: skip
    run = save_checkpoint(d / "run" / "model.safetensors", create_model("proyecto1", num_classes=2), meta).parent
    (run / "config.json").write_text(json.dumps({"config": RunConfig().to_dict()}))
    for name in ("truncated", "flipped", "stale", "garbled_json", "lonely"):
        (d / name).mkdir()
        for file in ("model.safetensors", "model.json"):
            (d / name / file).write_bytes((run / file).read_bytes())
    weights = (run / "model.safetensors").read_bytes()
    (d / "truncated" / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    (d / "flipped" / "model.safetensors").write_bytes(weights[:-9] + bytes([weights[-9] ^ 4]) + weights[-8:])
    other = save_checkpoint(d / "other" / "model.safetensors", create_model("proyecto1", num_classes=2), meta)
    (d / "stale" / "model.json").write_bytes(other.with_suffix(".json").read_bytes())
    (d / "garbled_json" / "model.json").write_text('{"format": "cifarlab-checkpoint", ')
    (d / "lonely" / "model.json").unlink()

    for name in ("finished", "garbled_record", "damaged_resume"):
        (d / name).mkdir()
        (d / name / "config.json").write_text(json.dumps({"config": RunConfig().to_dict()}))
    (d / "finished" / "metrics.json").write_text("{}")
    (d / "garbled_record" / "config.json").write_text("{not json")
    save_resume_state(d / "garbled_record" / RESUME_NAME, {"epoch": 1})
    save_resume_state(d / "damaged_resume" / RESUME_NAME, {"epoch": 1, "w": torch.zeros(1000)})
    resume = (d / "damaged_resume" / RESUME_NAME).read_bytes()
    (d / "damaged_resume" / RESUME_NAME).write_bytes(resume[: len(resume) // 2])
    return d


@pytest.mark.parametrize(("argv", "message"), ALL_CASES, ids=[" ".join(argv) or "(none)" for argv, _ in ALL_CASES])
def test_user_error_is_one_line_and_exit_2(argv, message, files, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # a row that wrongly got as far as training would write runs/ here, not in the repo
    argv = [arg.format(d=files) for arg in argv]
    try:
        status = main(argv)
    except SystemExit as exit:  # argparse's errors
        status = exit.code
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert status == 2, captured
    assert len(lines) == 1 and lines[0].startswith("cifarlab"), captured.err
    assert message.format(d=files) in lines[0]
    assert "Traceback" not in captured.err
    assert not [path for path in tmp_path.rglob("*") if path.is_file()], "a run started"  # nothing was written


def test_the_table_has_at_least_40_user_errors():
    assert len(ALL_CASES) >= 40


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_shows_the_traceback_then_the_same_line(where, capsys):
    argv = ["--debug", "presets", "nothing*"] if where == "before" else ["presets", "nothing*", "--debug"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last):") and "raise ValueError" in err
    assert err.splitlines()[-1] == "cifarlab: error: no preset matches 'nothing*' (see 'cifarlab presets')"


def test_a_bug_is_one_line_without_debug_and_a_traceback_with_it(monkeypatch, capsys):
    def broken(args):
        raise RuntimeError("something nobody planned for\nover two lines")

    monkeypatch.setattr(cli, "_models", broken)
    assert main(["models"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "internal error: RuntimeError: something nobody planned for over two lines" in err
    assert "rerun with --debug" in err
    with pytest.raises(RuntimeError, match="nobody planned"):
        main(["--debug", "models"])


def test_debug_after_a_double_dash_is_an_argument_not_the_flag(capsys):
    assert main(["models", "--", "--debug"]) == 2  # the pattern '--debug' matches no model
    assert capsys.readouterr().err.strip() == "cifarlab: error: no model matches '--debug' (see 'cifarlab models')"


def test_a_missing_optional_extra_is_one_line_naming_the_pip_command(tmp_path, monkeypatch, capsys):
    # as after `pip install .` alone: the serve extra's modules cannot be imported
    monkeypatch.setitem(sys.modules, "fastapi", None)
    for name in ("cifarlab.serve.app", "cifarlab.serve"):  # imported afresh, so that they meet the missing module
        monkeypatch.delitem(sys.modules, name, raising=False)
    assert main(["serve", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"cifarlab: error: cifarlab serve needs fastapi, from the 'serve' extra: {install_command('serve')}"


def test_the_extras_map_matches_pyproject():
    from cifarlab.extras import EXTRA_MODULES

    tomllib = pytest.importorskip("tomllib")

    extras = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
    declared = extras["optional-dependencies"]
    for module, extra in EXTRA_MODULES.items():
        assert extra in declared, (module, extra)
    # every extra a command needs is mapped
    for extra in ("serve", "export", "tensorboard", "mlflow", "tune", "robustness", "audit"):
        assert extra in EXTRA_MODULES.values()


def test_tune_without_its_extra_is_one_line_and_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "optuna", None)  # as after `pip install .` alone
    study = tmp_path / "study"
    assert main(["tune", "--preset", "proyecto1", "--study-dir", str(study)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"cifarlab: error: cifarlab tune needs optuna, from the 'tune' extra: {install_command('tune')}"
    assert not study.exists()


def test_audit_without_its_extra_is_one_line_and_trains_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "cleanlab", None)
    out = tmp_path / "audit"
    assert main(["audit", "--data", str(tmp_path / "nowhere"), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    expected = f"cifarlab audit needs cleanlab, from the 'audit' extra: {install_command('audit')}"
    assert err == f"cifarlab: error: {expected}"
    assert not out.exists()


def test_robustness_without_its_extra_is_one_line(tmp_path, monkeypatch, capsys):
    for name in ("scipy", "scipy.ndimage"):
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.delitem(sys.modules, "cifarlab.evaluation.corruptions", raising=False)
    assert main(["robustness", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    expected = f"cifarlab robustness needs scipy, from the 'robustness' extra: {install_command('robustness')}"
    assert err == f"cifarlab: error: {expected}"


def test_a_reader_that_goes_away_ends_the_command_quietly():
    """`cifarlab presets | head -1`: the closed pipe is not reported as an error; the status is a shell's SIGPIPE."""
    command = subprocess.Popen([sys.executable, "-m", "cifarlab", "presets", "--details"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    command.stdout.close()  # the reader is gone before the first line is written
    stderr = command.stderr.read().decode()
    assert command.wait(timeout=120) == 141
    assert stderr == ""


def test_a_broken_pipe_that_is_not_stdout_is_still_an_error(monkeypatch, capsys):
    """A connection that breaks while stdout is fine (a download, a socket) gets its one line, not silence."""

    def broken(args):
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(cli, "_presets", broken)
    assert main(["presets"]) == 2
    assert capsys.readouterr().err.strip() == "cifarlab: error: [Errno 32] Broken pipe"
