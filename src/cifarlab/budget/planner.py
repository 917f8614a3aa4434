"""`train --budget`: the most accurate recipe of the measured front that this machine can run in the time given.

The budget is command time, counted from the start of the process (`cifarlab train --budget`; from Python, from
the call, or from `started`): loading the data, measuring this machine, training, the final evaluations and
saving the run all come out of it. The plan:

1. Load the data (its time is known once it has loaded).
2. Measure this machine: a few training steps of the front's networks on real training images, at the full and
   the low resolution, in the run's own precision, layout and device. A step's FLOPs are known
   (`training.cost`), so each measurement is seconds per FLOP, and every point's time follows from its cost on
   this data. The smallest network is measured first; a wider one only when it might fit (wide networks run
   more FLOPs per second, so the smallest one's speed never makes a wide point look cheaper than it is).
3. Choose the most accurate point whose schedule fits what is left after the final evaluation, saving and a
   margin are set aside; refuse in one line when not even the cheapest fits.
4. Train it by the clock (`train.duration`, see `training.clock`): its learning rate decays to 0 as the time
   left runs out, so the run ends on time even where the estimate was off, and a point that fits with time to
   spare trains that much longer (the epochs planned grow with it, progressive resizing in proportion). The
   clock is set again when training begins (`Deadline`), so the run's set-up, however long it took, comes out of
   the training time rather than out of the margin.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cifarlab import api, options
from cifarlab._io.durations import format_duration, parse_duration
from cifarlab.budget.frontier import Frontier, FrontPoint, load_frontier
from cifarlab.config import SHORT_KEYS, RunConfig, apply_overrides
from cifarlab.data import Dataset
from cifarlab.data.dataset import without_test
from cifarlab.device import describe_hardware, resolve_device
from cifarlab.training.callbacks import Callback
from cifarlab.training.cost import (
    DataSizes,
    data_sizes,
    evaluation_flops,
    image_flops,
    training_flops,
)
from cifarlab.training.trainer import Trainer

_IMPORTED = time.perf_counter()
PROBE_BATCH = 256  # images per measured 32 px step (fewer on larger images): a CPU's speed per image barely
# depends on the batch past this
PROBE_STEPS = 2  # timed steps at the full size, after one untimed (its kernels and allocations are set up)
FINISH_SECONDS = 4.0  # after the final evaluations: checkpoint, Grad-CAM, report.html (about 1 s in a fast88 run)
SETUP_SECONDS = 2.0  # the run's trainer: normalisation fitted on the images, whitening, the first step's set-up
MARGIN = 0.02  # of the budget, kept free for what no estimate sees
WIDE_SPEEDUP = {"cpu": 2.0, "cuda": 10.0}  # at most this many times the smallest network's FLOPs per second
RECIPE_PREFIXES = ("train.", "arch.", "transfer.")  # --budget chooses these itself
RECIPE_KEYS = ("model", "preset")


def process_started() -> float:
    """When this process started, as a `time.perf_counter()` reading.

    From /proc on Linux; elsewhere, when cifarlab.budget was imported.
    """
    try:
        with open("/proc/self/stat") as stat, open("/proc/uptime") as uptime:
            started = int(stat.read().rpartition(")")[2].split()[19]) / os.sysconf("SC_CLK_TCK")
            return time.perf_counter() - max(0.0, float(uptime.read().split()[0]) - started)
    except (OSError, ValueError, IndexError):
        return _IMPORTED


@dataclass(frozen=True)
class Speed:
    """This machine's training speed on one network, in seconds per FLOP, measured on real training images."""

    full: float  # at the images' own side
    low: float  # at the low-resolution side (the same as `full` where the recipe has none)
    setup: float  # seconds the first steps took beyond their FLOPs' share (kernels, allocations, compiling)
    evaluate: float | None = None  # per FLOP of an evaluation's forward pass (no gradients); None: as `full`


