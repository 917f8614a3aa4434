"""Speed benchmarks: every comparison side by side in one run, alternating, medians of several repeats.

    python benchmarks/speed.py                       # throughput table: precision, memory format, compile, TTA
    python benchmarks/speed.py --keras               # + the seed's networks in Keras/TensorFlow (separate venv)
    python benchmarks/speed.py --profile fast94      # where one training step's time goes
    python benchmarks/speed.py --presets "" --whiten-bias fast94 --steps 3 --repeats 6
    python benchmarks/speed.py --device cuda --steps 50   # the same tables on a GPU
    python benchmarks/speed.py --presets "" --levers proyecto9,proyecto1   # fast dropout and fused chains, before/after
    python benchmarks/speed.py --presets "" --keras --dropout torch --fuse off   # Keras against cifarlab as it was

Timings on a shared 2-core machine are noisy: run nothing else meanwhile. Each variant is timed in turn within
each repeat (so drifts in machine speed hit all variants alike), and ratios are taken against the first variant.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from cifarlab.data.dataset import Split
from cifarlab.data.loader import BatchLoader, Normalization
from cifarlab.device import autocast, describe_hardware, resolve_device, resolve_precision
from cifarlab.evaluation.tta import TTA
from cifarlab.models import create_model
from cifarlab.models.fast_dropout import set_fast_dropout
from cifarlab.models.keras_cnn import set_fusion
from cifarlab.presets import get_preset
from cifarlab.training.schedules import build_optimizer

DEVICE = torch.device("cpu")  # set by --device
LEVERS = {"dropout": "fast", "fuse": "on"}  # set by --dropout and --fuse: the defaults of every table but --levers
KERAS_VENV = Path(os.environ.get("CIFARLAB_KERAS_VENV", "/tmp/cifarlab-keras-venv"))


def ceiling_dtype() -> torch.dtype:
    """The dtype of the matmul ceiling: the one training autocasts to here (`--precision auto`). A CPU without bf16
    hardware trains in fp32, and its emulated bf16 matmul is no ceiling (it takes minutes at 4096^2)."""
    return torch.bfloat16 if resolve_precision("auto", DEVICE) == "bf16" else torch.float32


def matmul_ceiling() -> float:
    """Matmul TFLOP/s (in `ceiling_dtype`) on this device now (the best of 3; random data, never zeros)."""
    n = 8192 if DEVICE.type == "cuda" else 4096
    a = torch.randn(n, n, dtype=ceiling_dtype(), device=DEVICE)
    b = torch.randn(n, n, dtype=ceiling_dtype(), device=DEVICE)
    a @ b
    repeats = 10 if DEVICE.type == "cuda" else 1
    best = min(_time(lambda: [a @ b for _ in range(repeats)]) for _ in range(3))
    return 2 * n**3 * repeats / best / 1e12


def _sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def _time(fn: Callable[[], object]) -> float:
    """Wall seconds of fn(), device work included."""
    _sync()
    start = time.perf_counter()
    fn()
    _sync()
    return time.perf_counter() - start


def _synthetic_split(n: int, seed: int = 0) -> Split:
    g = torch.Generator().manual_seed(seed)
    split = Split(torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g), torch.randint(0, 10, (n,)))
    return split.to(DEVICE)


def make_train_step(
    preset: str,
    precision: str,
    channels_last: bool,
    compile_model: bool,
    batch_size: int | None,
    dropout: str | None = None,
    fuse: str | None = None,
):
    """A closure running one real training step of `preset` (loader, augmentation, forward, backward, step).

    `dropout` ('fast' or 'torch') and `fuse` ('on' or 'off') default to --dropout and --fuse.
    """
    config = get_preset(preset).config
    recipe = config.train
    batch = batch_size or recipe.batch_size
    torch.manual_seed(0)
    model = create_model(config.model).to(DEVICE)
    set_fast_dropout(model, (dropout or LEVERS["dropout"]) == "fast")
    set_fusion(model, (fuse or LEVERS["fuse"]) == "on")
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    forward = torch.compile(model) if compile_model else model
    optimizer = build_optimizer(model, recipe)
    loader = BatchLoader(_synthetic_split(batch * 4), batch, Normalization(), shuffle=True, augment=recipe.augment,
                         steps_per_epoch=10**9, channels_last=channels_last)  # fmt: skip
    batches = iter(loader)

    def step() -> None:
        inputs, labels = next(batches)
        with autocast(DEVICE, precision):
            logits = forward(inputs)
        loss = F.cross_entropy(logits.float(), labels, label_smoothing=recipe.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step, batch, model


def train_flops(preset: str, batch: int) -> float:
    """FLOPs of one training step (forward + backward) at `batch`."""
    model = create_model(get_preset(preset).config.model)
    x = torch.randn(batch, 3, 32, 32)
    with FlopCounterMode(display=False) as counter:
        model(x).sum().backward()
    return float(counter.get_total_flops())


def compare(variants: dict[str, Callable[[], float]], repeats: int) -> dict[str, list[float]]:
    """Run each variant once per repeat, in turn; each returns images/s."""
    results: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, run in variants.items():
            results[name].append(run())
    return results


def _throughput(step: Callable[[], None], batch: int, steps: int) -> Callable[[], float]:
    def run() -> float:
        step()  # one unmeasured step: caches, allocator
        seconds = _time(lambda: [step() for _ in range(steps)])
        return batch * steps / seconds

    return run


def print_table(title: str, results: dict[str, list[float]], unit: str = "img/s") -> dict[str, float]:
    """Median and ratio to the first row."""
    print(f"\n{title}")
    medians = {name: statistics.median(values) for name, values in results.items()}
    base = next(iter(medians.values()))
    for name, median in medians.items():
        spread = f"{min(results[name]):.0f}-{max(results[name]):.0f}"
        print(f"  {name:<38} {median:>8.0f} {unit}  (range {spread:>11})  x{median / base:.2f}")
    return medians


def bench_training(preset: str, repeats: int, steps: int, include_compile: bool) -> dict[str, float]:
    """fp32 vs bf16, NCHW vs channels_last, eager vs compiled, for one preset's real training step."""
    variants = {}
    settings = [("fp32", False, False), ("fp32", True, False), ("bf16", False, False), ("bf16", True, False)]
    if include_compile:
        settings.append(("bf16", True, True))
    for precision, channels_last, compiled in settings:
        start = time.perf_counter()
        step, batch, _ = make_train_step(preset, precision, channels_last, compiled, None)
        step()
        name = f"{precision} {'channels_last' if channels_last else 'NCHW'}{' compiled' if compiled else ''}"
        if compiled:
            name += f" (compile {time.perf_counter() - start:.0f}s)"
        variants[name] = _throughput(step, batch, steps)
    return print_table(f"training throughput, {preset} (batch {batch}, {steps} steps x {repeats})",
                       compare(variants, repeats))  # fmt: skip


