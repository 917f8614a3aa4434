"""A search's report.html: what was searched, how the trials went, what mattered, and whether the winner held up.

A `--frontier` study's report leads with its front (accuracy against cost: `study_front`) instead of a winner.

Drawn from plain values (`StudyFacts`) that `cifarlab.tuning` gathers from the Optuna study and the re-runs, so
this module needs neither Optuna nor the tuner; like a run's report.html it is one self-contained page.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.ticker import FuncFormatter, MaxNLocator

from cifarlab._io.atomic import write_text
from cifarlab.reports.html import esc, figure_png, img, key_values, page, plt, section, table
from cifarlab.reports.study_front import front_section

STUDY_REPORT = "report.html"
STATES = ("COMPLETE", "PRUNED", "FAIL", "RUNNING")
_COMPLETE, _PRUNED, _BEST, _FAIL = "#4c72b0", "#dd8452", "#2a9d3a", "#999999"


@dataclass
class TrialFacts:
    """One trial of the study, as plain values."""

    number: int
    state: str  # 'COMPLETE', 'PRUNED', 'FAIL' or 'RUNNING'
    value: float | None  # final validation accuracy in % (COMPLETE trials only)
    params: dict[str, Any]
    intermediate: dict[int, float] = field(default_factory=dict)  # epoch -> validation accuracy in %
    run_dir: str | None = None
    duration_seconds: float | None = None  # the trial's wall seconds, on the machine its worker ran on
    tflops: float | None = None  # --frontier: the recipe's cost in TFLOPs (COMPLETE trials only)


@dataclass
class RerunRow:
    """One configuration trained again over the re-run seeds: a top trial, or the preset."""

    name: str  # 'trial 7' or the preset's name
    search_value: float | None  # the trial's validation accuracy in the search, in % (None for the preset)
    val_mean: float  # mean final validation accuracy over the seeds, in %
    test_mean: float  # mean test accuracy over the seeds, in %
    test_std: float  # its sample std, in %
    n: int  # seeds
    is_winner: bool = False
    is_preset: bool = False
    trial: int | None = None  # the trial's number (None for the preset)
    tflops: float | None = None  # --frontier: the configuration's cost in TFLOPs, on the re-runs' splits
    seconds: float | None = None  # --frontier: mean wall seconds of its re-runs (None where none was measured)


@dataclass
class StudyFacts:
    """Everything the study report shows, as plain values."""

    name: str
    preset: str
    study_dir: Path
    space: dict[str, str]  # parameter -> its distribution in words ('log-uniform in [0.001, 0.01]')
    storage: str  # as shown to the user (no password)
    epochs_cap: int | None
    trials: list[TrialFacts]
    importances: dict[str, float] = field(default_factory=dict)  # parameter -> importance (summing to 1)
    importance_method: str = "Optuna's parameter importances"
    importance_note: str = ""  # why there are no importances when there are none, else a caveat (Optuna's warning)
    reruns: list[RerunRow] = field(default_factory=list)  # the top trials, then the preset
    verdict: str = ""  # the last line of the terminal re-run table
    best_toml: Path | None = None
    notes: list[str] = field(default_factory=list)
    frontier: bool = False  # two objectives: validation accuracy against the recipe's TFLOPs
    front: list[int] = field(default_factory=list)  # --frontier: the Pareto front's trial numbers, cheapest first
    front_json: Path | None = None  # --frontier: where the re-run front was written
    machine: str = ""  # --frontier: the hardware the re-runs ran on (their seconds are this machine's)


def write_study_report(out: Path, study: StudyFacts) -> Path:
    """Write the study's report.html to `out` (atomically); returns `out`.

    Args:
        out: the HTML file to write (`STUDY_DIR/report.html` for `cifarlab tune`).
        study: the study's facts.
    """
    write_text(out, render_study_report(study))
    return Path(out)


def render_study_report(study: StudyFacts) -> str:
    """The study report as an HTML string (see `write_study_report`)."""
    sections = [
        section("searched", "What was searched", _searched(study)),
        section("front", "Front: accuracy against cost", front_section(study)) if study.frontier else "",
        section("history", "Optimisation history", _history(study)),
        section("importances", "Parameter importances", _importances(study)),
        section("parallel", "Parallel coordinates", _parallel(study)),
        section("pruning", "Validation accuracy per epoch" + ("" if study.frontier else " (pruning)"), _pruning(study)),
        "" if study.frontier else section("reruns", "Re-runs: the best trials against the preset", _reruns(study)),
        section("trials", "Every trial", _trials_table(study)),
    ]
    return page(f"cifarlab tune: {study.name}", f"{study.study_dir} - {_state_counts(study.trials)}", sections)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _state_counts(trials: list[TrialFacts]) -> str:
    words = {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed", "RUNNING": "running"}
    parts = [f"{sum(t.state == s for t in trials)} {words[s]}" for s in STATES if any(t.state == s for t in trials)]
    return _count(len(trials), "trial") + (f" ({', '.join(parts)})" if parts else "")


def _searched(study: StudyFacts) -> str:
    rows = [
        ("preset", study.preset),
        ("study", study.name),
        ("storage", study.storage),
        ("trials", _state_counts(study.trials)),
        ("epochs per trial", f"at most {study.epochs_cap} (--epochs)" if study.epochs_cap else "as the space samples"),
        ("objectives", _objectives(study)),
        ("study folder", study.study_dir),
    ]
    notes = "".join(f'<p class="note">{esc(note)}</p>' for note in study.notes)
    space = table(("parameter", "searched over"), list(study.space.items()))
    return (
        key_values(rows)
        + space
        + "<p>Trials never read the test split: each trains with an empty one and is scored by its final model's "
        "validation accuracy. Only the re-runs below see the test images.</p>" + notes
    )


def _objectives(study: StudyFacts) -> str:
    if study.frontier:
        return "validation accuracy (up) against cost in TFLOPs (down): --frontier, the Pareto front"
    return "validation accuracy (up)"


def _shown_value(trial: TrialFacts) -> float | None:
    """A trial's point in the history: its value, or a pruned trial's last reported accuracy."""
    if trial.value is not None:
        return trial.value
    if trial.state == "PRUNED" and trial.intermediate:
        return trial.intermediate[max(trial.intermediate)]
    return None


def _history(study: StudyFacts) -> str:
    drawn = [t for t in study.trials if _shown_value(t) is not None]
    if not drawn:
        return "<p>No trial has reported a validation accuracy yet, so there is no history to draw.</p>"
    fig, ax = plt.subplots(figsize=(10, 4.8))
    complete = [t for t in drawn if t.state == "COMPLETE"]
    pruned = [t for t in drawn if t.state == "PRUNED"]
    if complete:
        ax.scatter([t.number for t in complete], [t.value for t in complete], color=_COMPLETE, s=36, zorder=3,
                   label="complete (final validation accuracy)")  # fmt: skip
    if pruned:
        ax.scatter([t.number for t in pruned], [_shown_value(t) for t in pruned], color=_PRUNED, marker="x", s=44,
                   zorder=3, label="pruned (at its last reported epoch)")  # fmt: skip
    if complete:
        xs, ys, best = [], [], -math.inf
        for trial in sorted(study.trials, key=lambda t: t.number):
            if trial.state == "COMPLETE" and trial.value is not None:
                best = max(best, trial.value)
            if best > -math.inf:
                xs.append(trial.number)
                ys.append(best)
        ax.step(xs, ys, where="post", color=_BEST, linewidth=1.8, label="best so far", zorder=2)
    winner = next((r.trial for r in study.reruns if r.is_winner and r.trial is not None), None)
    won = next((t for t in complete if t.number == winner), None)
    if won is not None:
        ax.scatter([won.number], [won.value], s=260, marker="*", facecolors="none", edgecolors="black", zorder=4,
                   label="the re-runs' winner")  # fmt: skip
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("trial number")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title("Optimisation history")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=4, frameon=False)  # off the points
    fig.tight_layout()
    left_out = [f"{t.number} ({t.state.lower()})" for t in study.trials if _shown_value(t) is None]
    why = (f"<p>Not drawn (neither a final value nor a pruned one's last): trials {', '.join(left_out)}.</p>"
           if left_out else "")  # fmt: skip
    return img(figure_png(fig), "validation accuracy of each trial and the best so far") + why


def _is_fixed(description: str) -> bool:
    return description.startswith("= ")


def _importances(study: StudyFacts) -> str:
    values = {k: v for k, v in study.importances.items() if not _is_fixed(study.space.get(k, ""))}
    if not values:
        n = sum(t.state == "COMPLETE" for t in study.trials)
        why = study.importance_note or (f"they need at least 2 complete trials and the study has {n}" if n < 2 else
                                        "Optuna computed none for this study")  # fmt: skip
        return f"<p>No parameter importances: {esc(why.rstrip('.'))}.</p>"
    order = sorted(values, key=values.get)  # the largest drawn at the top
    fig, ax = plt.subplots(figsize=(8, 0.42 * len(order) + 1.3))
    bars = ax.barh(range(len(order)), [values[k] for k in order], color=_COMPLETE)
    ax.set_yticks(range(len(order)), order)
    for bar, name in zip(bars, order):
        ax.text(bar.get_width() + 0.01, bar.get_y() + bar.get_height() / 2, f"{values[name]:.2f}", va="center",
                fontsize=8)  # fmt: skip
    ax.set_xlim(0, max(max(values.values()) * 1.18, 0.05))
    ax.set_xlabel("importance (share in reaching the Pareto front)" if study.frontier else
                  "importance (share of the validation accuracy's variation)")  # fmt: skip
    ax.set_title("Parameter importances")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    n = sum(t.state == "COMPLETE" for t in study.trials)
    return img(figure_png(fig), "parameter importances") + (
        f"<p>{esc(study.importance_method)}, from {_count(n, 'complete trial')}; fixed parameters are left out. "
        "With few trials they are rough: read them as hints of where to search next.</p>"
        + (f'<p class="note">{esc(study.importance_note)}</p>' if study.importance_note else "")
    )


_RANGE = re.compile(r"^(uniform|log-uniform|integers) in \[(.+), (.+)\]$")


def _axis(name: str, description: str, values: list[Any]) -> dict[str, Any]:
    """How a parallel-coordinates axis places a value: a numeric range (maybe log) or labelled levels."""
    match = _RANGE.match(description)
    numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
    if match:
        low, high = float(match.group(2)), float(match.group(3))
        kind = "log" if match.group(1) == "log-uniform" else "linear"
        return {"kind": kind, "low": low, "high": high, "integer": match.group(1) == "integers"}
    if description.startswith("one of "):
        levels = description.removeprefix("one of ").split(", ")
        levels += sorted({str(v) for v in values} - set(levels))
        return {"kind": "levels", "levels": levels}
    if numeric and values:
        return {"kind": "linear", "low": float(min(values)), "high": float(max(values)),
                "integer": all(isinstance(v, int) for v in values)}  # fmt: skip
    return {"kind": "levels", "levels": sorted({str(v) for v in values})}


def _place(axis: dict[str, Any], value: Any) -> float:
    """A value's height on its axis, 0 (bottom) to 1 (top)."""
    if axis["kind"] == "levels":
        levels = axis["levels"]
        return 0.5 if len(levels) == 1 else levels.index(str(value)) / (len(levels) - 1)
    low, high, value = axis["low"], axis["high"], float(value)
    if axis["kind"] == "log":
        low, high, value = math.log(low), math.log(high), math.log(max(value, axis["low"]))
    return 0.5 if high == low else min(1.0, max(0.0, (value - low) / (high - low)))


