"""The `cifarlab` command's flags: one subparser per command, run options declared once on their config fields.

`cli` parses with `build_parser()` and calls one front function per command; what each command does is there.
"""

from __future__ import annotations

import argparse
from typing import NoReturn

from cifarlab import options
from cifarlab._version import __version__
from cifarlab.auditing.duplicates import DEFAULT_THRESHOLD as DUPLICATE_THRESHOLD
from cifarlab.config import RunConfig
from cifarlab.presets import DEFAULT_PRESET

RUN_OPTIONS = options.run_options(RunConfig)  # every flag of a run option, declared once on its config field
LADDER_GROUPS = ("data", "machine")  # the ladder's per-run flags; it sets epochs, seed and run directory itself


def _run_options(*, groups: tuple[str, ...] = (), keys: tuple[str, ...] = ()) -> list[options.RunOption]:
    return [o for o in RUN_OPTIONS if o.group in groups or o.key in keys]


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: the problem and where to read more, without the usage block."""

    def error(self, message: str) -> NoReturn:
        """Print `prog: error: message` on one line and exit 2."""
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the `cifarlab` command."""
    parser = _Parser(prog="cifarlab", description="Train, compare and ship CIFAR-10 classifiers.")
    parser.add_argument("--version", action="version", version=f"cifarlab {__version__}")
    parser.add_argument("--debug", action="store_true", help="on an error, also print the traceback (for bug "
                        "reports); may also follow the command")  # fmt: skip
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("presets", help="list the named presets with parameter counts and the seed's accuracy")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'proyecto*'")
    p.add_argument("--details", action="store_true", help="also show each recipe and the choices made where "
                   "the seed is silent")  # fmt: skip

    p = sub.add_parser("models", help="list the registered model architectures")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style filter")

    p = sub.add_parser("train", help="train a preset and save the run (checkpoint, history, metrics, plots)")
    p.add_argument("--preset", default=None, help=f"a name from 'cifarlab presets' (default {DEFAULT_PRESET})")
    p.add_argument("--config", metavar="TOML", help="run config file applied over the preset, before the flags")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a stopped run from its last complete epoch, "
                   "as it was configured (only --quiet and --logger may be added)")  # fmt: skip
    p.add_argument("--budget", metavar="DURATION", help="instead of --preset: the most accurate recipe of the "
                   "measured accuracy-cost front that this machine trains in DURATION of command time (loading, "
                   "testing and saving included), e.g. 3m, 7m, 15m (docs/budget.md)")  # fmt: skip
    p.add_argument("--logger", choices=["tensorboard", "mlflow"], help="also log the run to TensorBoard "
                   "(RUN_DIR/tensorboard) or MLflow ($MLFLOW_TRACKING_URI, else ./mlruns); needs its "
                   "extra")  # fmt: skip
    options.add_flags(p, RUN_OPTIONS)
    options.section_of(p, "distributed").add_argument("--nproc", type=int, metavar="N", help="train as N processes "
                                                      "on this machine (torchrun, DistributedDataParallel); "
                                                      "--batch-size stays the global batch")  # fmt: skip

    p = sub.add_parser("ladder", help="train presets one after another (default: the seed's steps), resumably, "
                       "then compare them")  # fmt: skip
    p.add_argument("--presets", metavar="LIST", help="comma-separated preset names (default proyecto1..proyecto9, "
                   "and proyecto10 when VGG16's ImageNet weights are at hand)")  # fmt: skip
    p.add_argument("--seeds", default="0", metavar="LIST", help="comma-separated seeds, one run each (default 0)")
    p.add_argument("--epochs-scale", type=float, default=1.0, metavar="F",
                   help="scale every preset's epochs and patience (0.1: a shortened ladder; at least 1)")  # fmt: skip
    p.add_argument("--runs-dir", default="runs/ladder", metavar="DIR",
                   help="runs go to DIR/<preset>-s<seed> (default runs/ladder); run again to resume")  # fmt: skip
    p.add_argument("--config", metavar="TOML", help="run config file applied over every preset, before the flags")
    options.add_flags(p, _run_options(keys=("transfer.weights", "quiet")), grouped=False)  # weights: proyecto10
    options.add_flags(p, _run_options(groups=LADDER_GROUPS))

    p = sub.add_parser("tune", help="search a preset's hyper-parameters with Optuna on validation data, re-run the "
                       "best over seeds, write best.toml")  # fmt: skip
    p.add_argument("--preset", required=True, help="the preset searched: a seed step (proyecto1..9) or a fast recipe")
    p.add_argument("--space", metavar="SPACE.toml", help="change the built-in space: ranges {low, high, log}, "
                   "lists of choices, fixed values")  # fmt: skip
    p.add_argument("--trials", type=int, default=20, metavar="N", help="trials this command adds to the study "
                   "(default 20); running it again continues the study")  # fmt: skip
    p.add_argument("--timeout", metavar="DURATION", help="start no trial after this long, e.g. 90m, 2h")
    p.add_argument("--workers", type=int, default=1, metavar="N", help="worker processes on this machine (more "
                   "than 1 needs --storage journal:PATH or a database server)")  # fmt: skip
    p.add_argument("--storage", metavar="URL", help="sqlite:///PATH (default: STUDY_DIR/study.db), journal:PATH, "
                   "or postgresql://USER@HOST/DB to share a study between machines")  # fmt: skip
    p.add_argument("--study", metavar="NAME", help="the study's name (default: the preset's)")
    p.add_argument("--study-dir", metavar="DIR", help="trials, re-runs, best.toml (default runs/tune/<study>)")
    p.add_argument("--epochs", type=int, metavar="N", help="at most N epochs per trial and re-run (a proxy budget)")
    p.add_argument("--seed", type=int, default=0, metavar="N", help="the trials' seed; re-runs use the next ones")
    p.add_argument("--top-k", type=int, metavar="K", help="best trials re-run over seeds (default 3; with --frontier: "
                   "at most K front points, spread along the cost axis, default all)")  # fmt: skip
    p.add_argument("--rerun-seeds", type=int, default=3, metavar="N", help="seeds per re-run (default 3)")
    p.add_argument("--pruner", choices=["median", "hyperband", "none"], default="median",
                   help="stop hopeless trials early (default median: Optuna's MedianPruner)")  # fmt: skip
    p.add_argument("--heartbeat", type=int, default=60, metavar="SECONDS", help="database storages: a trial whose "
                   "worker is silent for twice this is failed and retried, resuming its run (default 60)")  # fmt: skip
    p.add_argument("--frontier", action="store_true", help="search accuracy against cost (FLOPs): two objectives, "
                   "no pruning; re-run the Pareto front and write front.json instead of best.toml")  # fmt: skip
    options.add_flags(p, _run_options(keys=("quiet",)), grouped=False)
    options.add_flags(p, _run_options(groups=LADDER_GROUPS))

    p = sub.add_parser("audit", help="find likely label errors (confident learning on out-of-fold probabilities) "
                       "and near-duplicate images; writes label_issues.csv, duplicates.csv, audit.html")  # fmt: skip
    p.add_argument("--preset", default="fast94", help="the fold models' recipe (default fast94; fast88 is quicker "
                   "and finds fewer label errors)")  # fmt: skip
    p.add_argument("--folds", type=int, default=5, metavar="K", help="K models, each judging the fold it did not "
                   "train on (default 5)")  # fmt: skip
    p.add_argument("--out", default="runs/audit", metavar="DIR", help="the audit's folder; the same command again "
                   "resumes it (default runs/audit)")  # fmt: skip
    p.add_argument("--seed", type=int, default=0, metavar="N", help="seed of the folds and their runs (default 0)")
    p.add_argument("--epochs", type=int, metavar="N", help="epochs of each fold model (default: the preset's)")
    p.add_argument("--duplicate-threshold", type=float, default=DUPLICATE_THRESHOLD, metavar="R",
                   help="similarity (best correlation of two images once aligned, shifts and crops included) "
                   f"from which two images are listed as near-duplicates (default {DUPLICATE_THRESHOLD})")  # fmt: skip
    options.add_flags(p, _run_options(keys=("quiet",)), grouped=False)
    options.add_flags(p, _run_options(groups=LADDER_GROUPS))

    p = sub.add_parser("report", help="write a run's self-contained report.html (curves, mistakes, calibration)")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a finished run directory")
    p.add_argument("--data", metavar="SOURCE", help="where the run's test images are now, if they moved (only the "
                   "grid of mistakes needs them)")  # fmt: skip
    p.add_argument("--out", metavar="FILE", help="the HTML file to write (default RUN_DIR/report.html)")

    p = sub.add_parser("compare", help="compare runs: a table (seeds grouped, mean ± std), compare.html, compare.csv")
    p.add_argument("run_dirs", nargs="*", metavar="RUN_DIR", help="finished runs (default: every run under "
                   "--runs-dir)")  # fmt: skip
    p.add_argument("--runs-dir", default="runs", metavar="DIR", help="where to look for runs when none is named "
                   "(default runs)")  # fmt: skip
    p.add_argument("--out", metavar="DIR", help="where compare.html and compare.csv go (default: --runs-dir, or "
                   "the named runs' common folder)")  # fmt: skip

    p = sub.add_parser("readings", help="replay recorded runs under each early-stopping reading of the seed's "
                       "callbacks: stop epoch, tested epoch, test accuracy beside the seed's")  # fmt: skip
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories (finished or not); the test "
                   "accuracy needs runs trained with --test-each-epoch")  # fmt: skip
    p.add_argument("--reading", action="append", metavar="TOML", help="a reading's [train] file (repeatable; "
                   "default: the built-in readings, as in benchmarks/readings/)")  # fmt: skip
    p.add_argument("--markdown", action="store_true", help="Markdown tables")

    p = sub.add_parser("evaluate", help="evaluate a saved model on a test split and print '> accuracy'")
    p.add_argument("path", metavar="RUN_DIR|CHECKPOINT", help="a run directory, its model.safetensors or an "
                   "exported .onnx file")  # fmt: skip
    p.add_argument("--data", metavar="SOURCE", help="'cifar10' or an image folder with a test/ subfolder "
                   "(default: the data the model was trained on)")  # fmt: skip
    p.add_argument("--data-dir", metavar="DIR", help="folder already holding cifar-10-python.tar.gz or "
                   "cifar-10-batches-py/ (nothing is downloaded)")  # fmt: skip
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="auto: CUDA when present (default)")
    p.add_argument("--precision", choices=["auto", "bf16", "fp32"],
                   help="auto: bf16 autocast on CUDA and on CPUs with AMX/AVX512-BF16, else fp32")  # fmt: skip
    p.add_argument("--quiet", action="store_true", help="no progress bars")

    p = sub.add_parser("robustness", help="accuracy under the 15 CIFAR-10-C corruptions at 5 severities; writes "
                       "RUN_DIR/robustness.json and a report section")  # fmt: skip
    p.add_argument("run_dir", metavar="RUN_DIR", help="a finished run directory")
    p.add_argument("--data", metavar="SOURCE", help="where the test images are (default: the run's own data)")
    p.add_argument("--corruptions", metavar="LIST", help="comma-separated corruptions or families (noise, blur, "
                   "weather, digital); default all 15")  # fmt: skip
    p.add_argument("--severities", metavar="LIST", help="comma-separated severities 1..5 (default all)")
    p.add_argument(
        "--images", type=int, metavar="N", help="only N test images, each class's first in turn (default all)"
    )
    p.add_argument("--seed", type=int, default=0, metavar="N", help="seed of the random corruptions (default 0)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="auto: CUDA when present (default)")
    p.add_argument("--precision", choices=["auto", "bf16", "fp32"], help="auto: bf16 where fast (default)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")

    p = sub.add_parser("cache", help="show what the cache folder holds per kind; --prune deletes stale entries")
    p.add_argument("--prune", action="store_true", help="delete cache files not used for --older-than days, "
                   "those of vanished image folders or without checksum, and leftover temporary files (never "
                   "downloads)")  # fmt: skip
    p.add_argument("--older-than", type=float, metavar="DAYS",
                   help="with --prune: the age of last use beyond which a cache file goes (default 30)")  # fmt: skip

    p = sub.add_parser("predict", help="top-k classes of image files (directories walked recursively)")
    p.add_argument("model", metavar="MODEL", help="a run directory, its model.safetensors or an exported .onnx file")
    p.add_argument("paths", nargs="+", metavar="IMAGE_OR_DIR", help="image files (PNG, JPEG, BMP, GIF, WebP, TIFF) "
                   "or folders of them")  # fmt: skip
    p.add_argument("--top-k", type=int, default=3, metavar="K", help="classes per image (default 3)")
    p.add_argument("--json", action="store_true", help="one JSON object per line instead of text")
    p.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None, help="average test-time views "
                   "(default: as the model's recipe evaluated; an .onnx file has what was exported)")  # fmt: skip
    p.add_argument("--batch-size", type=int, default=256, metavar="N", help="images per model call (default 256)")
    p.add_argument("--explain", metavar="DIR", help="also write DIR/<name>-explain.png per image: the image and the "
                   "Grad-CAM maps of its two most likely classes (fp32, no TTA; not for .onnx)")  # fmt: skip
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="auto: CUDA when present (default)")
    p.add_argument("--precision", choices=["auto", "bf16", "fp32"], help="auto: bf16 where fast (default)")

    p = sub.add_parser("export", help="export a model to ONNX (uint8 images in, probabilities out), checked "
                       "against PyTorch")  # fmt: skip
    p.add_argument("model", metavar="MODEL", help="a run directory or its model.safetensors")
    p.add_argument("--format", choices=["onnx"], default="onnx", help="the file format (default onnx)")
    p.add_argument("--out", metavar="FILE", help="the file to write (default model.onnx, or model-tta.onnx when "
                   "the graph holds test-time views, beside the checkpoint)")  # fmt: skip
    p.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None, help="bake test-time views into "
                   "the graph (default: those the run's test accuracy used, so the file scores what the run "
                   "printed; --no-tta: the image alone, fewer forward passes)")  # fmt: skip
    p.add_argument("--opset", type=int, default=18, metavar="N", help="ONNX opset version (default 18)")

    p = sub.add_parser("serve", help="serve a model over HTTP: a web page, POST /predict, GET /health and /model")
    p.add_argument("model", metavar="MODEL", help="a run directory, its model.safetensors or an exported .onnx file")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--max-upload-mb", type=float, default=10.0, metavar="MB", help="largest request body (default 10)")
    p.add_argument("--max-batch", type=int, default=32, metavar="N", help="most images per model call when requests "
                   "are micro-batched; 1 turns batching off (default 32)")  # fmt: skip
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="auto: CUDA when present (default)")
    p.add_argument("--precision", choices=["auto", "bf16", "fp32"], help="auto: bf16 where fast (default)")
    return parser