def bench_threads(preset: str, repeats: int, steps: int) -> dict[str, float]:
    """The same bf16 channels_last training step with 1, 2, ... intra-op threads (up to the CPU count)."""
    step, batch, _ = make_train_step(preset, "bf16", True, False, None)
    step()
    default = torch.get_num_threads()
    variants = {}
    for threads in range(1, (os.cpu_count() or 1) + 1):

        def run(threads: int = threads) -> float:
            torch.set_num_threads(threads)
            try:
                return _throughput(step, batch, steps)()
            finally:
                torch.set_num_threads(default)

        variants[f"{threads} thread{'s' if threads > 1 else ''}"] = run
    return print_table(f"threads, {preset} (bf16 channels_last, batch {batch})", compare(variants, repeats))


def bench_levers(preset: str, repeats: int, steps: int) -> dict[str, float]:
    """Issue 12's levers 1 and 2 on one preset's real bf16 channels_last step: PyTorch's dropout and the chain
    module by module (as before), hashed dropout masks, then the fused max-pool/ReLU/Dropout/BatchNorm chain."""
    settings = {"torch dropout, unfused (before)": ("torch", "off"), "fast dropout, unfused": ("fast", "off"),
                "fast dropout, fused chain": ("fast", "on")}  # fmt: skip
    variants = {}
    for name, (dropout, fuse) in settings.items():
        step, batch, _ = make_train_step(preset, "bf16", True, False, None, dropout, fuse)
        start = time.perf_counter()
        step()  # compiles the kernels (cached on disk after the first run)
        if name != next(iter(settings)):
            name += f" (first step {time.perf_counter() - start:.0f}s)"
        variants[name] = _throughput(step, batch, steps)
    return print_table(f"dropout and fused chains, {preset} (bf16 channels_last, batch {batch}, {steps} steps)",
                       compare(variants, repeats))  # fmt: skip


