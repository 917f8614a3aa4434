"""How well oneDNN's convolutions use this CPU's matrix units, layer by layer, for the seed's networks.

    python benchmarks/amx_probe.py                                   # every conv of P1, P6 (= P9), P7 at batch 256
    python benchmarks/amx_probe.py --models proyecto6 --batches 64,256,512 --threads 1,2
    python benchmarks/amx_probe.py --widths 16,32,48,64,128,256      # square 3x3 convs at 16x16: tile filling
    python benchmarks/amx_probe.py --isa AVX512_CORE_BF16,DEFAULT    # the same layers without / with AMX
    python benchmarks/amx_probe.py --kernels                         # which oneDNN kernel runs each pass

For each convolution (bf16, channels_last, as autocast runs it in training) it times the three passes of a
training step: forward, the gradient of the input ("dgrad") and of the weights ("wgrad"), and gives their
TFLOP/s and share of a bf16 matmul ceiling measured in the same run (4096^2, best of 3, before and after).
Runs on any x86 or ARM CPU: without AMX the ceiling is AVX512-BF16's (or the emulated one), which is the point
of comparison there. Timings on a shared machine are noisy: run nothing else meanwhile.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
import torch.nn.functional as F

from cifarlab.models import create_model

Layer = tuple[int, int, int, int, int]  # (in channels, out channels, height, width, kernel size); stride 1, 'same'


def cpu_description() -> str:
    """Model name and the matrix/bf16 flags of this CPU."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown CPU"
    lines = info.splitlines()
    name = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "?")
    flags = set(next((line.split(":", 1)[1] for line in lines if line.startswith(("flags", "Features"))), "").split())
    wanted = ("amx_tile", "amx_bf16", "avx512_bf16", "avx512f", "bf16")  # 'bf16' is ARM's flag
    return f"{name}, {os.cpu_count()} cpus, flags: {' '.join(f for f in wanted if f in flags) or 'no bf16 hardware'}"


def seed_layers(names: list[str], image_size: int = 32) -> list[Layer]:
    """The distinct conv shapes of the named models, in order (from a forward pass with hooks)."""
    layers: list[Layer] = []
    for name in names:
        model = create_model(name)
        hooks = []
        for module in model.modules():
            if isinstance(module, torch.nn.Conv2d):

                def hook(mod, inputs, _output):
                    _, c, h, w = inputs[0].shape
                    layer = (c, mod.out_channels, h, w, mod.kernel_size[0])
                    if layer not in layers:
                        layers.append(layer)

                hooks.append(module.register_forward_hook(hook))
        with torch.no_grad():
            model.eval()(torch.zeros(1, 3, image_size, image_size))
        for handle in hooks:
            handle.remove()
    return layers


def width_layers(widths: list[int], side: int = 16) -> list[Layer]:
    """Square 3x3 convs (w -> w channels) at side x side: how channel counts fill the AMX tiles."""
    return [(w, w, side, side, 3) for w in widths]


