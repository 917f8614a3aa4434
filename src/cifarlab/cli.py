"""The `cifarlab` command: one subcommand per public function."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from cifarlab import api
from cifarlab.models import count_params, list_models
from cifarlab.presets import DEFAULT_PRESET, get_preset, list_presets
from cifarlab.transfer import preset_model


def _add_data_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data", metavar="SOURCE", help="'cifar10' (official archive, downloaded and cached) or an image folder "
        "with train/ and test/ (optional val/), one subfolder per class",
    )  # fmt: skip
    parser.add_argument("--data-dir", metavar="DIR", help="folder already holding cifar-10-python.tar.gz or "
                        "cifar-10-batches-py/ (nothing is downloaded)")  # fmt: skip
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], help="auto: CUDA when present (default)")
    parser.add_argument("--precision", choices=["auto", "bf16", "fp32"],
                        help="auto: bf16 autocast on CUDA and on CPUs with AMX/AVX512-BF16, else fp32")  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the `cifarlab` command."""
    parser = argparse.ArgumentParser(prog="cifarlab", description="Train, compare and ship CIFAR-10 classifiers.")
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
    _add_data_flags(p)
    p.add_argument(
        "--image-size", type=int, metavar="PIXELS", help="side image-folder images are resized to (default 32)"
    )
    p.add_argument("--skip-bad-images", action="store_true", default=None,
                   help="warn about unreadable images and skip them instead of stopping")  # fmt: skip
    p.add_argument("--val-size", type=int, metavar="N",
                   help="images held out of train for validation, stratified (seed 10000); 0 = all train")  # fmt: skip
    p.add_argument("--classes", metavar="NAMES", help="comma-separated class names to keep (relabelled in this order)")
    p.add_argument("--per-class-limit", type=int, metavar="N", help="keep at most N training images per class")
    p.add_argument("--epochs", type=int, metavar="N", help="epochs to train (the preset's by default)")
    p.add_argument("--batch-size", type=int, metavar="N", help="images per optimiser step")
    p.add_argument("--lr", type=float, help="peak learning rate")
    p.add_argument("--patience", type=int, metavar="EPOCHS", help="epochs without improvement before early stopping")
    p.add_argument("--no-early-stop", action="store_true", help="run every epoch (keeps the best checkpoint)")
    p.add_argument("--backbone", metavar="imagenet|RUN_DIR", help="transfer: the preset model's ImageNet weights "
                   "(as proyecto10) or a cifarlab run, whose layers up to its classifier get a new head")  # fmt: skip
    p.add_argument("--weights", metavar="PATH", help="local copy of the ImageNet weights (vgg16-397923af.pth); "
                   "nothing is downloaded")  # fmt: skip
    p.add_argument("--input-size", type=int, metavar="PIXELS", help="transfer: resize images (bilinear) to this side "
                   "before the backbone, e.g. 64, 96, 224")  # fmt: skip
    p.add_argument("--finetune", type=int, metavar="N", help="transfer: also train the backbone's last N blocks "
                   "(default 0: frozen backbone, its features computed once and cached)")  # fmt: skip
    p.add_argument("--backbone-lr-scale", type=float, metavar="X", help="transfer: the backbone's learning rate as "
                   "a fraction of the head's (default 0.1)")  # fmt: skip
    p.add_argument("--compile", action="store_true", default=None, help="torch.compile the model")
    p.add_argument("--no-channels-last", action="store_true", help="keep NCHW memory format")
    p.add_argument(
        "--seed", type=int, metavar="N", help="seed of the split, initialisation, shuffling and augmentation"
    )
    p.add_argument("--out", metavar="DIR", help="run directory (default runs/<preset>-<timestamp>)")
    p.add_argument("--quiet", action="store_true", default=None, help="no progress bars or per-epoch lines")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a stopped run from its last complete epoch, "
                   "as it was configured (only --quiet may be added)")  # fmt: skip

    p = sub.add_parser("ladder", help="train presets one after another (default: the seed's steps), resumably, "
                       "then compare them")  # fmt: skip
    p.add_argument("--presets", metavar="LIST", help="comma-separated preset names (default proyecto1..proyecto9, "
                   "and proyecto10 when VGG16's ImageNet weights are at hand)")  # fmt: skip
    p.add_argument("--seeds", default="0", metavar="LIST", help="comma-separated seeds, one run each (default 0)")
    p.add_argument("--epochs-scale", type=float, default=1.0, metavar="F",
                   help="scale every preset's epochs and patience (0.1: a shortened ladder; at least 1 epoch)")  # fmt: skip
    p.add_argument("--runs-dir", default="runs/ladder", metavar="DIR",
                   help="runs go to DIR/<preset>-s<seed> (default runs/ladder); the same command again resumes")  # fmt: skip
    _add_data_flags(p)
    p.add_argument("--weights", metavar="PATH", help="local copy of VGG16's ImageNet weights (adds proyecto10)")
    p.add_argument("--quiet", action="store_true", help="no per-epoch progress bars or lines")

    p = sub.add_parser("evaluate", help="evaluate a saved model on a test split and print '> accuracy'")
    p.add_argument("path", metavar="RUN_DIR|CHECKPOINT", help="a run directory or its model.safetensors")
    _add_data_flags(p)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def _presets(args: argparse.Namespace) -> None:
    names = list_presets(args.pattern)
    if not names:
        raise ValueError(f"no preset matches '{args.pattern}' (see 'cifarlab presets')")
    width = max(11, *(len(name) for name in names))
    columns = f"{'model':<10} {'total':>11} {'trainable':>11} {'non-train.':>10} {'seed acc.':>9}  recipe"
    print(f"{'preset':<{width}} {columns}")
    for name in names:
        preset = get_preset(name)
        counts = count_params(preset_model(preset.config))  # a transfer preset: its frozen backbone is non-trainable
        seed_acc = f"{preset.seed_accuracy:.2f}" if preset.seed_accuracy is not None else "-"
        print(
            f"{name:<{width}} {preset.config.model:<10} {counts.total:>11,} {counts.trainable:>11,} "
            f"{counts.non_trainable:>10,} {seed_acc:>9}  {preset.summary}"
        )
        if args.details:
            recipe = preset.config.train
            optimizer = {
                "adam": f"adam lr {recipe.lr:g} (epsilon {recipe.adam_epsilon:g})",
                "sgd": f"sgd lr {recipe.lr:g} (momentum {recipe.momentum:g})",
                "muon": f"muon lr {recipe.muon_lr:g} on conv filters, sgd lr {recipe.lr:g} on the rest",
            }[recipe.optimizer]
            if recipe.low_res_epochs:
                optimizer += f", first {recipe.low_res_epochs} epochs at {recipe.low_res_size}px"
            if recipe.whiten_bias_epochs:
                optimizer += f", whitening bias frozen after {recipe.whiten_bias_epochs} epochs"
            print(f"    recipe: {optimizer}, "
                  f"{recipe.epochs} epochs, batch {recipe.batch_size}"
                  + (f", {recipe.steps_per_epoch} steps/epoch" if recipe.steps_per_epoch else "")
                  + f", val split {preset.config.data.val_size}, inputs {preset.config.data.normalize}")  # fmt: skip
            if recipe.augment.enabled:
                print(f"    augmentation: {recipe.augment.to_dict()}")
            transfer = preset.config.transfer
            if transfer.backbone is not None:
                tuned = f"last {transfer.finetune} blocks fine-tuned (lr x{transfer.backbone_lr_scale:g})"
                print(f"    transfer: backbone {transfer.backbone} {preset.config.model} (inputs scaled as its weights "
                      f"expect), {tuned if transfer.finetune else 'frozen (features cached)'}, input size "
                      f"{transfer.input_size or 'as loaded'}, head {list(transfer.head)} + Linear, dropout "
                      f"{transfer.head_dropout:g}")  # fmt: skip
            for choice in preset.choices:
                print(f"    - {choice}")


