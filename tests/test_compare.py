import csv
import json
import re

import pytest

from cifarlab import api
from cifarlab.cli import main
from cifarlab.reports.compare import compare_runs, write_comparison
from cifarlab.training.history import History
from tests.factories import fake_run


@pytest.fixture
def runs(tmp_path):
    root = tmp_path / "runs"
    made = [fake_run(root, f"proyecto1-s{s}", "proyecto1", s, acc) for s, acc in zip((0, 1, 2), (0.60, 0.61, 0.62))]
    # as `cifarlab ladder --epochs-scale 0.1` runs them: epochs and patience scaled
    made += [fake_run(root / "ladder", f"proyecto4-s{s}", "proyecto4", s, acc, epochs=10, patience=1)
             for s, acc in zip((0, 1), (0.615, 0.625))]  # fmt: skip
    made.append(fake_run(root, "proyecto4-lr", "proyecto4", 0, 0.70, lr=2e-3, epochs=10))
    (root / "unfinished").mkdir()
    (root / "unfinished" / "config.json").write_text("{}")
    return made


def test_seeds_are_grouped_with_mean_and_std_and_close_groups_are_flagged(runs, tmp_path):
    text = write_comparison(runs, tmp_path / "out")
    lines = text.splitlines()
    assert lines[2].startswith("proyecto1 ") and re.search(r"61\.00 ± 1\.00\s+65\.74\s+-4\.74\s+3$", lines[2])
    assert lines[3].startswith("proyecto4 x0.1 ")  # a shortened run says its scale
    assert re.search(r"62\.00 ± 0\.71\s+83\.32\s+-21\.32\s+2$", lines[3])
    assert lines[4].startswith("proyecto4 (epochs=10, lr=0.002) ")  # not a ladder's scale: its changes
    assert re.search(r"\s70\.00\s+83\.32\s+-13\.32\s+1$", lines[4])  # another lr: its own group
    flags = [line for line in text.splitlines() if line.startswith("~ ")]
    assert len(flags) == 1 and "proyecto1 (n=3) vs proyecto4 x0.1 (n=2): 1.00 points apart" in flags[0]
    assert "within their seed spread (1.22)" in flags[0]  # hypot(1.00, 0.71)


def test_compare_csv_has_one_row_per_run_with_its_group(runs, tmp_path):
    write_comparison(runs, tmp_path / "out")
    with (tmp_path / "out" / "compare.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6
    groups = {row["run_dir"].rsplit("/", 1)[1]: row["group"] for row in rows}
    assert groups["proyecto1-s0"] == groups["proyecto1-s1"] == groups["proyecto1-s2"]
    assert groups["proyecto4-s0"] == groups["proyecto4-s1"] != groups["proyecto4-lr"] != groups["proyecto1-s0"]
    first = rows[0]
    assert first["group_n"] == "3" and first["group_mean"] == "61.000" and first["seed_accuracy"] == "65.74"
    assert rows[3]["epochs_scale"] == "0.1" and rows[3]["label"] == "proyecto4 x0.1"


def test_compare_html_is_self_contained_with_its_three_plots(runs, tmp_path):
    write_comparison(runs, tmp_path / "out")
    html = (tmp_path / "out" / "compare.html").read_text()
    assert html.count('src="data:image/png;base64,') == 3
    assert "6 runs of 3 configs" in html
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", html) and "<script" not in html
    assert "61.00 ± 1.00" in html and "Shortened runs" in html and "proyecto4 x0.1" in html
    assert "within their seed spread" in html


def test_cli_compare_finds_the_finished_runs_under_runs_dir(runs, tmp_path, capsys):
    root = tmp_path / "runs"
    assert main(["compare", "--runs-dir", str(root)]) == 0
    out = capsys.readouterr().out
    assert out.count(" 3\n") == 1 and out.count(" 2\n") == 1  # n of the two seed groups; 'unfinished' is skipped
    assert out.rstrip().endswith(f"wrote {root / 'compare.html'} and {root / 'compare.csv'}")
    assert main(["compare", str(runs[0]), str(runs[1]), "--out", str(tmp_path / "two")]) == 0
    assert re.search(r"60\.50 ± 0\.71\s+65\.74", capsys.readouterr().out)
    with (tmp_path / "two" / "compare.csv").open() as f:
        assert len(list(csv.DictReader(f))) == 2


def test_compare_names_what_is_wrong_in_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["compare", "--runs-dir", str(tmp_path / "empty")]) == 2
    assert "no finished runs" in capsys.readouterr().err
    assert main(["compare", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "lacks config.json, metrics.json, history.csv" in err


def test_compare_of_a_real_run(tmp_path, tiny_dataset):
    run = api.train("proyecto1", dataset=tiny_dataset, epochs=1, batch_size=32, val_size=40, out=str(tmp_path / "r"),
                    quiet=True, precision="fp32").run_dir  # fmt: skip
    text = compare_runs([run])
    metrics = json.loads((run / "metrics.json").read_text())
    assert f"{metrics['test_accuracy'] * 100:.2f}" in text.splitlines()[2]
    assert (run / "compare.html").is_file()


def test_a_run_that_only_changes_its_epochs_is_not_labelled_a_ladder_scale(tmp_path):
    user = fake_run(tmp_path, "mine", "fast88", 0, 0.80, epochs=1)
    ladder = fake_run(tmp_path, "ladder", "fast88", 0, 0.80, epochs=1, patience=2)
    text = write_comparison([user, ladder], tmp_path / "out")
    assert "fast88 (epochs=1) " in text and "fast88 x0.2 " in text
    html = (tmp_path / "out" / "compare.html").read_text()
    assert "scaled as by <code>cifarlab ladder --epochs-scale</code>): fast88 x0.2;" in html
    assert "2 runs of 2 configs" in html


def test_without_validation_the_curves_section_says_so_instead_of_an_empty_chart(tmp_path):
    run = fake_run(tmp_path, "all-train", "fast88", 0, 0.88)
    history = History.from_csv(run / "history.csv")
    history.history["val_accuracy"] = [float("nan")] * 3
    history.history["val_loss"] = [float("nan")] * 3
    history.to_csv(run / "history.csv")
    write_comparison([run], tmp_path / "out")
    html = (tmp_path / "out" / "compare.html").read_text()
    assert html.count('src="data:image/png;base64,') == 2 and "No run here held out a validation split" in html