def bench_whiten_bias(preset: str, repeats: int, steps: int) -> dict[str, float]:
    """An AirNet step with its whitening bias learning, and frozen (train.whiten_bias_epochs)."""
    step, batch, model = make_train_step(preset, "bf16", True, False, None)
    step()

    def run(frozen: bool) -> Callable[[], float]:
        def timed() -> float:
            model.whiten.bias.requires_grad_(not frozen)
            return _throughput(step, batch, steps)()

        return timed

    variants = {"whitening bias learning": run(False), "whitening bias frozen": run(True)}
    return print_table(f"whitening bias, {preset} (bf16 channels_last, batch {batch})", compare(variants, repeats))


def bench_eval(preset: str, repeats: int) -> dict[str, float]:
    """Inference images/s without and with test-time augmentation."""
    model = create_model(get_preset(preset).config.model).eval().to(DEVICE, memory_format=torch.channels_last)
    x = torch.randn(1000, 3, 32, 32, device=DEVICE).contiguous(memory_format=torch.channels_last)
    variants = {}
    for level in (0, 1, 2):
        wrapped = TTA(model, level)

        def run(wrapped: TTA = wrapped) -> float:
            with torch.no_grad(), autocast(DEVICE, "bf16"):
                wrapped(x)
                return len(x) / _time(lambda: wrapped(x))

        variants[f"TTA level {level}"] = run
    return print_table(f"evaluation throughput, {preset} (bf16, batch 1000)", compare(variants, repeats))


def profile_step(preset: str) -> None:
    """Where one training step's time goes, by operator group."""
    step, batch, _ = make_train_step(preset, "bf16", True, False, None)
    for _ in range(2):
        step()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(3):
            step()
    groups = {"conv backward": ("convolution_backward",), "conv forward": ("convolution",),
              "batchnorm": ("batch_norm", "native_batch_norm"), "pooling": ("max_pool",),
              "activation": ("gelu", "relu"), "optimizer": ("_foreach", "sgd", "adam"),
              "augmentation/data": ("grid_sampler", "index", "randperm", "gather", "reflection_pad", "flip", "where"),
              "linear/matmul": ("addmm", "mm", "linear"), "dropout (PyTorch's)": ("bernoulli", "dropout"),
              "compiled kernels (fast dropout, fused chains)": ("compiledfxgraph",)}  # fmt: skip
    totals: dict[str, float] = {name: 0.0 for name in groups}
    totals["other"] = 0.0
    all_time = 0.0
    for event in prof.key_averages():
        self_time = event.self_cpu_time_total
        all_time += self_time
        key = event.key.lower()
        for name, needles in groups.items():
            if any(needle in key for needle in needles):
                totals[name] += self_time
                break
        else:
            totals["other"] += self_time
    print(f"\nprofile of 3 training steps, {preset} (bf16, channels_last, batch {batch}); self CPU time by group")
    for name, value in sorted(totals.items(), key=lambda kv: -kv[1]):
        print(f"  {name:<46} {value / 1e3:>9.0f} ms  {100 * value / max(all_time, 1):5.1f}%")


def ensure_keras_venv() -> Path:
    """A separate venv with tensorflow-cpu (Keras 3), made once."""
    python = KERAS_VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(KERAS_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "tensorflow-cpu"], check=True)
    return python


KERAS_SCRIPT = r"""
import json, sys, time, os
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np, keras
name, batch, policy, steps = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
keras.mixed_precision.set_global_policy(policy)
L = keras.layers
def block(m, f, drop, bn):
    m.add(L.Conv2D(f, 3, padding="same", activation="relu")); m.add(L.Conv2D(f, 3, padding="same", activation="relu"))
    m.add(L.MaxPooling2D(2)); m.add(L.Dropout(drop)); bn and m.add(L.BatchNormalization())
m = keras.Sequential([keras.Input((32, 32, 3))])
if name == "proyecto1":
    m.add(L.Conv2D(32, 3, padding="same", activation="relu")); m.add(L.MaxPooling2D(2))
    m.add(L.Conv2D(64, 3, padding="same", activation="relu")); m.add(L.MaxPooling2D(2))
    m.add(L.Flatten()); m.add(L.Dense(64, activation="relu"))
else:  # proyecto9's network (P6)
    for f in (64, 128, 256): block(m, f, 0.3, True)
    m.add(L.Flatten()); m.add(L.Dense(512, activation="relu")); m.add(L.Dropout(0.3)); m.add(L.BatchNormalization())
m.add(L.Dense(10, activation="softmax", dtype="float32"))
m.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
x = np.random.rand(batch * steps, 32, 32, 3).astype("float32"); y = np.random.randint(0, 10, batch * steps)
m.fit(x[: batch * 2], y[: batch * 2], batch_size=batch, epochs=1, verbose=0)
t = time.perf_counter(); m.fit(x, y, batch_size=batch, epochs=1, verbose=0); s = time.perf_counter() - t
print(json.dumps({"images_per_s": batch * steps / s}))
"""


