"""PROYECTO 1 in Keras and in cifarlab from the same initial weights, on the same batches: where do they part?

Issue 9: cifarlab's proyecto1 training loss falls faster than the seed's Keras code past epoch ~30 (0.019 against
0.153 at epoch 100, seed 0). Different seeds give both frameworks different initial weights and batch orders, so
a run-to-run comparison cannot tell the arithmetic of one training step from the luck of a trajectory. This script
removes the luck: Keras builds the seed's model and saves its initial weights; cifarlab's own `Trainer` (its model,
its Adam, its loss, its `train_step`) loads them, and both take the very same batches in the same order (one
numpy permutation per epoch; the last batch of an epoch is the 64-image remainder, as in `fit`). It prints, per
epoch, both mean training losses and how far the weights have drifted apart, and writes the per-step losses.

    python scripts/keras_step_match.py --data ../shared/datasets/cifar10-jpeg --epochs 100 --out /tmp/match
    python scripts/keras_step_match.py ... --fixed-order --epsilon torch --out /tmp/match-fixed

If one step of the two already differs beyond float32 rounding, the step's arithmetic differs; if the steps agree
and the trajectories still part in a systematic direction, the difference is in what is repeated (the order of
float operations, amplified by training's chaos), not in any one formula.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from keras_proyecto1 import KERAS_P1_MODEL, export_arrays  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from speed import ensure_keras_venv  # noqa: E402

from cifarlab.api import resolve_config  # noqa: E402
from cifarlab.data import load_dataset  # noqa: E402
from cifarlab.training.trainer import Trainer  # noqa: E402

KERAS_SCRIPT = (
    r"""
import os, sys
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np, keras
arrays, orders, policy, seed, out = sys.argv[1:6]
keras.utils.set_random_seed(int(seed))
keras.mixed_precision.set_global_policy(policy)
d = np.load(arrays)
x, y = d["x_train"].astype("float32") / 255.0, d["y_train"]
output_dtype = None
"""
    + KERAS_P1_MODEL
    + r"""
model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
weights = lambda: {f"w{i}": w for i, w in enumerate(model.get_weights())}
np.savez(out + "/keras_init.npz", **weights())
order = np.load(orders)["order"]
losses, saved = [], {}
for epoch, perm in enumerate(order, 1):
    for start in range(0, len(perm), 512):
        idx = perm[start:start + 512]
        losses.append(float(model.train_on_batch(x[idx], y[idx])))
        if len(losses) == 1:
            saved["step1"] = model.get_weights()
    if epoch in (1, 2, 5, 10, 20, 50, len(order)):
        saved[f"epoch{epoch}"] = model.get_weights()
    print(f"keras epoch {epoch}: loss {np.mean(losses[-len(range(0, len(perm), 512)):]):.4f}", flush=True)
np.save(out + "/keras_losses.npy", np.array(losses))
np.savez(out + "/keras_weights.npz", **{f"{k}_w{i}": w for k, ws in saved.items() for i, w in enumerate(ws)})
"""
)


def keras_to_torch(weights: list[np.ndarray]) -> list[torch.Tensor]:
    """Keras kernels (kh, kw, in, out) / (in, out) as PyTorch's (out, in, kh, kw) / (out, in); biases as they are."""
    out = []
    for w in weights:
        t = torch.from_numpy(np.ascontiguousarray(w))
        out.append(t.permute(3, 2, 0, 1).contiguous() if t.ndim == 4 else t.T.contiguous() if t.ndim == 2 else t)
    return out


