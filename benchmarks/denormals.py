"""What subnormal Adam moments cost on a CPU, with and without flushing them to zero.

    python benchmarks/denormals.py                       # a Dense layer's Adam step, 0 / 35 / 100 % subnormal moments
    python benchmarks/denormals.py --numel 8388608 --repeats 5

Late in a long run the Adam moments of weights whose gradients have died away (dead ReLU units, saturated
Dense weights) decay below 1.2e-38, where floats become subnormal; x86 CPUs compute with them in microcode, many
times slower. TensorFlow sets flush-to-zero on the CPU; PyTorch does so only when asked
(`torch.set_flush_denormal(True)`).

`torch.set_flush_denormal` sets the flag of the calling thread only. OpenMP's worker threads copy it when they
are created, so it reaches them only if it is set before the first parallel op; set later,
the other threads keep computing with subnormals. The row "all threads" sets it in every OpenMP thread
(`cifarlab.device.set_flush_denormal_all_threads`, which CPU runs use, through libgomp's GOMP_parallel;
GNU OpenMP only, which PyTorch's Linux wheels use).

The table times one `torch.optim.Adam` step on a parameter the size of proyecto6/9's Dense(512) layer, whose
first moments are subnormal in the given share of elements (their gradients zero, as for a dead unit), with
flushing off and on, alternating, repeats and medians. The state is restored before each timed step, so every
step meets the same subnormal values.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from cifarlab.device import describe_hardware, set_flush_denormal_all_threads

TINY = torch.finfo(torch.float32).tiny  # 1.18e-38: below it, float32 is subnormal


def make_case(numel: int, fraction: float, seed: int = 0) -> tuple[torch.optim.Adam, dict, torch.Tensor]:
    """An Adam optimiser on one parameter whose first moments are subnormal in `fraction` of the elements."""
    g = torch.Generator().manual_seed(seed)
    param = torch.nn.Parameter(torch.randn(numel, generator=g) * 0.01)
    optimizer = torch.optim.Adam([param], lr=1e-3)
    param.grad = torch.randn(numel, generator=g) * 1e-3
    optimizer.step()  # creates the state
    dead = torch.rand(numel, generator=g) < fraction
    state = optimizer.state[param]
    state["exp_avg"][dead] = torch.rand(int(dead.sum()), generator=g) * TINY * 0.5  # subnormal
    state["exp_avg_sq"].copy_(torch.rand(numel, generator=g) * 1e-6 + 1e-8)
    param.grad[dead] = 0.0  # a dead unit: the moment only decays, staying subnormal for many steps
    saved = {key: value.clone() if torch.is_tensor(value) else value for key, value in state.items()}
    return optimizer, saved, param


def time_step(
    optimizer: torch.optim.Adam, saved: dict, param: torch.Tensor, flush: str, steps: int
) -> tuple[float, float]:
    """Wall and CPU (all threads) ms per Adam step, state restored before each; flush 'off', 'on' or 'all threads'."""
    state = optimizer.state[param]
    total = cpu = 0.0
    for _ in range(steps):
        for key, value in saved.items():
            if torch.is_tensor(value):
                state[key].copy_(value)
        if flush == "all threads":
            set_flush_denormal_all_threads(True)
        torch.set_flush_denormal(flush != "off")
        start, start_cpu = time.perf_counter(), time.process_time()
        optimizer.step()
        total += time.perf_counter() - start
        cpu += time.process_time() - start_cpu
        if flush == "all threads":
            set_flush_denormal_all_threads(False)
        torch.set_flush_denormal(False)
    return 1e3 * total / steps, 1e3 * cpu / steps


def main() -> None:
    """Time the cases side by side and print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--numel", type=int, default=4096 * 512, help="parameter size (default: P6's Dense(512))")
    parser.add_argument("--fractions", default="0,0.35,1", help="shares of subnormal first moments")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5, help="timed Adam steps per repeat")
    args = parser.parse_args()
    supported = torch.set_flush_denormal(True)
    torch.set_flush_denormal(False)
    print(f"torch {torch.__version__}, {describe_hardware(torch.device('cpu'))}")
    print(f"flush-to-zero supported here: {supported}; Adam (default foreach) on {args.numel:,} float32 weights")
    cases = {}
    for fraction in (float(f) for f in args.fractions.split(",")):
        case = make_case(args.numel, fraction)
        for flush in ("off", "on", "all threads"):
            cases[(fraction, flush)] = case
    results: dict[tuple[float, str], list[tuple[float, float]]] = {key: [] for key in cases}
    for _ in range(args.repeats):
        for (fraction, flush), (optimizer, saved, param) in cases.items():
            results[(fraction, flush)].append(time_step(optimizer, saved, param, flush, args.steps))
    base = statistics.median(wall for wall, _ in results[next(iter(results))])
    print("\nms per Adam step: wall (median, range, ratio to the first row) and CPU time of all threads (median)")
    print(f"{'subnormal first moments':>24}  {'flush':>11}  {'wall ms':>8}  {'range':>13}  {'ratio':>6}  {'CPU ms':>7}")
    for (fraction, flush), values in results.items():
        walls = [wall for wall, _ in values]
        median = statistics.median(walls)
        cpu = statistics.median(c for _, c in values)
        print(f"{100 * fraction:>23.0f}%  {flush:>11}  {median:>8.2f}  "
              f"{min(walls):>6.2f}-{max(walls):<6.2f}  x{median / base:<5.2f}  {cpu:>7.2f}")  # fmt: skip
    print("\nFlushing changes only values below 1.2e-38 (what TensorFlow's CPU kernels do by default).")
    print("'on' is torch.set_flush_denormal(True) from the main thread, after the OpenMP pool has started (as in a")
    print("Trainer); 'all threads' also sets it in the pool's other threads.")


if __name__ == "__main__":
    main()
