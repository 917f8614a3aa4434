"""report.html: one self-contained page that shows what a run did, where its model fails and how well calibrated it is.

Built from the files the run saved (config.json, metrics.json, history.csv, predictions.npz) and, for the grid of
mistakes, the test images of its data source; the model never runs again.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from cifarlab._io.atomic import write_text
from cifarlab._io.paths import writable_file
from cifarlab.evaluation.calibration import (
    ECE_BINS,
    GUO_2017_CIFAR10_ECE,
    MIN_CALIBRATION_IMAGES,
    apply_temperature,
    expected_calibration_error,
    fit_temperature,
    reliability_bins,
)
from cifarlab.evaluation.mistakes import MISTAKES_SHOWN, confident_mistakes
from cifarlab.evaluation.robustness import AUGMIX_2020_CIFAR10C_ERROR
from cifarlab.evaluation.tta import WORDS as TTA_WORDS
from cifarlab.inference.checkpoint import meta_path
from cifarlab.inference.explain import overlay
from cifarlab.reports import figures
from cifarlab.reports.html import esc, img, key_values, page, png_data_uri, section, table
from cifarlab.reports.plots import TEST_NOTE, plot_history
from cifarlab.reports.saved_run import SavedRun, load_run
from cifarlab.training.run_dir import PREDICTIONS_NAME, REPORT_NAME, ROBUSTNESS_EXAMPLES_NAME, RunFiles

CONFUSED_PAIRS_SHOWN = 8


def write_report(
    run_dir: str | Path,
    *,
    data: str | None = None,
    out: str | Path | None = None,
    test_images: Any = None,
) -> Path:
    """Write a run's report.html (by default in the run directory, with loss.png and accuracy.png); returns its path.

    The end of `cifarlab train` and `cifarlab report RUN` both come here: the report is drawn from the saved files.

    Args:
        run_dir: a finished run directory.
        data: where the run's test images are now, when they moved (a folder, or 'cifar10'); default: the
            run's own data source. Only the grid of mistakes needs them.
        out: the HTML file to write (default `run_dir/report.html`).
        test_images: the run's test split's images, (N, 3, H, W) uint8, when the caller has them in memory.

    Raises:
        FileNotFoundError: if `run_dir` is not a finished run.
        ValueError: if one of its files is unreadable.
    """
    run = load_run(run_dir)
    path = writable_file(out, "--out") if out is not None else run.run_dir / REPORT_NAME
    if out is None:  # the seed's two curve figures, beside the report in the run directory
        plot_history(run.history, run.run_dir)
    write_text(path, render_report(run, data=data, test_images=test_images))
    return path


def render_report(run: SavedRun, *, data: str | None = None, test_images: Any = None) -> str:
    """The report of a run as an HTML string (see `write_report`)."""
    predictions = run.predictions
    sections = [
        section("what-ran", "What ran", _what_ran(run)),
        section("result", "Result", _result(run)),
        section("curves", "Training curves", _curves(run)),
        section("classes", "Per-class accuracy and confusion matrix", _classes(run)),
        section("mistakes", "Most confident mistakes", _mistakes(run, predictions, data, test_images)),
        section("calibration", "Calibration", _calibration(run, predictions)),
        *([section("robustness", "Robustness to corruptions", _robustness(run))] if run.robustness else []),
        section("config", "Config and notes", _config(run)),
    ]
    title = f"cifarlab report: {run.label}"
    return page(title, f"{run.run_dir} - finished {run.finished_at}", sections)


def _curves(run: SavedRun) -> str:
    png = figures.curves_png(run.history, run.metrics.get("best_epoch"))
    note = f'<p class="note">{TEST_NOTE}.</p>' if run.history.has_test else ""
    return img(png, "loss, accuracy and learning rate per epoch") + note


def _what_ran(run: SavedRun) -> str:
    record, dataset = run.record, run.record.get("dataset", {})
    params = run.params
    counts = (
        f"{params['total']:,} total, {params['trainable']:,} trainable, {params['non_trainable']:,} non-trainable"
        if params
        else "unknown"
    )
    speed = run.images_per_second
    minutes, seconds = divmod(round(run.train_seconds), 60)
    rows = [
        ("preset", run.config.preset + _changed(run)),
        ("model", run.config.model),
        ("parameters (Keras-style)", counts),
        ("data source", dataset.get("source", run.config.data.source)),
        (
            "split sizes",
            f"train {dataset.get('train', '?')}, val {dataset.get('val', '?')}, test {dataset.get('test', '?')}",
        ),
        ("classes", ", ".join(run.class_names)),
        ("device, precision", f"{record.get('device', '?')}, {record.get('precision', '?')}"),
        ("hardware", record.get("hardware", "not recorded")),
        ("versions", _versions(record)),
        ("git revision", record.get("git_revision") or "unknown (cifarlab was not installed from a git checkout)"),
        ("finished", run.finished_at),
        ("training time", f"{minutes}m{seconds:02d}s over {run.epochs_run} epochs (each epoch's validation included)"),
        ("training speed", f"{speed:,.0f} images/s" if speed else "unknown"),
        ("random seed", run.config.seed),
    ]
    return key_values(rows)


def _changed(run: SavedRun) -> str:
    """What the run changed in its preset, as a note after the preset's name."""
    if run.scale is not None:
        return f" (epochs and patience scaled x{run.scale:.3g}, as by cifarlab ladder --epochs-scale)"
    if run.changes:
        return " (changed: " + ", ".join(f"{key}={value}" for key, value in run.changes.items()) + ")"
    return ""


