"""proyecto9's first epochs: validation accuracy with the running BatchNorm statistics against recomputed ones.

    python scripts/batchnorm_probe.py --batch-size 128 --steps 39 --epochs 4 --out runs/p9-bn

proyecto9's recipe on a subset (--limit images per class, 1,000 held out); at each epoch end the BatchNorm
statistics of a copy of the model are recomputed from 8 clean training batches (with Dropout on, and off) and the
copy is validated. One JSON line per epoch. See docs/fidelity.md, section 2.
"""

import argparse
import copy
import json
import time

import torch
from torch import nn

import cifarlab
from cifarlab.api import resolve_config
from cifarlab.data import load_dataset
from cifarlab.device import autocast
from cifarlab.evaluation.metrics import evaluate_model
from cifarlab.training.callbacks import Callback

p = argparse.ArgumentParser()
p.add_argument("--bn-momentum", type=float, default=None)  # None: the preset's (Keras 0.99 = torch 0.01)
p.add_argument("--epochs", type=int, default=6)
p.add_argument("--steps", type=int, default=52)
p.add_argument("--limit", type=int, default=500)
p.add_argument("--seed", type=int, default=0)
p.add_argument("--threads", type=int, default=1)
p.add_argument("--batch-size", type=int, default=256)
p.add_argument("--out", required=True)
p.add_argument("--data", default="../shared/datasets/cifar10-jpeg")
a = p.parse_args()
torch.set_num_threads(a.threads)
BN = (nn.BatchNorm1d, nn.BatchNorm2d)


class Probe(Callback):
    def on_train_begin(self):
        if a.bn_momentum is not None:
            for m in self.trainer.model.modules():
                if isinstance(m, BN):
                    m.momentum = a.bn_momentum

    def _val(self, model):
        t = self.trainer
        return evaluate_model(
            model,
            t.val_split,
            t.normalization,
            len(t.class_names),
            batch_size=500,
            precision=t.precision,
            channels_last=t.config.channels_last,
        ).accuracy

    @torch.no_grad()
    def _recalibrated(self, dropout):
        t = self.trainer
        m = copy.deepcopy(t.model)
        for mod in m.modules():
            if isinstance(mod, BN):
                mod.reset_running_stats()
                mod.momentum = None  # cumulative average over the batches below
        m.train()
        for mod in m.modules():
            if isinstance(mod, nn.Dropout) and not dropout:
                mod.eval()
        pick = torch.randperm(len(t.train_split), generator=torch.Generator().manual_seed(0))[:2048]
        images = t.train_split.images[pick]
        for i in range(0, 2048, 256):  # 8 clean (unaugmented) training batches, drawn across the classes
            x = t.normalization(images[i : i + 256].float())
            if t.config.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast(t.device, t.precision):
                m(x)
        m.eval()
        return self._val(m)

    def on_epoch_end(self, epoch, logs):
        step = epoch * a.steps
        bn = [m for m in self.trainer.model.modules() if isinstance(m, BN)][-1]
        fresh_drop = self._recalibrated(dropout=True)
        fresh_clean = self._recalibrated(dropout=False)
        print(
            json.dumps(
                {
                    "epoch": epoch,
                    "step": step,
                    "loss": round(logs["loss"], 4),
                    "acc": round(logs["accuracy"], 4),
                    "val_acc_running_bn": logs["val_accuracy"],
                    "val_acc_recomputed_bn_dropout_on": fresh_drop,
                    "val_acc_recomputed_bn_no_dropout": fresh_clean,
                    "last_bn_running_var_mean": round(bn.running_var.mean().item(), 3),
                    "seconds": round(logs["seconds"], 1),
                }
            ),
            flush=True,
        )


config = resolve_config(
    "proyecto9",
    data=a.data,
    per_class_limit=a.limit,
    val_size=1000,
    epochs=a.epochs,
    seed=a.seed,
    out=a.out,
    quiet=True,
    **{"train.steps_per_epoch": a.steps, "train.batch_size": a.batch_size},
)
ds = load_dataset(config.data.source, progress=False)
t0 = time.time()
r = cifarlab.train(config=config, dataset=ds, callbacks=[Probe()])
print(json.dumps({"bn_momentum": a.bn_momentum, "test_accuracy": r.test.accuracy, "seconds": time.time() - t0}))
