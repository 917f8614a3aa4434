"""How well the audit's near-duplicate finder finds the same shot edited, and how rarely it pairs different photos.

    python benchmarks/near_duplicates.py ../shared/datasets/cifar10-jpeg --model runs/fast88 --full \
        --sheet /tmp/negatives.png --judged benchmarks/audit/near-duplicates-judged.csv \
        --out benchmarks/audit/near-duplicates.json
    python benchmarks/near_duplicates.py DATA [--model RUN_DIR] [--per-edit 200] [--negatives 1200] [--sheet PNG]
                                              [--judged CSV] [--full]

Made near-duplicates: `--per-edit` distinct training images for each edit of `cifarlab.auditing.edits` (a shift, a
crop, a rescale, a colour change, a JPEG re-encoding, and all but the shift at once), each looked up against the
training images as a test image would be. One is found at a threshold when its best match is its own source at or
above it.

Different photographs: `--negatives` test images drawn at random, each with its best match among the training
images. CIFAR-10's test set has real near-duplicates of training images (ciFAIR: about 3 %), so the matches from
`--sheet-from` up are drawn side by side (`--sheet`, most similar first, numbered) for a person to judge; a
`--judged` CSV (`test,train,same_shot` with 1 or 0) then splits them into real near-duplicates and different
photographs. Precision at a threshold is the made near-duplicates found over those plus the different photographs
flagged (as many made near-duplicates as negatives drawn, so a 1:1 mix).

Both are measured for the old finder (the frame embedding alone, nearest by correlation of the 16x16 versions, as
`cifarlab audit` did before) and the new one (candidates by frame embedding and, with `--model`, the network's
features, then aligned). `--full` also counts the test images with a near-duplicate in train over the whole data,
with each finder at its default threshold, and times both.
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import numpy as np
import torch

from cifarlab._io.atomic import write_json
from cifarlab.auditing.duplicates import DEFAULT_THRESHOLD, embed, find_duplicates, nearest
from cifarlab.auditing.edits import EDITS, make_near_duplicates
from cifarlab.data import Split, load_dataset
from cifarlab.device import describe_hardware
from cifarlab.inference.classifier import Classifier

THRESHOLDS = (0.85, 0.9, 0.93, 0.95, 0.97, 0.98)
OLD_THRESHOLD = 0.97  # the frame-only finder's default


def old_matches(train: torch.Tensor, queries: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The frame-only finder: each query's nearest training image by the 16x16 correlation, and that correlation."""
    keys, found = embed(train), embed(queries)
    index = nearest(found, keys, 1, same=False)[:, 0]
    return index, (found * keys[index]).sum(dim=1)