def _versions(record: dict[str, Any]) -> str:
    names = ("cifarlab", "torch", "python")
    return ", ".join(f"{name} {record.get(f'{name}_version', '?')}" for name in names)


_NO_TEST = ("This run did not read the test split (a search's trial: the test split is kept for the re-runs of the "
            "best trials).")  # fmt: skip


def _result(run: SavedRun) -> str:
    metrics = run.metrics
    accuracy = metrics["test_accuracy"]
    if accuracy is None:
        return _result_without_test(run)
    tta = run.config.train.tta
    rows = [
        ("test accuracy", f"{accuracy:.4f} ({TTA_WORDS[tta]})"),
        ("test loss", f"{metrics['test']['loss']:.4f}"),
        ("epochs run", f"{run.epochs_run} of {run.epochs_planned}"),
        _weights_tested(run),
        ("last epoch", _last_epoch(run)),
        ("why training stopped", metrics.get("stopped", "not recorded (a run saved before runs recorded it)")),
    ]  # fmt: skip
    seed = run.seed_accuracy
    if seed is not None:
        rows.append(
            (
                "the Keras project's accuracy",
                f"{seed:.2f} % reported for this step (ours {accuracy * 100 - seed:+.2f} points)",
            )
        )
    return f'<p class="result">&gt; {accuracy * 100:.3f}</p>' + key_values(rows)


def _weights_tested(run: SavedRun) -> tuple[str, str]:
    """Which epoch's weights the saved model and the test figures are, and where the best val_accuracy's went."""
    metrics = run.metrics
    best = metrics.get("best_epoch")
    if best:
        return ("best epoch", f"{best} (val_accuracy {run.best_val_accuracy:.4f}, val_loss {metrics['val_loss']:.4f});"
                              " the saved model and the test figures are this epoch's")  # fmt: skip
    kept = meta_path(RunFiles(run.run_dir).best_checkpoint)
    if metrics.get("tested_epoch") and kept.is_file():  # train.test_weights = 'last', the seed's presets
        meta = json.loads(kept.read_text())
        return ("weights tested", f"epoch {metrics['tested_epoch']}'s, those in memory when training ended (as Keras' "
                f"model.evaluate after fit), saved as model.safetensors; the best val_accuracy, epoch {meta['epoch']} "
                f"({meta['metrics']['val_accuracy']:.4f}), is kept beside them as model-best.safetensors")  # fmt: skip
    return ("best epoch", "none kept (no validation split or no checkpoint callback): the last epoch's weights")


def _result_without_test(run: SavedRun) -> str:
    final = run.metrics.get("final_val") or {}
    value = final.get("accuracy")
    rows = [
        ("validation accuracy", "-" if value is None else f"{value:.4f} (the final model, as the search scores it)"),
        ("epochs run", f"{run.epochs_run} of {run.epochs_planned}"),
        ("last epoch", _last_epoch(run)),
        ("why training stopped", run.metrics.get("stopped", "not recorded")),
    ]
    big = "" if value is None else f'<p class="result">val &gt; {value * 100:.3f}</p>'
    return f'<p class="note">{esc(_NO_TEST)}</p>' + big + key_values(rows)


