"""The `cifarlab` command: one subcommand per public function."""

from __future__ import annotations

import argparse
import os
import select
import sys
import traceback
import warnings
from collections.abc import Callable, Sequence
from typing import NoReturn

from cifarlab import options
from cifarlab.cli_parser import RUN_OPTIONS, build_parser
from cifarlab.extras import missing_extra_message
from cifarlab.models import list_models
from cifarlab.preset_table import preset_table
from cifarlab.training import distributed
from cifarlab.training.signals import TrainingStopped


def _presets(args: argparse.Namespace) -> None:
    print(preset_table(args.pattern, details=args.details))


def _models(args: argparse.Namespace) -> None:
    names = list_models(args.pattern)
    if not names:
        raise ValueError(f"no model matches '{args.pattern}' (see 'cifarlab models')")
    print("\n".join(names))


def _cache(args: argparse.Namespace) -> None:
    from cifarlab import cache
    from cifarlab._download import cache_home

    root = cache_home()
    if args.prune:
        removed = cache.prune_cache(30.0 if args.older_than is None else args.older_than, root)
        for entry, reason in removed:
            print(f"removed {entry.path.relative_to(root)} ({cache.format_size(entry.size)}): {reason}")
        freed = cache.format_size(sum(entry.size for entry, _ in removed))
        print(f"pruned {len(removed)} file{'' if len(removed) == 1 else 's'}, {freed} freed")
    elif args.older_than is not None:
        raise ValueError("--older-than applies to --prune; add --prune")
    print(cache.format_usage(root, cache.cache_usage(cache.scan_cache(root))))


def _train(args: argparse.Namespace) -> None:
    from cifarlab import api  # the training stack, for the commands that need it (predict and serve do not)

    overrides = options.overrides_from_args(args, RUN_OPTIONS)
    if args.budget is not None:  # before --nproc: a budget is planned and trained in one process
        return _train_within(args, overrides)
    if args.nproc is not None:  # launch N ranks of this same command through torchrun, and wait for them
        if args.resume is None:
            api.resolve_config(args.preset, config_file=args.config, **overrides)  # a bad option: one line, here
        return distributed.launch(distributed.strip_option(args.argv, "--nproc"), args.nproc)
    if args.resume is not None:
        given = [key for key in overrides if key != "quiet"]
        flags = [flag for flag, value in (("--preset", args.preset), ("--config", args.config)) if value is not None]
        if flags or given:
            dropped = ", ".join(flags + options.flag_names(given, RUN_OPTIONS))
            raise ValueError(f"--resume continues a run as it was configured; drop {dropped}")
        result = api.resume(args.resume, quiet=overrides.get("quiet"), callbacks=_trackers(args.logger))
    else:
        result = api.train(args.preset, config_file=args.config, callbacks=_trackers(args.logger), **overrides)
    if distributed.env_rank() != 0:  # rank 0 speaks for a distributed run
        return
    print(result.summary())
    print(result.test.percent())
    print(f"run saved to {result.run_dir}")


def _train_within(args: argparse.Namespace, overrides: dict) -> None:
    from cifarlab.budget.planner import process_started, train_within

    flags = [flag for flag, value in (("--preset", args.preset), ("--config", args.config), ("--resume", args.resume),
                                      ("--nproc", args.nproc)) if value is not None]  # fmt: skip
    if flags:
        raise ValueError(f"--budget chooses the recipe and trains it in one process; drop {', '.join(flags)}")
    result = train_within(args.budget, callbacks=_trackers(args.logger), started=process_started(), **overrides)
    print(result.run.summary(name=f"{result.plan.point.name} of the front ({result.run.config.preset}'s family)"))
    print(result.run.test.percent())
    print(f"run saved to {result.run.run_dir}")
    print(result.summary())


def _trackers(name: str | None) -> list:
    if name is None:
        return []
    from cifarlab.training.trackers import make_tracker

    return [make_tracker(name)]


def _report(args: argparse.Namespace) -> None:
    from cifarlab.reports.report import write_report

    print(f"report written to {write_report(args.run_dir, data=args.data, out=args.out)}")


def _compare(args: argparse.Namespace) -> None:
    from cifarlab.reports.compare import compare_runs

    print(compare_runs(args.run_dirs, runs_dir=args.runs_dir, out_dir=args.out), end="")


def _readings(args: argparse.Namespace) -> None:
    from cifarlab.reports.readings import readings

    print(readings(args.run_dirs, args.reading, markdown=args.markdown))


