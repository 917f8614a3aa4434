"""The Front section of a `--frontier` study's report.html: validation accuracy against cost, and the front's table.

Drawn from the plain values of `study_report.StudyFacts` (no Optuna): every complete trial as a dot, the best
accuracy reached at each cost as a step line (the Pareto front, on the TFLOPs axis), the re-run points' test
accuracy as error bars, the preset as a diamond; once against TFLOPs, once against seconds on the machine.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from cifarlab.reports.html import esc, figure_png, img, plain_log_x, plt, table

if TYPE_CHECKING:
    from cifarlab.reports.study_report import RerunRow, StudyFacts, TrialFacts

_TRIAL, _FRONT, _RERUN, _PRESET = "#4c72b0", "#2a9d3a", "#c44e52", "black"


def front_section(study: StudyFacts) -> str:
    """The section's HTML: the two-panel figure, the table of the front's points, and what they mean."""
    complete = [t for t in study.trials if t.state == "COMPLETE" and t.value is not None and t.tflops is not None]
    if not complete:
        return "<p>No trial has completed yet, so there is no front to draw.</p>"
    body = _figure(study, complete) + _table(study)
    body += (
        "<p>Cost is the recipe's floating-point operations (TFLOPs: 10<sup>12</sup>), counted from the network and "
        "the schedule (every training step at its epoch's image side, validation after each epoch, the final "
        "validation and test evaluations with their test-time augmentation views): the same on every machine, so "
        "trials run by different workers compare. Seconds are wall seconds on the machine that ran each run. "
        "A point is on the front when no other trial is both cheaper and more accurate; dots are the search's "
        "validation accuracies, error bars the re-runs' test accuracy (mean ± std over seeds).</p>"
    )
    if study.front_json is not None:
        body += (f"<p>The re-run front is in <code>{esc(study.front_json)}</code>, the file "
                 "<code>cifarlab train --budget</code> reads (as the package's copy). A --frontier study writes no "
                 "best.toml: which point is best depends on the budget.</p>")  # fmt: skip
    elif study.front:
        body += "<p>No re-runs (<code>--top-k 0</code>), so no front.json: the accuracies above are single draws.</p>"
    return body


def _best_at_cost(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The steps of the best accuracy reached at each cost or less: the points no cheaper one beats."""
    steps: list[tuple[float, float]] = []
    for x, y in sorted(points, key=lambda p: (p[0], -p[1])):
        if not steps or y > steps[-1][1]:
            steps.append((x, y))
    return steps


def _panel(
    ax: Any,
    study: StudyFacts,
    complete: list[TrialFacts],
    trial_x: Callable[[TrialFacts], float | None],
    row_x: Callable[[RerunRow], float | None],
    label: str,
    log: bool,
) -> None:
    """One panel: trials, their front as a step line, the re-runs and the preset, against the cost `trial_x`."""
    drawn = [(trial_x(t), t.value, t.number) for t in complete if trial_x(t) is not None]
    if drawn:
        ax.scatter([x for x, _, _ in drawn], [y for _, y, _ in drawn], color=_TRIAL, s=26, alpha=0.65, zorder=3,
                   label="trial (search validation accuracy)")  # fmt: skip
        front = [(x, y) for x, y, n in drawn if n in study.front]
        ax.scatter([x for x, _ in front], [y for _, y in front], s=80, facecolors="none", edgecolors=_FRONT,
                   linewidths=1.6, zorder=4, label="on the front (by TFLOPs)")  # fmt: skip
        steps = _best_at_cost([(x, y) for x, y, _ in drawn])
        xs, ys = [x for x, _ in steps], [y for _, y in steps]
        right = max(x for x, _, _ in drawn)
        ax.step(xs + [right], ys + [ys[-1]], where="post", color=_FRONT, linewidth=1.8, zorder=2,
                label="best validation accuracy at this cost or less")  # fmt: skip
    for row in study.reruns:
        x = row_x(row)
        if x is None:
            continue
        preset = row.is_preset
        shown = f"preset {row.name} (re-run test)" if preset else "re-run test accuracy (mean ± std)"
        ax.errorbar([x], [row.test_mean], yerr=[row.test_std], fmt="D" if preset else "s", markersize=7,
                    color=_PRESET if preset else _RERUN, capsize=4, zorder=5, label=shown)  # fmt: skip
    if log:
        plain_log_x(ax)
    ax.set_xlabel(label)
    ax.set_ylabel("accuracy (%)")
    ax.grid(alpha=0.3, which="both")


def _figure(study: StudyFacts, complete: list[TrialFacts]) -> str:
    fig, (left, right) = plt.subplots(1, 2, figsize=(12.5, 5.0))
    _panel(left, study, complete, lambda t: t.tflops, lambda r: r.tflops, "cost (TFLOPs, log scale)", log=True)
    seconds = [t.duration_seconds for t in complete if t.duration_seconds] + [r.seconds for r in study.reruns
                                                                               if r.seconds]  # fmt: skip
    log = bool(seconds) and max(seconds) / min(seconds) > 20
    _panel(right, study, complete, lambda t: t.duration_seconds or None, lambda r: r.seconds,
           "wall seconds of each run" + (", log scale" if log else ""), log=log)  # fmt: skip
    left.set_title("Accuracy against FLOPs")
    machine = f"\n(re-runs: {study.machine})" if study.machine else ""
    right.set_title("Accuracy against seconds on the machine that ran it" + machine)
    handles: dict[str, Any] = {}
    for ax in (left, right):
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    fig.legend(handles.values(), handles.keys(), fontsize=8, loc="lower center", ncol=3, frameon=False)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    return img(figure_png(fig), "accuracy against TFLOPs and against seconds: trials, front, re-runs, preset")


def _table(study: StudyFacts) -> str:
    trials = {t.number: t for t in study.trials}
    if study.reruns:
        rows = []
        for r in study.reruns:
            params = trials[r.trial].params if r.trial in trials else {}
            rows.append((r.name + (" (preset)" if r.is_preset else ""), _fmt(r.tflops, "{:.4g}"),
                         _fmt(r.seconds, "{:.1f}"), _fmt(r.search_value, "{:.2f}"), f"{r.val_mean:.2f}",
                         f"{r.test_mean:.2f} ± {r.test_std:.2f}", r.n, _params(params)))  # fmt: skip
        headers = ("config", "TFLOPs", "seconds (re-runs)", "search val", "re-run val", "re-run test (mean ± std)", "n",
                   "parameters")  # fmt: skip
        return table(headers, rows, (False, True, True, True, True, True, True, False))
    front = [trials[n] for n in study.front if n in trials]
    rows = [(f"trial {t.number}", _fmt(t.tflops, "{:.4g}"), _fmt(t.duration_seconds, "{:.1f}"), _fmt(t.value, "{:.2f}"),
             _params(t.params)) for t in front]  # fmt: skip
    return table(("config", "TFLOPs", "seconds (trial)", "search val", "parameters"), rows,
                 (False, True, True, True, False))  # fmt: skip


def _fmt(value: float | None, fmt: str) -> str:
    return "-" if value is None else fmt.format(value)


def _params(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(params.items()))
