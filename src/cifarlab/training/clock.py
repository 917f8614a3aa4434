"""Training by the clock: a run whose length is a number of seconds (`train.duration`), not of epochs.

`train --budget` plans a recipe from this machine's measured speed, but a plan is an estimate: a neighbour on a
shared machine, a slower epoch, a GPU far faster than the probe said. A run by the clock cannot overrun: its
learning rate decays linearly to 0 as its training time runs out (Li, Yumer and Ramanan 2020, "Budgeted
training": a schedule that ends with the budget beats a longer one cut short), and it stops at the step boundary
where one more step (as long as the last one) would end past the time. Validation after each epoch counts as
training time; resuming continues the count where it stood.
"""

from __future__ import annotations

import time
from typing import Any


class TrainingClock:
    """Seconds of training spent out of `duration`, across a resumed run's sessions."""

    def __init__(self, duration: float) -> None:
        self.duration = float(duration)
        self.before = 0.0  # seconds spent by earlier sessions of the run
        self.started: float | None = None
        self.step = 0.0  # seconds the last optimiser step took (`lap`)
        self._mark: float | None = None

    def start(self) -> None:
        """Count from now (`mark` calls it at a session's first step)."""
        self.started = time.perf_counter()

    def elapsed(self) -> float:
        """Seconds of training so far."""
        return self.before + (time.perf_counter() - self.started if self.started is not None else 0.0)

    def mark(self) -> None:
        """A step begins now (the trainer calls it where an epoch's steps begin; `lap` then times each step).

        The first mark of a session starts the count, unless `start` did.
        """
        if self.started is None:
            self.start()
        self._mark = self.elapsed()

    def lap(self) -> None:
        """A step ended now: its seconds are what the next one is expected to take."""
        now = self.elapsed()
        if self._mark is not None:
            self.step = now - self._mark
        self._mark = now

    def progress(self) -> float:
        """The share of the training time spent: 0 at the start, 1 or more once it ran out."""
        return self.elapsed() / self.duration

    def is_over(self) -> bool:
        """Whether the training time is spent, or one more step as long as the last would end past it."""
        return self.elapsed() + self.step >= self.duration

    def stop_reason(self, epoch: int, planned: int) -> str | None:
        """Why the run ended, for metrics.json (None while its time is not spent: something else stopped it)."""
        if not self.is_over():
            return None
        return (f"training time ran out ({self.elapsed():.0f} of {self.duration:.0f} s, train.duration; a step takes "
                f"{self.step:.1f} s) during epoch {epoch}, {planned} planned")  # fmt: skip

    def state_dict(self) -> dict[str, Any]:
        """The seconds spent, saved with a resumable run."""
        return {"seconds": self.elapsed()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue the count of a resumed run."""
        self.before, self.started = float(state["seconds"]), None