def _ladder(args: argparse.Namespace) -> None:
    from cifarlab.ladder import run_ladder

    presets = [name.strip() for name in args.presets.split(",") if name.strip()] if args.presets else None
    if args.presets is not None and not presets:
        raise ValueError(f"--presets: give at least one preset name, e.g. proyecto1,proyecto4; got {args.presets!r}")
    overrides = options.overrides_from_args(args, RUN_OPTIONS)
    run_ladder(
        presets,
        _int_list("--seeds", args.seeds),
        runs_dir=args.runs_dir,
        epochs_scale=args.epochs_scale,
        quiet=bool(overrides.pop("quiet", False)),
        config_file=args.config,
        **overrides,
    )


def _tune(args: argparse.Namespace) -> None:
    from cifarlab.tuning import tune

    overrides = options.overrides_from_args(args, RUN_OPTIONS)
    overrides.pop("seed", None)  # tune's own flag, read as a run option because it shares the name
    result = tune(args.preset, space=args.space, trials=args.trials, timeout=args.timeout, workers=args.workers,
                  storage=args.storage, study=args.study, study_dir=args.study_dir, epochs=args.epochs,
                  seed=args.seed, top_k=args.top_k, seeds=args.rerun_seeds, pruner=args.pruner,
                  heartbeat_seconds=args.heartbeat, frontier=args.frontier,
                  quiet=bool(overrides.pop("quiet", False)), **overrides)  # fmt: skip
    for note in result.notes:
        print(f"note: {note}")
    states = [t.state.name.lower() for t in result.trials]
    print(
        f"study {result.study_dir}: {len(states)} trials ("
        + ", ".join(f"{states.count(s)} {s}" for s in ("complete", "pruned", "fail") if states.count(s))
        + ")"
    )
    print(result.table, end="")
    if result.best_toml is not None:
        print(f"best config: {result.best_toml} (cifarlab train --config {result.best_toml})")
    if args.frontier:
        print("no best.toml: a --frontier study's answer is its front, one point per budget")
    if result.front_json is not None:
        print(f"front: {result.front_json} (the points, their overrides, FLOPs and seconds, for train --budget)")
    print(f"report: {result.report}")


def _audit(args: argparse.Namespace) -> None:
    from cifarlab.auditing import audit

    overrides = options.overrides_from_args(args, RUN_OPTIONS)
    for own in ("seed", "out"):  # audit's own flags, read as run options because they share the names
        overrides.pop(own, None)
    if args.epochs is not None:
        overrides["epochs"] = args.epochs
    if overrides.pop("data.val_size", None) is not None:
        raise ValueError(
            "--val-size: an audit holds out each of its --folds in turn and validates each fold's run on "
            "5 % of its own training folds; it takes no --val-size"
        )
    result = audit(preset=args.preset, folds=args.folds, out=args.out, seed=args.seed,
                   duplicate_threshold=args.duplicate_threshold, quiet=bool(overrides.pop("quiet", False)),
                   **overrides)  # fmt: skip
    print(result.summary())


def _int_list(flag: str, text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"{flag}: expected comma-separated integers, e.g. 0,1,2; got {text!r}") from None


def _robustness(args: argparse.Namespace) -> None:
    from cifarlab import api  # the training stack, for the commands that need it (predict and serve do not)
    from cifarlab.evaluation.robustness import robustness_table

    result = api.robustness(args.run_dir, data=args.data, corruptions=args.corruptions, severities=args.severities,
                            images=args.images, seed=args.seed, device=args.device or "auto",
                            precision=args.precision or "auto", progress=not args.quiet)  # fmt: skip
    print(robustness_table(result), end="")
    print(f"wrote {args.run_dir}/robustness.json; report.html has a robustness section")


def _evaluate(args: argparse.Namespace) -> None:
    from cifarlab import api  # the training stack, for the commands that need it (predict and serve do not)

    result = api.evaluate(
        args.path,
        data=args.data,
        data_dir=args.data_dir,
        device=args.device or "auto",
        precision=args.precision or "auto",
        progress=not args.quiet,
    )
    print(result.percent())


def _predict(args: argparse.Namespace) -> int:
    import json

    from cifarlab.inference.explain import ExplanationWriter, check_explain_target
    from cifarlab.inference.load import load

    if args.explain is not None:
        check_explain_target(args.model, args.explain)
    classifier = load(args.model, device=args.device or "auto", precision=args.precision or "auto")
    explainer = ExplanationWriter(classifier, args.explain, tta=args.tta) if args.explain is not None else None
    skipped = 0
    for prediction in classifier.iter_predictions(args.paths, args.top_k, batch_size=args.batch_size, tta=args.tta):
        if prediction.error is not None:
            skipped += 1
            print(f"cifarlab: skipped {prediction.path}: {prediction.error}", file=sys.stderr)
        elif args.json:
            print(json.dumps(prediction.to_dict()), flush=True)
        else:
            print(prediction.line(), flush=True)
        if explainer is not None and prediction.error is None:  # stderr: stdout stays the predictions
            print(f"cifarlab: wrote {explainer.write(prediction.path)}", file=sys.stderr, flush=True)
    if skipped:
        print(f"cifarlab: {skipped} file{'s' if skipped > 1 else ''} skipped", file=sys.stderr)
    return 1 if skipped else 0