def _best_seconds(fn: Callable[[], object], repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_ceiling(repeats: int = 3) -> float:
    """bf16 matmul TFLOP/s now: a 4096^2 product, the best of `repeats`."""
    n = 4096
    a, b = torch.randn(n, n, dtype=torch.bfloat16), torch.randn(n, n, dtype=torch.bfloat16)
    a @ b
    best = min(_best_seconds(lambda: a @ b, 1) for _ in range(repeats))
    return 2 * n**3 / best / 1e12


def conv_passes(layer: Layer, batch: int) -> dict[str, Callable[[], object]]:
    """Forward, input-gradient and weight-gradient calls of one bf16 channels_last conv (autocast's dtypes)."""
    c_in, c_out, h, w, k = layer
    cl = torch.channels_last
    x = torch.randn(batch, c_in, h, w, dtype=torch.bfloat16).contiguous(memory_format=cl)
    weight = (torch.randn(c_out, c_in, k, k, dtype=torch.bfloat16) * 0.1).contiguous(memory_format=cl)
    bias = torch.zeros(c_out, dtype=torch.bfloat16)
    grad = torch.randn(batch, c_out, h, w, dtype=torch.bfloat16).contiguous(memory_format=cl)
    pad = k // 2

    def backward(mask: list[bool]) -> Callable[[], object]:
        return lambda: torch.ops.aten.convolution_backward(
            grad, x, weight, [c_out], [1, 1], [pad, pad], [1, 1], False, [0, 0], 1, mask
        )

    return {
        "forward": lambda: F.conv2d(x, weight, bias, padding=pad),
        "dgrad": backward([True, False, False]),
        "wgrad": backward([False, True, True]),
    }


def conv_flops(layer: Layer, batch: int) -> float:
    """Multiply-adds x 2 of one pass (forward, dgrad and wgrad each cost the same)."""
    c_in, c_out, h, w, k = layer
    return 2.0 * batch * c_out * h * w * c_in * k * k


@contextlib.contextmanager
def threads(count: int) -> Iterator[None]:
    """Run with `count` intra-op threads."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def kernel_names(fn: Callable[[], object]) -> list[str]:
    """oneDNN's implementation names for the primitives `fn` executes (its verbose log, read from fd 1)."""
    fn()
    sys.stdout.flush()
    with tempfile.TemporaryFile(mode="w+") as log:
        saved = os.dup(1)
        os.dup2(log.fileno(), 1)
        try:
            with torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON):
                fn()
        finally:
            sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)
        log.seek(0)
        names = []
        for line in log.read().splitlines():
            fields = line.split(",")
            if line.startswith("onednn_verbose") and "exec" in fields and len(fields) > 6:
                kind = fields[fields.index("exec") + 2] if "exec" in fields else "?"
                names.append(f"{kind}:{fields[fields.index('exec') + 3]}")
        return names


def probe(layers: list[Layer], batches: list[int], thread_counts: list[int], repeats: int) -> list[dict]:
    """Time every pass of every layer at every batch size and thread count."""
    rows = []
    for layer in layers:
        for batch in batches:
            passes = conv_passes(layer, batch)
            flops = conv_flops(layer, batch)
            for count in thread_counts:
                with threads(count):
                    seconds = {name: _best_seconds(fn, repeats) for name, fn in passes.items()}
                row = {"layer": layer, "batch": batch, "threads": count}
                row.update({name: flops / s / 1e12 for name, s in seconds.items()})
                row["step_ms"] = 1e3 * sum(seconds.values())
                rows.append(row)
    return rows


def print_rows(rows: list[dict], ceiling: float, title: str) -> None:
    """One line per layer, batch and thread count: TFLOP/s and share of the ceiling for each pass."""
    print(f"\n{title}  (TFLOP/s, % of the {ceiling:.2f} TFLOP/s bf16 matmul ceiling)")
    print(f"  {'conv (in->out @ HxW, k)':<26} {'batch':>5} {'thr':>3} {'forward':>14} {'dgrad':>14} {'wgrad':>14}"
          f" {'3 passes':>9}")  # fmt: skip
    for row in rows:
        c_in, c_out, h, w, k = row["layer"]
        cells = " ".join(f"{row[p]:>6.3f} ({100 * row[p] / ceiling:>3.0f}%)" for p in ("forward", "dgrad", "wgrad"))
        print(f"  {f'{c_in:>3}->{c_out:<3} @ {h}x{w}, {k}':<26} {row['batch']:>5} {row['threads']:>3} {cells}"
              f" {row['step_ms']:>6.1f} ms")  # fmt: skip
    total = {}
    for row in rows:
        total.setdefault((row["batch"], row["threads"]), []).append(row)
    for (batch, count), group in total.items():
        flops = sum(3 * conv_flops(r["layer"], batch) for r in group)
        seconds = sum(r["step_ms"] for r in group) / 1e3
        print(f"  all layers, batch {batch}, {count} thread(s): {flops / seconds / 1e12:.3f} TFLOP/s "
              f"= {100 * flops / seconds / 1e12 / ceiling:.0f}% of the ceiling")  # fmt: skip
    print("  (a network's first conv never runs dgrad in training: its input, the images, needs no gradient)")


