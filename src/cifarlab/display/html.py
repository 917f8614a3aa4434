"""Each result's `_repr_html_`: a card with the figure that matters, a table or curves, and the full report's path.

A card is one self-contained fragment (inline styles, images as data URIs, no scripts), so it reads the same in
Jupyter, Colab, VS Code and a notebook rendered to HTML by nbconvert.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cifarlab.display import figures
from cifarlab.reports.figures import robustness_figure, thumbnail_png
from cifarlab.reports.html import esc, figure_png, png_data_uri, table

_CARD = "font-family: system-ui, sans-serif; border: 1px solid #ddd; border-radius: 6px; padding: 0.6em 1em; " \
        "max-width: 980px; line-height: 1.4"  # fmt: skip
_KEY = "font-family: ui-monospace, 'DejaVu Sans Mono', monospace; font-size: 1.9em; margin: 0.1em 0"
_SUB = "color: #555; margin: 0.1em 0 0.5em 0"
_NOTE = "background: #fff8e1; border-left: 4px solid #f0b400; padding: 0.2em 0.6em; margin: 0.4em 0"
_AUDIT_JSON = "audit.json"  # cifarlab.auditing's AUDIT_JSON and AUDIT_HTML: its files, read here (a floor below it)
_AUDIT_HTML = "audit.html"


def card(kind: str, title: str, key: str, caption: str, body: str = "", report: Path | None = None) -> str:
    """A result's card: what it is, its key figure, a line of context, the body, and where the full report is."""
    where = (f'<p style="{_SUB}">full report: <code>{esc(report)}</code></p>'
             if report is not None and Path(report).is_file() else "")  # fmt: skip
    return (
        f'<div class="cifarlab-{esc(kind)}" style="{_CARD}">'
        f'<div style="color: #777; font-size: 0.85em">cifarlab {esc(kind)}</div>'
        f'<div style="font-weight: 600; font-size: 1.1em">{esc(title)}</div>'
        f'<div class="cifarlab-key" style="{_KEY}">{esc(key)}</div>'
        f'<p style="{_SUB}">{esc(caption)}</p>{body}{where}</div>'
    )


def plot(fig: Any, alt: str) -> str:
    """A figure as an inline <img> scaled to the card's width."""
    return f'<img alt="{esc(alt)}" style="max-width: 100%; height: auto" src="{png_data_uri(figure_png(fig))}">'


def notes(lines: Iterable[str]) -> str:
    """Notes, one paragraph each."""
    return "".join(f'<p style="{_NOTE}">{esc(line)}</p>' for line in lines)


def run_html(result: Any) -> str:
    """A finished run (`cifarlab.train`'s RunResult): the seed's '> NN.NNN', the two curves, the report's path."""
    if result.test is not None:
        key = result.test.percent()
    else:  # a search's trial never reads the test split
        key = f"val_accuracy {result.history.history['val_accuracy'][-1]:.4f}" if len(result.history) else "-"
    body = plot(figures.history_figure(result.history), "loss and accuracy per epoch, train and validation")
    return card("run", str(result.run_dir), key, result.summary(), body + notes(result.notes),
                Path(result.run_dir) / "report.html")  # fmt: skip


def comparison_html(comparison: Any, kind: str = "comparison") -> str:
    """Runs compared (a Comparison, or a ladder's): the best configuration, the table, the accuracy bars."""
    groups = comparison.groups
    best = max(groups, key=lambda g: g.mean)
    spread = f" ± {best.std:.2f}" if len(best.runs) > 1 else ""
    key = f"{best.mean:.2f}{spread} %"
    n = sum(len(g.runs) for g in groups)
    title = f"{n} run{'s' * (n != 1)} of {len(groups)} configuration{'s' * (len(groups) != 1)}"
    caption = f"the best test accuracy: {best.label}" + (f", mean ± std over {len(best.runs)} seeds"
                                                         if len(best.runs) > 1 else "")  # fmt: skip
    rows = [(g.label, f"{g.mean:.2f}" + (f" ± {g.std:.2f}" if len(g.runs) > 1 else ""),
             _blank(g.runs[0].seed_accuracy, "{:.2f}"), _blank(_gap(g), "{:+.2f}"), len(g.runs))
            for g in groups]  # fmt: skip
    body = table(("run", "test acc. (%)", "seed's Keras (%)", "difference", "seeds"), rows)
    body += plot(comparison_figure(comparison), "test accuracy of each configuration")
    body += notes(comparison.flag_lines())
    return card(kind, title, key, caption, body, comparison.html_path)


