"""Stopping cleanly on SIGTERM and SIGINT: finish the step, save the state, exit with the signal's status.

Clusters pre-empt jobs with SIGTERM (Slurm, Kubernetes, spot instances) and send SIGKILL a while later. While a
Trainer fits, the first SIGTERM or SIGINT (Ctrl-C) only asks for a stop: the Trainer sees it at the next step
boundary, writes `resume.pt` and raises `TrainingStopped`, which the command turns into the resume hint and exit
status 128 + the signal (143 for SIGTERM, 130 for SIGINT). A second signal ends the process at once.

A signal that comes within `SAME_REQUEST_SECONDS` of the first counts as the same request: torchrun passes the
signal it gets on to its ranks, and Slurm signals every process of a job step, so one stop can reach a rank twice.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from types import FrameType, TracebackType

SAME_REQUEST_SECONDS = 1.0
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class TrainingStopped(KeyboardInterrupt):
    """Training stopped on a signal, after saving its state.

    A KeyboardInterrupt, so code that handles Ctrl-C handles it too.

    Attributes:
        signum: the signal that asked for the stop.
    """

    def __init__(self, signum: int, message: str = "") -> None:
        super().__init__(*([message] if message else []))
        self.signum = signum

    @property
    def exit_code(self) -> int:
        """The shell's status for a process ended by the signal: 128 + its number (143 for SIGTERM)."""
        return 128 + self.signum

    @property
    def signal_name(self) -> str:
        """'SIGTERM', 'SIGINT', ..."""
        return signal.Signals(self.signum).name


class StopRequests:
    """While active (a `with` block in the main thread), SIGTERM and SIGINT set `signum` instead of ending things.

    Args:
        announce: write one line to stderr when a stop is asked (rank 0 of a distributed run; others stay quiet).
    """

    def __init__(self, announce: bool = True) -> None:
        self.announce = announce
        self.signum: int | None = None
        self._first_at = 0.0
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopRequests:
        if threading.current_thread() is threading.main_thread():  # Python takes signals in the main thread only
            for signum in STOP_SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        """First signal: note it. A later one (past the grace period): end the process by that signal, now."""
        now = time.monotonic()
        if self.signum is None:
            self.signum, self._first_at = signum, now
            if self.announce:  # os.write: a handler may run in the middle of another write to sys.stderr
                name = signal.Signals(signum).name
                os.write(2, f"cifarlab: {name}: saving the state after this step (send it again to quit at once)\n"
                         .encode())  # fmt: skip
            return
        if now - self._first_at < SAME_REQUEST_SECONDS:
            return
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