def _ticks(axis: dict[str, Any]) -> list[tuple[float, str]]:
    if axis["kind"] == "levels":
        return [(_place(axis, level), level) for level in axis["levels"]]
    low, high = axis["low"], axis["high"]
    if axis.get("integer") and high - low <= 6:  # every integer of a short range, nothing between
        return [(_place(axis, v), str(v)) for v in range(round(low), round(high) + 1)]
    if high == low:
        return [(0.5, f"{low:.3g}")]
    if axis["kind"] == "log":
        values = [low * (high / low) ** (i / 4) for i in range(5)]
        return [(i / 4, f"{v:.2g}") for i, v in enumerate(values)]
    return [(i / 4, f"{low + (high - low) * i / 4:.3g}") for i in range(5)]


def _parallel(study: StudyFacts) -> str:
    complete = [t for t in study.trials if t.state == "COMPLETE" and t.value is not None]
    seen = {k for t in complete for k in t.params if not _is_fixed(study.space.get(k, ""))}
    names = [k for k in study.space if k in seen] + sorted(seen - set(study.space))  # the space's order
    if not complete or not names:
        return ("<p>No complete trial with a searched parameter yet, so there are no parallel coordinates to "
                "draw.</p>")  # fmt: skip
    axes = {k: _axis(k, study.space.get(k, ""), [t.params[k] for t in complete if k in t.params]) for k in names}
    fig, ax = plt.subplots(figsize=(max(7.0, 1.25 * len(names) + 2.5), 5.2))
    values = [t.value for t in complete]
    low, high = min(values), max(values)
    norm = Normalize(low, high) if high > low else Normalize(low - 0.5, high + 0.5)  # all equal: one colour
    cmap = plt.get_cmap("viridis")
    for trial in sorted(complete, key=lambda t: t.value):  # the best drawn last, on top
        xs = [i for i, k in enumerate(names) if k in trial.params]
        ys = [_place(axes[k], trial.params[k]) for k in names if k in trial.params]
        best = trial.value == max(values)
        ax.plot(xs, ys, color=cmap(norm(trial.value)), linewidth=2.6 if best else 1.3, alpha=0.9, marker="o",
                markersize=3)  # fmt: skip
    for i, name in enumerate(names):
        ax.axvline(i, color="#444", linewidth=0.9, zorder=1)
        for y, label in _ticks(axes[name]):
            ax.text(
                i - 0.05,
                y,
                label,
                ha="right",
                va="center",
                fontsize=8,
                color="#222",
                zorder=5,
                bbox={"boxstyle": "round,pad=0.15", "facecolor": "white", "edgecolor": "none", "alpha": 0.85},
            )
        scale = " (log)" if axes[name]["kind"] == "log" else ""
        ax.text(i, 1.06, name + scale, ha="center", va="bottom", fontsize=9, fontweight="bold")
    ax.set_xlim(-0.6, len(names) - 0.7)
    ax.set_ylim(-0.05, 1.05)
    ax.axis("off")
    bar = fig.colorbar(ScalarMappable(norm, cmap), ax=ax, label="validation accuracy (%)", fraction=0.04, pad=0.03)
    bar.ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.4g}"))  # no offset text over the axes' names
    fig.tight_layout()
    return img(figure_png(fig), "parallel coordinates of the complete trials") + (
        f"<p>One line per complete trial ({len(complete)}), coloured by its validation accuracy; the best is "
        "thickest. Numeric axes span the searched range (log-uniform ones on a log scale); choices are evenly "
        "spaced levels.</p>"
    )


