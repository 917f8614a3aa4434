"""Compare runs side by side: a terminal table, compare.html (table and plots) and compare.csv.

Runs of the same config that differ only by seed form a group (`config_group`), shown as mean ± std over its n
seeds; two groups whose difference is smaller than their seed spread are flagged, so noise is not read as a gain.
"""

from __future__ import annotations

import csv
import io
import math
import os
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullFormatter

from cifarlab._io.atomic import write_text
from cifarlab._io.durations import format_duration
from cifarlab.reports.html import esc, figure_png, img, page, plt, section, table
from cifarlab.reports.plots import TEST_LABEL, TEST_NOTE
from cifarlab.reports.saved_run import SavedRun, find_runs, load_run

COMPARE_HTML = "compare.html"
COMPARE_CSV = "compare.csv"
_HEADERS = (
    "run", "model", "params", "epochs", "best", "time", "img/s", "val acc", "test acc", "Keras", "vs Keras", "n",
)  # fmt: skip
_KERAS_NOTE = "Keras = the test accuracy the seed's Keras project reported for that step; vs Keras = test acc minus it"


@dataclass
class RunGroup:
    """Runs of one config that differ only by their seed."""

    key: str
    runs: list[SavedRun]

    @property
    def label(self) -> str:
        """The preset's name, with its epochs scale when shortened."""
        return self.runs[0].label

    @property
    def accuracies(self) -> list[float]:
        """Test accuracies in percent, one per run."""
        return [run.metrics["test_accuracy"] * 100 for run in self.runs]

    @property
    def mean(self) -> float:
        """Mean test accuracy (percent)."""
        return statistics.fmean(self.accuracies)

    @property
    def std(self) -> float:
        """Sample standard deviation of the test accuracy over seeds (percent); 0 for a single run."""
        return statistics.stdev(self.accuracies) if len(self.runs) > 1 else 0.0


def group_runs(runs: Sequence[SavedRun]) -> list[RunGroup]:
    """Group runs by their config without the seed, in the order the groups first appear."""
    groups: dict[str, RunGroup] = {}
    for run in runs:
        groups.setdefault(run.group, RunGroup(run.group, [])).runs.append(run)
    return list(groups.values())


def within_spread(groups: Sequence[RunGroup]) -> list[tuple[RunGroup, RunGroup, float, float]]:
    """Pairs of groups (at least one with 2+ seeds) whose mean difference is smaller than their seed spread.

    The spread of the difference of one run of each is sqrt(std_a^2 + std_b^2): a smaller gap between the means
    is one that reseeding alone could produce.

    Returns:
        (a, b, |mean_a - mean_b|, spread) for each such pair, in the groups' order.
    """
    flagged = []
    for i, a in enumerate(groups):
        for b in groups[i + 1 :]:
            if len(a.runs) < 2 and len(b.runs) < 2:
                continue
            gap, spread = abs(a.mean - b.mean), math.hypot(a.std, b.std)
            if gap < spread:
                flagged.append((a, b, gap, spread))
    return flagged


@dataclass
class Comparison:
    """Finished runs compared: their configurations (seeds grouped), and where compare.html and compare.csv went."""

    groups: list[RunGroup]
    flagged: list[tuple[RunGroup, RunGroup, float, float]]  # groups closer than their seed spread (`within_spread`)
    out_dir: Path

    @property
    def html_path(self) -> Path:
        """compare.html: the table, the scatter plots, every run's curves."""
        return self.out_dir / COMPARE_HTML

    @property
    def csv_path(self) -> Path:
        """compare.csv: one row per run."""
        return self.out_dir / COMPARE_CSV

    def flag_lines(self) -> list[str]:
        """One line per pair of groups closer than their seed spread."""
        return _flag_texts(self.flagged)

    def __str__(self) -> str:
        """The terminal table, then the flagged pairs."""
        return _terminal_table([_group_row(group) for group in self.groups]) + _flag_lines(self.flagged, plain=True)

    def _repr_html_(self) -> str:
        from cifarlab.display.html import comparison_html

        return comparison_html(self)

    def plot(self) -> Figure:
        """Each configuration's test accuracy (mean ± std over seeds) beside the seed's Keras figure."""
        from cifarlab.display.html import comparison_figure

        return comparison_figure(self)