def _export(args: argparse.Namespace) -> None:
    from cifarlab.export.onnx import export_onnx

    print(export_onnx(args.model, args.out, tta=args.tta, opset=args.opset).summary())


def _serve(args: argparse.Namespace) -> None:
    from cifarlab.serve.app import serve

    serve(args.model, host=args.host, port=args.port, max_upload_mb=args.max_upload_mb, max_batch=args.max_batch,
          device=args.device or "auto", precision=args.precision or "auto")  # fmt: skip


def _run(handler: Callable[[argparse.Namespace], int | None], args: argparse.Namespace, debug: bool) -> int | None:
    """Call a command's handler, its warnings shown as one line each (with --debug, as Python shows them)."""
    with warnings.catch_warnings():
        if not debug:
            warnings.showwarning = _show_warning
        return handler(args)


def _show_warning(message: Warning | str, category: type[Warning], *_: object, **__: object) -> None:
    print(f"cifarlab: warning: {' '.join(str(message).split())}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status.

    A user error (a bad option, file or value) prints one line and returns 2; any other exception is a bug and
    prints one line too, returning 1. `--debug`, anywhere on the line, adds the traceback.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    options = argv[: argv.index("--")] if "--" in argv else argv
    debug = "--debug" in options
    args = build_parser().parse_args([arg for i, arg in enumerate(argv) if not (arg == "--debug" and i < len(options))])
    handlers = {"presets": _presets, "models": _models, "train": _train, "ladder": _ladder, "tune": _tune,
                "audit": _audit, "report": _report, "compare": _compare, "readings": _readings,
                "evaluate": _evaluate, "robustness": _robustness, "predict": _predict, "export": _export,
                "serve": _serve, "cache": _cache}  # fmt: skip
    finished = False
    try:
        args.argv = argv  # `train --nproc` passes it on to its ranks
        status = _run(handlers[args.command], args, debug)
        sys.stdout.flush()  # a reader that went away shows here, not in the interpreter's teardown
        finished = True
    except (ValueError, KeyError, FileNotFoundError, OSError) as error:
        if isinstance(error, BrokenPipeError) and _reader_gone():  # `cifarlab readings RUN | head`: nothing to say
            _silence_stdout()
            return 141  # as a shell reports a command that SIGPIPE ended
        if debug:
            traceback.print_exc()
        message = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
        print(f"cifarlab: error: {' '.join(str(message).split())}", file=sys.stderr)  # one line, always
        return 2
    except KeyboardInterrupt as interrupt:  # Ctrl-C, or a signal that stopped training (TrainingStopped)
        what = f"stopped by {interrupt.signal_name}" if isinstance(interrupt, TrainingStopped) else "interrupted"
        print(f"cifarlab: {what}{'; ' + str(interrupt) if interrupt.args else ''}", file=sys.stderr)
        return interrupt.exit_code if isinstance(interrupt, TrainingStopped) else 130
    except Exception as error:  # not a user error: a bug, or the machine (out of memory, a driver)
        missing = isinstance(error, ModuleNotFoundError) and missing_extra_message(error.name, args.command)
        if missing and not debug:  # an optional extra that is not installed: a user's fix, in one line
            print(f"cifarlab: error: {missing}", file=sys.stderr)
            return 2
        if debug:
            raise
        detail = " ".join(f"{type(error).__name__}: {error}".split())[:500]
        print(f"cifarlab: internal error: {detail}; rerun with --debug for the traceback and report it",
              file=sys.stderr)  # fmt: skip
        return 1
    finally:
        distributed.shutdown(finished=finished)  # a torchrun rank leaves its process group
    return status if isinstance(status, int) else 0  # predict: 1 when files were skipped


def _reader_gone() -> bool:
    """Whether stdout is a pipe whose reader has closed it (a broken pipe elsewhere, a socket, is an error)."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(event & select.POLLERR for _, event in poller.poll(0))
    except (OSError, ValueError, AttributeError):  # stdout without a file descriptor (captured), or no poll()
        return False


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's last flush to a closed pipe raises nothing."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # stdout without a file descriptor (captured)
        pass


def run() -> NoReturn:
    """The `cifarlab` command (and `python -m cifarlab`): `main`, then exit with its status."""
    status = main()
    distributed.exit_rank(status)  # a torchrun rank ends here, before the interpreter's teardown
    sys.exit(status)


if __name__ == "__main__":
    run()
