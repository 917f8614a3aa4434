"""Batches sliced from a device-resident split: shuffle, augment and normalise whole batches at once."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from cifarlab.data.augment import AugmentConfig, Augmenter
from cifarlab.data.dataset import Split

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)  # of the official train split, in [0, 1] units
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


@dataclass(frozen=True)
class Normalization:
    """Input scaling: x = (pixels / 255 - mean) / std, per channel. mean 0 and std 1 is Keras' rescale=1/255."""

    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)

    @classmethod
    def fit(cls, images: torch.Tensor) -> Normalization:
        """Per-channel mean and std of (N, 3, H, W) uint8 images."""
        x = images.float().div_(255)
        mean = x.mean(dim=(0, 2, 3))
        std = x.std(dim=(0, 2, 3))
        return cls(tuple(round(v, 6) for v in mean.tolist()), tuple(round(v, 6) for v in std.tolist()))

    def to_dict(self) -> dict[str, list[float]]:
        """JSON-friendly form, as stored in checkpoints."""
        return {"mean": list(self.mean), "std": list(self.std)}

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) float pixels in [0, 255] -> normalised float32."""
        mean, std = _channel_constants(self.mean, self.std, pixels.device)
        return (pixels * (1 / 255) - mean) / std


@functools.lru_cache(maxsize=16)
def _channel_constants(
    mean: tuple[float, ...], std: tuple[float, ...], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std as (1, C, 1, 1) tensors on `device`, made once: a copy to a GPU per batch would wait for it."""
    return torch.tensor(mean, device=device).view(1, -1, 1, 1), torch.tensor(std, device=device).view(1, -1, 1, 1)