def comparison(run_dirs: Sequence[str | Path], out_dir: str | Path) -> Comparison:
    """Compare finished runs and write compare.html and compare.csv into `out_dir`.

    Args:
        run_dirs: finished run directories (each with config.json, metrics.json and history.csv).
        out_dir: where compare.html and compare.csv go (created if needed).

    Raises:
        ValueError: if there is no run to compare.
        FileNotFoundError: if a directory is not a finished run.
    """
    if not run_dirs:
        raise ValueError("no finished runs to compare (a finished run has config.json, metrics.json, history.csv)")
    runs = [run for run in map(load_run, run_dirs) if run.metrics.get("test_accuracy") is not None]
    if not runs:
        raise ValueError("none of these runs has a test accuracy to compare (a search's trials never read the test "
                         "split; compare its re-runs instead)")  # fmt: skip
    groups = group_runs(runs)
    flagged = within_spread(groups)
    out_dir = Path(out_dir)
    rows = [_group_row(group) for group in groups]
    write_text(out_dir / COMPARE_CSV, _csv(groups))
    write_text(out_dir / COMPARE_HTML, _html(groups, rows, flagged))
    return Comparison(groups, flagged, out_dir)


def write_comparison(run_dirs: list[Path], out_dir: Path) -> str:
    """`comparison`, returning its terminal table."""
    return str(comparison(run_dirs, out_dir))


def compare(
    run_dirs: Sequence[str | Path] = (), *, runs_dir: str | Path = "runs", out_dir: str | Path | None = None
) -> Comparison:
    """Compare the named runs, or every finished run under `runs_dir`; write compare.html and compare.csv.

    Args:
        run_dirs: finished run directories; none = every finished run under `runs_dir`.
        runs_dir: where to look when no run is named.
        out_dir: where compare.html and compare.csv go (default: `runs_dir`, or the named runs' common folder).

    Raises:
        FileNotFoundError: for a missing folder or a directory that is not a finished run.
        ValueError: if there is no run to compare.

    Returns:
        The Comparison: its text is the terminal table, and a notebook shows it as a table and a chart.
    """
    if run_dirs:
        paths = [Path(p) for p in run_dirs]
        default_out = Path(os.path.commonpath([p.resolve() for p in paths]))
        if len(paths) == 1:
            default_out = paths[0]
    else:
        paths = find_runs(runs_dir)
        if not paths:
            raise ValueError(f"--runs-dir {runs_dir}: no finished runs in it (name runs as RUN_DIR arguments)")
        default_out = Path(runs_dir)
    return comparison(paths, Path(out_dir) if out_dir is not None else default_out)


def compare_runs(
    run_dirs: Sequence[str | Path] = (), *, runs_dir: str | Path = "runs", out_dir: str | Path | None = None
) -> str:
    """`cifarlab compare`: `compare`'s table, and a line saying where compare.html and compare.csv went."""
    result = compare(run_dirs, runs_dir=runs_dir, out_dir=out_dir)
    return f"{result}wrote {result.html_path} and {result.csv_path}\n"


def _percent(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _spread(values: list[int]) -> str:
    return str(values[0]) if min(values) == max(values) else f"{min(values)}-{max(values)}"


def _group_row(group: RunGroup) -> tuple[str, ...]:
    first = group.runs[0]
    params = first.params
    best = [run.metrics.get("best_epoch") for run in group.runs]
    speeds = [run.images_per_second for run in group.runs if run.images_per_second]
    vals = [run.best_val_accuracy * 100 for run in group.runs if run.best_val_accuracy is not None]
    test = f"{group.mean:.2f}" + (f" ± {group.std:.2f}" if len(group.runs) > 1 else "")
    seed = first.seed_accuracy
    return (
        group.label,
        first.config.model,
        f"{params['total']:,}" if params else "?",
        f"{_spread([run.epochs_run for run in group.runs])}/{first.epochs_planned}",
        _spread(best) if all(b is not None for b in best) else "-",
        format_duration(statistics.fmean(run.train_seconds for run in group.runs)),
        f"{statistics.fmean(speeds):,.0f}" if speeds else "-",
        _percent(statistics.fmean(vals) if vals else None),
        test,
        _percent(seed),
        "-" if seed is None else f"{group.mean - seed:+.2f}",
        str(len(group.runs)),
    )


def _terminal_table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(_HEADERS)]
    left = {0, 1}  # text columns; the numbers are right-aligned

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    lines = [line(_HEADERS), line(["-" * w for w in widths]), *(line(r) for r in rows)]
    lines.append("accuracies in %; test acc is mean ± std over the n random seeds of a group")
    lines.append(_KERAS_NOTE)
    return "\n".join(lines) + "\n"


