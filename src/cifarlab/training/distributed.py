"""Data-parallel training on torchrun: which rank this process is, its process group, and the collectives used.

torchrun (`torch.distributed.run`) starts one process per rank and describes the job in environment variables
(RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT). `init_from_env` joins that process
group: gloo on the CPU, NCCL on CUDA (each rank on its LOCAL_RANK device). Without those variables, or with
WORLD_SIZE=1, it returns a single-process `Distributed` whose methods do nothing, so the Trainer reads the same
either way.

How a step is shared: every rank holds the whole dataset and draws the same shuffled permutation (same seed); each
global batch is split by rank (`BatchLoader(rank=..., world_size=...)`), and DistributedDataParallel all-reduces the
gradients, so the optimiser, Muon and the EMA see the same averaged gradient and every rank applies the same update.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from cifarlab.data.dataset import Split
from cifarlab.evaluation.metrics import EvalResult

if TYPE_CHECKING:
    from cifarlab.config import RunConfig


@dataclass(frozen=True)
class Distributed:
    """This process's place in a data-parallel job (rank 0 of 1 when training alone).

    Attributes:
        rank: global rank, 0 to world_size - 1.
        world_size: number of processes.
        local_rank: rank on this machine (its CUDA device).
        group: the process group for flags and Python objects (gloo, so asking never waits for a GPU); None =
            the default group.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    group: Any = field(default=None, compare=False, repr=False)

    @property
    def enabled(self) -> bool:
        """True when more than one process trains."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on rank 0, the one that prints and writes the run directory."""
        return self.rank == 0

    def device(self, device: torch.device) -> torch.device:
        """The device this rank trains on: its LOCAL_RANK GPU when `device` is CUDA."""
        if self.enabled and device.type == "cuda":
            return torch.device("cuda", self.local_rank)
        return device

    def rank_seed(self, seed: int, stream: int) -> int:
        """A seed for this rank's own random stream number `stream`, derived from the run's seed (reproducible)."""
        return int(np.random.SeedSequence([seed, self.rank, stream]).generate_state(1, np.uint64)[0] >> 1)

    def prepare_model(self, model: nn.Module, config: RunConfig, train_size: int) -> nn.Module:
        """The model to train on this rank: rank 0's weights and whitening filters, then this rank's own dropout.

        With `config.sync_bn` the BatchNorm layers become SyncBatchNorm first. Every rank then takes rank 0's
        parameters and buffers and seeds torch with its own stream, so the ranks start alike but drop out unalike.
        Training alone, `model` comes back untouched.

        Args:
            model: the freshly built network, on this rank's device.
            config: the run's configuration (sync_bn, seed, train.batch_size).
            train_size: images in the training split.

        Raises:
            ValueError: if --sync-bn is asked off CUDA, or the last batch of each pass has fewer images than ranks.
        """
        if not self.enabled:
            return model
        if config.sync_bn:
            if next(model.parameters()).device.type != "cuda":
                raise ValueError("--sync-bn: PyTorch's SyncBatchNorm runs on CUDA devices only; on the CPU each "
                                 "rank keeps its own BatchNorm statistics (drop --sync-bn)")  # fmt: skip
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        self.broadcast_module(model)
        last = train_size % config.train.batch_size
        if last and last < self.world_size:
            raise ValueError(f"the last batch of each pass has {last} images, fewer than the {self.world_size} ranks; "
                             "change --batch-size")  # fmt: skip
        torch.manual_seed(self.rank_seed(config.seed, stream=0))
        return model

    def loader_options(self, seed: int) -> dict[str, Any]:
        """This rank's share of the training batches, as `BatchLoader` keywords: rank, world_size, augment_seed.

        Each rank augments its share with its own stream; training alone, the loader's own seed does.
        """
        augment_seed = self.rank_seed(seed, stream=1) if self.enabled else None
        return {"rank": self.rank, "world_size": self.world_size, "augment_seed": augment_seed}

    def wrap(self, model: nn.Module) -> nn.Module:
        """The model as DistributedDataParallel (gradients all-reduced in backward); itself when training alone."""
        if not self.enabled:
            return model
        on_cuda = next(model.parameters()).device.type == "cuda"
        return nn.parallel.DistributedDataParallel(model, device_ids=[self.local_rank] if on_cuda else None)

    @torch.no_grad()
    def broadcast_(self, tensors: Iterable[torch.Tensor]) -> None:
        """Overwrite `tensors` in place with rank 0's values."""
        if self.enabled:
            for tensor in tensors:
                dist.broadcast(tensor, src=0)

    def broadcast_module(self, module: nn.Module) -> None:
        """Give every rank rank 0's parameters and buffers (e.g. BatchNorm statistics, which drift per rank)."""
        self.broadcast_(module.state_dict().values())  # state_dict tensors share the module's storage

    def all_reduce_sum(self, tensors: Sequence[torch.Tensor]) -> None:
        """Sum `tensors` over the ranks, in place."""
        if self.enabled:
            for tensor in tensors:
                dist.all_reduce(tensor, group=self.group if tensor.device.type == "cpu" else None)

    def max(self, value: int) -> int:
        """The largest of the ranks' `value`s, on every rank (e.g. the signal that asked one rank to stop, or 0)."""
        if not self.enabled:
            return value
        tensor = torch.tensor([value], dtype=torch.int64)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX, group=self.group)
        return int(tensor.item())

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's `obj` (picklable), in rank order, on every rank."""
        if not self.enabled:
            return [obj]
        objects: list[Any] = [None] * self.world_size
        dist.all_gather_object(objects, obj, group=self.group)
        return objects

    def from_main(self, obj: Any) -> Any:
        """Rank 0's `obj` (picklable) on every rank; other ranks' own values are ignored."""
        if not self.enabled:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0, group=self.group)
        return box[0]

    def evaluate(self, evaluate: Callable[[Split], EvalResult], split: Split, num_classes: int) -> EvalResult:
        """Evaluate `split` in contiguous shards, one per rank, and combine: the split's loss, accuracy, confusion.

        Args:
            evaluate: evaluates one shard with this rank's model.
            split: the whole split (every rank holds it).
            num_classes: classes of the confusion matrix.
        """
        bounds = [len(split) * r // self.world_size for r in range(self.world_size + 1)]
        start, end = bounds[self.rank], bounds[self.rank + 1]
        totals = torch.zeros(1, dtype=torch.float64)
        confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)
        probabilities = None
        if end > start:
            result = evaluate(split.subset(torch.arange(start, end)))
            totals[0], confusion = result.loss * (end - start), result.confusion.clone()
            probabilities = getattr(result, "probabilities", None)
        self.all_reduce_sum([totals, confusion])
        shards = [p for p in self.gather(probabilities) if p is not None]
        count = max(len(split), 1)
        return EvalResult(
            loss=float(totals[0]) / count,
            accuracy=float(confusion.diagonal().sum()) / count,
            confusion=confusion,
            probabilities=torch.cat(shards) if shards and sum(map(len, shards)) == len(split) else None,
        )


