"""cifarlab tune: a continued study, pruning, best.toml, the re-runs, dead and parallel workers, storages, errors."""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch

optuna = pytest.importorskip("optuna")

from cifarlab import api  # noqa: E402
from cifarlab._io.locks import locked_dir  # noqa: E402
from cifarlab.cli import main  # noqa: E402
from cifarlab.data.dataset import without_test  # noqa: E402
from cifarlab.tuning import search as search_module  # noqa: E402
from cifarlab.tuning import tune  # noqa: E402
from cifarlab.tuning import workers as workers_module  # noqa: E402
from cifarlab.tuning.space import FAST_SPACE, Param, cap_epochs, config_overrides  # noqa: E402
from cifarlab.tuning.storage import StorageSpec  # noqa: E402
from tests.factories import NARROW_SEED_SPACE, make_dataset, tune_setup  # noqa: E402


@pytest.fixture
def setup(image_folder, tmp_path):
    return tune_setup(image_folder, tmp_path, NARROW_SEED_SPACE)


def load(study_dir: Path):
    return optuna.load_study(study_name="proyecto1", storage=f"sqlite:///{study_dir / 'study.db'}")


def test_a_second_run_continues_the_study_and_no_trial_reads_the_test_split(setup):
    study_dir, options = setup
    first = tune("proyecto1", trials=2, epochs=2, top_k=0, study_dir=study_dir, **options)
    assert [t.number for t in first.trials] == [0, 1] and first.best_toml is None
    tune("proyecto1", trials=1, epochs=2, top_k=0, study_dir=study_dir, **options)
    trials = load(study_dir).trials
    assert len(trials) == 3 and all(t.state.name in ("COMPLETE", "PRUNED") for t in trials)
    for trial in trials:
        run = Path(trial.user_attrs["run_dir"])
        assert run == study_dir / "trials" / f"trial-{trial.number:04d}"
        record, metrics = (json.loads((run / name).read_text()) for name in ("config.json", "metrics.json"))
        assert record["dataset"]["test"] == 0 and record["dataset"]["val"] == 20  # given no test images at all
        assert metrics["test_accuracy"] is None and metrics["test"] is None
        if trial.state.name == "COMPLETE":
            assert trial.value == pytest.approx(metrics["final_val"]["accuracy"])
        with np.load(run / "predictions.npz") as saved:
            assert not [key for key in saved.files if key.startswith("test")]
        assert "did not read the test split" in (run / "report.html").read_text()


def test_the_same_folder_for_another_search_is_refused(setup):
    study_dir, options = setup
    tune("proyecto1", trials=1, epochs=1, top_k=0, study_dir=study_dir, **options)
    with pytest.raises(ValueError, match="holds a study that searched another epochs_cap"):
        tune("proyecto1", trials=1, epochs=2, top_k=0, study_dir=study_dir, **options)


def test_a_pruned_trial_stops_early_and_keeps_its_run(setup, monkeypatch):
    study_dir, options = setup
    always = optuna.pruners.ThresholdPruner(lower=1.01)  # no validation accuracy reaches it: prune at epoch 1
    monkeypatch.setattr(search_module, "_pruner", lambda name: always)
    result = tune("proyecto1", trials=1, epochs=3, top_k=0, study_dir=study_dir, **options)
    (trial,) = result.trials
    assert trial.state.name == "PRUNED" and trial.intermediate_values.keys() == {1}
    run = Path(trial.user_attrs["run_dir"])
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs_run"] == 1 and metrics["stopped"].startswith("pruned by the search at epoch 1")


def test_best_toml_reproduces_the_winner_and_the_reruns_stand_beside_the_preset(setup):
    study_dir, options = setup
    result = tune("proyecto1", trials=2, epochs=1, top_k=2, seeds=2, study_dir=study_dir, **options)
    names = [c.name for c in result.candidates]
    assert len(names) == 3 and names[-1] == "proyecto1"
    for candidate in result.candidates:
        assert len(candidate.test) == 2 and all(0 <= t <= 100 for t in candidate.test)
        assert [p.name for p in candidate.run_dirs][-1].endswith("-s2")  # seeds 1 and 2, after the search's 0
    assert result.best in result.candidates[:-1]
    assert result.best.val_mean == max(c.val_mean for c in result.candidates[:-1])
    rebuilt = api.resolve_config(config_file=result.best_toml, data=options["data"])
    winner = result.best.config
    machine = {"out": None, "quiet": False, "seed": 0, "precision": "auto"}  # not the recipe: left out of best.toml
    assert rebuilt.to_dict() | machine == winner.to_dict() | machine
    assert "proyecto1" in result.table and "vs preset" in result.table
    # a third call re-runs nothing that finished: the runs are reused
    before = {p: p.stat().st_mtime for c in result.candidates for p in c.run_dirs}
    again = tune("proyecto1", trials=0, epochs=1, top_k=2, seeds=2, study_dir=study_dir, **options)
    assert {p: p.stat().st_mtime for c in again.candidates for p in c.run_dirs} == before


