"""`cifarlab.audit()`: out-of-fold probabilities, confident learning, near-duplicates, and the files they go to.

OUT holds `plan.json` (what is audited: data, preset, folds, seed; a later call must match it), `folds/fold-<k>/`
(the K resumable runs and their held-out probabilities), and at the end `label_issues.csv`, `duplicates.csv`,
`audit.json` (the figures) and `audit.html` (the images).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cifarlab import api, progress
from cifarlab._io.atomic import write_json, write_text
from cifarlab._io.digest import digest_arrays
from cifarlab.auditing.duplicates import DEFAULT_THRESHOLD, DuplicatePair, find_duplicates
from cifarlab.auditing.folds import (
    FOLD_VAL_SIZE,
    assign_folds,
    check_audit_data,
    fold_run_dir,
    out_of_fold_probabilities,
)
from cifarlab.auditing.label_issues import LabelIssues, find_label_issues
from cifarlab.data import Dataset, Split
from cifarlab.data.dataset import select_classes
from cifarlab.device import describe_hardware, resolve_device
from cifarlab.inference.classifier import Classifier
from cifarlab.reports.audit_report import AuditFacts, write_audit_report

PLAN_NAME = "plan.json"
LABEL_ISSUES_NAME = "label_issues.csv"
DUPLICATES_NAME = "duplicates.csv"
AUDIT_JSON = "audit.json"
AUDIT_HTML = "audit.html"


@dataclass
class AuditResult:
    """What an audit found and where it wrote it."""

    out: Path
    images: int  # training images audited
    oof_accuracy: float  # share of them whose out-of-fold prediction agrees with the label
    label_issues: LabelIssues
    duplicates: list[DuplicatePair]
    paths: list[str]  # each audited image's path (or 'train[i]' for data without files), in audit order
    labels: np.ndarray  # (N,) the given labels, in the same order
    probabilities: np.ndarray  # (N, K) out-of-fold probabilities, in the same order
    seconds: float

    def _repr_html_(self) -> str:
        """A notebook's card: the likely label errors, the worst of them, per class."""
        from cifarlab.display.html import audit_html

        return audit_html(self)

    def plot(self) -> Any:
        """Likely label errors per given class as a matplotlib Figure."""
        from cifarlab.display.figures import audit_figure
        from cifarlab.display.html import audit_classes

        return audit_figure(audit_classes(self), self.labels, np.asarray(self.label_issues.index))

    def summary(self) -> str:
        """The lines the command prints."""
        kinds = [pair.kind for pair in self.duplicates]
        return (
            f"audited {self.images} training images: out-of-fold accuracy {self.oof_accuracy * 100:.2f} %, "
            f"{len(self.label_issues.index)} likely label errors "
            f"({len(self.label_issues.index) / self.images * 100:.2f} %), "
            f"{kinds.count('train-train')} near-duplicate pairs within train, {kinds.count('test-train')} test images "
            f"near a training image; {self.seconds / 60:.1f} min\n"
            f"wrote {self.out / LABEL_ISSUES_NAME}, {self.out / DUPLICATES_NAME}, {self.out / AUDIT_JSON}, "
            f"{self.out / AUDIT_HTML}"
        )