@dataclass(frozen=True)
class Estimate:
    """How long one point's run takes here, in parts (seconds)."""

    train: float  # its optimiser steps and the validation after each epoch, over the point's own epochs
    finish: float  # final evaluations (TTA views), checkpoint and report
    setup: float


@dataclass
class Plan:
    """The chosen recipe, by the clock, and why."""

    budget: float
    point: FrontPoint
    config: RunConfig  # the run: the point over the front's preset, by the clock (train.duration)
    estimate: Estimate
    spent: float  # seconds gone when the plan was made (loading, measuring)
    lines: list[str]  # what the command prints before training


@dataclass
class BudgetResult:
    """A run trained within a budget: the run, the plan, and the command's time."""

    run: api.RunResult
    plan: Plan
    seconds: float  # seconds of the budget spent when the run was saved

    def summary(self) -> str:
        """One line: the time used against the budget."""
        share = self.seconds / self.plan.budget * 100
        return (f"budget {format_duration(self.plan.budget)}: done in {format_duration(self.seconds)} of command "
                f"time ({share:.0f} %)")  # fmt: skip


def parse_budget(text: str | float) -> float:
    """`--budget` in seconds: '5m', '90s', '1h30m' or a number of seconds.

    Raises:
        ValueError: for anything else, or a budget that is not positive (one line, naming --budget).
    """
    seconds = float(text) if isinstance(text, int | float) else parse_duration(text, "--budget")
    if not (seconds > 0 and math.isfinite(seconds)):
        raise ValueError(f"--budget {text!r}: give a positive duration, such as 3m, 7m or 15m")
    return seconds


def train_within(
    budget: str | float,
    *,
    frontier: Frontier | None = None,
    dataset: Dataset | None = None,
    callbacks: list[Callback] | None = None,
    say: Callable[[str], None] | None = None,
    started: float | None = None,
    **overrides: Any,
) -> BudgetResult:
    """Train the most accurate recipe of the front that fits `budget` of time on this machine.

    Args:
        budget: '3m', '7m', '1h', or seconds.
        frontier: the front to choose from (default: the one shipped with cifarlab, `load_frontier()`).
        dataset: data already in memory (otherwise the data options say where to load it from).
        callbacks: extra callbacks of the run.
        say: where the plan's lines go (default: printed).
        started: when the budget's time began, a `time.perf_counter()` reading (default: now; the command line
            passes the process's start, `process_started()`, so that its start-up counts too).
        **overrides: where the data is and how the machine runs (`data=`, `out=`, `seed=`, `device=`, ...); the
            recipe is the budget's to choose, so its options (epochs, lr, widths, ...) are refused.

    Raises:
        ValueError: for a bad budget, a recipe option, or a budget too small for any recipe here (one line).
    """
    started = time.perf_counter() if started is None else started
    seconds = parse_budget(budget)
    dotted = [SHORT_KEYS.get(key, key) for key in overrides]
    recipe = sorted(key for key in dotted if key.startswith(RECIPE_PREFIXES) or key in RECIPE_KEYS)
    if recipe:
        flags = options.flag_names(recipe, options.run_options(RunConfig))
        raise ValueError(f"--budget chooses the recipe itself; drop {', '.join(flags)}")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError("--budget plans and trains in one process; run it without torchrun")
    floor = (SETUP_SECONDS + FINISH_SECONDS) / (1 - MARGIN)  # before any training: refused before loading the data
    if seconds - (time.perf_counter() - started) < floor:
        raise ValueError(f"--budget {format_duration(seconds)} is too small for any recipe: setting up, evaluating "
                         f"and saving a run alone take about {format_duration(floor)}")  # fmt: skip
    frontier = frontier if frontier is not None else load_frontier()
    base = api.resolve_config(frontier.preset, **overrides)  # a bad data or machine option fails here
    say = say or (lambda line: print(line, flush=True))
    data = dataset if dataset is not None else api.load_training_data(base)
    plan = plan_budget(seconds, frontier, base, data, started)
    for line in plan.lines:
        say(line)
    record = f"trained within --budget {format_duration(seconds)}: {plan.lines[1]}"  # metrics.json and the report
    data = dataclasses.replace(data, notes=[*data.notes, record])
    deadline = Deadline(started + seconds * (1 - MARGIN) - plan.estimate.finish)
    run = api.train(config=plan.config, dataset=data, callbacks=[deadline, *(callbacks or [])])
    return BudgetResult(run, plan, time.perf_counter() - started)


