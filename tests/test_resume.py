import pytest
import torch
from safetensors.torch import load_file

import cifarlab
from cifarlab.cli import main
from cifarlab.training.callbacks import Callback
from tests.factories import make_dataset
from tests.test_vgg import vgg16_file  # noqa: F401  (session fixture: a random VGG16 in the published layout)

RUNS = {
    # a seed step (on the smaller P5 net): Adam, dropout (global generator), Keras affine augmentation, callbacks
    "proyecto9": dict(epochs=3, batch_size=32, val_size=32, steps_per_epoch=3, model="proyecto5"),
    # a fast recipe (on the narrow AirNet): Muon, alternating flip, crops, first epoch at 24 px, warmup-decay
    "fast88": dict(epochs=3, batch_size=32, low_res_epochs=1, model="airnet88"),
}


class InterruptAt(Callback):
    """Raise KeyboardInterrupt (as Ctrl-C would) at a given step of a given epoch."""

    def __init__(self, epoch: int, step: int) -> None:
        self.epoch, self.step = epoch, step

    def on_train_batch_end(self, step, logs):
        if self.trainer.epoch == self.epoch and step == self.step:
            raise KeyboardInterrupt


def train(preset, dataset, out, callbacks=None):
    return cifarlab.train(preset, dataset=dataset, out=str(out), quiet=True, precision="fp32", callbacks=callbacks,
                          **RUNS[preset])  # fmt: skip


@pytest.mark.parametrize("preset", sorted(RUNS))
def test_a_resumed_run_ends_as_the_uninterrupted_one(preset, tmp_path):
    dataset = make_dataset(train=128, test=32)
    whole = train(preset, dataset, tmp_path / "whole")

    with pytest.raises(KeyboardInterrupt, match=f"cifarlab train --resume {tmp_path / 'cut'}"):
        train(preset, dataset, tmp_path / "cut", callbacks=[InterruptAt(epoch=3, step=2)])
    assert (tmp_path / "cut" / "resume.pt").is_file() and not (tmp_path / "cut" / "metrics.json").exists()
    resumed = cifarlab.resume(tmp_path / "cut", dataset=dataset, quiet=True)

    assert resumed.history.history["loss"] == whole.history.history["loss"]
    assert resumed.history.history["lr"] == whole.history.history["lr"]
    assert resumed.test.accuracy == whole.test.accuracy
    a, b = load_file(str(whole.run_dir / "model.safetensors")), load_file(str(resumed.run_dir / "model.safetensors"))
    assert all(torch.equal(a[key], b[key]) for key in a)
    assert not (tmp_path / "cut" / "resume.pt").exists()  # a finished run keeps no training state


def test_a_transfer_run_resumes_on_its_cached_features(vgg16_file, tmp_path):  # noqa: F811
    dataset = make_dataset(train=48, test=16)
    settings = dict(dataset=dataset, weights=str(vgg16_file), epochs=3, val_size=16, batch_size=16, quiet=True,
                    precision="fp32")  # fmt: skip
    whole = cifarlab.train("proyecto10", out=str(tmp_path / "whole"), **settings)
    with pytest.raises(KeyboardInterrupt):
        cifarlab.train("proyecto10", out=str(tmp_path / "cut"), callbacks=[InterruptAt(2, 1)], **settings)
    resumed = cifarlab.resume(tmp_path / "cut", dataset=dataset)
    assert resumed.history.history["val_loss"] == whole.history.history["val_loss"]
    a, b = load_file(str(whole.run_dir / "model.safetensors")), load_file(str(resumed.run_dir / "model.safetensors"))
    assert all(torch.equal(a[key], b[key]) for key in a)


def test_resume_refuses_what_it_cannot_continue(tmp_path):
    dataset = make_dataset(train=64, test=32)
    with pytest.raises(FileNotFoundError, match="not a cifarlab run directory"):
        cifarlab.resume(tmp_path)
    finished = train("proyecto9", dataset, tmp_path / "done")
    with pytest.raises(ValueError, match="has finished; there is nothing to resume"):
        cifarlab.resume(finished.run_dir, dataset=dataset)

    with pytest.raises(KeyboardInterrupt):
        train("proyecto9", dataset, tmp_path / "cut", callbacks=[InterruptAt(epoch=2, step=1)])
    with pytest.raises(ValueError, match="the data differs from run"):
        cifarlab.resume(tmp_path / "cut", dataset=make_dataset(train=96, test=32))
    (tmp_path / "cut" / "resume.pt").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="resume.pt is not a readable resume file"):
        cifarlab.resume(tmp_path / "cut", dataset=dataset)


def test_a_run_still_training_cannot_be_resumed_beside_it(tmp_path):
    dataset = make_dataset(train=64, test=32)
    errors = []

    class TryResume(Callback):  # runs inside the first run, while it trains
        def on_epoch_end(self, epoch, logs):
            if epoch == 1:
                try:
                    cifarlab.resume(self.trainer.run_dir, dataset=dataset)
                except ValueError as error:
                    errors.append(str(error))

    result = train("proyecto9", dataset, tmp_path / "run", callbacks=[TryResume()])
    assert errors == [f"{result.run_dir} is in use by another cifarlab process (a run still training?)"]


def test_cli_resume_takes_no_other_settings(tmp_path, capsys):
    assert main(["train", "--resume", str(tmp_path), "--epochs", "3", "--no-early-stop"]) == 2
    assert "--resume continues a run as it was configured; drop --epochs, --no-early-stop" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path / "nothing")]) == 2
    assert "is not a cifarlab run directory" in capsys.readouterr().err


def test_finish_run_refuses_to_restart_a_run_still_in_its_first_epoch(tmp_path):
    # what a search's retry or an audit's fold meets when another process still trains that run's first epoch
    dataset = make_dataset(train=64, test=32)
    out = tmp_path / "run"
    config = cifarlab.api.resolve_config("proyecto9", out=str(out), quiet=True, precision="fp32", **RUNS["proyecto9"])
    errors, survived = [], []

    class TryFinish(Callback):  # runs inside the first run, before its first epoch ends (no resume state yet)
        def on_train_batch_end(self, step, logs):
            if self.trainer.epoch == 1 and step == 1:
                try:
                    cifarlab.api.finish_run(config, dataset=dataset)
                except ValueError as error:
                    errors.append(str(error))
                survived.append((out / "config.json").is_file())

    result = train("proyecto9", dataset, out, callbacks=[TryFinish()])
    assert errors == [f"{out} is in use by another cifarlab process (a run still training?)"] and survived == [True]
    assert len(result.history) == RUNS["proyecto9"]["epochs"]  # the first run went on to its end
    (out / "metrics.json").unlink()  # as a run that died in its first epoch leaves it: config.json, no resume state
    (out / "resume.pt").unlink(missing_ok=True)
    assert len(cifarlab.api.finish_run(config, dataset=dataset).history) == RUNS["proyecto9"]["epochs"]  # restarted