def _flag_texts(flagged: list[tuple[RunGroup, RunGroup, float, float]]) -> list[str]:
    return [
        f"~ {a.label} (n={len(a.runs)}) vs {b.label} (n={len(b.runs)}): {gap:.2f} points apart, within their seed "
        f"spread ({spread:.2f}): not a difference the seeds can tell"
        for a, b, gap, spread in flagged
    ]


def _flag_lines(flagged: list[tuple[RunGroup, RunGroup, float, float]], plain: bool) -> str:
    lines = _flag_texts(flagged)
    if plain:
        return "".join(line + "\n" for line in lines)
    return "".join(f'<p class="flag">{esc(line)}</p>' for line in lines)


_CSV_COLUMNS = (
    "run_dir", "preset", "label", "epochs_scale", "model", "group", "seed", "params_total", "params_trainable",
    "epochs_run", "epochs_planned", "best_epoch", "train_seconds", "images_per_second", "best_val_accuracy",
    "test_accuracy", "seed_accuracy", "group_n", "group_mean", "group_std",
)  # fmt: skip


def _csv(groups: list[RunGroup]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(_CSV_COLUMNS)
    for group in groups:
        for run in group.runs:
            params = run.params or {}
            writer.writerow([
                run.run_dir, run.config.preset, run.label, _blank(run.scale), run.config.model, group.key,
                run.config.seed, params.get("total", ""), params.get("trainable", ""), run.epochs_run,
                run.epochs_planned, _blank(run.metrics.get("best_epoch")), f"{run.train_seconds:.1f}",
                _blank(run.images_per_second, "{:.1f}"), _blank(run.best_val_accuracy, "{:.4f}"),
                f"{run.metrics['test_accuracy']:.4f}", _blank(run.seed_accuracy), len(group.runs),
                f"{group.mean:.3f}", f"{group.std:.3f}",
            ])  # fmt: skip
    return buffer.getvalue()


def _blank(value: object, fmt: str = "{}") -> str:
    return "" if value is None else fmt.format(value)


def _html(groups: list[RunGroup], rows: list[tuple[str, ...]], flagged: list) -> str:
    numeric = [False, False] + [True] * (len(_HEADERS) - 2)
    per_run = [
        (run.label, run.config.seed, run.run_dir.name, f"{run.epochs_run}/{run.epochs_planned}",
         _blank(run.metrics.get("best_epoch")) or "-", format_duration(run.train_seconds),
         _percent(None if run.best_val_accuracy is None else run.best_val_accuracy * 100),
         f"{run.metrics['test_accuracy'] * 100:.2f}", run.metrics.get("stopped", "-"))
        for group in groups for run in group.runs
    ]  # fmt: skip
    scaled = sorted({run.label for group in groups for run in group.runs if run.scale is not None})
    changed = sorted({run.label for group in groups for run in group.runs if run.scale is None and run.changes})
    scale_note = (f"<p class=\"note\">Shortened runs (epochs and patience scaled as by <code>cifarlab ladder "
                  f"--epochs-scale</code>): {esc(', '.join(scaled))}; their accuracy is not the full recipe's.</p>"
                  if scaled else "")  # fmt: skip
    scale_note += (f"<p class=\"note\">Runs that changed their preset's recipe show the changes in brackets: "
                   f"{esc(', '.join(changed))}.</p>" if changed else "")  # fmt: skip
    table_section = (
        scale_note
        + table(_HEADERS, rows, numeric)
        + "<p>Accuracies in %. <i>test acc</i> is the mean ± sample std over the <i>n</i> random seeds of a group "
        "(runs whose config differs only by the random seed). <i>Keras</i> is the test accuracy the seed's Keras "
        "project (the ten steps cifarlab's proyecto presets reproduce) reported for that step; <i>vs Keras</i> is "
        "<i>test acc</i> minus it.</p>"
        + (_flag_lines(flagged, plain=False) or "<p>No two groups are closer than their seed spread.</p>")
    )
    runs_section = table(
        ("run", "random seed", "directory", "epochs", "best", "time", "val acc", "test acc", "why it stopped"),
        per_run,
        (False, True, False, True, True, True, True, True, False),
    )
    plots = img(_scatter_png(groups, "time"), "test accuracy against training time") + img(
        _scatter_png(groups, "params"), "test accuracy against parameters"
    )
    with_val = any(_has_validation(run) for group in groups for run in group.runs)
    with_test = any(run.history.has_test for group in groups for run in group.runs)
    note = f'<p class="note">Dashed: {TEST_NOTE}.</p>' if with_test else ""
    curves = (img(_curves_png(groups), "validation accuracy of every run") + note if with_val else
              "<p>No run here held out a validation split (their presets train on every training image), so there "
              "is no validation curve to draw.</p>")  # fmt: skip
    sections = [
        section("table", "Runs by config", table_section),
        section("plots", "Accuracy, time and size", plots),
        section("curves", "Validation curves", curves),
        section("runs", "Every run", runs_section),
    ]
    n = sum(len(group.runs) for group in groups)
    return page("cifarlab compare", f"{_count(n, 'run')} of {_count(len(groups), 'config')}", sections)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _has_validation(run: SavedRun) -> bool:
    return any(v == v for v in run.history.history["val_accuracy"])


def _colors(n: int) -> list:
    cmap = plt.get_cmap("tab10" if n <= 10 else "tab20")
    return [cmap(i % cmap.N) for i in range(n)]


def _scatter_png(groups: list[RunGroup], x_axis: str) -> bytes:
    """Test accuracy against training time or parameters (log x), one labelled colour per group."""
    fig, ax = plt.subplots(figsize=(10, 5.5))
    seed_drawn, xs = False, []
    for group, color in zip(groups, _colors(len(groups))):
        points = []
        for run in group.runs:
            x = run.train_seconds if x_axis == "time" else (run.params or {}).get("total")
            if x:
                points.append((x, run.metrics["test_accuracy"] * 100))
        if not points:
            continue
        xs += [p[0] for p in points]
        ax.scatter([p[0] for p in points], [p[1] for p in points], color=color, s=36, label=group.label, zorder=3)
        x_mean = statistics.fmean(p[0] for p in points)
        ax.annotate(group.label, (x_mean, group.mean), textcoords="offset points", xytext=(6, 4), fontsize=8)
        seed = group.runs[0].seed_accuracy
        if x_axis == "params" and seed is not None:
            ax.scatter([x_mean], [seed], facecolors="none", edgecolors=color, s=70, marker="D", zorder=2,
                       label="the Keras project's accuracy" if not seed_drawn else None)  # fmt: skip
            seed_drawn = True
    log = bool(xs) and max(xs) >= 10 * min(xs)  # a log axis only across a decade or more
    if log:
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.xaxis.set_major_locator(FixedLocator(_TIME_TICKS) if x_axis == "time" else LogLocator(subs=(1, 2, 5)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: _seconds_tick(x) if x_axis == "time" else _count_tick(x)))
    scale = " (log scale)" if log else ""
    ax.set_xlabel(f"training time{scale}" if x_axis == "time" else f"parameters (Keras-style total){scale}")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Test accuracy against " + ("training time" if x_axis == "time" else "parameters"))
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="best", ncol=2)
    fig.tight_layout()
    return figure_png(fig)