def _train(args: argparse.Namespace) -> None:
    overrides = {
        "data": args.data,
        "data_dir": args.data_dir,
        "image_size": args.image_size,
        "skip_bad_images": args.skip_bad_images,
        "val_size": args.val_size,
        "classes": tuple(c.strip() for c in args.classes.split(",") if c.strip()) if args.classes else None,
        "per_class_limit": args.per_class_limit,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "patience": args.patience,
        "early_stopping": () if args.no_early_stop else None,
        "backbone": args.backbone,
        "weights": args.weights,
        "input_size": args.input_size,
        "finetune": args.finetune,
        "backbone_lr_scale": args.backbone_lr_scale,
        "compile": args.compile,
        "channels_last": False if args.no_channels_last else None,
        "seed": args.seed,
        "out": args.out,
        "quiet": args.quiet,
        "device": args.device,
        "precision": args.precision,
    }
    if args.resume is not None:
        given = [name for name, value in {"preset": args.preset, "config": args.config, **overrides}.items()
                 if value is not None and name != "quiet"]  # fmt: skip
        if given:
            renamed = {"early_stopping": "no_early_stop", "channels_last": "no_channels_last"}
            flags = ", ".join(f"--{renamed.get(name, name).replace('_', '-')}" for name in given)
            raise ValueError(f"--resume continues a run as it was configured; drop {flags}")
        result = api.resume(args.resume, quiet=args.quiet)
    else:
        result = api.train(args.preset, config_file=args.config, **overrides)
    print(result.summary())
    print(result.test.percent())
    print(f"run saved to {result.run_dir}")


def _ladder(args: argparse.Namespace) -> None:
    from cifarlab.ladder import run_ladder

    presets = [name.strip() for name in args.presets.split(",") if name.strip()] if args.presets else None
    overrides = {"data": args.data, "data_dir": args.data_dir, "device": args.device, "precision": args.precision,
                 "weights": args.weights}  # fmt: skip
    run_ladder(
        presets,
        _int_list("--seeds", args.seeds),
        runs_dir=args.runs_dir,
        epochs_scale=args.epochs_scale,
        quiet=args.quiet,
        **{key: value for key, value in overrides.items() if value is not None},
    )


def _int_list(flag: str, text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"{flag}: expected comma-separated integers, e.g. 0,1,2; got {text!r}") from None


def _evaluate(args: argparse.Namespace) -> None:
    result = api.evaluate(
        args.path,
        data=args.data,
        data_dir=args.data_dir,
        device=args.device or "auto",
        precision=args.precision or "auto",
        progress=not args.quiet,
    )
    print(result.percent())


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (errors print one line, no traceback)."""
    args = build_parser().parse_args(argv)
    handlers = {"presets": _presets, "models": lambda a: print("\n".join(list_models(a.pattern))),
                "train": _train, "ladder": _ladder, "evaluate": _evaluate}  # fmt: skip
    try:
        handlers[args.command](args)
    except (ValueError, KeyError, FileNotFoundError, OSError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
        print(f"cifarlab: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as interrupt:
        print(f"cifarlab: interrupted{'; ' + str(interrupt) if interrupt.args else ''}", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
