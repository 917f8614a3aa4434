"""Recall of planted label errors: move a share of an image folder's training images to a wrong class, audit it.

    python scripts/audit_planted.py ../shared/datasets/cifar10-jpeg --share 0.02 --work /tmp/planted
    python scripts/audit_planted.py ../shared/datasets/cifar10-jpeg --per-class 500 --epochs 3   # a quick look
    python scripts/audit_planted.py ../shared/datasets/cifar10-jpeg --per-class 1000 --flips confused \
        --model runs/fast88 --presets fast88,fast94 --seeds 0,1 --work /tmp/planted-confused

The planted copy is a folder of symbolic links (nothing is copied): `WORK/images/train/<class>/<file>` links to the
original, except the planted images, which link from a wrong class's folder, and `WORK/images/test` links to the
original test folder. The wrong class is drawn at random (`--flips uniform`) or, as real label errors mostly are,
the class the image is most easily taken for (`--flips confused`): the most likely class other than its own by the
model `--model` (a run trained on the same kind of images). The audit then runs on it (`cifarlab audit`, resumable),
once per preset of `--presets` (the first also once per seed of `--seeds`), and the script prints, for k = the number
planted:
- confident learning: how many of the planted it flagged, its flags' precision, and its recall among its first k;
- the baseline: recall among the k images with the highest loss of their given label (no thresholds, no count);
- the same for the first preset's fold models predicting without test-time augmentation, and for its seeds'
  out-of-fold probabilities averaged;
- the time each audit took, and the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from cifarlab.auditing import audit
from cifarlab.auditing.label_issues import find_label_issues, loss_ranking, recall_at
from cifarlab.device import describe_hardware, resolve_device
from cifarlab.inference.classifier import Classifier


def plant(
    source: Path, work: Path, share: float, per_class: int | None, seed: int, confused_with: Classifier | None = None
) -> list[str]:
    """Build WORK/images from `source` with `share` of the training images under a wrong class; their paths.

    `confused_with`: the wrong class is the one this model finds most likely after the image's own (else uniform).
    """
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
    wrong = {i: classes[(classes.index(everything[i][0]) + rng.integers(1, len(classes))) % len(classes)]
             for i in sorted(chosen)}  # fmt: skip
    if confused_with is not None:
        order = sorted(chosen)
        predictions = confused_with.predict_files([source / "train" / c / n for c, n in (everything[i] for i in order)],
                                                  top_k=2)  # fmt: skip
        wrong = {i: next(c for c in p.classes if c != everything[i][0]) for i, p in zip(order, predictions)}
    planted = []
    for i, (cls, name) in enumerate(everything):
        target_class = wrong.get(i, cls)
        link = images / "train" / target_class / (name if target_class == cls else f"planted-from-{cls}-{name}")
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink((source / "train" / cls / name).resolve(), link)
        if i in chosen:
            planted.append(str(link))
    os.symlink((source / "test").resolve(), images / "test")
    planted_record.write_text(json.dumps(planted))
    return planted


def report(name: str, labels: np.ndarray, probabilities: np.ndarray, planted_index: np.ndarray, minutes: float) -> dict:
    """Print and return one variant's recall figures."""
    flags = find_label_issues(labels, probabilities).index
    hits = np.isin(flags, planted_index)
    k = len(planted_index)
    row = {"variant": name, "flags": len(flags), "flagged_planted": int(hits.sum()),
           "recall_at_k": round(recall_at(flags, planted_index), 4),
           "loss_recall_at_k": round(recall_at(loss_ranking(labels, probabilities), planted_index), 4),
           "oof_accuracy": round(float((probabilities.argmax(axis=1) == labels).mean()), 4),
           "minutes": round(minutes, 1)}  # fmt: skip
    print(f"{name}: out of fold {row['oof_accuracy'] * 100:.2f} %; confident learning {len(flags)} flags, "
          f"{hits.sum()} planted (precision {hits.mean() * 100 if len(flags) else 0:.1f} %, recall "
          f"{hits.sum() / k * 100:.1f} %), recall among its first {k}: {row['recall_at_k'] * 100:.1f} %; "
          f"loss ranking: {row['loss_recall_at_k'] * 100:.1f} %; {minutes:.1f} min", flush=True)  # fmt: skip
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("source", type=Path, help="an image folder with train/ and test/")
    parser.add_argument("--work", type=Path, default=Path("/tmp/audit-planted"))
    parser.add_argument("--share", type=float, default=0.02, help="share of training images planted (default 0.02)")
    parser.add_argument("--per-class", type=int, help="use only N training images per class (a quick look)")
    parser.add_argument("--flips", choices=("uniform", "confused"), default="uniform")
    parser.add_argument("--model", help="run directory whose model picks the wrong class for --flips confused")
    parser.add_argument("--presets", default="fast88", help="comma-separated presets of the fold models")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds of the first preset's audits")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--seed", type=int, default=0, help="seed of the planting")
    parser.add_argument("--out", type=Path, help="a JSON file for the figures")
    args = parser.parse_args()
    if args.flips == "confused" and not args.model:
        parser.error("--flips confused needs --model RUN_DIR")

    confused_with = Classifier.load(args.model) if args.flips == "confused" else None
    planted = plant(args.source, args.work, args.share, args.per_class, args.seed, confused_with)
    extra = {"epochs": args.epochs} if args.epochs is not None else {}
    presets, seeds = args.presets.split(","), [int(s) for s in args.seeds.split(",")]
    runs = [(presets[0], s) for s in seeds] + [(p, seeds[0]) for p in presets[1:]]
    rows, first = [], []
    machine = describe_hardware(resolve_device("auto"))
    for preset, seed in runs:
        out = args.work / f"audit-{preset}-s{seed}"
        result = audit(str(args.work / "images"), preset=preset, folds=args.folds, out=out, seed=seed, quiet=True,
                       **extra)  # fmt: skip
        planted_index = np.nonzero(np.isin(np.asarray(result.paths), planted))[0]
        if seed == seeds[0] and preset == presets[0]:
            print(f"{result.images} training images, {len(planted_index)} planted ({args.flips} flips); "
                  f"{args.folds} folds; {machine}")  # fmt: skip
        rows.append(report(f"{preset} seed {seed}", result.labels, result.probabilities, planted_index,
                           result.seconds / 60))  # fmt: skip
        if preset == presets[0]:
            first.append(result)
    base = first[0]
    planted_index = np.nonzero(np.isin(np.asarray(base.paths), planted))[0]
    started = time.perf_counter()
    plain = without_tta(base, args.folds, seeds[0])
    print(f"(re-predicting without test-time augmentation took {time.perf_counter() - started:.0f} s)")
    rows.append(report(f"{presets[0]} seed {seeds[0]}, no test-time augmentation", base.labels, plain,
                       planted_index, base.seconds / 60))  # fmt: skip
    if len(first) > 1:  # the same images in the same order in every audit of the same folder
        mean = np.mean([r.probabilities for r in first], axis=0)
        rows.append(report(f"{presets[0]} seeds {args.seeds} averaged", base.labels, mean, planted_index,
                           sum(r.seconds for r in first) / 60))  # fmt: skip
    if args.out:
        record = {"source": str(args.source), "per_class": args.per_class, "share": args.share, "flips": args.flips,
                  "model": args.model, "folds": args.folds, "hardware": machine, "planted": len(planted_index),
                  "images": base.images, "variants": rows}  # fmt: skip
        args.out.write_text(json.dumps(record, indent=2) + "\n")


def without_tta(result, folds: int, seed: int) -> np.ndarray:
    """The out-of-fold probabilities again, each fold model predicting its held-out images without TTA."""
    from cifarlab.auditing.folds import assign_folds, fold_run_dir
    from cifarlab.data import load_dataset

    dataset = load_dataset(str(result.out.parent / "images"), progress=False)
    fold = assign_folds(torch.as_tensor(result.labels), folds, seed)  # the audit's own deal
    probabilities = np.zeros_like(result.probabilities)
    for k in range(folds):
        held_out = np.nonzero(fold == k)[0]
        classifier = Classifier.load(fold_run_dir(result.out, k))
        probabilities[held_out] = classifier.predict(dataset.train.images[held_out], tta=False).numpy()
    return probabilities


if __name__ == "__main__":
    main()
