"""cifarlab robustness: accuracy under the CIFAR-10-C corruptions, saved beside the run and shown in its report."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from cifarlab import api
from cifarlab.cli import main
from cifarlab.data import Split, load_dataset
from cifarlab.data.dataset import balanced_first
from cifarlab.evaluation.robustness import corruption_accuracy
from cifarlab.inference.load import load
from tests.deploy_fixtures import train_tiny_run
from tests.factories import make_split

pytest.importorskip("scipy")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run stopped after one slow epoch: about a third right, so a figure taken on other images than it says shows."""
    return train_tiny_run(tmp_path_factory.mktemp("robust"), epochs=1, lr=3e-4, seed=3)


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
    # the clean figure is the model's own accuracy on the same 24 test images (each class's first in turn)
    test = load_dataset(str(run.parent / "images")).test
    shown = test.subset(balanced_first(test.labels, 24))
    assert result["clean"] == pytest.approx(load(run).evaluate(shown).accuracy)
    assert f"clean accuracy {result['clean'] * 100:.2f} %" in out
    html = (run / "report.html").read_text()
    assert 'id="robustness"' in html and "Robustness to corruptions" in html and "about 27-31" in html
    assert (run / "robustness_examples.png").stat().st_size > 0


class MeanBrightness:
    """A stand-in model whose 'accuracy' is the mean grey level of the images it is shown, so each figure says which."""

    def evaluate(self, split: Split, batch_size: int = 0) -> SimpleNamespace:
        return SimpleNamespace(accuracy=split.images.double().mean().item() / 255)


def test_each_figure_measures_its_own_images():
    from cifarlab.evaluation.corruptions import corrupt

    split = make_split(12)
    result = corruption_accuracy(MeanBrightness(), split, ["brightness", "contrast"], [1, 5])
    assert result["clean"] == pytest.approx(MeanBrightness().evaluate(split).accuracy)  # the clean images, as given
    for name in ("brightness", "contrast"):  # deterministic corruptions: the cells can be made again here
        for severity in (1, 5):
            shown = Split(corrupt(split.images, name, severity), split.labels)
            assert result["accuracy"][name][str(severity)] == pytest.approx(MeanBrightness().evaluate(shown).accuracy)
    assert result["accuracy"]["brightness"]["5"] > result["accuracy"]["brightness"]["1"] > result["clean"]
    cells = [value for row in result["accuracy"].values() for value in row.values()]
    assert result["mean_corruption_accuracy"] == pytest.approx(sum(cells) / 4) and result["images"] == 12


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