class Deadline(Callback):
    """Sets a budget run's clock to the time left before `at` (a `time.perf_counter()` reading) as training begins.

    The run's set-up (normalisation, whitening, compiling) then comes out of its training time, not the margin.
    """

    def __init__(self, at: float) -> None:
        self.at = at

    def on_train_begin(self) -> None:
        """Set the clock: what is left before the deadline, now that the run is set up."""
        clock = self.trainer.clock
        if clock is not None:
            clock.duration = max(1.0, self.at - time.perf_counter())


def plan_budget(
    budget: float, frontier: Frontier, base: RunConfig, dataset: Dataset, started: float | None = None
) -> Plan:
    """Measure this machine and choose the front's point for `budget` seconds (see the module).

    The seconds count from `started`, a `time.perf_counter()` reading (default: now).

    Raises:
        ValueError: when not even the cheapest point fits what is left of the budget.
    """
    started = time.perf_counter() if started is None else started

    def spent_now() -> float:
        return time.perf_counter() - started

    sizes = data_sizes(base, dataset)
    configs = {point.name: point_config(frontier, point, base, dataset.image_size) for point in frontier.points}
    speeds: dict[tuple[Any, ...], Speed] = {}
    device = resolve_device(base.device)
    bound = WIDE_SPEEDUP["cuda" if device.type == "cuda" else "cpu"]

    def estimate(point: FrontPoint, speed: Speed) -> Estimate:
        return _estimate(configs[point.name], speed, sizes)

    cheapest = frontier.points[0]
    probe = measure_speed(configs[cheapest.name], dataset)
    speeds[_network(configs[cheapest.name], dataset.image_size)] = probe
    chosen: tuple[FrontPoint, Estimate] | None = None

    def left() -> float:  # what is left of the budget now, the margin set aside
        return budget - spent_now() - MARGIN * budget

    for point in sorted(frontier.points, key=lambda p: -p.accuracy):
        config = configs[point.name]
        guess = estimate(point, probe)
        if (guess.train / bound) + guess.finish + guess.setup > left():
            continue  # even at the most a wider network can gain on the smallest one's speed, it cannot fit
        key = _network(config, dataset.image_size)
        if key not in speeds:
            speeds[key] = measure_speed(config, dataset)
        found = estimate(point, speeds[key])
        if found.train + found.finish + found.setup <= left():
            chosen = (point, found)
            break
    spent = spent_now()
    if chosen is None:
        need = estimate(cheapest, probe)
        total = spent + need.train + need.finish + need.setup
        raise ValueError(
            f"--budget {format_duration(budget)} is too small for any recipe on this machine: the cheapest "
            f"({cheapest.describe()}, {cheapest.accuracy:.1f} % on {_data_name(frontier)}) needs about "
            f"{format_duration(need.train + need.finish + need.setup)} here after {format_duration(spent)} of "
            f"loading and measuring; give at least {format_duration(math.ceil(total / (1 - MARGIN) / 10) * 10)}"
        )
    point, found = chosen
    left = budget - spent - MARGIN * budget - found.finish - found.setup
    config = by_the_clock(configs[point.name], left, found.train)
    lines = _plan_lines(budget, frontier, point, found, spent, config, left, device, base)
    return Plan(budget, point, config, found, spent, lines)