_TIME_TICKS = [s * unit for unit in (1, 60, 3600) for s in (1, 2, 5, 10, 20, 30)] + [24 * 3600]  # 1 s ... 1 day


def _seconds_tick(seconds: float) -> str:
    """A time axis label: 40 s, 2.5 min, 1.5 h."""
    if seconds < 60:
        return f"{seconds:.3g} s"
    return f"{seconds / 60:.3g} min" if seconds < 3600 else f"{seconds / 3600:.3g} h"


def _count_tick(count: float) -> str:
    """A parameter axis label: 950, 120k, 1.5M."""
    if count < 1000:
        return f"{count:.3g}"
    return f"{count / 1000:.3g}k" if count < 1e6 else f"{count / 1e6:.3g}M"


def _curves_png(groups: list[RunGroup]) -> bytes:
    """Every run's validation accuracy per epoch on one chart (a group's runs share its colour)."""
    fig, ax = plt.subplots(figsize=(10, 5.5))
    for group, color in zip(groups, _colors(len(groups))):
        for i, run in enumerate(group.runs):
            h = run.history.history
            if not _has_validation(run):
                continue
            ax.plot(h["epoch"], h["val_accuracy"], color=color, alpha=0.85, label=group.label if i == 0 else None)
            if run.history.has_test:
                ax.plot(h["epoch"], h["test_accuracy"], color=color, alpha=0.85, linestyle="--",
                        label=f"{group.label}: {TEST_LABEL}" if i == 0 else None)  # fmt: skip
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel("epoch")
    ax.set_ylabel("val_accuracy")
    ax.set_title("Validation accuracy of every run")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return figure_png(fig)
