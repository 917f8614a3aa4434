"""Real processes stopped by SIGTERM, SIGKILL (mid-epoch, mid-write) and a full disk; each run then resumes.

Every stopped run is resumed with `cifarlab train --resume` and must end with the same weights, to the bit, as
one run never stopped (CPU, fp32), with every epoch once in history.csv and no damaged file left behind.

A `sitecustomize.py` on PYTHONPATH (`HOOK`) gives a child process a callback that sends a signal at a chosen step,
or freezes the write of a chosen file halfway, so each stop lands at a known point without timing guesses.
"""

from __future__ import annotations

import csv
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import cifarlab
from cifarlab.cli import main
from cifarlab.training.resume import load_resume_state
from tests.factories import make_dataset, write_image_folder

EPOCHS = 3
SETTINGS = dict(preset="proyecto1", epochs=EPOCHS, batch_size=16, val_size=16, precision="fp32", device="cpu")
TOML = '[train]\noptimizer = "sgd"\nlr = 0.05\n'  # no BatchNorm, no dropout, no augmentation: exact on any split

HOOK = """
import os
spec = os.environ.get("CIFARLAB_TEST_SIGNAL")  # EPOCH:STEP:SIGNAL:self|parent|group[:SECONDS_TO_REPEAT]
if spec:
    import signal, time
    import cifarlab.api as api
    from cifarlab.training.callbacks import Callback

    epoch, step, name, target, *repeat = spec.split(":")

    class SendSignal(Callback):
        def on_train_batch_end(self, at, logs):
            if (self.trainer.epoch, at) == (int(epoch), int(step)) and self.trainer.dist.is_main:
                if target == "group":  # the whole job at once, as a machine going away
                    os.killpg(os.getpgid(0), getattr(signal, name))
                pid = os.getppid() if target == "parent" else os.getpid()
                os.kill(pid, getattr(signal, name))
                if repeat:
                    time.sleep(float(repeat[0]))
                    os.kill(pid, getattr(signal, name))
                if target == "parent":
                    time.sleep(1.0)  # let the launcher pass it on to every rank

    make = api._make_trainer
    api._make_trainer = lambda config, dataset, run_dir, callbacks: make(
        config, dataset, run_dir, [*(callbacks or []), SendSignal()])

stall = os.environ.get("CIFARLAB_TEST_STALL_WRITE")  # NAME:BYTES:replace|new
if stall:
    import time
    from contextlib import contextmanager
    from pathlib import Path
    import cifarlab._io.atomic as atomic

    stall_name, stall_size, stall_when = stall.rsplit(":", 2)
    atomic_path = atomic.atomic_path

    @contextmanager
    def stalling_atomic_path(path):
        # The write of NAME ('replace': over an existing file, 'new': the first one) stops once its writer is done,
        # before the flush and the move into place: the temporary file is cut to BYTES, one line goes to stderr,
        # and the process sleeps until the test kills it, as if killed in the middle of the write.
        path = Path(path)
        with atomic_path(path) as tmp:
            yield tmp
            if path.name == stall_name and path.exists() == (stall_when == "replace"):
                os.truncate(tmp, min(int(stall_size), tmp.stat().st_size))
                os.write(2, f"cifarlab-test: stalled writing {path} at byte {stall_size}\\n".encode())
                while True:
                    time.sleep(60)

    atomic.atomic_path = stalling_atomic_path  # write_text, write_json and write_with look it up at each call
"""


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """The image folder, the run config, the signal hook, and the weights of a run never stopped."""
    root = tmp_path_factory.mktemp("signals")
    folder = write_image_folder(root / "images", make_dataset(train=96, test=32))
    (root / "sgd.toml").write_text(TOML)
    (root / "hook").mkdir()
    (root / "hook" / "sitecustomize.py").write_text(HOOK)
    home = root / "home"
    env = {**os.environ, "CIFARLAB_HOME": str(home), "PYTHONPATH": f"{root / 'hook'}{os.pathsep}{_src()}"}
    whole = root / "whole"
    old_home = os.environ.get("CIFARLAB_HOME")
    os.environ["CIFARLAB_HOME"] = str(home)
    try:
        cifarlab.train(data=str(folder), config_file=root / "sgd.toml", out=str(whole), quiet=True, **SETTINGS)
    finally:
        if old_home is None:
            os.environ.pop("CIFARLAB_HOME")
        else:
            os.environ["CIFARLAB_HOME"] = old_home
    return {"root": root, "folder": folder, "env": env, "whole": whole}


def _src() -> str:
    return str(Path(cifarlab.__file__).parents[1])


def train_argv(setup, out, *extra):
    argv = ["train", "--data", str(setup["folder"]), "--config", str(setup["root"] / "sgd.toml"), "--out", str(out),
            "--quiet"]  # fmt: skip
    for key, value in SETTINGS.items():
        argv += [f"--{key.replace('_', '-')}", str(value)]
    return argv + list(extra)