def _pruning(study: StudyFacts) -> str:
    curves = [t for t in study.trials if t.intermediate]
    if not curves:
        return "<p>No trial has reported a validation accuracy yet.</p>"
    fig, ax = plt.subplots(figsize=(10, 4.8))
    labelled: set[str] = set()
    for trial in sorted(curves, key=lambda t: t.number):
        epochs = sorted(trial.intermediate)
        accuracy = [trial.intermediate[e] for e in epochs]
        pruned = trial.state == "PRUNED"
        color = {"PRUNED": _PRUNED, "COMPLETE": _COMPLETE}.get(trial.state, _FAIL)
        label = {"PRUNED": "pruned", "COMPLETE": "complete"}.get(trial.state, "failed or running")
        ax.plot(epochs, accuracy, color=color, linestyle="--" if pruned else "-", marker="o", markersize=3,
                alpha=0.8, label=None if label in labelled else label)  # fmt: skip
        labelled.add(label)
        if pruned:
            ax.scatter([epochs[-1]], [accuracy[-1]], color=color, marker="x", s=44, zorder=3)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title("Validation accuracy per epoch of every trial")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=4, frameon=False)  # off the points
    fig.tight_layout()
    if study.frontier:
        return img(figure_png(fig), "validation accuracy per epoch of every trial") + (
            "<p>Each trial's validation accuracy after every epoch, from its run's history: a --frontier study "
            "prunes nothing (Optuna cannot prune a study of two objectives), so every trial ran to its end.</p>"
        )
    return img(figure_png(fig), "validation accuracy per epoch of every trial") + (
        "<p>What the pruner saw: each trial reports its validation accuracy every epoch, and a pruned trial "
        "(dashed, x where it stopped) fell below what the pruner expected of a trial at that epoch.</p>"
    )