def point_config(frontier: Frontier, point: FrontPoint, base: RunConfig, image_size: int) -> RunConfig:
    """The point's run config over `base` (the front's preset with the user's data and machine options).

    Progressive resizing keeps the point's share of the image side on images of another size.
    """
    config = apply_overrides(base, dict(point.overrides))
    train = config.train
    measured_side = int(frontier.data.get("image_size") or 32)
    if train.low_res_size and image_size != measured_side:
        side = round(train.low_res_size * image_size / measured_side)
        low = (side, train.low_res_epochs) if 8 <= side < image_size else (0, 0)
        config = dataclasses.replace(config, train=dataclasses.replace(train, low_res_size=low[0],
                                                                       low_res_epochs=low[1]))  # fmt: skip
    return config


def by_the_clock(config: RunConfig, seconds: float, estimated: float) -> RunConfig:
    """`config` trained for `seconds` by the clock: its epochs planned in proportion to the time, never fewer."""
    train = config.train
    scale = max(1.0, seconds / max(estimated, 1e-9))
    epochs = max(train.epochs, math.floor(train.epochs * scale))
    ratio = epochs / train.epochs
    low = min(epochs - 1, round(train.low_res_epochs * ratio)) if train.low_res_epochs else 0
    whiten = round(train.whiten_bias_epochs * ratio) if train.whiten_bias_epochs else 0
    train = dataclasses.replace(train, epochs=epochs, low_res_epochs=low, low_res_size=train.low_res_size if low else 0,
                                whiten_bias_epochs=whiten, duration=round(seconds, 1))  # fmt: skip
    return dataclasses.replace(config, train=train)


def measure_speed(config: RunConfig, dataset: Dataset) -> Speed:
    """Seconds per training FLOP of `config`'s network here, from a few steps on real training images."""
    batch = probe_batch(config, dataset.image_size, resolve_device(config.device).type)
    count = min(len(dataset.train), batch * (PROBE_STEPS + 1))
    images = dataset.train.subset(
        torch.randperm(len(dataset.train), generator=torch.Generator().manual_seed(0))[:count]
    )
    probe_data = without_test(dataclasses.replace(dataset, train=images, val=None))
    train = dataclasses.replace(config.train, batch_size=batch, epochs=1, duration=None, steps_per_epoch=None)
    data = dataclasses.replace(config.data, val_size=0, classes=None, per_class_limit=None)
    probe = dataclasses.replace(config, train=train, data=data, out=None, quiet=True)
    trainer = Trainer(probe, probe_data, run_dir=None)
    side = dataset.image_size
    low_side = config.train.low_res_side(side)
    arch = config.arch.kwargs()
    classes = len(dataset.class_names)
    full_flops = image_flops(config.model, side, classes, arch)  # a training step's and a forward pass's
    first, per_image = _time_steps(trainer, None, PROBE_STEPS)
    full = per_image / full_flops.train
    low = full
    if low_side is not None:
        low_first, low_per_image = _time_steps(trainer, low_side, 1)
        low = low_per_image / image_flops(config.model, low_side, classes, arch).train
        first += low_first
    shown = probe_data.train.subset(torch.arange(min(len(probe_data.train), config.train.eval_batch_size)))
    trainer.evaluate(shown)  # its kernels set up, untimed
    started = time.perf_counter()
    trainer.evaluate(shown)
    evaluate = (time.perf_counter() - started) / len(shown) / full_flops.forward
    return Speed(full=full, low=low, setup=max(0.0, first), evaluate=evaluate)