def _last_epoch(run: SavedRun) -> str:
    h = run.history.history
    if not len(run.history):
        return "no epochs"
    parts = [f"epoch {int(h['epoch'][-1])}: loss {h['loss'][-1]:.4f}, accuracy {h['accuracy'][-1]:.4f}"]
    if h["val_accuracy"][-1] == h["val_accuracy"][-1]:
        parts.append(f"val_loss {h['val_loss'][-1]:.4f}, val_accuracy {h['val_accuracy'][-1]:.4f}")
    return ", ".join(parts)


def _classes(run: SavedRun) -> str:
    test = run.metrics["test"] or run.metrics.get("final_val")
    if test is None:
        return "<p>No split was evaluated at the end of this run.</p>"
    which = "test" if run.metrics["test"] else "validation"
    split = "" if run.metrics["test"] else "<p>On the validation split: this run did not read the test split.</p>"
    names = run.class_names
    per_class = [float(test["per_class_accuracy"][name]) for name in names]
    per_class = [math.nan if v is None else v for v in per_class]
    confusion = np.asarray(test["confusion_matrix"], dtype=np.int64)
    rows = []
    for i, j in _confused_pairs(confusion)[:CONFUSED_PAIRS_SHOWN]:
        rows.append((f"{names[i]} / {names[j]}", confusion[i, j] + confusion[j, i],
                     f"{names[i]} taken for {names[j]}: {confusion[i, j]}", f"{names[j]} taken for {names[i]}: "
                     f"{confusion[j, i]}"))  # fmt: skip
    pairs = (
        "<h3>Most confused pairs of classes</h3>" + table(("pair", "mistakes", "one way", "the other way"), rows)
        if rows
        else "<p>No two classes were confused.</p>"
    )
    return (
        split
        + '<div class="row"><div>'
        + img(figures.per_class_png(names, per_class, which), "per-class accuracy")
        + "</div><div>"
        + img(figures.confusion_png(confusion, names, which), "confusion matrix")
        + "</div></div>"
        + pairs
    )


def _confused_pairs(confusion: np.ndarray) -> list[tuple[int, int]]:
    """Unordered pairs of classes by mistakes in both directions, most first (pairs without mistakes left out)."""
    k = len(confusion)
    pairs = [(i, j) for i in range(k) for j in range(i + 1, k) if confusion[i, j] + confusion[j, i] > 0]
    return sorted(pairs, key=lambda p: -(confusion[p[0], p[1]] + confusion[p[1], p[0]]))


def _mistakes(run: SavedRun, predictions: dict[str, np.ndarray] | None, data: str | None, test_images: Any) -> str:
    if run.metrics["test_accuracy"] is None:
        return f"<p>{esc(_NO_TEST)}</p>"
    if predictions is None:
        return _missing(f"{PREDICTIONS_NAME} is missing (the run was saved before runs kept their predictions), so "
                        "the mistakes cannot be shown; the confused pairs above come from metrics.json")  # fmt: skip
    probabilities, labels, index = (predictions[k] for k in ("test_probabilities", "test_labels", "test_index"))
    predicted = probabilities.argmax(axis=1)
    confidence = probabilities.max(axis=1)
    wrong = int((predicted != labels).sum())
    if wrong == 0:
        return "<p>The model made no mistake on the test split.</p>"
    shown = confident_mistakes(probabilities, labels, MISTAKES_SHOWN)  # the ones the run saved Grad-CAM maps of
    intro = (f"<p>The {len(shown)} test images the model got wrong with the highest confidence, of {wrong} "
             "mistakes (upscaled 3x, nearest-neighbour).</p>")  # fmt: skip
    images, problem = _load_test_images(run, data, test_images, labels, index)
    names = run.class_names
    if images is None:
        rows = [(int(index[i]), names[labels[i]], names[predicted[i]], f"{confidence[i]:.3f}") for i in shown]
        return intro + _missing(problem) + table(("test index", "true", "predicted", "probability"), rows)
    maps, note = _explanations(run)
    if maps:
        intro += ("<p>Under each image, Grad-CAM (Selvaraju et al. 2017): where the model found evidence for the "
                  "class it predicted (left) and for the true class (right), red strongest. The maps are coarse "
                  "(the last feature map is a few cells wide, upsampled); see docs/trust.md.</p>")  # fmt: skip
    elif note:
        intro += f'<p class="note">No Grad-CAM maps: {esc(note)}.</p>'
    cells = []
    for i in shown:
        true, guess = esc(names[labels[i]]), esc(names[predicted[i]])
        caption = (f'<span title="true: {true}">true: {true}</span><span class="wrong" title="predicted: {guess}">'
                   f"predicted: {guess}</span><span>p = {confidence[i]:.3f} · #{int(index[i])}</span>")  # fmt: skip
        image = images[index[i]]
        picture = img(figures.thumbnail_png(image), f"test image {int(index[i])}", "thumb")
        if (pair := maps.get(int(index[i]))) is not None:  # (2, H, W): the predicted class's map, the true class's
            picture += "<div>" + "".join(
                _overlay_img(image, heat, f"where it saw {name}")
                for heat, name in zip(pair, (names[predicted[i]], names[labels[i]]))
            ) + "</div>"  # fmt: skip
        cells.append(f"<figure>{picture}<figcaption>{caption}</figcaption></figure>")
    return intro + '<div class="grid">' + "".join(cells) + "</div>"