def _reruns(study: StudyFacts) -> str:
    if not study.reruns:
        why = ("<code>--top-k 0</code>" if any(t.state == "COMPLETE" for t in study.trials) else
               "no trial has completed yet")  # fmt: skip
        return (f"<p>No re-runs ({why}), so no winner and no best.toml: the search's validation accuracies above "
                "are single draws.</p>")  # fmt: skip
    preset = next((r for r in study.reruns if r.is_preset), None)
    rows = [
        ("* winner" if r.is_winner else "preset" if r.is_preset else "", r.name,
         "-" if r.search_value is None else f"{r.search_value:.2f}", f"{r.val_mean:.2f}",
         f"{r.test_mean:.2f} ± {r.test_std:.2f}",
         "-" if r.is_preset or preset is None else f"{r.test_mean - preset.test_mean:+.2f}", r.n)
        for r in study.reruns
    ]  # fmt: skip
    headers = ("", "config", "search val", "re-run val", "re-run test (mean ± std)", "vs preset", "n")
    body = table(headers, rows, (False, False, True, True, True, True, True)) + _reruns_png(study.reruns)
    if study.verdict:
        body += f"<p><b>{esc(study.verdict)}</b></p>"
    winner = next((r for r in study.reruns if r.is_winner), None)
    if winner is not None:
        body += (f"<p>The winner, {esc(winner.name)}, is the trial with the best mean re-run <i>validation</i> "
                 "accuracy; the test split played no part in choosing it.</p>")  # fmt: skip
    if study.best_toml is not None:
        body += (f"<p>Its whole config is in <code>{esc(study.best_toml)}</code>; train it again with:</p>"
                 f"<pre>cifarlab train --config {esc(study.best_toml)}</pre>")  # fmt: skip
    return body