def test_a_killed_workers_trial_is_retried_and_resumes_its_run(setup):
    study_dir, options = setup
    args = ["--preset", "proyecto1", "--trials", "1", "--epochs", "30", "--top-k", "0", "--heartbeat", "1",
            "--study-dir", str(study_dir), "--space", str(options["space"]), "--data", options["data"],
            "--val-size", "20", "--precision", "fp32", "--quiet", "--pruner", "none"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    worker = subprocess.Popen([sys.executable, "-m", "cifarlab", "tune", *args], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    resume = study_dir / "trials" / "trial-0000" / "resume.pt"
    deadline = time.monotonic() + 300
    while not resume.is_file() and worker.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    assert resume.is_file(), "the worker never saved an epoch"
    time.sleep(4)  # past the grace period (2 s), at the database clock's one-second resolution: stale
    assert main(["tune", *args]) == 0
    trials = load(study_dir).trials
    assert [t.state.name for t in trials] == ["FAIL", "COMPLETE"] and trials[1].user_attrs["retry_of"] == 0
    run = study_dir / "trials" / "trial-0000"
    epochs = [int(line.split(",")[0]) for line in (run / "history.csv").read_text().splitlines()[1:]]
    assert epochs == list(range(1, 31)) and not resume.exists()  # resumed, not restarted: one unbroken history


def test_two_workers_share_a_study_on_a_journal_file(setup):
    study_dir, options = setup
    journal = study_dir / "study.journal"
    result = tune("proyecto1", trials=4, epochs=1, top_k=0, workers=2, storage=f"journal:{journal}",
                  study_dir=study_dir, **options)  # fmt: skip
    assert [t.number for t in result.trials] == [0, 1, 2, 3]  # the budget holds across the workers
    assert all(t.state.name in ("COMPLETE", "PRUNED") for t in result.trials)
    assert len({t.user_attrs["run_dir"] for t in result.trials}) == 4  # none run twice
    assert len({t.user_attrs["worker"] for t in result.trials}) == 2  # both workers took trials


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--workers", "2"], "--workers 2 on SQLite"),
        (["--storage", "postgresql://me:secret@127.0.0.1:9/db"], "postgresql://me:***@127.0.0.1:9/db: cannot open"),
        (["--storage", "redis://x"], "--storage redis://x: not a study storage"),
        (["--timeout", "soon"], "--timeout 'soon': give a duration"),
    ],
)
def test_bad_options_are_one_line_errors_before_anything_trains(setup, capsys, extra, message):
    study_dir, options = setup
    assert (
        main(["tune", "--preset", "proyecto1", "--study-dir", str(study_dir), "--data", options["data"], *extra]) == 2
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "secret" not in err
    assert not (study_dir / "trials").exists()


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ("lrr = 0.1", "unknown parameter 'lrr'; did you mean lr?"),
        ("lr = {low = 0.1, high = 0.01}", "lr: an empty range"),
        ("batch_size = []", "batch_size: an empty list of choices"),
    ],
)
def test_bad_spaces_name_the_parameter(setup, tmp_path, capsys, space, message):
    study_dir, options = setup
    bad = tmp_path / "bad.toml"
    bad.write_text(space)
    assert main(["tune", "--preset", "proyecto1", "--space", str(bad), "--study-dir", str(study_dir)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--space {bad}: " in err and message in err


def _postgres_bin() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    if found:
        return found[-1].parent
    pg_ctl = shutil.which("pg_ctl")
    return Path(pg_ctl).parent if pg_ctl else None


@pytest.fixture
def postgres():
    """A real PostgreSQL server on 127.0.0.1 for this test (Debian's postgresql package), its URL."""
    binaries = _postgres_bin()
    if binaries is None:
        pytest.skip("PostgreSQL is not installed (Debian: apt-get install postgresql)")
    folder = Path(tempfile.mkdtemp(prefix="cifarlab-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root: run the server as the package's postgres user
        as_user = ["runuser", "-u", "postgres", "--"]
        shutil.chown(folder, "postgres")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    data = folder / "data"
    run = functools.partial(subprocess.run, capture_output=True, text=True, timeout=120)
    made = run([*as_user, str(binaries / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"])
    if made.returncode:
        shutil.rmtree(folder, ignore_errors=True)
        pytest.skip(f"initdb failed: {made.stderr.strip()[:200]}")
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1"
    started = run([*as_user, str(binaries / "pg_ctl"), "-D", str(data), "-o", options, "-w", "-l",
                   str(folder / "log"), "start"])  # fmt: skip
    if started.returncode:
        shutil.rmtree(folder, ignore_errors=True)
        pytest.skip(f"the PostgreSQL server did not start: {started.stderr.strip()[:200]}")
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        run([*as_user, str(binaries / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"])
        shutil.rmtree(folder, ignore_errors=True)


def test_two_workers_share_a_study_on_a_postgresql_server(setup, postgres):
    study_dir, options = setup
    result = tune("proyecto1", trials=4, epochs=1, top_k=0, workers=2, storage=postgres, study_dir=study_dir,
                  **options)  # fmt: skip
    assert [t.number for t in result.trials] == [0, 1, 2, 3]  # none lost, none run twice
    assert all(t.state.name in ("COMPLETE", "PRUNED") for t in result.trials)
    assert len({t.user_attrs["run_dir"] for t in result.trials}) == 4
    assert len({t.user_attrs["worker"] for t in result.trials}) == 2


def test_a_sampled_batch_size_keeps_a_fixed_step_presets_images_per_epoch():
    proyecto9 = api.resolve_config("proyecto9")  # the seed's 156 steps of 256 images: 39,936 per epoch
    assert config_overrides({"batch_size": 64}, proyecto9)["train.steps_per_epoch"] == 624
    assert "train.steps_per_epoch" not in config_overrides({"batch_size": 256}, proyecto9)
    assert "train.steps_per_epoch" not in config_overrides({"batch_size": 64}, api.resolve_config("proyecto4"))


def test_epochs_cap_narrows_what_is_sampled_but_not_the_study_record(tmp_path):
    capped = cap_epochs(FAST_SPACE, 5)  # the fast space samples 4..16 epochs and 0..6 low-resolution ones
    assert capped["epochs"].describe() == "integers in [4, 5]"
    assert capped["low_res_epochs"].describe() == "integers in [0, 4]"
    assert cap_epochs(FAST_SPACE, 3)["epochs"].describe() == "= 3"  # the cap below the range: fixed at the cap
    assert cap_epochs(FAST_SPACE, 1)["low_res_epochs"].describe() == "= 0"
    assert cap_epochs({"epochs": Param("epochs", choices=(4, 8, 12))}, 6)["epochs"].choices == (4, 6)
    assert cap_epochs(FAST_SPACE, None) == FAST_SPACE and cap_epochs(FAST_SPACE, 20) == FAST_SPACE
    search, _ = search_module.prepare_search(
        "fast88", space=None, workers=1, storage=None, study=None, study_dir=tmp_path, epochs=5, seed=0,
        pruner="median", heartbeat_seconds=None, quiet=True, overrides={},
    )  # fmt: skip
    assert search.space["epochs"].describe() == "integers in [4, 5]"
    assert json.loads((tmp_path / "study.json").read_text())["space"]["epochs"] == "integers in [4, 16]"


def test_trials_that_all_fail_stop_the_search_with_their_error(setup, capsys):
    study_dir, options = setup
    code = main(["tune", "--preset", "proyecto1", "--space", str(options["space"]), "--data", options["data"],
                 "--val-size", "20", "--per-class-limit", "1", "--epochs", "1", "--top-k", "0", "--precision", "fp32",
                 "--study-dir", str(study_dir), "--quiet"])  # fmt: skip
    assert code == 2  # every trial meets the same error: 20 validation images leave none of the few to train on
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "5 trials in a row failed, the last with: --val-size 20 leaves no training images" in last
    trials = load(study_dir).trials
    assert len(trials) == 5 and all(t.state.name == "FAIL" for t in trials)


def test_a_proxy_too_short_for_keras_batchnorm_is_named_up_front(setup, tmp_path):
    study_dir, options = setup  # 60 training images at batch 16: 4 steps an epoch
    with pytest.warns(UserWarning, match=r"may train only 8 steps \(2 epochs of 4 at batch 16\)"):
        result = tune("proyecto1", trials=1, epochs=2, top_k=0, study_dir=study_dir, **options)
    assert any("Keras BatchNorm's moving variance" in note for note in result.notes)
    assert "Keras BatchNorm&#x27;s moving variance" in (study_dir / "report.html").read_text()
    no_bn = tmp_path / "no-bn.toml"
    no_bn.write_text(NARROW_SEED_SPACE.replace("bn = true", "bn = false"))
    search, _ = search_module.prepare_search(
        "proyecto1", space=no_bn, workers=1, storage=None, study=None, study_dir=tmp_path / "other", epochs=2, seed=0,
        pruner="median", heartbeat_seconds=None, quiet=True, overrides={"data": options["data"], "val_size": 20},
    )  # fmt: skip
    assert search_module.short_proxy_note(search, api.load_training_data(search.base_config)) is None
    search, _ = search_module.prepare_search(
        "proyecto1", space=options["space"], workers=1, storage=None, study=None, study_dir=tmp_path / "long",
        epochs=None, seed=0, pruner="median", heartbeat_seconds=None, quiet=True,
        overrides={"data": options["data"], "val_size": 20},
    )  # fmt: skip
    assert search_module.short_proxy_note(search, api.load_training_data(search.base_config)) is not None  # 200 x 4


def fake_trial(search, trial, dataset, sizes=None):
    """A trial that samples its point and trains nothing: what is tested is the search's bookkeeping."""
    values = {name: param.suggest(trial) for name, param in search.space.items()}
    return float(values["lr"])


def prepare(options, study_dir, **changes):
    arguments = {"space": options["space"], "workers": 1, "storage": None, "study": None, "study_dir": study_dir,
                 "epochs": 1, "seed": 0, "pruner": "median", "heartbeat_seconds": None, "quiet": True,
                 "overrides": {"data": options["data"], "val_size": 20, "precision": "fp32"}} | changes  # fmt: skip
    return search_module.prepare_search("proyecto1", **arguments)[0]


def test_data_in_memory_with_several_workers_is_refused_in_one_line(setup):
    study_dir, options = setup
    with pytest.raises(ValueError, match=r"--workers 2 with data given in memory \(dataset=\)") as refused:
        tune("proyecto1", trials=2, epochs=1, top_k=0, workers=2, storage=f"journal:{study_dir / 'study.journal'}",
             study_dir=study_dir, dataset=make_dataset(train=80, test=40), **options)  # fmt: skip
    assert "\n" not in str(refused.value) and "data=PATH, or use workers=1" in str(refused.value)
    assert not study_dir.exists()  # refused before anything was written


def test_pruning_is_off_when_the_schedule_length_is_searched_and_the_report_says_so(setup, tmp_path, monkeypatch):
    _, options = setup
    monkeypatch.setattr(workers_module, "run_trial", fake_trial)
    result = tune("fast88", trials=1, epochs=6, top_k=0, study_dir=tmp_path / "fast", data=options["data"],
                  precision="fp32", quiet=True)  # fmt: skip
    note = ("pruning is off (--pruner median not applied): the space searches epochs and low_res_epochs, so trials "
            "run schedules of different lengths")  # fmt: skip
    assert any(n.startswith(note) for n in result.notes)
    assert note in result.report.read_text()
    search = search_module.prepare_search("fast88", space=None, workers=1, storage=None, study=None,
                                          study_dir=tmp_path / "unfixed", epochs=6, seed=0, pruner="median",
                                          heartbeat_seconds=None, quiet=True, overrides={})[0]  # fmt: skip
    with search_module.opened_study(search) as study:
        assert isinstance(study.pruner, optuna.pruners.NopPruner)
    fixed = tmp_path / "fixed.toml"  # the schedule fixed: trials are comparable epoch by epoch, and pruned
    fixed.write_text("epochs = 6\nlow_res_epochs = 2\n")
    search, notes = search_module.prepare_search("fast88", space=fixed, workers=1, storage=None, study=None,
                                                 study_dir=tmp_path / "fixed", epochs=None, seed=0, pruner="median",
                                                 heartbeat_seconds=None, quiet=True, overrides={})  # fmt: skip
    assert search.pruner == "median" and not any("pruning is off" in n for n in notes)


def test_cuda_out_of_memory_fails_that_trial_only(setup, monkeypatch):
    study_dir, options = setup
    finish_run, calls = api.finish_run, []

    def out_of_memory_first(config, **kwargs):
        calls.append(config.out)
        if len(calls) == 1:  # as a sampled width or batch size too large for the device would
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return finish_run(config, **kwargs)

    monkeypatch.setattr(api, "finish_run", out_of_memory_first)
    result = tune("proyecto1", trials=1, epochs=1, top_k=0, study_dir=study_dir, **options)
    failed, finished = result.trials  # a failed trial does not count towards the budget: one more ran
    assert failed.state.name == "FAIL" and finished.state.name in ("COMPLETE", "PRUNED")
    error = failed.user_attrs["error"]
    assert error.startswith("CUDA ran out of memory at ") and f"lr={failed.params['lr']:.3g}" in error


# one of two workers starting together: load the journal study, then (at the parent's signal) fail its orphans
ORPHAN_FAILER = """
import sys, time
from pathlib import Path
import optuna
from optuna.storages.journal import JournalFileBackend
from cifarlab.tuning import workers
journal, ready, go = sys.argv[1:]
study = optuna.load_study(study_name="orphans", storage=optuna.storages.JournalStorage(JournalFileBackend(journal)))
def gone_slowly(pid):  # widens the window between reading a trial's state and failing it
    time.sleep(1.0)
    return False
workers._alive = gone_slowly
Path(ready).touch()
while not Path(go).exists():
    time.sleep(0.005)
print(workers.fail_orphaned_trials(study, journal))
"""


def test_two_workers_starting_together_fail_an_orphaned_trial_once(tmp_path):
    from optuna.storages.journal import JournalFileBackend

    journal = tmp_path / "study.journal"
    study = optuna.create_study(study_name="orphans", storage=optuna.storages.JournalStorage(
        JournalFileBackend(str(journal))))  # fmt: skip
    orphan = study.ask()
    orphan.suggest_float("lr", 1e-3, 1e-2)
    orphan.set_user_attr("worker", f"{socket.gethostname()}:999999")  # its worker is gone
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    failers = [subprocess.Popen([sys.executable, "-c", ORPHAN_FAILER, str(journal), str(tmp_path / f"ready-{i}"),
                                 str(tmp_path / "go")], env=env, stdout=subprocess.PIPE, text=True)
               for i in range(2)]  # fmt: skip
    deadline = time.monotonic() + 300
    while not all((tmp_path / f"ready-{i}").exists() for i in range(2)) and time.monotonic() < deadline:
        time.sleep(0.05)
    (tmp_path / "go").touch()
    outputs = sorted(failer.communicate(timeout=300)[0].strip() for failer in failers)
    assert [failer.returncode for failer in failers] == [0, 0]
    assert outputs == ["[0]", "[]"]  # one of them failed it; the other, waiting its turn, found it failed
    trials = study.get_trials(deepcopy=False)
    assert [t.state.name for t in trials] == ["FAIL", "WAITING"] and trials[1].user_attrs["retry_of"] == 0


def test_two_commands_starting_together_draw_different_points(setup, tmp_path, monkeypatch):
    _, options = setup
    monkeypatch.setattr(workers_module, "run_trial", fake_trial)
    first_points = []
    for machine in ("a", "b"):  # each the first worker of its command, on an empty study, as two machines at once
        search = prepare(options, tmp_path / machine, storage=f"journal:{tmp_path / machine / 'study.journal'}")
        workers_module._work(search, 0, 1, 2, None, make_dataset(train=80, test=40))
        with search_module.opened_study(search) as study:
            first_points.append(study.trials[0].params)
            assert study.sampler._constant_liar  # a storage others may join: running trials count as poor ones
    assert first_points[0] != first_points[1]


def test_every_storage_a_search_opens_is_closed(setup, monkeypatch):
    study_dir, options = setup
    opened, open_storage = [], StorageSpec.open

    def recording(self, *args, **kwargs):
        storage = open_storage(self, *args, **kwargs)
        opened.append(storage)
        return storage

    monkeypatch.setattr(StorageSpec, "open", recording)
    monkeypatch.setattr(workers_module, "run_trial", fake_trial)
    tune("proyecto1", trials=2, epochs=1, top_k=0, study_dir=study_dir, **options)
    assert len(opened) >= 3  # counting the study, the worker, the report
    assert [storage.engine.pool.checkedin() for storage in opened] == [0] * len(opened)  # no pooled connection


def test_a_retry_leaves_the_run_of_a_trial_still_training_alone(setup):
    study_dir, options = setup
    search = prepare(options, study_dir)
    run = search_module.trial_dir(search, 0)
    run.mkdir(parents=True)
    (run / "config.json").write_text("{}")  # a trial in its first epoch, whose heartbeat stalled
    trial = optuna.create_study().ask()  # its retry, as another worker starts it
    data = without_test(api.load_training_data(search.base_config))
    with locked_dir(run):  # its own worker still trains it
        with pytest.raises(ValueError, match="is in use by another cifarlab process"):
            search_module.run_trial(search, trial, data)
    assert (run / "config.json").read_text() == "{}" and trial.user_attrs["error"].endswith("(a run still training?)")
