"""The seed's PROYECTO 1 in Keras/TensorFlow, on cifarlab's own data and split, under a chosen precision policy.

Issue 9 asks why a Keras run of PROYECTO 1 under `mixed_bfloat16` kept a training loss ten times above cifarlab's
(0.178 against 0.019 at epoch 100) and never spiked. This script trains the seed's code as written (Sequential
Conv32-Pool-Conv64-Pool-Dense64-Dense10 softmax, Adam(1e-3), batch 512, `model.fit` with validation data) on the
very arrays a cifarlab run of the preset trains on (the same images, 40k/10k split and scaling to [0, 1]), and
writes Keras' per-epoch history as a CSV with the columns of cifarlab's `history.csv`.

    python scripts/keras_proyecto1.py --data ../shared/datasets/cifar10-jpeg --policy float32 --epochs 40
    python scripts/keras_proyecto1.py --data ../shared/datasets/cifar10-jpeg --policy mixed_bfloat16 --epochs 40
    python scripts/keras_proyecto1.py ... --policy mixed_bfloat16 --float32-output   # softmax layer in float32
    python scripts/keras_proyecto1.py ... --fixed-order   # fit's seeded shuffle: one permutation for every epoch

Shuffling. The seed's notebook sets no random seed, so `fit(shuffle=True)` draws a new permutation every epoch. A
seeded Keras 3 run does not: after `keras.utils.set_random_seed`, `fit` rebuilds its `tf.data` pipeline every epoch
and `tf.random.shuffle` inside it gets the same op seed each time, so every epoch takes the same 79 batches in the
same order (Keras 3.15.1 / TF 2.21; docs/fidelity.md shows it). This script seeds Keras (for the initial weights)
and, by default, shuffles itself: one numpy permutation per epoch, `fit(..., shuffle=False)` one epoch at a time,
which is the seed's unseeded training made repeatable. `--fixed-order` keeps Keras' seeded `fit` as it is.

Keras runs in its own venv (tensorflow-cpu, made once; `CIFARLAB_KERAS_VENV`, the one `benchmarks/speed.py` uses).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from speed import ensure_keras_venv  # noqa: E402

from cifarlab.data import load_dataset  # noqa: E402
from cifarlab.data.dataset import with_validation  # noqa: E402

# The seed's PROYECTO 1 network as written, for the Keras-side scripts (`output_dtype`: None, or the softmax layer's).
KERAS_P1_MODEL = r"""
ks = keras
model = ks.Sequential()
model.add(ks.Input((32, 32, 3)))
model.add(ks.layers.Conv2D(32, (3, 3), strides=1, activation="relu", padding="same"))
model.add(ks.layers.MaxPooling2D((2, 2)))
model.add(ks.layers.Conv2D(64, (3, 3), strides=1, activation="relu", padding="same"))
model.add(ks.layers.MaxPooling2D((2, 2)))
model.add(ks.layers.Flatten())
model.add(ks.layers.Dense(64, activation="relu"))
model.add(ks.layers.Dense(10, activation="softmax", **({"dtype": output_dtype} if output_dtype else {})))
"""

KERAS_SCRIPT = (
    r"""
import csv, os, sys, time
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np, keras
arrays, policy, epochs, float32_output, seed, fixed_order, out = sys.argv[1:8]
keras.utils.set_random_seed(int(seed))
keras.mixed_precision.set_global_policy(policy)
d = np.load(arrays)
scale = lambda x: x.astype("float32") / 255.0
x_train, x_val, x_test = scale(d["x_train"]), scale(d["x_val"]), scale(d["x_test"])
output_dtype = "float32" if float32_output == "1" else None
"""
    + KERAS_P1_MODEL
    + r"""
model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
assert model.count_params() == 282250, model.count_params()
times = []
class Clock(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None): self.t = time.perf_counter()
    def on_epoch_end(self, epoch, logs=None): times.append(time.perf_counter() - self.t)
fit = dict(batch_size=512, validation_data=(x_val, d["y_val"]), verbose=2, callbacks=[Clock()])
if fixed_order == "1":  # seeded Keras 3: fit's shuffle repeats one permutation every epoch
    h = model.fit(x_train, d["y_train"], epochs=int(epochs), **fit).history
else:  # a new permutation every epoch, as the seed's unseeded fit(shuffle=True) draws
    rng, h = np.random.default_rng(int(seed)), {}
    for _ in range(int(epochs)):
        perm = rng.permutation(len(x_train))
        for key, values in model.fit(x_train[perm], d["y_train"][perm], shuffle=False, **fit).history.items():
            h.setdefault(key, []).extend(values)
_, acc = model.evaluate(x_test, d["y_test"], verbose=0)
print("> %.3f" % (acc * 100.0))
with open(out, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["epoch", "loss", "accuracy", "val_loss", "val_accuracy", "seconds"])
    for i in range(len(times)):
        w.writerow([i + 1, h["loss"][i], h["accuracy"][i], h["val_loss"][i], h["val_accuracy"][i], times[i]])
"""
)


def export_arrays(data: str, val_size: int, seed: int, out: Path) -> None:
    """Write cifarlab's train/val/test split of `data` as NHWC uint8 arrays (what the seed's Keras code holds)."""
    dataset = with_validation(load_dataset(data, progress=False), val_size, seed)

    def nhwc(split) -> np.ndarray:
        return split.images.permute(0, 2, 3, 1).contiguous().numpy()

    assert dataset.val is not None
    np.savez(
        out,
        x_train=nhwc(dataset.train), y_train=dataset.train.labels.numpy(),
        x_val=nhwc(dataset.val), y_val=dataset.val.labels.numpy(),
        x_test=nhwc(dataset.test), y_test=dataset.test.labels.numpy(),
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="dataset source, as `cifarlab train --data`")
    parser.add_argument("--policy", choices=["float32", "mixed_bfloat16"], default="float32")
    parser.add_argument("--float32-output", action="store_true", help="the softmax Dense layer in float32")
    parser.add_argument(
        "--fixed-order",
        action="store_true",
        help="let seeded Keras shuffle: the same batches in the same order every epoch",
    )
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0, help="split seed (cifarlab's) and Keras' seed")
    parser.add_argument("--val-size", type=int, default=10000)
    parser.add_argument("--out", type=Path, required=True, help="history CSV to write")
    args = parser.parse_args()

    python = ensure_keras_venv()
    arrays = Path(f"/tmp/cifarlab_keras_p1_arrays_{args.seed}.npz")
    if not arrays.exists():
        export_arrays(args.data, args.val_size, args.seed, arrays)
    script = Path("/tmp/cifarlab_keras_p1.py")
    script.write_text(KERAS_SCRIPT)
    flags = ["1" if args.float32_output else "0", str(args.seed), "1" if args.fixed_order else "0"]
    argv = [str(arrays), args.policy, str(args.epochs), *flags]
    subprocess.run([str(python), str(script), *argv, str(args.out)], check=True)


if __name__ == "__main__":
    main()
