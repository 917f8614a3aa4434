"""Micro-batching: requests that arrive while the model is busy are run together, as Triton's dynamic batcher does."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np


class QueueFullError(RuntimeError):
    """The batcher's queue is full: the caller should answer 503 and the client retry later."""


@dataclass
class _Request:
    images: np.ndarray  # (n, 3, S, S) uint8
    future: asyncio.Future


class MicroBatcher:
    """Run `predict` on batches gathered from concurrent callers, one batch at a time, off the event loop.

    When the model is idle a request is dispatched at once (no added latency at low load). When requests
    queued up while it was busy, they are taken together, and the batcher waits up to `window_ms` more for
    others until `max_batch` images are gathered. A queue of `max_queue` waiting requests bounds the memory
    and the wait; beyond it `submit` raises `QueueFullError`. `max_batch=1` turns batching off.

    Args:
        predict: (B, 3, S, S) uint8 images -> (B, K) probabilities; called in one worker thread.
        max_batch: most images in one call of `predict` (a single larger request still runs whole).
        window_ms: how long to wait for more requests when the model is under load.
        max_queue: most requests waiting.
    """

    def __init__(
        self,
        predict: Callable[[np.ndarray], np.ndarray],
        *,
        max_batch: int = 32,
        window_ms: float = 2.0,
        max_queue: int = 256,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"--max-batch must be 1 or more, got {max_batch}")
        if window_ms < 0:
            raise ValueError(f"the batch window must be 0 ms or more, got {window_ms}")
        self.predict = predict
        self.max_batch = max_batch
        self.window_s = window_ms / 1000
        self.max_queue = max_queue
        self.batches_run = 0
        self.images_run = 0
        self._queue: asyncio.Queue[_Request] | None = None
        self._worker: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None

    async def start(self) -> None:
        """Start the worker (call from the running event loop, e.g. in the app's lifespan)."""
        self._queue = asyncio.Queue(maxsize=self.max_queue)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cifarlab-infer")
        self._worker = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """Stop the worker; requests still queued fail."""
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        if self._executor is not None:
            self._executor.shutdown(wait=True)
        while self._queue is not None and not self._queue.empty():
            request = self._queue.get_nowait()
            if not request.future.done():
                request.future.set_exception(RuntimeError("the server is shutting down"))

    async def submit(self, images: np.ndarray) -> np.ndarray:
        """Probabilities (n, K) for (n, 3, S, S) uint8 images, once their batch has run.

        Raises:
            QueueFullError: if `max_queue` requests are already waiting.
        """
        if self._queue is None:
            raise RuntimeError("MicroBatcher.start() was not called")
        request = _Request(images, asyncio.get_running_loop().create_future())
        try:
            self._queue.put_nowait(request)
        except asyncio.QueueFull:
            raise QueueFullError(f"{self.max_queue} requests are waiting; try again shortly") from None
        return await request.future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        under_load = False  # whether requests queued up while the last batch ran
        while True:
            batch = [await self._queue.get()]
            count = len(batch[0].images)
            while count < self.max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
                count += len(batch[-1].images)
            if under_load:  # idle -> dispatch at once; busy -> a short window to fill the batch
                deadline = loop.time() + self.window_s
                while count < self.max_batch and (timeout := deadline - loop.time()) > 0:
                    try:
                        batch.append(await asyncio.wait_for(self._queue.get(), timeout))
                    except asyncio.TimeoutError:  # TimeoutError itself only from Python 3.11
                        break
                    count += len(batch[-1].images)
            await self._dispatch(loop, batch)
            under_load = not self._queue.empty()

    async def _dispatch(self, loop: asyncio.AbstractEventLoop, batch: list[_Request]) -> None:
        """Run one batch in the worker thread and hand each caller its rows."""
        try:
            images = np.concatenate([request.images for request in batch])
            probabilities = await loop.run_in_executor(self._executor, self.predict, images)
        except Exception as error:  # the callers get the error; the batcher keeps serving
            for request in batch:
                if not request.future.done():
                    request.future.set_exception(error)
            return
        self.batches_run += 1
        self.images_run += len(images)
        start = 0
        for request in batch:
            end = start + len(request.images)
            if not request.future.done():  # a client that went away cancelled its future
                request.future.set_result(probabilities[start:end])
            start = end