class BatchIndices:
    """Batches of indices into n items: one pass per epoch, or `steps_per_epoch` batches from an endless stream.

    The stream is made of passes, as Keras draws batches from a generator with `steps_per_epoch`.

    Args:
        n: number of items.
        batch_size: indices per batch; the last batch of a pass may be smaller.
        generator: draws the shuffles (on the device the indices should live on).
        shuffle: a new random order at every pass.
        steps_per_epoch: batches per iteration; None = exactly one pass.

    Attributes:
        passes: passes started so far; the batch just yielded belongs to the latest one.
        step: batches of the current epoch yielded so far (0 between epochs); a state saved mid-epoch continues
            from there.
    """

    def __init__(
        self, n: int, batch_size: int, generator: torch.Generator, *, shuffle: bool, steps_per_epoch: int | None
    ) -> None:
        self.n = n
        self.batch_size = batch_size
        self.generator = generator
        self.shuffle = shuffle
        self.steps_per_epoch = steps_per_epoch
        self.passes = 0
        self.step = 0
        self._resume_step = 0  # where the next iteration starts: 0, or the step a loaded state stopped at
        self._pending: list[torch.Tensor] = []  # batches left over from the current pass

    def __len__(self) -> int:
        if self.steps_per_epoch is not None:
            return self.steps_per_epoch
        return -(-self.n // self.batch_size)

    def _new_pass(self) -> list[torch.Tensor]:
        self.passes += 1
        device = self.generator.device
        if self.shuffle:
            order = torch.randperm(self.n, generator=self.generator, device=device)
        else:
            order = torch.arange(self.n, device=device)
        return list(order.split(self.batch_size))

    def state_dict(self) -> dict[str, Any]:
        """Where the stream stands (the generator, the passes, the rest of the current pass), for resuming."""
        return {
            "generator": self.generator.get_state(),
            "passes": self.passes,
            "step": self.step,
            "pending": [batch.cpu() for batch in self._pending],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue the stream from a `state_dict()`: the same batches follow as would have without a stop."""
        device = self.generator.device
        self.generator.set_state(state["generator"])
        self.passes = int(state["passes"])
        self.step = self._resume_step = int(state.get("step", 0))
        self._pending = [batch.to(device) for batch in state["pending"]]

    def __iter__(self) -> Iterator[torch.Tensor]:
        # One pass per epoch is the case steps_per_epoch = the pass's length; both keep the rest of the pass in
        # `_pending`, so a state saved between two steps continues on the same batches.
        self.step, self._resume_step = self._resume_step, 0
        if self.step == 0 and self.steps_per_epoch is None:
            self._pending = []  # a new epoch is a new pass
        while self.step < len(self):
            if not self._pending:
                self._pending = self._new_pass()
            self.step += 1
            yield self._pending.pop(0)
        self.step = 0


class BatchLoader:
    """Iterate over (inputs, labels) batches of a split held on the training device.

    Args:
        split: the images and labels, already on the device they will be used on.
        batch_size: images per batch; the last batch of a pass may be smaller.
        normalization: input scaling applied after augmentation.
        shuffle: reshuffle at every pass.
        augment: augmentation applied to each batch (training only).
        steps_per_epoch: batches per epoch taken from an endless stream of shuffled passes, as Keras does
            with a generator and `steps_per_epoch`; None = exactly one pass per epoch.
        channels_last: return inputs in channels_last memory format.
        seed: seed of the shuffle and augmentation generator.
        rank: this process's rank in a data-parallel run; each batch of `batch_size` indices is drawn as in one
            process, then split by rank (every world_size-th index from position `rank`).
        world_size: processes sharing each batch; 1 = the whole batch here.
        augment_seed: give the augmentation its own generator with this seed (each rank of a distributed run
            draws its own, reproducibly, while the shuffles stay shared); None = the shuffle generator draws it.

    Attributes:
        global_batch_size: images in the latest batch over all ranks (this rank got its share of them).
    """

    def __init__(
        self,
        split: Split,
        batch_size: int,
        normalization: Normalization,
        *,
        shuffle: bool = False,
        augment: AugmentConfig | None = None,
        steps_per_epoch: int | None = None,
        channels_last: bool = False,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        augment_seed: int | None = None,
    ) -> None:
        if len(split) == 0:
            raise ValueError("cannot load batches from an empty split")
        self.split = split
        self.normalization = normalization
        self.generator = torch.Generator(device=split.images.device)
        self.generator.manual_seed(seed)
        self.rank, self.world_size = rank, world_size
        self.global_batch_size = 0
        self.augment_generator = self.generator
        if augment_seed is not None:
            self.augment_generator = torch.Generator(device=split.images.device)
            self.augment_generator.manual_seed(augment_seed)
        self.indices = BatchIndices(len(split), batch_size, self.generator, shuffle=shuffle,
                                    steps_per_epoch=steps_per_epoch)  # fmt: skip
        # Alternating flip (Jordan 2024): each image is mirrored in every other pass, starting from a random half,
        # so any two consecutive passes show both views of every image.
        self.flip_first: torch.Tensor | None = None
        if augment is not None and augment.horizontal_flip and augment.alternate_flip:
            self.flip_first = torch.rand(len(split), generator=self.generator, device=split.images.device) < 0.5
            augment = dataclasses.replace(augment, horizontal_flip=False)
        self.augmenter = Augmenter(augment) if augment is not None and augment.enabled else None
        self.channels_last = channels_last
        self.resize_to: int | None = None  # shrink the batches to this side (progressive resizing); None = as stored

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def step(self) -> int:
        """Batches of the current epoch already drawn (0 between epochs)."""
        return self.indices.step

    def state_dict(self) -> dict[str, Any]:
        """The shuffle and augmentation state, for resuming (see BatchIndices.state_dict)."""
        state = {**self.indices.state_dict(), "flip_first": None if self.flip_first is None else self.flip_first.cpu()}
        if self.augment_generator is not self.generator:
            state["augment_generator"] = self.augment_generator.get_state()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a `state_dict()`."""
        self.indices.load_state_dict(state)
        if self.flip_first is not None:
            self.flip_first = state["flip_first"].to(self.flip_first.device)
        if self.augment_generator is not self.generator:
            self.augment_generator.set_state(state["augment_generator"])

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for index in self.indices:
            self.global_batch_size = len(index)
            if self.world_size > 1:
                index = index[self.rank :: self.world_size]
            pixels = self.split.images[index].float()  # (B, 3, H, W) in [0, 255]
            if self.flip_first is not None:  # the batch belongs to the latest pass
                flip = self.flip_first[index] ^ (self.indices.passes % 2 == 0)
                pixels = torch.where(flip[:, None, None, None], pixels.flip(-1), pixels)
            if self.augmenter is not None:
                pixels = self.augmenter(pixels, self.augment_generator)
            if self.resize_to is not None and self.resize_to != pixels.shape[-1]:
                size = (self.resize_to, self.resize_to)
                pixels = F.interpolate(pixels, size=size, mode="bilinear", antialias=True, align_corners=False)
            inputs = self.normalization(pixels)
            if self.channels_last:
                inputs = inputs.contiguous(memory_format=torch.channels_last)
            yield inputs, self.split.labels[index]