def comparison_figure(comparison: Any) -> Any:
    """Each configuration's test accuracy (mean ± std), beside the seed's Keras figure."""
    groups = comparison.groups
    return figures.accuracy_bars_figure([g.label for g in groups], [g.mean for g in groups],
                                        [g.std for g in groups], [g.runs[0].seed_accuracy for g in groups],
                                        "Test accuracy per configuration")  # fmt: skip


def _gap(group: Any) -> float | None:
    seed = group.runs[0].seed_accuracy
    return None if seed is None else group.mean - seed


def _blank(value: Any, fmt: str) -> str:
    return "-" if value is None else fmt.format(value)


def study_html(result: Any) -> str:
    """A search (`cifarlab.tune`'s TuneResult): the winner's test accuracy over seeds, the re-runs, the history."""
    best, preset = result.best, (result.candidates[-1] if result.candidates else None)
    if best is not None:
        mean, std = best.test_mean_std
        key = f"{mean:.2f} ± {std:.2f} %"
        caption = f"the re-runs' winner, {best.name}, on test over {len(best.test)} seeds"
        if preset is not None and preset is not best:
            p_mean, p_std = preset.test_mean_std
            caption += f"; the preset {preset.name}: {p_mean:.2f} ± {p_std:.2f} %"
    elif getattr(result, "front_json", None) is not None:  # --frontier: the front is the answer
        key = f"{len(result.candidates) - 1} front points"
        caption = f"accuracy against cost, re-run over seeds with the preset: {result.front_json}"
    else:
        complete = [t for t in result.trials if t.state.name == "COMPLETE" and t.values]
        key = f"{max(t.values[0] for t in complete) * 100:.2f} %" if complete else "-"
        caption = f"best validation accuracy of {len(result.trials)} trials (no re-runs)"
    rows = [(c.name, _blank(c.search_value, "{:.4f}"), f"{c.val_mean:.2f}",
             "{:.2f} ± {:.2f}".format(*c.test_mean_std), len(c.test)) for c in result.candidates]  # fmt: skip
    body = table(("configuration", "search val.", "val. (%)", "test (%)", "seeds"), rows) if rows else ""
    body += plot(figures.study_figure(result.trials, _winner_trial(result)), "validation accuracy of each trial")
    if result.best_toml is not None:
        body += f'<p style="{_SUB}">best config: <code>{esc(result.best_toml)}</code></p>'
    return card("study", str(result.study_dir), key, caption, body + notes(result.notes), result.report)


def _winner_trial(result: Any) -> int | None:
    name = getattr(result.best, "name", "")
    return int(name.split()[-1]) if name.startswith("trial ") else None


def audit_classes(result: Any) -> list[str]:
    """The audited classes' names, as the audit saved them (class0, class1, ... where it did not)."""
    path = Path(result.out) / _AUDIT_JSON
    saved = json.loads(path.read_text()).get("classes") if path.is_file() else None
    return list(saved) if saved else [f"class{i}" for i in range(result.probabilities.shape[1])]


def audit_html(result: Any, top: int = 10) -> str:
    """An audit (`cifarlab.audit`'s AuditResult): the likely label errors, the worst of them, per class."""
    issues, names = result.label_issues, audit_classes(result)
    flagged = len(issues.index)
    key = f"{flagged} likely label errors ({flagged / max(result.images, 1) * 100:.2f} %)"
    kinds = [pair.kind for pair in result.duplicates]
    caption = (f"{result.images} training images, out-of-fold accuracy {result.oof_accuracy * 100:.2f} %; "
               f"{kinds.count('train-train')} near-duplicate pairs within train, {kinds.count('test-train')} test "
               "images near a training image")  # fmt: skip
    rows = [
        (rank, result.paths[i], names[result.labels[i]], names[s], f"{score:.4f}")
        for rank, (i, s, score) in enumerate(zip(issues.index[:top], issues.suggested, issues.score), 1)
    ]
    body = table(("rank", "image", "given", "suggested", "label quality"), rows) if rows else ""
    body += plot(figures.audit_figure(names, np.asarray(result.labels), np.asarray(issues.index, dtype=np.int64)),
                 "likely label errors per class")  # fmt: skip
    return card("audit", str(result.out), key, caption, body, Path(result.out) / _AUDIT_HTML)