def relative_gap(model: torch.nn.Module, keras_weights: list[np.ndarray]) -> float:
    """max over tensors of |cifarlab - keras| / |keras| (Frobenius norms)."""
    gaps = []
    for p, k in zip(model.parameters(), keras_to_torch(keras_weights), strict=True):
        gaps.append(float((p.detach().float() - k).norm() / k.norm()))
    return max(gaps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--policy", choices=["float32", "mixed_bfloat16"], default="float32")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--fixed-order",
        action="store_true",
        help="one permutation for every epoch (what seeded Keras 3 fit does), not a new one each epoch",
    )
    parser.add_argument(
        "--epsilon",
        type=lambda s: s.split(","),
        default=["torch", "keras"],
        help="cifarlab runs to make: Adam's epsilon placed as PyTorch does ('torch'), as Keras ('keras')",
    )
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    arrays = Path(f"/tmp/cifarlab_keras_p1_arrays_{args.seed}.npz")
    if not arrays.exists():
        export_arrays(args.data, 10000, args.seed, arrays)
    n_train = len(np.load(arrays)["y_train"])
    rng = np.random.default_rng(args.seed)
    perms = [rng.permutation(n_train)] * args.epochs if args.fixed_order else None
    order = np.stack(perms or [rng.permutation(n_train) for _ in range(args.epochs)])
    np.savez(args.out / "order.npz", order=order)

    keras_done = args.out / "keras_weights.npz"
    if not keras_done.exists():
        script = args.out / "keras_side.py"
        script.write_text(KERAS_SCRIPT)
        python = ensure_keras_venv()
        argv = [str(arrays), str(args.out / "order.npz"), args.policy, str(args.seed), str(args.out)]
        subprocess.run([str(python), str(script), *argv], check=True)

    precision = "fp32" if args.policy == "float32" else "bf16"
    keras_losses = np.load(args.out / "keras_losses.npy")
    saved = np.load(keras_done)
    steps = -(-n_train // 512)
    rows = {"keras": keras_losses.reshape(-1, steps).mean(axis=1)}
    for placement in args.epsilon:
        rows[f"cifarlab_eps_{placement}"] = cifarlab_side(args, precision, placement, order, keras_losses, saved)
    with open(args.out / "epoch_losses.csv", "w") as f:
        f.write("epoch," + ",".join(rows) + "\n")
        for e in range(args.epochs):
            f.write(f"{e + 1}," + ",".join(f"{rows[k][e]:.6g}" for k in rows) + "\n")


def cifarlab_side(
    args: argparse.Namespace, precision: str, placement: str, order: np.ndarray, keras_losses: np.ndarray, saved
) -> np.ndarray:
    """cifarlab's Trainer from Keras' initial weights on the same batches; Adam's epsilon as PyTorch or Keras place it.

    'keras' gives PyTorch's Adam, at step t, the epsilon 1e-7 / sqrt(1 - 0.999^t): Keras' `sqrt(v) + epsilon` with
    the bias correction folded into the step size, written in PyTorch's form.
    """
    config = resolve_config("proyecto1", data=args.data, seed=args.seed, precision=precision, quiet=True)
    trainer = Trainer(config, load_dataset(args.data, progress=False))
    init = np.load(args.out / "keras_init.npz")
    with torch.no_grad():
        for p, w in zip(
            trainer.model.parameters(), keras_to_torch([init[f"w{i}"] for i in range(len(init))]), strict=True
        ):
            p.copy_(w)

    def keras_weights(key: str) -> list[np.ndarray]:
        return [saved[f"{key}_w{i}"] for i in range(8)]

    split, n_train = trainer.train_split, len(trainer.train_split.labels)
    steps = len(keras_losses) // len(order)
    losses: list[float] = []
    trainer.model.train()
    for epoch, perm in enumerate(order, 1):
        for start in range(0, n_train, 512):
            idx = torch.from_numpy(perm[start : start + 512])
            inputs = trainer.normalization(split.images[idx].float())
            if config.channels_last:
                inputs = inputs.contiguous(memory_format=torch.channels_last)
            if placement == "keras":
                for group in trainer.optimizer.param_groups:
                    group["eps"] = config.train.adam_epsilon / (1 - 0.999 ** (len(losses) + 1)) ** 0.5
            loss, _ = trainer.train_step(inputs, split.labels[idx])
            losses.append(float(loss))
            if len(losses) == 1:
                print(f"[{placement}] step 1: loss keras {keras_losses[0]:.6f} cifarlab {losses[0]:.6f}; "
                      f"weight gap {relative_gap(trainer.model, keras_weights('step1')):.2e}")  # fmt: skip
        k, t = keras_losses[(epoch - 1) * steps : epoch * steps].mean(), np.mean(losses[-steps:])
        key = f"epoch{epoch}"
        gap = f"; weight gap {relative_gap(trainer.model, keras_weights(key)):.2e}" if f"{key}_w0" in saved else ""
        print(f"[{placement}] epoch {epoch}: loss keras {k:.4f} cifarlab {t:.4f}{gap}", flush=True)
    return np.array(losses).reshape(-1, steps).mean(axis=1)


if __name__ == "__main__":
    main()