def _overlay_img(image: np.ndarray, heat: np.ndarray, alt: str) -> str:
    """A Grad-CAM overlay, half a thumbnail wide (two fit under it), smoothed: the map itself is smooth."""
    png = figures.thumbnail_png(overlay(image, heat).transpose(2, 0, 1), 1)
    return (f'<img class="cam" style="width:47px;height:47px;image-rendering:auto" alt="{esc(alt)}" '
            f'title="{esc(alt)}" src="{png_data_uri(png)}">')  # fmt: skip


def _explanations(run: SavedRun) -> tuple[dict[int, np.ndarray], str]:
    """explanations.npz as test index -> (2, H, W) maps (predicted, true), and its note; empty for older runs."""
    path = RunFiles(run.run_dir).explanations
    if not path.is_file():
        return {}, ""
    try:
        with np.load(path) as data:
            heatmaps, index, note = data["heatmaps"], data["test_index"], str(data["note"])
    except (OSError, ValueError, KeyError) as error:
        return {}, f"{path.name} is unreadable ({error})"
    return {int(i): heat.astype(np.float32) for i, heat in zip(index, heatmaps)}, note


def _load_test_images(
    run: SavedRun, data: str | None, test_images: Any, labels: np.ndarray, index: np.ndarray
) -> tuple[np.ndarray | None, str]:
    """The run's test images (N, 3, H, W) uint8, or None and a line saying what is missing."""
    source = data or run.config.data.source
    if test_images is None:
        from cifarlab.data import load_dataset
        from cifarlab.data.dataset import select_classes

        config = run.config.data
        try:
            dataset = load_dataset(source, data_dir=None if data else config.data_dir, image_size=config.image_size,
                                   progress=False)  # fmt: skip
            if config.classes is not None:
                dataset = select_classes(dataset, config.classes, None, run.config.seed)
        except (OSError, ValueError, KeyError) as error:
            return None, (f"the test images are not available ({error}); give their folder with "
                          f"'cifarlab report {run.run_dir} --data SOURCE' to draw this grid")  # fmt: skip
        test_images, test_labels = dataset.test.images, dataset.test.labels.numpy()
        if len(test_labels) <= index.max() or not np.array_equal(test_labels[index], labels):
            return None, (f"the test images of {source} are not the ones this run was tested on (their count or "
                          f"labels differ); give the right ones with --data")  # fmt: skip
    images = test_images.cpu().numpy() if hasattr(test_images, "cpu") else np.asarray(test_images)
    return images, ""


def _missing(message: str) -> str:
    return f'<p class="missing">{esc(message)}</p>'