def settings() -> str:
    """torch and oneDNN versions, the torch.backends.mkldnn flags and the environment variables that steer oneDNN."""
    names = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "OMP_NUM_THREADS", "KMP_AFFINITY", "ONEDNN_DEFAULT_FPMATH_MODE")
    env = " ".join(f"{k}={os.environ[k]}" for k in names if k in os.environ) or "none of " + ", ".join(names[:4])
    found = re.search(r"DNN (v[\d.]+)", torch.__config__.show())
    onednn = f"oneDNN {found.group(1) if found else '?'}"
    mkldnn = torch.backends.mkldnn
    return (
        f"torch {torch.__version__}, {onednn}; mkldnn available={mkldnn.is_available()} enabled={mkldnn.enabled} "
        f"deterministic={mkldnn.deterministic}; {torch.get_num_threads()} threads; env: {env}"
    )


def run_isa(isa: str, argv: list[str]) -> dict:
    """This probe in a child process with ONEDNN_MAX_CPU_ISA=isa (DEFAULT: unset), its rows as JSON."""
    env = dict(os.environ)
    env.pop("ONEDNN_MAX_CPU_ISA", None)
    if isa != "DEFAULT":
        env["ONEDNN_MAX_CPU_ISA"] = isa
    out = subprocess.run([sys.executable, __file__, *argv, "--json"], env=env, capture_output=True, text=True,
                         check=True)  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    """Parse the options, probe, print."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="proyecto1,proyecto6,proyecto7", help="whose conv layers ('' = none)")
    parser.add_argument("--widths", default="", help="square 3x3 convs at 16x16 with these channel counts")
    parser.add_argument("--batches", default="256", help="comma-separated batch sizes")
    parser.add_argument("--threads", default=str(torch.get_num_threads()), help="comma-separated thread counts")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per pass (the median is kept)")
    parser.add_argument("--kernels", action="store_true", help="print oneDNN's kernel for each pass (batch 1st)")
    parser.add_argument("--isa", default="", help="compare ONEDNN_MAX_CPU_ISA values, e.g. AVX512_CORE_BF16,DEFAULT")
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    layers = seed_layers([m for m in args.models.split(",") if m]) + width_layers(
        [int(w) for w in args.widths.split(",") if w]
    )
    batches = [int(b) for b in args.batches.split(",")]
    thread_counts = [int(t) for t in args.threads.split(",")]
    if args.json:
        ceiling = matmul_ceiling()
        rows = probe(layers, batches, thread_counts, args.repeats)
        print(json.dumps({"ceiling": ceiling, "rows": rows}))
        return
    print(cpu_description())
    print(settings())
    if args.isa:
        child = ["--models", args.models, "--widths", args.widths, "--batches", args.batches, "--threads",
                 args.threads, "--repeats", str(args.repeats)]  # fmt: skip
        isas = args.isa.split(",")
        results: dict[str, list[dict]] = {isa: [] for isa in isas}
        for _ in range(2):  # alternate the ISAs, twice
            for isa in isas:
                results[isa].append(run_isa(isa, child))
        for isa, runs in results.items():
            best = max(runs, key=lambda r: r["ceiling"])
            print_rows(best["rows"], best["ceiling"], f"ONEDNN_MAX_CPU_ISA={isa} (the run with the higher ceiling)")
        return
    ceiling = matmul_ceiling()
    print(f"bf16 matmul ceiling now: {ceiling:.2f} TFLOP/s")
    if args.kernels:
        print("\noneDNN kernels (primitive kind: implementation)")
        for layer in layers:
            for name, fn in conv_passes(layer, batches[0]).items():
                print(f"  {str(layer):<24} {name:<8} {', '.join(sorted(set(kernel_names(fn)))) or '(none logged)'}")
    rows = probe(layers, batches, thread_counts, args.repeats)
    print_rows(rows, ceiling, f"bf16 channels_last convolutions of {args.models or 'no model'}")
    print(f"\nbf16 matmul ceiling after: {matmul_ceiling():.2f} TFLOP/s")


if __name__ == "__main__":
    main()