def _reruns_png(rows: list[RerunRow]) -> str:
    """Re-run test accuracy, mean ± std per configuration, the preset's band across."""
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(rows) + 1.4))
    names = [r.name + (" (winner)" if r.is_winner else "") for r in rows]
    for i, r in enumerate(rows):
        color = _BEST if r.is_winner else _FAIL if r.is_preset else _COMPLETE
        ax.errorbar([r.test_mean], [i], xerr=[r.test_std], fmt="o", color=color, capsize=4, markersize=6)
    preset = next((r for r in rows if r.is_preset), None)
    title = "Re-run test accuracy"
    if preset is not None:
        ax.axvspan(preset.test_mean - preset.test_std, preset.test_mean + preset.test_std, color=_FAIL, alpha=0.15)
        title += f" (grey band: {preset.name}'s mean ± std)"
    ax.set_yticks(range(len(rows)), names)
    ax.set_ylim(len(rows) - 0.5, -0.5)
    low, high = ax.get_xlim()
    ax.set_xlim(max(low, 0.0), min(high, 100.5))  # a wide std must not stretch the axis past 100 %
    ax.set_xlabel(f"test accuracy (%), mean ± std over {max(r.n for r in rows)} seeds")
    ax.set_title(title, fontsize=11)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return img(figure_png(fig), "re-run test accuracy, mean and std per configuration")


def _params_text(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(params.items()))


def _trials_table(study: StudyFacts) -> str:
    rows = []
    for t in sorted(study.trials, key=lambda t: t.number):
        last = f"{t.intermediate[max(t.intermediate)]:.2f} (epoch {max(t.intermediate)})" if t.intermediate else "-"
        seconds = "-" if t.duration_seconds is None else f"{t.duration_seconds:.0f} s"
        value = "-" if t.value is None else f"{t.value:.2f}"
        front = " (front)" if t.number in study.front else ""
        cost = [("-" if t.tflops is None else f"{t.tflops:.4g}") + front] if study.frontier else []
        rows.append((t.number, t.state.lower(), value, *cost, last, seconds, _params_text(t.params), t.run_dir or "-"))
    headers = ("trial", "state", "val acc", *(["TFLOPs"] if study.frontier else []), "last reported", "time",
               "parameters", "run directory")  # fmt: skip
    numeric = (True, False, True, *([True] if study.frontier else []), True, True, False, False)
    return table(headers, rows, numeric) + (
        "<p>Accuracies in %: <i>val acc</i> is a complete trial's final model; <i>last reported</i> is the last "
        "epoch's validation accuracy the pruner saw.</p>"
    )