def audit(
    data: str | None = None,
    *,
    preset: str = "fast94",
    folds: int = 5,
    out: str | Path = "runs/audit",
    seed: int = 0,
    duplicate_threshold: float = DEFAULT_THRESHOLD,
    quiet: bool = False,
    dataset: Dataset | None = None,
    **overrides: Any,
) -> AuditResult:
    """Find likely label errors and near-duplicates in a dataset's training images.

    Args:
        data: 'cifar10' or an image folder (train/, test/, optional val/; val/ is audited with train/).
        preset: the recipe of the K fold models (a fast one: each trains on (K-1)/K of the images). fast94 by
            default: on realistic label errors it finds a quarter more than fast88 for 1.7 times the time
            (docs/audit.md).
        folds: K; every image is judged by the model trained on the other K-1 folds.
        out: the audit's folder; running again with the same plan resumes it.
        seed: the seed of the folds' deal and of the fold runs.
        duplicate_threshold: similarity (the best correlation of two images once aligned: a shift, a crop, a
            change of brightness or colour leave it near 1) from which two images are listed as near-duplicates.
        quiet: no progress bars or per-epoch lines.
        dataset: data already in memory (otherwise `data` is loaded).
        **overrides: data and machine options of the fold runs (`epochs=`, `precision=`, `image_size=`, ...).

    Raises:
        ValueError: for data an audit cannot fold (one class, a class smaller than `folds`), a bad option, or an
            `out` that holds another audit (one line each, before anything trains).

    Example:
        >>> result = cifarlab.audit("../shared/datasets/cifar10-jpeg", folds=5)
        >>> print(result.summary())
    """
    import cleanlab  # noqa: F401  (the audit extra: missing, it ends here in one line, before any fold trains)

    if not 0 < duplicate_threshold <= 1:
        raise ValueError(f"--duplicate-threshold must be a similarity in (0, 1], got {duplicate_threshold}")
    if data is not None:
        overrides["data"] = data
    # each fold run validates on a slice of its own training folds (temperature, best epoch), never the judged fold
    config = api.resolve_config(preset, seed=seed, quiet=quiet, **({"val_size": FOLD_VAL_SIZE} | overrides))
    out = Path(out)
    started = time.perf_counter()
    dataset = dataset if dataset is not None else api.load_training_data(config)
    dataset = select_classes(dataset, config.data.classes, config.data.per_class_limit, seed)
    config = dataclasses.replace(config, data=dataclasses.replace(config.data, classes=None, per_class_limit=None))
    pool = _audited_images(dataset)
    check_audit_data(pool, dataset.class_names, folds, dataset.source or "the data")
    _check_plan(out, config, dataset, pool, folds)

    fold = assign_folds(pool.labels, folds, seed)

    def announce(k: int) -> None:
        if not quiet:
            progress.write(f"audit: fold {k + 1} of {folds} ({fold_run_dir(out, k)})")

    probabilities = out_of_fold_probabilities(config, dataset, pool, fold, out, on_fold=announce)
    labels = pool.labels.cpu().numpy()
    issues = find_label_issues(labels, probabilities)

    # the first fold's network describes the images whose neighbours are aligned beside the frame embedding's
    network = Classifier.load(fold_run_dir(out, 0), device=config.device, precision=config.precision)
    features = (network.descriptors(pool.images), network.descriptors(dataset.test.images))
    duplicates = find_duplicates(pool, dataset.test, duplicate_threshold, features=features)
    result = AuditResult(
        out=out,
        images=len(pool),
        oof_accuracy=float((probabilities.argmax(axis=1) == labels).mean()),
        label_issues=issues,
        duplicates=duplicates,
        paths=_paths(pool, dataset.source, "train"),
        labels=labels,
        probabilities=probabilities,
        seconds=time.perf_counter() - started,
    )
    test_paths = _paths(dataset.test, dataset.source, "test")
    _write_outputs(result, dataset, pool, probabilities, test_paths, config, folds, duplicate_threshold)
    return result


def _audited_images(dataset: Dataset) -> Split:
    """The training images, with a folder's own val/ images after them (an audit judges every labelled image)."""
    if dataset.val is None:
        return dataset.train
    train, val = dataset.train, dataset.val
    files = np.concatenate([train.files, val.files]) if train.files is not None and val.files is not None else None
    return Split(torch.cat([train.images, val.images]), torch.cat([train.labels, val.labels]), files)


def _paths(split: Split, source: str, name: str) -> list[str]:
    """Each image's path under the data folder, or 'train[i]' for data that has no files (CIFAR-10's batches)."""
    if split.files is None:
        return [f"{name}[{i}]" for i in range(len(split))]
    return [str(Path(source) / relative) for relative in split.files.tolist()]