def bench_keras(preset: str, repeats: int, steps: int) -> dict[str, float]:
    """The seed's network in Keras/TF (float32, mixed_bfloat16) against cifarlab, alternating."""
    python = ensure_keras_venv()
    script = Path("/tmp/cifarlab_keras_bench.py")
    script.write_text(KERAS_SCRIPT)
    batch = get_preset(preset).config.train.batch_size
    model = get_preset(preset).config.model

    def keras_run(policy: str) -> Callable[[], float]:
        def run() -> float:
            out = subprocess.run([str(python), str(script), model, str(batch), policy, str(steps)],
                                 capture_output=True, text=True, check=True)  # fmt: skip
            return json.loads(out.stdout.strip().splitlines()[-1])["images_per_s"]

        return run

    step, _, _ = make_train_step(preset, "bf16", True, False, batch)
    variants = {
        "keras float32": keras_run("float32"),
        "keras mixed_bfloat16": keras_run("mixed_bfloat16"),
        "cifarlab bf16 channels_last": _throughput(step, batch, steps),
    }
    return print_table(f"{preset}'s network, Keras/TF vs cifarlab (batch {batch})", compare(variants, repeats))


def main() -> None:
    """Run the benchmarks named on the command line."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default="proyecto9,fast94", help="presets for the training table ('' for none)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5, help="timed training steps per repeat")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile variant")
    parser.add_argument("--keras", action="store_true", help="also compare with Keras on TensorFlow")
    parser.add_argument("--profile", metavar="PRESET", help="profile one preset's training step")
    parser.add_argument("--threads", metavar="PRESET", help="compare intra-op thread counts on one preset")
    parser.add_argument("--whiten-bias", metavar="PRESET", help="an AirNet step with the whitening bias frozen or not")
    parser.add_argument("--levers", metavar="PRESETS", help="before/after rows for hashed dropout and fused chains")
    parser.add_argument("--dropout", choices=("fast", "torch"), default="fast", help="Dropout in the other tables")
    parser.add_argument("--fuse", choices=("on", "off"), default="on", help="fused pool chains in the other tables")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (--keras, --threads and --profile: CPU only)")
    args = parser.parse_args()
    global DEVICE
    DEVICE = resolve_device(args.device)
    if DEVICE.type != "cpu" and (args.keras or args.threads or args.profile):
        parser.error("--keras, --threads and --profile measure the CPU: use them with --device cpu")
    LEVERS.update(dropout=args.dropout, fuse=args.fuse)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {os.cpu_count()} cpus, {describe_hardware(torch.device('cpu'))}")
    print(f"dropout {args.dropout}, fused chains {args.fuse} (the --levers table sets its own)")
    if DEVICE.type == "cuda":
        print(f"device: {torch.cuda.get_device_name(DEVICE)}")
    ceiling_name = f"{'bf16' if ceiling_dtype() == torch.bfloat16 else 'fp32'} matmul ceiling"
    ceiling_before = matmul_ceiling()
    print(f"{ceiling_name} now: {ceiling_before:.2f} TFLOP/s")
    for preset in filter(None, args.presets.split(",")):
        medians = bench_training(preset, args.repeats, args.steps, not args.no_compile)
        batch = get_preset(preset).config.train.batch_size
        best = max(medians.values())
        achieved = train_flops(preset, batch) / batch * best / 1e12
        print(f"  best: {achieved:.3f} TFLOP/s = {100 * achieved / ceiling_before:.0f}% of the {ceiling_name}")
        bench_eval(preset, args.repeats)
    if args.keras:
        for preset in ("proyecto9", "proyecto1"):
            bench_keras(preset, args.repeats, args.steps * 4)
    if args.threads:
        bench_threads(args.threads, args.repeats, args.steps)
    for preset in filter(None, (args.levers or "").split(",")):
        bench_levers(preset, args.repeats, args.steps)
    if args.whiten_bias:
        bench_whiten_bias(args.whiten_bias, args.repeats, args.steps)
    if args.profile:
        profile_step(args.profile)
    print(f"\n{ceiling_name} after: {matmul_ceiling():.2f} TFLOP/s")


if __name__ == "__main__":
    main()
