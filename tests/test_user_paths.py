"""What a new user hits: swapped arguments, unwritable --out paths, a taken port, --version; one line, exit 2."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from cifarlab.cli import main
from tests.deploy_fixtures import train_tiny_run


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return train_tiny_run(tmp_path_factory.mktemp("paths"))


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("cifarlab: error: "), err
    return err


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip().startswith("cifarlab 0.")


def test_predict_with_its_arguments_swapped_says_the_model_comes_first(run, tmp_path, capsys):
    image = tmp_path / "chelsea_cat.jpg"
    Image.new("RGB", (32, 32), "orange").save(image)
    assert main(["predict", str(image), str(run)]) == 2
    assert "chelsea_cat.jpg is an image, not a model; the model comes first" in one_line_error(capsys)


@pytest.mark.parametrize(
    ("out", "message"),
    [
        ("notes.txt/m.onnx", "--out {tmp}/notes.txt/m.onnx: {tmp}/notes.txt is a file, not a folder"),
        ("missing/m.onnx", "--out {tmp}/missing/m.onnx: the folder {tmp}/missing does not exist"),
        ("a_folder.onnx", "--out {tmp}/a_folder.onnx: is a folder; give a file name"),
    ],
)
def test_export_checks_its_out_path_first_and_names_it(run, tmp_path, capsys, out, message):
    (tmp_path / "notes.txt").write_text("not a folder")
    (tmp_path / "a_folder.onnx").mkdir()
    assert main(["export", str(run), "--out", str(tmp_path / out)]) == 2
    assert message.format(tmp=tmp_path) in one_line_error(capsys)
    assert not list(tmp_path.glob("**/.*.tmp"))  # nothing half-written


def test_export_into_a_filesystem_that_takes_no_files(run, capsys):
    assert main(["export", str(run), "--out", "/proc/m.onnx"]) == 2
    err = one_line_error(capsys)
    assert err.startswith("cifarlab: error: --out /proc/m.onnx: cannot write in /proc") and ".tmp" not in err


def test_report_out_in_a_missing_folder(run, tmp_path, capsys):
    assert main(["report", str(run), "--out", str(tmp_path / "nowhere" / "r.html")]) == 2
    assert f"--out {tmp_path}/nowhere/r.html: the folder {tmp_path}/nowhere does not exist" in one_line_error(capsys)


def test_serve_on_a_taken_port_is_one_line_before_anything_is_served(run, capsys):
    pytest.importorskip("fastapi")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", str(run), "--port", str(port)]) == 2
    err = one_line_error(capsys)
    assert f"--port {port}: cannot listen on 127.0.0.1:{port}" in err
    assert "serving" not in capsys.readouterr().out


def test_the_export_line_says_whether_the_file_scores_what_the_run_printed(run, tmp_path, capsys):
    assert main(["export", str(run), "--out", str(tmp_path / "same.onnx")]) == 0
    assert "TTA off, as the run's test accuracy was measured" in capsys.readouterr().out
    assert main(["export", str(run), "--tta", "--out", str(tmp_path / "views.onnx")]) == 0
    assert "TTA level 2, while the run's test accuracy used TTA off" in capsys.readouterr().out


def test_train_shows_the_final_evaluation_and_the_report_as_they_happen(image_folder, tmp_path, capsys):
    """The end of a run is not silent: a line and a bar for the test (and val) pass with TTA, then the report."""
    config = tmp_path / "tta.toml"
    config.write_text("[train]\ntta = 2\n")
    code = main(["train", "--preset", "proyecto1", "--config", str(config), "--data", str(image_folder),
                 "--epochs", "1", "--batch-size", "16", "--val-size", "20", "--out", str(tmp_path / "run"),
                 "--precision", "fp32"])  # fmt: skip
    assert code == 0
    captured = capsys.readouterr()
    out, bars = captured.out, captured.err.replace("\r", "\n").splitlines()
    testing, report = out.index("testing the final model with test-time augmentation"), out.index("writing the report")
    assert testing < report
    assert any(bar.startswith("test: 100%") for bar in bars), bars  # the test pass's own bar, to its end
    assert any(bar.startswith("val: 100%") for bar in bars), bars


def test_an_installed_copy_names_the_git_revision_it_was_built_from(tmp_path):
    """`pip install .` leaves no checkout behind; the build writes the revision into the package for run records."""
    root = Path(__file__).parents[1]
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True).stdout.strip()
    if not head:
        pytest.skip("not a git checkout")
    build = subprocess.run([sys.executable, "setup.py", "-q", "build_py", "--build-lib", str(tmp_path / "lib")],
                           cwd=root, capture_output=True, text=True)  # fmt: skip
    assert build.returncode == 0, build.stderr
    built = (tmp_path / "lib" / "cifarlab" / "_build_revision.txt").read_text().strip()
    assert built in (head, head + "+uncommitted")
    ask = "from cifarlab.training.run_dir import git_revision; print(git_revision())"
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "lib")}
    out = subprocess.run([sys.executable, "-c", ask], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.stdout.strip() == built, out.stderr