def new_matches(
    train: Split, queries: torch.Tensor, classifier: Classifier | None, train_features: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The audit's finder: each query's best aligned training image and its similarity."""
    features = None if classifier is None else (train_features, classifier.descriptors(queries))
    split = Split(queries, torch.zeros(len(queries), dtype=torch.int64))
    pairs = find_duplicates(train, split, threshold=-2.0, features=features, within_train=False)
    index, similarity = torch.full((len(queries),), -1), torch.full((len(queries),), -2.0)
    for pair in pairs:
        index[pair.first], similarity[pair.first] = pair.second, pair.similarity
    return index, similarity


def read_judged(path: Path | None) -> dict[tuple[int, int], bool]:
    """(test, train) -> same shot, from a judged CSV."""
    if path is None or not path.is_file():
        return {}
    with path.open() as f:
        return {(int(row["test"]), int(row["train"])): row["same_shot"] == "1" for row in csv.DictReader(f)}


def draw_sheet(path: Path, test: torch.Tensor, train: torch.Tensor, pairs: list[tuple[int, int, float]]) -> None:
    """Pairs side by side, most similar first, six to a row, numbered in the order listed."""
    from PIL import Image, ImageDraw

    scale, columns, cell = 3, 6, (2 * 32 + 4) * 3 + 24
    rows = (len(pairs) + columns - 1) // columns
    sheet = Image.new("RGB", (columns * cell, max(rows, 1) * (32 * scale + 18)), "white")
    draw = ImageDraw.Draw(sheet)
    for n, (q, k, similarity) in enumerate(pairs):
        x, y = (n % columns) * cell, (n // columns) * (32 * scale + 18)
        for offset, image in ((0, test[q]), (32 * scale + 4, train[k])):
            tile = Image.fromarray(image.permute(1, 2, 0).numpy()).resize((32 * scale, 32 * scale), Image.NEAREST)
            sheet.paste(tile, (x + offset, y))
        draw.text((x, y + 32 * scale + 2), f"{n} t{q} k{k} {similarity:.3f}", fill="black")
    sheet.save(path)


def summarise(
    kinds: list[str],
    made_ok: torch.Tensor,
    made_score: torch.Tensor,
    negatives: list[tuple[int, int, float]],
    judged: dict[tuple[int, int], bool],
) -> list[dict]:
    """Per threshold: recall overall and per edit, negatives flagged, judged real or not, precision."""
    rows = []
    for threshold in THRESHOLDS:
        found = made_ok & (made_score >= threshold)
        flagged = [(q, k) for q, k, s in negatives if s >= threshold]
        real = sum(judged.get(pair, False) for pair in flagged)
        unjudged = sum(pair not in judged for pair in flagged)
        different = len(flagged) - real - unjudged
        recall = float(found.float().mean())
        rows.append({
            "threshold": threshold,
            "recall": round(recall, 4),
            "recall_by_edit": {e: round(float(found[[i for i, k in enumerate(kinds) if k == e]].float().mean()), 3)
                               for e in EDITS},
            "negatives_flagged": len(flagged),
            "judged_same_shot": real,
            "judged_different": different,
            "unjudged": unjudged,
            "precision": round(int(found.sum()) / max(int(found.sum()) + different, 1), 4) if not unjudged else None,
        })  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data")
    parser.add_argument("--model", help="a run directory whose network gives the features (the audit's fold model)")
    parser.add_argument("--per-edit", type=int, default=200)
    parser.add_argument("--negatives", type=int, default=1200)
    parser.add_argument("--sheet", type=Path, help="PNG of the negatives' matches from --sheet-from up")
    parser.add_argument("--sheet-from", type=float, default=0.9, help="lowest similarity drawn on --sheet")
    parser.add_argument("--judged", type=Path, help="CSV test,train,same_shot judging those matches by eye")
    parser.add_argument("--full", action="store_true", help="also count test images near train over the whole data")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    dataset = load_dataset(args.data, progress=False)
    train, test = dataset.train, dataset.test
    classifier = Classifier.load(args.model) if args.model else None
    started = time.perf_counter()
    train_features = classifier.descriptors(train.images) if classifier else None
    feature_seconds = time.perf_counter() - started
    made, sources, kinds = make_near_duplicates(train.images, args.per_edit, seed=0)
    picked = torch.from_numpy(np.random.default_rng(1).choice(len(test), args.negatives, replace=False))
    judged = read_judged(args.judged)
    record: dict = {"data": args.data, "model": args.model, "per_edit": args.per_edit, "negatives": args.negatives,
                    "hardware": describe_hardware(torch.device("cpu")),
                    "feature_seconds": round(feature_seconds, 1)}  # fmt: skip
    for name, match in (("old", lambda q: old_matches(train.images, q)),
                        ("new", lambda q: new_matches(train, q, classifier, train_features))):  # fmt: skip
        index, score = match(made)
        negative_index, negative_score = match(test.images[picked])
        negatives = sorted(((int(picked[i]), int(negative_index[i]), float(negative_score[i]))
                            for i in range(len(picked))), key=lambda n: -n[2])  # fmt: skip
        record[name] = summarise(kinds, index == sources, score, negatives, judged)
        if name == "new" and args.sheet:
            drawn = [n for n in negatives if n[2] >= args.sheet_from]
            draw_sheet(args.sheet, test.images, train.images, drawn)
            with args.sheet.with_suffix(".csv").open("w", newline="") as f:  # to fill in as a --judged file
                writer = csv.writer(f)
                writer.writerow(["n", "test", "train", "similarity", "same_shot"])
                writer.writerows([n, q, k, f"{s:.4f}", ""] for n, (q, k, s) in enumerate(drawn))
        print(name)
        for row in record[name]:
            print(f"  {row['threshold']:.2f}: recall {row['recall']:.3f} {row['recall_by_edit']}  negatives flagged "
                  f"{row['negatives_flagged']} (same shot {row['judged_same_shot']}, different "
                  f"{row['judged_different']}, unjudged {row['unjudged']}) precision {row['precision']}",
                  flush=True)  # fmt: skip
    if args.full:
        started = time.perf_counter()
        _, score = old_matches(train.images, test.images)
        record["full_old"] = {"threshold": OLD_THRESHOLD, "test_near_train": int((score >= OLD_THRESHOLD).sum()),
                              "seconds": round(time.perf_counter() - started, 1)}  # fmt: skip
        started = time.perf_counter()
        features = None if classifier is None else (train_features, classifier.descriptors(test.images))
        pairs = find_duplicates(train, test, DEFAULT_THRESHOLD, features=features)
        record["full_new"] = {
            "threshold": DEFAULT_THRESHOLD,
            "test_near_train": sum(p.kind == "test-train" for p in pairs),
            "train_train_pairs": sum(p.kind == "train-train" for p in pairs),
            "seconds": round(time.perf_counter() - started + feature_seconds, 1),
        }
        print("whole data:", record["full_old"], record["full_new"])
    if args.out:
        write_json(args.out, record)


if __name__ == "__main__":
    main()
