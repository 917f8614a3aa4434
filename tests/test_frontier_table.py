"""scripts/frontier_table.py: a frontier study's front.json as BENCHMARKS.md shows it and as the package ships it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cifarlab.budget.frontier import load_frontier
from tests.factories import load_script

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def frontier_table():
    return load_script("frontier_table")


def point(name, tflops, accuracies, seconds, widths=(32, 128, 128), epochs=4):
    mean = sum(accuracies) / len(accuracies)
    std = (sum((a - mean) ** 2 for a in accuracies) / (len(accuracies) - 1)) ** 0.5
    timed = [s for s in seconds if s is not None]
    return {
        "name": name,
        "trial": None if name == "fast94" else int(name.split()[-1]),
        "overrides": {"arch.widths": list(widths), "train.epochs": epochs},
        "flops": {"train": tflops * 0.9e12, "evaluation": tflops * 0.1e12, "total": tflops * 1e12},
        "seconds": {"mean": sum(timed) / len(timed) if timed else None, "values": seconds},
        "test_accuracy": {"mean": mean, "std": std, "values": accuracies},
    }


def front(tmp_path):
    record = {
        "study": "fast94",
        "preset": "fast94",
        "data": {"source": "cifar10-jpeg", "train": 47500, "val": 2500, "test": 10000, "image_size": 32, "classes": 10},
        "measured": {"cpu": "Some CPU, 2 threads", "seeds": [1, 2, 3]},
        "points": [
            point("trial 4", 10.0, [80.0, 81.0, 82.0], [30, 31, 32]),
            point("trial 9", 20.0, [79.0, 80.0, 81.0], [55, None, 57]),  # beaten on re-run by the cheaper trial 4
            point("trial 2", 40.0, [85.0, 85.5, 86.0], [None, None, None], widths=(48, 192, 192), epochs=6),
        ],
        "reference": point("fast94", 300.0, [90.5, 90.7, 90.9], [300, 310, 320], widths=(64, 256, 256), epochs=10),
    }
    path = tmp_path / "front.json"
    path.write_text(json.dumps(record))
    return path, record


def test_the_table_names_each_point_and_the_points_beaten_after_reruns(frontier_table, tmp_path):
    _, record = front(tmp_path)
    lines = frontier_table.table(record).splitlines()
    assert len(lines) == 2 + 3 + 1
    rate = dict(frontier_table.ZEN4_COMMAND_TFLOPS)  # TFLOP/s of whole commands on Zen 4, by width
    # trial 4 on Zen 4: 10 TFLOP at AirNet 32's command rate there
    assert lines[2].startswith(
        f"| trial 4 | AirNet 32/128/128, 4 epochs | 10.0 | 31 | {10 / rate[32] / 60:.1f} min | 81.00 ± 1.00 | 3 |"
    )
    assert lines[3].startswith("| trial 9 (beaten after re-runs) |")
    # no re-run of trial 2 timed whole: no seconds; AirNet 48 on Zen 4 at its own rate
    assert f"| 40.0 | – | {40 / rate[48] / 60:.1f} min |" in lines[4]
    assert lines[5].startswith(
        f"| fast94 (preset) | AirNet 64/256/256, 10 epochs | 300.0 | 310 | {300 / rate[64] / 60:.1f} min | "
        "90.70 ± 0.20 |"
    )


def test_each_zen4_budget_takes_the_most_accurate_point_it_affords(frontier_table, tmp_path):
    _, record = front(tmp_path)
    rate = dict(frontier_table.ZEN4_COMMAND_TFLOPS)
    assert frontier_table.zen4_seconds(record["reference"]) == pytest.approx(300 / rate[64])
    halfway = {**record["points"][0], "overrides": {"arch.widths": [40, 160, 160]}}  # between the widths measured
    assert frontier_table.zen4_seconds(halfway) == pytest.approx(10 / ((rate[32] + rate[48]) / 2))
    minutes = 40 / rate[48] / 60
    assert minutes < 3
    assert frontier_table.zen4_choices(record) == [
        f"{budget} min on Zen 4: trial 2 (AirNet 48/192/192, 6 epochs), about {minutes:.1f} min, 85.50 %"
        for budget in (3, 7, 15)
    ]
    record["points"][2]["flops"]["total"] = 4 * 60 * rate[48] * 1e12  # now 4 minutes: 3 falls back to trial 4
    assert frontier_table.zen4_choices(record)[0].startswith("3 min on Zen 4: trial 4 (")
    assert frontier_table.zen4_choices(record)[1].startswith("7 min on Zen 4: trial 2 (")


def test_the_packaged_front_leaves_out_beaten_points_and_loads_as_the_budgets_front(tmp_path):
    path, _ = front(tmp_path)
    png, package = tmp_path / "front.png", tmp_path / "frontier.json"
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "frontier_table.py"), str(path), "--png", str(png),
                           "--package", str(package)], capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # drawn, the untimed point left off the seconds panel
    shipped = load_frontier(package)
    assert [p.name for p in shipped.points] == ["trial 4", "trial 2"]
    assert shipped.points[1].seconds is None and shipped.points[0].seconds == pytest.approx(31.0)
    assert shipped.machine() == "Some CPU, 2 threads"


def test_the_front_presets_are_the_shipped_points_zen4_affords_in_3_7_and_15_minutes(frontier_table):
    from cifarlab import resolve_config
    from cifarlab.presets import FRONT_PRESETS, ZEN4_BUDGETS

    record = json.loads((ROOT / "src" / "cifarlab" / "budget" / "frontier.json").read_text())
    chosen = [line.split(": ", 1)[1].split(" (")[0] for line in frontier_table.zen4_choices(record)]
    assert chosen == [FRONT_PRESETS[preset] for preset in ZEN4_BUDGETS.values()]  # 3, 7 and 15 minutes
    points = {p["name"]: p for p in record["points"]}
    for preset, name in FRONT_PRESETS.items():
        measured = resolve_config(record["preset"], **points[name]["overrides"]).to_dict()
        ours = resolve_config(preset).to_dict()
        assert ours.pop("preset") == preset and measured.pop("preset") == record["preset"]
        # the preset is the point's recipe, its rates and label smoothing to three significant digits
        assert _close(ours, measured), (preset, name)


def _close(ours, theirs) -> bool:
    """Two config trees equal, their floats to 0.2 %."""
    if isinstance(ours, dict) and isinstance(theirs, dict):
        return ours.keys() == theirs.keys() and all(_close(ours[k], theirs[k]) for k in ours)
    if isinstance(ours, (list, tuple)) and isinstance(theirs, (list, tuple)):
        return len(ours) == len(theirs) and all(_close(a, b) for a, b in zip(ours, theirs))
    if isinstance(ours, float) or isinstance(theirs, float):
        return ours == pytest.approx(theirs, rel=2e-3)
    return ours == theirs