def probe_batch(config: RunConfig, side: int, device: str = "cpu") -> int:
    """Images per measured step.

    On a CPU, PROBE_BATCH at 32 px and fewer on larger images (as many pixels), at least 8; on a GPU, whose speed
    per image grows with the batch, the recipe's own batch.
    """
    if device == "cuda":
        return config.train.batch_size
    return min(config.train.batch_size, max(8, PROBE_BATCH * 32 * 32 // (side * side)))


def _time_steps(trainer: Trainer, side: int | None, steps: int) -> tuple[float, float]:
    """(seconds the untimed first step took beyond a timed one's, seconds per image of the timed steps).

    A step's time includes making its batch (augmenting, resizing), as the run's steps do.
    """
    trainer.train_loader.resize_to = side
    batches = iter(trainer.train_loader)
    times, images = [], 0
    for i in range(steps + 1):
        started = time.perf_counter()
        try:
            inputs, labels = next(batches)
        except StopIteration:
            batches = iter(trainer.train_loader)
            inputs, labels = next(batches)
        loss, _ = trainer.train_step(inputs, labels)
        loss.item()  # waits for the device
        times.append(time.perf_counter() - started)
        if i:
            images += len(labels)
    per_image = sum(times[1:]) / max(images, 1)
    return max(0.0, times[0] - per_image * len(labels)), per_image


def _estimate(config: RunConfig, speed: Speed, sizes: DataSizes) -> Estimate:
    """Seconds of `config`'s run here at `speed`: training (with validation each epoch), finishing, setting up."""
    low, full = training_flops(config, sizes.train, sizes.image_size, sizes.classes)
    each_epoch, final = evaluation_flops(config, sizes.val, sizes.test, sizes.image_size, sizes.classes)
    last_validation = each_epoch / max(config.train.epochs, 1)  # the last epoch's, after the clock has stopped
    evaluate = speed.full if speed.evaluate is None else speed.evaluate
    return Estimate(train=low * speed.low + full * speed.full + each_epoch * evaluate,
                    finish=(final + last_validation) * evaluate + FINISH_SECONDS,
                    setup=SETUP_SECONDS + speed.setup)  # fmt: skip


def _network(config: RunConfig, side: int) -> tuple[Any, ...]:
    """What a speed measurement depends on: the network, the probe's batch, its low-resolution side."""
    batch = probe_batch(config, side, resolve_device(config.device).type)
    return config.model, tuple(sorted(config.arch.kwargs().items())), batch, config.train.low_res_size


def _data_name(frontier: Frontier) -> str:
    source = str(frontier.data.get("source") or "the data it was measured on")
    return "CIFAR-10" if source == "cifar10" else source.rstrip("/").rpartition("/")[2] or source


def _plan_lines(
    budget: float, frontier: Frontier, point: FrontPoint, estimate: Estimate, spent: float, config: RunConfig,
    left: float, device: torch.device, base: RunConfig,
) -> list[str]:  # fmt: skip
    """What `train --budget` says before it trains: the machine, the choice, what to expect, and why."""
    more = [p for p in frontier.points if p.accuracy > point.accuracy]
    recipe = config.train
    low = f", the first {recipe.low_res_epochs} at {recipe.low_res_size}px" if recipe.low_res_epochs else ""
    lines = [
        f"budget {format_duration(budget)} on {describe_hardware(device)}: {format_duration(spent)} gone to "
        "loading the data and measuring this machine",
        f"chose {point.name} of the measured front: {point.describe()} (about {recipe.epochs} epochs by the clock "
        f"in {format_duration(left)}{low}; final evaluation and saving ~{format_duration(estimate.finish)})",
        f"expect about {point.accuracy:.1f} % on {_data_name(frontier)} or better (measured {point.accuracy:.2f} ± "
        f"{point.accuracy_std:.2f} % over {point.seeds} seeds on {frontier.machine()})",
    ]
    if more:
        nearest = min(more, key=lambda p: p.flops)
        lines.append(f"the next point up, {nearest.accuracy:.1f} % ({nearest.describe()}), does not fit here; a "
                     "larger --budget or a faster machine reaches it")  # fmt: skip
    if Path(str(base.data.source)).name != Path(str(frontier.data.get("source") or "")).name:
        lines.append(f"the accuracy above is {_data_name(frontier)}'s; on {base.data.source} it will differ")
    return lines