def robustness_html(result: Any) -> str:
    """Accuracy under the CIFAR-10-C corruptions: the mean over them against clean, per corruption, the heatmap."""
    mean, clean = result["mean_corruption_accuracy"], result["clean"]
    key = "-" if mean is None else f"{mean * 100:.2f} %"
    caption = (f"mean accuracy under {len(result['accuracy'])} corruptions against {clean * 100:.2f} % clean, "
               f"on {result['images']} test images")  # fmt: skip
    means = {name.replace("_", " "): sum(row.values()) / len(row) for name, row in result["accuracy"].items()}
    rows = [(name, f"{mean * 100:.2f}", f"{(mean - clean) * 100:+.2f}") for name, mean in means.items()]
    body = table(("corruption", "mean over severities (%)", "vs clean"), rows)
    body += plot(robustness_figure(result["accuracy"], clean), "accuracy per corruption and severity")
    report = Path(result.run_dir) / "report.html" if getattr(result, "run_dir", None) else None
    return card("robustness", str(getattr(result, "run_dir", "")), key, caption, body, report)


def predictions_html(predictions: Sequence[Any], images: dict[str, np.ndarray],
                     explanations: dict[str, bytes]) -> str:  # fmt: skip
    """A batch of predictions: each image with its top classes (and its Grad-CAM maps where explained)."""
    good = [p for p in predictions if p.error is None]
    key = f"{len(good)} image{'s' * (len(good) != 1)}"
    caption = "top classes, most likely first" + (f"; {len(predictions) - len(good)} skipped"
                                                  if len(good) < len(predictions) else "")  # fmt: skip
    tiles = "".join(_prediction_tile(p, images.get(p.path), explanations.get(p.path)) for p in good)
    body = f'<div style="display: flex; flex-wrap: wrap; gap: 10px">{tiles}</div>'
    body += notes(f"skipped {p.path}: {p.error}" for p in predictions if p.error is not None)
    return card("predictions", "", key, caption, body)


def _prediction_tile(prediction: Any, image: np.ndarray | None, explanation: bytes | None) -> str:
    name = Path(prediction.path).name
    if explanation is not None:  # the image and its maps, captioned, at their own size (about 128 px a panel)
        picture = png_data_uri(explanation)
        shown = f'<img alt="{esc(name)} and its Grad-CAM maps" style="max-width: 100%" src="{picture}">'
    elif image is not None:
        picture = png_data_uri(thumbnail_png(image.transpose(2, 0, 1)))
        shown = f'<img alt="{esc(name)}" style="height: 96px; image-rendering: pixelated" src="{picture}">'
    else:
        shown = ""
    lines = "".join(f'<div style="font-weight: {600 if i == 0 else 400}">{esc(c)} {p:.2f}</div>'
                    for i, (c, p) in enumerate(zip(prediction.classes, prediction.probabilities)))  # fmt: skip
    return (
        f'<figure style="margin: 0; font-size: 0.8em; text-align: center">{shown}'
        f'<figcaption><div style="color: #777">{esc(name)}</div>{lines}</figcaption></figure>'
    )


class ReportFrame:
    """A full report page shown in a notebook cell, in a frame of its own, so that its page styles stay inside."""

    def __init__(self, path: Path, height: int) -> None:
        self.path, self.height = path, height

    def _repr_html_(self) -> str:
        page = self.path.read_text(encoding="utf-8")
        return (f'<iframe title="{esc(self.path)}" srcdoc="{esc(page)}" '
                f'style="width: 100%; height: {self.height}px; border: 1px solid #ddd"></iframe>')  # fmt: skip


def show_report(path: str | Path, height: int = 720) -> ReportFrame:
    """A report to show inline in a notebook: a run's report.html, or any page cifarlab wrote (compare, study, audit).

    Args:
        path: a run directory (its report.html) or an HTML file.
        height: the frame's height in pixels (the page scrolls inside it).

    Raises:
        FileNotFoundError: if there is no such report.
    """
    path = Path(path)
    page = path / "report.html" if path.is_dir() else path
    if not page.is_file():
        raise FileNotFoundError(f"{page}: no such report (cifarlab report RUN_DIR writes a run's)")
    return ReportFrame(page, height)