def _calibration(run: SavedRun, predictions: dict[str, np.ndarray] | None) -> str:
    if predictions is None:
        return _missing(f"{PREDICTIONS_NAME} is missing, so calibration cannot be measured for this run")
    if "test_probabilities" not in predictions:
        return f"<p>{esc(_NO_TEST)}</p>"
    probabilities, labels = predictions["test_probabilities"], predictions["test_labels"]
    bins = reliability_bins(probabilities, labels)
    ece = expected_calibration_error(probabilities, labels)
    after = ece_after = temperature = None
    if "val_probabilities" in predictions and len(predictions["val_labels"]) >= MIN_CALIBRATION_IMAGES:
        temperature = fit_temperature(predictions["val_probabilities"], predictions["val_labels"])
        scaled = apply_temperature(probabilities, temperature)
        after, ece_after = reliability_bins(scaled, labels), expected_calibration_error(scaled, labels)
    rows = [("this run", f"{ece * 100:.2f}", "-" if ece_after is None else f"{ece_after * 100:.2f}")]
    rows += [
        (f"{name} (Guo et al. 2017, CIFAR-10)", f"{value:.2f}", "") for name, value in GUO_2017_CIFAR10_ECE.items()
    ]
    how = (f"Temperature T = {temperature:.3f} was fitted on the validation split ({len(predictions['val_labels'])} "
           "images, negative log-likelihood), never on test; the probabilities the model gives in predict, serve "
           "and its ONNX export are softmax(logits / T), the ones after temperature scaling."
           if temperature is not None else
           f"The run had no validation split of {MIN_CALIBRATION_IMAGES} images or more, so no temperature was "
           "fitted: the probabilities it gives are the uncalibrated ones.")  # fmt: skip
    shipped = ece_after if ece_after is not None else ece
    meaning = (f" What the figure means: among the test images the model gives a confidence of about p, the share "
               f"it gets right differs from p by {shipped * 100:.1f} points on average (weighted by how many images "
               "each confidence has).")  # fmt: skip
    bin_rows = [(f"({b.low:.3f}, {b.high:.3f}]", b.count, "-" if not b.count else f"{b.accuracy:.3f}",
                 "-" if not b.count else f"{b.confidence:.3f}") for b in bins]  # fmt: skip
    counts = table(("confidence bin", "images", "accuracy", "mean confidence"), bin_rows, (False, True, True, True))
    return (
        f"<p>Top-label expected calibration error over {ECE_BINS} equal-width confidence bins, as in Guo et al. "
        f"(2017), on the {len(labels)} test images. {how}{meaning}</p>"
        + table(("model", "ECE before (%)", "ECE after temperature scaling (%)"), rows, (False, True, True))
        + img(figures.reliability_png(bins, after, ece, ece_after, temperature), "reliability diagram")
        + "<details><summary>Images in each bin (before temperature scaling)</summary>"
        + counts
        + "</details>"
    )


def _robustness(run: SavedRun) -> str:
    result = run.robustness or {}
    accuracy, clean, mean = result["accuracy"], result["clean"], result["mean_corruption_accuracy"]
    low, high = AUGMIX_2020_CIFAR10C_ERROR["standard training"]
    augmix = AUGMIX_2020_CIFAR10C_ERROR["AugMix"]
    count = sum(len(row) for row in accuracy.values())
    rows = [
        ("this run, clean test images", f"{clean * 100:.2f}", f"{100 - clean * 100:.2f}"),
        (f"this run, mean over {count} corrupted sets", f"{mean * 100:.2f}", f"{100 - mean * 100:.2f}"),
        ("standard training, four networks (AugMix paper)", "", f"about {low}-{high}"),
        ("AugMix, four networks (AugMix paper)", "", f"about {augmix[0]}-{augmix[1]}"),
    ]
    examples = RunFiles(run.run_dir).root / ROBUSTNESS_EXAMPLES_NAME
    strip = img(examples.read_bytes(), "a test image under each corruption") if examples.is_file() else ""
    return (
        f"<p>Accuracy on the first {result['images']} test images under the 15 common corruptions of CIFAR-10-C "
        "(Hendrycks &amp; Dietterich, 2019), at the severities measured, by <code>cifarlab robustness</code> "
        f"(seed {result['seed']}; frost uses procedural frost, not the published photographs). The AugMix paper's "
        "figures are errors on the published CIFAR-10-C files, with the official CIFAR-10 training set.</p>"
        + table(("model", "accuracy (%)", "error (%)"), rows, (False, True, True))
        + img(figures.robustness_png(accuracy, clean), "accuracy per corruption and severity")
        + (
            f"<h3>The first test image under each corruption, severity {result.get('example_severity', 3)}</h3>" + strip
            if strip
            else ""
        )
    )


def _config(run: SavedRun) -> str:
    notes = run.metrics.get("notes")
    if notes is None:
        listing = "<p>Notes were not recorded (a run saved before runs recorded them).</p>"
    elif notes:
        listing = "<ul>" + "".join(f'<li class="note">{esc(note)}</li>' for note in notes) + "</ul>"
    else:
        listing = "<p>The run printed no notes.</p>"
    config = json.dumps(run.record["config"], indent=2)
    return f"<h3>Notes the run printed</h3>{listing}<h3>Resolved config</h3><pre>{esc(config)}</pre>"
