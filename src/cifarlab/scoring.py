"""Score a saved model: its test accuracy (`evaluate`) and its accuracy under corruptions (`robustness`).

Both judge the model on the test split of the data it was trained on, unless told otherwise.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from cifarlab.data import Split, load_dataset
from cifarlab.data.dataset import balanced_first, select_classes
from cifarlab.evaluation.metrics import EvalResult
from cifarlab.inference.load import load
from cifarlab.reports.report import write_report
from cifarlab.training.run_dir import RunFiles

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def evaluate(
    path: str | Path,
    *,
    data: str | None = None,
    data_dir: str | None = None,
    device: str = "auto",
    precision: str = "auto",
    progress: bool = True,
) -> EvalResult:
    """Evaluate a saved model on the test split of a dataset (by default the one it was trained on).

    Raises:
        ValueError: if the dataset's classes differ from the model's.
    """
    classifier = load(path, device=device, precision=precision)
    return classifier.evaluate(_test_split(classifier, data, data_dir, progress))


def _test_split(classifier: Any, data: str | None, data_dir: str | None, progress: bool) -> Split:
    """The test split a saved model is judged on: `data`, or the data it was trained on, in its classes.

    Raises:
        ValueError: if the dataset's classes differ from the model's.
    """
    source = data or classifier.meta.get("data_source") or "cifar10"
    if data is None and data_dir is None:  # the data the model was trained on, from where it was read
        data_dir = classifier.meta.get("data_dir")
    dataset = load_dataset(source, data_dir=data_dir, image_size=classifier.image_size, progress=progress)
    if dataset.class_names != classifier.class_names and set(classifier.class_names) <= set(dataset.class_names):
        # a run trained with --classes: its classes, relabelled in its order
        dataset = select_classes(dataset, tuple(classifier.class_names), None, 0)
    if dataset.class_names != classifier.class_names:
        raise ValueError(
            f"the classes of {source} ({', '.join(dataset.class_names)}) differ from the model's "
            f"({', '.join(classifier.class_names)})"
        )
    return dataset.test


class RobustnessResult(dict):
    """What `robustness` measured, as robustness.json holds it (a dict), and the run it measured (`run_dir`)."""

    def __init__(self, values: dict[str, Any], run_dir: Path) -> None:
        super().__init__(values)
        self.run_dir = run_dir

    def _repr_html_(self) -> str:
        from cifarlab.display.html import robustness_html

        return robustness_html(self)

    def plot(self) -> Figure:
        """Accuracy per corruption and severity, as a heatmap (a matplotlib Figure)."""
        from cifarlab.reports.figures import robustness_figure

        return robustness_figure(self["accuracy"], self["clean"])


def robustness(
    run_dir: str | Path,
    *,
    data: str | None = None,
    corruptions: str | None = None,
    severities: str | None = None,
    images: int | None = None,
    seed: int = 0,
    device: str = "auto",
    precision: str = "auto",
    progress: bool = True,
) -> RobustnessResult:
    """Accuracy of a run's model under the CIFAR-10-C corruptions; writes RUN_DIR/robustness.json and the report.

    Args:
        run_dir: a finished run directory.
        data: where the test images are (default: the run's own data).
        corruptions: comma-separated corruption or family names (noise, blur, weather, digital); default all 15.
        severities: comma-separated severities in 1..5; default all.
        images: use N test images, the first of each class in turn (default all; CIFAR-10's 10000 at 75 corrupted
            sets take a while).
        seed: seed of the random corruptions (each corruption and severity gets its own from it).
        device: 'auto', 'cpu' or 'cuda'.
        precision: 'auto', 'bf16' or 'fp32'.
        progress: show a progress bar.

    Returns:
        robustness.json's values (a dict: 'clean', 'accuracy' per corruption and severity,
        'mean_corruption_accuracy', ...), which a notebook shows as a table and a heatmap.

    Raises:
        ValueError: for an unknown corruption or severity, a bad --images, or data whose classes differ.
        FileNotFoundError: if `run_dir` is not a finished run.
    """
    from cifarlab.evaluation.corruption_names import parse_corruptions, parse_severities
    from cifarlab.evaluation.corruptions import corrupt
    from cifarlab.evaluation.robustness import corruption_accuracy
    from cifarlab.reports import figures

    names, levels = parse_corruptions(corruptions), parse_severities(severities)
    if images is not None and images < 1:
        raise ValueError(f"--images must be at least 1, got {images}")
    files = RunFiles(Path(run_dir))
    if not files.is_finished():
        raise FileNotFoundError(f"{run_dir} is not a finished run (no metrics.json)")
    classifier = load(run_dir, device=device, precision=precision)
    split = _test_split(classifier, data, None, progress)
    if images is not None:
        split = split.subset(balanced_first(split.labels, images))
    result = corruption_accuracy(classifier, split, names, levels, seed=seed, progress=progress)
    result = {**result, "tta": classifier.tta, "data": data or classifier.meta.get("data_source"),
              "example_severity": 3 if 3 in levels else levels[len(levels) // 2]}  # fmt: skip
    first = split.images[:1].cpu()  # the first test image at severity 3 (or the nearest measured) of each corruption
    shown = result["example_severity"]
    examples = {"clean": first[0].numpy()} | {
        name: corrupt(first, name, shown, seed=seed)[0].numpy() for name in names}  # fmt: skip
    files.write_robustness(result, figures.corruption_examples_png(examples))
    write_report(run_dir)
    return RobustnessResult(result, Path(run_dir))
