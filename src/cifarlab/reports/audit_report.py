"""An audit's audit.html: the figures, the likely label errors worst first, and the near-duplicate pairs, with images.

One self-contained page, like a run's report.html. The anchors it shows beside the figures: Northcutt et al.
(NeurIPS 2021 datasets track) found 54 label errors in CIFAR-10's test set by confident learning and human review;
ciFAIR (Barz & Denzler, 2020) found near-duplicates of training images for 3.3 % of CIFAR-10's test images.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from cifarlab._io.atomic import write_text
from cifarlab.reports import figures
from cifarlab.reports.html import esc, img, key_values, page, section, table

if TYPE_CHECKING:  # the page is drawn from the audit's values; it does not run the audit
    from cifarlab.auditing.duplicates import DuplicatePair
    from cifarlab.auditing.label_issues import LabelIssues

ISSUES_SHOWN = 60
PAIRS_SHOWN = 24  # of each kind
NORTHCUTT_2021_CIFAR10_TEST_ERRORS = 54
CIFAIR_2020_TEST_NEAR_TRAIN_PERCENT = 3.3


@dataclass
class AuditFacts:
    """The audit's figures (audit.json) and the names the page shows."""

    figures: dict[str, Any]
    class_names: list[str]
    paths: list[str]  # audited (training) images
    test_paths: list[str]


def write_audit_report(
    path: Path,
    facts: AuditFacts,
    issues: LabelIssues,
    duplicates: list[DuplicatePair],
    probabilities: np.ndarray,
    labels: np.ndarray,
    train_images: torch.Tensor,
    test_images: torch.Tensor,
) -> Path:
    """Write audit.html at `path` (atomically) and return it."""
    f = facts.figures
    subtitle = (f"{f['images']} training images of {f['source']}, {f['folds']} folds of {f['preset']} (seed "
                f"{f['seed']}), {f['seconds'] / 60:.1f} min on {f['hardware']}")  # fmt: skip
    sections = [
        section("summary", "Summary", _summary(f)),
        section(
            "label-issues",
            "Likely label errors, worst first",
            _issues(facts, issues, probabilities, labels, train_images),
        ),  # fmt: skip
        section("duplicates", "Near-duplicates", _duplicates(facts, duplicates, train_images, test_images)),
        section("method", "How these were found", _method(f)),
    ]
    write_text(path, page(f"Audit of {Path(str(f['source'])).name or f['source']}", subtitle, sections))
    return path


def _summary(f: dict[str, Any]) -> str:
    images = f["images"]
    test_share = f["test_near_train"] / f["test_images"] * 100 if f["test_images"] else 0.0
    pairs = [
        ("training images audited", images),
        ("out-of-fold accuracy", f"{f['oof_accuracy'] * 100:.2f} % (each image judged by a model that never saw it)"),
        ("likely label errors", f"{f['label_issues']} ({f['label_issues'] / images * 100:.2f} % of the images)"),
        ("near-duplicate pairs within train", f["train_train_pairs"]),
        (
            "test images with a near-duplicate in train",
            f"{f['test_near_train']} ({test_share:.2f} % of {f['test_images']})",
        ),  # fmt: skip
        ("similarity threshold", f"{f['duplicate_threshold']} (best correlation of the two images aligned)"),
    ]
    flagged = sorted(f["label_issues_by_given_class"].items(), key=lambda kv: -kv[1])
    by_class = table(("given class", "flagged"), flagged, (False, True))
    anchors = (f"<p>For scale: Northcutt et al. (NeurIPS 2021) found {NORTHCUTT_2021_CIFAR10_TEST_ERRORS} label "
               f"errors in CIFAR-10's 10,000 test images after human review (the flags here are candidates, on the "
               f"training images, before any review); ciFAIR (Barz &amp; Denzler 2020) found near-duplicates "
               f"of training images for {CIFAIR_2020_TEST_NEAR_TRAIN_PERCENT} % of CIFAR-10's test "
               "images.</p>")  # fmt: skip
    return key_values(pairs) + anchors + "<h3>Flags by given class</h3>" + by_class


