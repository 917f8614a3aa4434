"""cifarlab robustness: accuracy under the CIFAR-10-C corruptions, saved beside the run and shown in its report."""

from __future__ import annotations

import json

import pytest

from cifarlab import api
from cifarlab.cli import main
from tests.deploy_fixtures import train_tiny_run

pytest.importorskip("scipy")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return train_tiny_run(tmp_path_factory.mktemp("robust"))


def test_the_table_json_and_report_section(run, capsys):
    code = main(["robustness", str(run), "--corruptions", "gaussian_noise,contrast", "--severities", "1,5",
                 "--images", "24", "--quiet"])  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert "gaussian_noise" in out and "contrast" in out and "mean corruption accuracy" in out and "AugMix" in out
    result = json.loads((run / "robustness.json").read_text())
    assert result["images"] == 24 and set(result["accuracy"]) == {"gaussian_noise", "contrast"}
    assert set(result["accuracy"]["contrast"]) == {"1", "5"}
    cells = [v for row in result["accuracy"].values() for v in row.values()]
    assert result["mean_corruption_accuracy"] == pytest.approx(sum(cells) / 4)
    clean = api.evaluate(run, progress=False)  # the clean figure is the model's own test accuracy on those images
    assert 0 <= result["clean"] <= 1 and clean.accuracy >= 0
    html = (run / "report.html").read_text()
    assert 'id="robustness"' in html and "Robustness to corruptions" in html and "about 27-31" in html
    assert (run / "robustness_examples.png").stat().st_size > 0


def test_the_same_seed_gives_the_same_numbers(run):
    args = {"corruptions": "shot_noise", "severities": "3", "images": 16, "progress": False}
    first = api.robustness(run, seed=1, **args)["accuracy"]
    assert api.robustness(run, seed=1, **args)["accuracy"] == first


def test_a_subset_of_cells_matches_the_full_table(run):
    both = api.robustness(run, corruptions="impulse_noise,pixelate", severities="2", images=16, progress=False)
    one = api.robustness(run, corruptions="pixelate", severities="2", images=16, progress=False)
    assert one["accuracy"]["pixelate"] == both["accuracy"]["pixelate"]  # each cell has its own seed


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--corruptions", "gausian_noise"], "unknown corruption 'gausian_noise'; did you mean gaussian_noise?"),
        (["--severities", "0,6"], "severit"),
        (["--images", "0"], "--images must be at least 1"),
    ],
)
def test_bad_input_is_one_line(run, capsys, args, message):
    assert main(["robustness", str(run), *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


def test_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert main(["robustness", str(tmp_path)]) == 2
    assert "is not a finished run" in capsys.readouterr().err