def _check_plan(out: Path, config: Any, dataset: Dataset, pool: Split, folds: int) -> None:
    """Write OUT/plan.json, or check that the one there is this audit's (so its folds can be reused).

    The plan holds a digest of the audited images and labels, not only their count: a folder whose images or labels
    changed (a label fixed after the last audit) would otherwise be judged by stale out-of-fold probabilities.
    """
    recipe = config.to_dict()
    for key in ("out", "quiet", "device", "precision"):  # where and how it runs, not what it computes
        recipe.pop(key, None)
    digest = digest_arrays({"images": pool.images, "labels": pool.labels})
    plan = {"source": dataset.source, "class_names": dataset.class_names, "images": len(pool),
            "data_sha256": digest, "folds": folds, "config": recipe}  # fmt: skip
    path = out / PLAN_NAME
    if path.is_file():
        try:
            before = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            problem = f"{path} is not a readable audit plan ({error})"
            raise ValueError(f"{problem}; delete {out} or choose another --out") from None
        if before != json.loads(json.dumps(plan)):
            changed = sorted(key for key in plan if before.get(key) != json.loads(json.dumps(plan[key])))
            raise ValueError(f"--out {out} holds another audit (its {', '.join(changed)} differ); choose another "
                             f"--out, or delete it to start again")  # fmt: skip
        return
    if out.is_dir() and any(out.iterdir()):
        raise ValueError(f"--out {out} exists and is not an audit folder (no {PLAN_NAME}); choose a new directory")
    write_json(path, plan)


def _csv(header: list[str], rows: list[list[Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def _write_outputs(
    result: AuditResult,
    dataset: Dataset,
    pool: Split,
    probabilities: np.ndarray,
    test_paths: list[str],
    config: Any,
    folds: int,
    threshold: float,
) -> None:
    names = dataset.class_names
    labels = pool.labels.cpu().numpy()
    issues = result.label_issues
    write_text(result.out / LABEL_ISSUES_NAME, _csv(
        ["rank", "path", "given", "suggested", "score", "p_given", "p_suggested"],
        [[rank, result.paths[i], names[labels[i]], names[s], f"{score:.5f}", f"{probabilities[i, labels[i]]:.5f}",
          f"{probabilities[i, s]:.5f}"]
         for rank, (i, s, score) in enumerate(zip(issues.index, issues.suggested, issues.score), start=1)],
    ))  # fmt: skip
    test_labels = dataset.test.labels.cpu().numpy()
    rows = []
    for pair in result.duplicates:
        first_path, first_label = (
            (result.paths[pair.first], labels[pair.first]) if pair.kind == "train-train"
            else (test_paths[pair.first], test_labels[pair.first])
        )  # fmt: skip
        rows.append([pair.kind, first_path, result.paths[pair.second], names[first_label], names[labels[pair.second]],
                     f"{pair.similarity:.5f}", f"{pair.pixel_difference:.2f}"])  # fmt: skip
    write_text(result.out / DUPLICATES_NAME, _csv(
        ["kind", "path_a", "path_b", "label_a", "label_b", "similarity", "pixel_difference"], rows))  # fmt: skip
    kinds = [pair.kind for pair in result.duplicates]
    figures = {
        "source": dataset.source,
        "images": result.images,
        "test_images": len(dataset.test),
        "classes": names,
        "preset": config.preset,
        "folds": folds,
        "seed": config.seed,
        "oof_accuracy": result.oof_accuracy,
        "label_issues": len(issues.index),
        "label_issues_by_given_class": {n: int((labels[issues.index] == c).sum()) for c, n in enumerate(names)},
        "duplicate_threshold": threshold,
        "train_train_pairs": kinds.count("train-train"),
        "test_near_train": kinds.count("test-train"),
        "seconds": round(result.seconds, 1),
        "hardware": describe_hardware(resolve_device(config.device)),
    }
    write_json(result.out / AUDIT_JSON, figures)
    facts = AuditFacts(figures=figures, class_names=names, paths=result.paths, test_paths=test_paths)
    write_audit_report(result.out / AUDIT_HTML, facts, issues, result.duplicates, probabilities, labels,
                       pool.images, dataset.test.images)  # fmt: skip