def _issues(
    facts: AuditFacts, issues: LabelIssues, probabilities: np.ndarray, labels: np.ndarray, images: torch.Tensor
) -> str:
    if len(issues.index) == 0:
        return "<p>Confident learning flagged no label: each agrees with what the fold models expect.</p>"
    names = facts.class_names
    shown = issues.index[:ISSUES_SHOWN]
    intro = (f"<p>The {len(shown)} images whose labels look least likely, of {len(issues.index)} flagged (all are in "
             "label_issues.csv). Under each: the label it has, the class the out-of-fold model prefers, and the "
             "label quality score (the probability given to its label; 0 is surely wrong).</p>")  # fmt: skip
    cells = []
    for i, suggested, score in zip(shown, issues.suggested, issues.score):
        given, better, where = esc(names[labels[i]]), esc(names[suggested]), esc(facts.paths[i])
        caption = (f'<span title="given: {given}">given: {given}</span><span class="wrong" title="suggested: {better}">'
                   f"suggested: {better}</span><span>score {score:.2g}</span>"
                   f'<span title="{where}">{esc(Path(facts.paths[i]).name)}</span>')  # fmt: skip
        picture = img(figures.thumbnail_png(images[i].cpu().numpy()), facts.paths[i], "thumb")
        cells.append(f"<figure>{picture}<figcaption>{caption}</figcaption></figure>")
    return intro + '<div class="grid">' + "".join(cells) + "</div>"


def _duplicates(
    facts: AuditFacts, duplicates: list[DuplicatePair], train_images: torch.Tensor, test_images: torch.Tensor
) -> str:
    if not duplicates:
        return "<p>No pair of images reached the similarity threshold.</p>"
    parts = []
    for kind, title, source in (("test-train", "Test images and their nearest training image", test_images),
                                ("train-train", "Pairs within the training images", train_images)):  # fmt: skip
        pairs = [pair for pair in duplicates if pair.kind == kind]
        if not pairs:
            parts.append(f"<h3>{title}</h3><p>None at or above the threshold.</p>")
            continue
        first_paths = facts.test_paths if kind == "test-train" else facts.paths
        cells = []
        for pair in pairs[:PAIRS_SHOWN]:
            a, b = source[pair.first].cpu().numpy(), train_images[pair.second].cpu().numpy()
            gap = np.full((3, a.shape[1], 2), 255, dtype=np.uint8)
            picture = img(figures.thumbnail_png(np.concatenate([a, gap, b], axis=2)),
                          f"{first_paths[pair.first]} and {facts.paths[pair.second]}", "pair")  # fmt: skip
            exact = " (identical pixels)" if pair.pixel_difference == 0 else ""
            caption = (f"<span>similarity {pair.similarity:.3f}</span><span>pixel difference "
                       f"{pair.pixel_difference:.1f}{exact}</span>"
                       f'<span title="{esc(first_paths[pair.first])}">{esc(Path(first_paths[pair.first]).name)} · '
                       f'{esc(Path(facts.paths[pair.second]).name)}</span>')  # fmt: skip
            cells.append(f"<figure>{picture}<figcaption>{caption}</figcaption></figure>")
        more = f" ({PAIRS_SHOWN} of {len(pairs)} shown; all are in duplicates.csv)" if len(pairs) > PAIRS_SHOWN else ""
        parts.append(f"<h3>{title}{more}</h3>" + '<div class="grid pairs">' + "".join(cells) + "</div>")
    return "".join(parts)


def _method(f: dict[str, Any]) -> str:
    return (
        f"<p>The images were dealt into {f['folds']} folds, each class evenly. For each fold a {esc(f['preset'])} "
        "model trained on the other folds and gave probabilities for the images of this one, so every image was "
        "judged by a model that had not seen it (its label included). Confident learning (the cleanlab library; "
        "Northcutt et al., JAIR 2021) then estimated, for each pair of classes, how many images of one carry the "
        "other's label, and flagged that many of the least likely labels. A flag is a candidate for a person to look "
        "at, not a verdict: ambiguous images (a cat that looks like a dog) are flagged too.</p>"
        "<p>Near-duplicates: each image's nearest training images, by their 16x16 versions and by the first fold "
        "model's features, are aligned with it: the centre of one, zoomed in up to 1.33 times, slid over the other. "
        "Two images' similarity is the best correlation found (1 for a copy; near 1 for the same shot shifted, "
        "cropped, rescaled, recoloured or re-encoded). Each training image is paired with its most similar other "
        "training image, and each test image with its most similar training image; pairs at or above the threshold "
        "are listed, with the mean absolute pixel difference (0 to 255; 0 is a copy).</p>"
    )