def env_rank() -> int:
    """This process's rank as torchrun's environment gives it (0 outside torchrun), before any process group."""
    return int(os.environ.get("RANK", "0")) if int(os.environ.get("WORLD_SIZE", "1")) > 1 else 0


def init_from_env(device: str = "auto") -> Distributed:
    """Join the job torchrun describes in the environment, or return the single-process `Distributed`.

    Idempotent: a second call in the same job returns the same rank (and a new gloo group for flags on NCCL).

    Args:
        device: 'auto', 'cpu' or 'cuda' (as `--device`): CUDA ranks use NCCL on their LOCAL_RANK device, CPU ranks
            gloo.

    Raises:
        ValueError: if the environment is incomplete or names more local ranks than there are GPUs.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Distributed()
    missing = [name for name in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT") if name not in os.environ]
    if missing:
        raise ValueError(f"WORLD_SIZE={world_size} but {', '.join(missing)} unset: start distributed runs with "
                         "torchrun or 'cifarlab train --nproc N'")  # fmt: skip
    local_rank = int(os.environ["LOCAL_RANK"])
    cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if not dist.is_initialized():
        if cuda:
            if local_rank >= torch.cuda.device_count():
                raise ValueError(f"LOCAL_RANK {local_rank} but this machine has {torch.cuda.device_count()} CUDA "
                                 "devices: start at most that many processes per node (--nproc-per-node)")  # fmt: skip
            torch.cuda.set_device(local_rank)
        elif "OMP_NUM_THREADS" not in os.environ:  # share the cores: ranks on one machine would fight over them
            local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
        dist.init_process_group("nccl" if cuda else "gloo")
    group = dist.new_group(backend="gloo") if dist.get_backend() != "gloo" else None
    return Distributed(dist.get_rank(), dist.get_world_size(), local_rank, group)


def init_for_run(config: RunConfig) -> Distributed:
    """`init_from_env(config.device)` for a training run, refusing the runs that train in one process only.

    Raises:
        ValueError: as `init_from_env`, or if a transfer run (--backbone) is started as several ranks.
    """
    job = init_from_env(config.device)
    if job.enabled and config.transfer.backbone is not None:
        raise ValueError("transfer runs (--backbone) train in one process only; drop --nproc / torchrun")
    return job


def shutdown(finished: bool = False) -> None:
    """Leave the process group, if this process joined one.

    Args:
        finished: this rank ran its command to the end, as every rank does in a run that succeeds: it waits for the
            others first (a barrier), so that no rank tears its connections down while another still works (rank 0
            writes the run's files after the last collective). A rank that failed or was stopped leaves at once:
            the others may never come, and torchrun stops them.
    """
    if dist.is_available() and dist.is_initialized():
        if finished:
            dist.barrier()
        dist.destroy_process_group()


def exit_rank(status: int) -> None:
    """End a torchrun rank with `status` without the interpreter's teardown; nothing outside torchrun.

    A rank that had left its process group was once aborted while the interpreter tore down (C++'s "terminate
    called without an active exception", seen once in CI on torch 2.13 and not reproduced here), which torchrun
    reports as a failed job and answers by killing the other ranks, after every file of the run had been written.
    A rank has nothing left to do by then but flush its output.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or "TORCHELASTIC_RUN_ID" not in os.environ:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def launch(argv: Sequence[str], nproc: int) -> int:
    """Run `cifarlab <argv>` as `nproc` ranks on this machine through torchrun, and wait for them.

    Each rank gets cpu_count / nproc threads unless OMP_NUM_THREADS says otherwise.

    Returns:
        The exit status: 0, or the first failed rank's (2 for a bad option, 143 after SIGTERM, ...).

    Raises:
        ValueError: if `nproc` is below 1.
    """
    from torch.distributed.elastic.multiprocessing import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    if nproc < 1:
        raise ValueError(f"--nproc must be at least 1, got {nproc}")
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)  # the ranks report their own errors
    args = parse_args(["--standalone", f"--nproc-per-node={nproc}", "--module", "cifarlab", *argv])
    try:
        run(args)
    except ChildFailedError as error:
        codes = [failure.exitcode for _, failure in sorted(error.failures.items())]
        code = next((c for c in codes if c > 0), codes[0] if codes else 1)
        return code if code > 0 else 128 - code  # a rank killed by signal N reports -N
    except SignalException as error:  # this launcher was signalled; torchrun passed the signal on to the ranks
        return 128 + int(error.sigval)
    return 0


def strip_option(argv: Sequence[str], option: str) -> list[str]:
    """`argv` without `option` and its value (`--nproc 2` or `--nproc=2`)."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == option:
            skip = True
        elif not arg.startswith(option + "="):
            out.append(arg)
    return out