def cifarlab_process(setup, argv, env=None, **kwargs):
    """Start `python -m cifarlab ARGV` with the hook on its path."""
    return subprocess.Popen([sys.executable, "-m", "cifarlab", *argv], env={**setup["env"], **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            **kwargs)  # fmt: skip


def run_cifarlab(setup, argv, env=None, **kwargs):
    process = cifarlab_process(setup, argv, env, **kwargs)
    out, err = process.communicate(timeout=600)
    return process.returncode, out, err


def resume_to_the_end(setup, run_dir, *extra):
    code, out, err = run_cifarlab(setup, ["train", "--resume", str(run_dir), "--quiet", *extra])
    assert code == 0, err
    assert not (run_dir / "resume.pt").exists()
    assert_same_as_whole(setup, run_dir)


def assert_same_as_whole(setup, run_dir, whole=None):
    """Same final weights, to the bit, as the run never stopped; each epoch once; no leftover temporary file."""
    whole = whole or setup["whole"]
    a, b = load_file(str(whole / "model.safetensors")), load_file(str(run_dir / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)
    with (run_dir / "history.csv").open() as f:
        assert [int(row["epoch"]) for row in csv.DictReader(f)] == list(range(1, EPOCHS + 1))
    assert not list(run_dir.glob(".*.tmp"))
    cifarlab.load(run_dir)  # the checkpoint and its metadata read back


def test_sigterm_saves_at_the_next_step_and_exits_143_with_the_hint(setup):
    cut = setup["root"] / "sigterm"
    code, _, err = run_cifarlab(setup, train_argv(setup, cut), env={"CIFARLAB_TEST_SIGNAL": "2:2:SIGTERM:self"})
    assert code == 143
    assert f"cifarlab: stopped by SIGTERM; continue with: cifarlab train --resume {cut}" in err
    assert "Traceback" not in err
    state = load_resume_state(cut / "resume.pt")
    assert (state["epoch"], state["loader"]["step"]) == (1, 2)  # in epoch 2, after its step 2
    resume_to_the_end(setup, cut)


def test_a_second_signal_exits_at_once(setup):
    cut = setup["root"] / "twice"
    code, _, err = run_cifarlab(setup, train_argv(setup, cut), env={"CIFARLAB_TEST_SIGNAL": "2:2:SIGTERM:self:1.5"})
    assert code == -signal.SIGTERM  # ended by the signal itself, without saving
    assert "saving the state after this step (send it again to quit at once)" in err
    assert load_resume_state(cut / "resume.pt")["epoch"] == 1  # the last epoch end's state, whole
    resume_to_the_end(setup, cut)


def test_sigkill_mid_epoch_resumes_from_save_every_steps(setup):
    cut = setup["root"] / "sigkill"
    code, _, _ = run_cifarlab(setup, train_argv(setup, cut, "--save-every-steps", "2"),
                              env={"CIFARLAB_TEST_SIGNAL": "2:3:SIGKILL:self"})  # fmt: skip
    assert code == -signal.SIGKILL
    state = load_resume_state(cut / "resume.pt")
    assert (state["epoch"], state["loader"]["step"]) == (1, 2)  # saved after step 2 of epoch 2, killed in step 3
    resume_to_the_end(setup, cut)


@pytest.mark.parametrize(("name", "when"), [("resume.pt", "replace"), ("model.safetensors", "new")])
def test_sigkill_while_a_file_is_being_written(setup, name, when):
    cut = setup["root"] / f"stall-{name}"
    process = cifarlab_process(setup, train_argv(setup, cut), env={"CIFARLAB_TEST_STALL_WRITE": f"{name}:1000:{when}"})
    for line in process.stderr:  # the write stops at byte 1000 and says so
        if line.startswith("cifarlab-test: stalled writing"):
            break
    process.kill()
    process.communicate(timeout=60)
    partial = list(cut.glob(f".{name}.*.tmp"))
    assert len(partial) == 1 and partial[0].stat().st_size == 1000
    if name == "resume.pt":
        assert load_resume_state(cut / "resume.pt")["epoch"] == 1  # the file before the write is whole
    else:
        assert not (cut / name).exists() and load_resume_state(cut / "resume.pt")["epoch"] == EPOCHS
    resume_to_the_end(setup, cut)


def _small_file_limit(limit: int):
    def limit_file_size() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return limit_file_size


def test_a_full_disk_stops_the_run_in_one_line_and_it_resumes_after(setup):
    cut = setup["root"] / "full"
    code, _, _ = run_cifarlab(setup, train_argv(setup, cut), env={"CIFARLAB_TEST_SIGNAL": "2:1:SIGKILL:self"})
    assert code == -signal.SIGKILL
    before = (cut / "resume.pt").read_bytes()
    assert len(before) > 1_500_000  # weights and momentum: the file-size limit below stops its next write

    code, _, err = run_cifarlab(setup, ["train", "--resume", str(cut), "--quiet"],
                                preexec_fn=_small_file_limit(1_500_000))  # fmt: skip
    assert code == 2 and "Traceback" not in err
    (line,) = [line for line in err.splitlines() if line.startswith("cifarlab: error")]  # one (warnings aside)
    assert err.splitlines()[-1] == line
    assert line == (f"cifarlab: error: cannot write {cut / 'resume.pt'}: File too large; the resume.pt there before "
                    f"is intact; make room, then continue with: cifarlab train --resume {cut}")  # fmt: skip
    assert (cut / "resume.pt").read_bytes() == before and not list(cut.glob(".*.tmp"))
    resume_to_the_end(setup, cut)


def test_an_unwritable_out_is_one_line_before_training(setup, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    assert main(train_argv(setup, blocker / "run")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--out {blocker / 'run'}: cannot write there" in err
