"""Recall of planted label errors: move a share of an image folder's training images to a wrong class, audit it.

    python scripts/audit_planted.py ../shared/datasets/cifar10-jpeg --share 0.02 --work /tmp/planted
    python scripts/audit_planted.py ../shared/datasets/cifar10-jpeg --per-class 500 --epochs 3   # a quick look

The planted copy is a folder of symbolic links (nothing is copied): `WORK/images/train/<class>/<file>` links to the
original, except the planted images, which link from a wrong class's folder (chosen at random, seeded), and
`WORK/images/test` links to the original test folder. The audit then runs on it (`cifarlab audit`, resumable), and
the script prints, for k = the number planted:
- confident learning: how many of the planted it flagged, its flags' precision, and its recall among its first k;
- the baseline: recall among the k images with the highest loss of their given label (no thresholds, no count);
- the time the audit took, and the machine.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

from cifarlab.auditing import audit
from cifarlab.auditing.label_issues import loss_ranking, recall_at
from cifarlab.device import describe_hardware, resolve_device


def plant(source: Path, work: Path, share: float, per_class: int | None, seed: int) -> list[str]:
    """Build WORK/images from `source` with `share` of the training images under a wrong class; their paths."""
    images = work / "images"
    planted_record = work / "planted.json"
    if planted_record.is_file():  # resuming: the same planted copy
        return json.loads(planted_record.read_text())
    rng = np.random.default_rng(seed)
    classes = sorted(p.name for p in (source / "train").iterdir() if p.is_dir())
    files = {c: sorted(p.name for p in (source / "train" / c).iterdir()) for c in classes}
    if per_class is not None:
        files = {c: sorted(rng.choice(names, min(per_class, len(names)), replace=False)) for c, names in files.items()}
    everything = [(c, name) for c in classes for name in files[c]]
    chosen = set(rng.choice(len(everything), round(share * len(everything)), replace=False).tolist())
    planted = []
    for i, (cls, name) in enumerate(everything):
        target_class = cls
        if i in chosen:
            target_class = classes[(classes.index(cls) + rng.integers(1, len(classes))) % len(classes)]
        link = images / "train" / target_class / (name if target_class == cls else f"planted-from-{cls}-{name}")
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink((source / "train" / cls / name).resolve(), link)
        if i in chosen:
            planted.append(str(link))
    os.symlink((source / "test").resolve(), images / "test")
    planted_record.write_text(json.dumps(planted))
    return planted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("source", type=Path, help="an image folder with train/ and test/")
    parser.add_argument("--work", type=Path, default=Path("/tmp/audit-planted"))
    parser.add_argument("--share", type=float, default=0.02, help="share of training images planted (default 0.02)")
    parser.add_argument("--per-class", type=int, help="use only N training images per class (a quick look)")
    parser.add_argument("--preset", default="fast88")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    planted = plant(args.source, args.work, args.share, args.per_class, args.seed)
    extra = {"epochs": args.epochs} if args.epochs is not None else {}
    result = audit(str(args.work / "images"), preset=args.preset, folds=args.folds, out=args.work / "audit",
                   seed=args.seed, quiet=True, **extra)  # fmt: skip
    planted_index = np.nonzero(np.isin(np.asarray(result.paths), planted))[0]
    flags = result.label_issues.index
    hits = np.isin(flags, planted_index)
    k = len(planted_index)
    baseline = loss_ranking(result.labels, result.probabilities)
    machine = describe_hardware(resolve_device("auto"))
    print(f"{result.images} training images, {k} planted ({k / result.images * 100:.2f} %); {args.preset}, "
          f"{args.folds} folds; {result.seconds / 60:.1f} min on {machine}")  # fmt: skip
    print(f"out-of-fold accuracy {result.oof_accuracy * 100:.2f} %")
    print(f"confident learning: {len(flags)} flags, {hits.sum()} of them planted (precision "
          f"{hits.mean() * 100 if len(flags) else 0:.1f} %, recall {hits.sum() / k * 100:.1f} %); "
          f"recall among its first {k}: {recall_at(flags, planted_index) * 100:.1f} %")  # fmt: skip
    print(f"loss ranking alone: recall among its first {k}: {recall_at(baseline, planted_index) * 100:.1f} %")


if __name__ == "__main__":
    main()
