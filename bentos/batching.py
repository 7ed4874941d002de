"""Adaptive batching inside one service: concurrent requests' jobs run as one call of a batch function.

BentoML's own adaptive batching (``@bentoml.api(batchable=True)``) batches HTTP calls of that endpoint only.
A call from another method of the same service runs the method directly, unbatched (and a sync batchable
method called from an async one fails in 1.4.39 with anyio's ``NoEventLoopError``, checked by experiment);
its ``max_latency_ms`` is also a deadline: requests it predicts will miss it are answered 503. Generating
copy is the step that gains from batching (one ``generate`` over many prompts costs little more than over
one), and it is reached from ``recommend`` and ``generate``, so the service batches it (and ranking, where
one forward pass over many users is cheaper than many passes) here. A batch is the first waiting job plus
everything that queued up while the previous batch ran, up to ``max_batch_size`` jobs, plus what arrives
within ``max_latency_ms`` of the first (0: no extra wait). So a lone request runs at once, and under load
batches grow by themselves. One request's jobs always stay in one batch, and one batch runs at a time in a
worker thread (or, up to ``inline_max_jobs`` jobs, on the event loop's own thread), so the batch function (the
model, the cache connection) is never used from two threads at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import anyio

J = TypeVar("J")
R = TypeVar("R")


@dataclass
class _Pending(Generic[J, R]):
    jobs: list[J]
    future: asyncio.Future[list[R]]


@dataclass
class BatchStats:
    """How batching went: calls of the batch function, jobs, and the largest batch seen."""

    calls: int = 0
    jobs: int = 0
    largest: int = 0
    sizes: list[int] = field(default_factory=list)

    def record(self, size: int) -> None:
        self.calls += 1
        self.jobs += size
        self.largest = max(self.largest, size)
        self.sizes = [*self.sizes[-99:], size]  # the last 100 sizes, for health and tests


class MicroBatcher(Generic[J, R]):
    """Runs ``batch_fn(jobs) -> results`` (same length, same order) over jobs from concurrent callers."""

    def __init__(
        self,
        batch_fn: Callable[[list[J]], Sequence[R]],
        max_batch_size: int,
        max_latency_ms: float,
        inline_max_jobs: int = 0,
    ) -> None:
        self.batch_fn = batch_fn
        self.max_batch_size = max_batch_size
        self.max_latency_s = max_latency_ms / 1000.0
        # batches of at most this many jobs run on the event loop's thread: no hand-off to a worker thread and
        # back (two wake-ups that each wait for a core on a busy machine), at the price of the loop not reading
        # new requests for that long; they queue and form the next batch either way
        self.inline_max_jobs = inline_max_jobs
        self.stats = BatchStats()
        self._queue: asyncio.Queue[_Pending[J, R]] | None = None
        self._worker: asyncio.Task[None] | None = None

    async def submit(self, jobs: Sequence[J]) -> list[R]:
        """Results of ``jobs``, computed in a batch with whatever other callers submitted meanwhile."""
        if not jobs:
            return []
        loop = asyncio.get_running_loop()
        if self._queue is None or self._worker is None or self._worker.done():
            self._queue = asyncio.Queue()
            self._worker = loop.create_task(self._run(self._queue))
        pending: _Pending[J, R] = _Pending(list(jobs), loop.create_future())
        await self._queue.put(pending)
        return await pending.future

    async def _run(self, queue: asyncio.Queue[_Pending[J, R]]) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await queue.get()]
            size = len(batch[0].jobs)
            deadline = loop.time() + self.max_latency_s
            while size < self.max_batch_size:
                if not queue.empty():  # what queued up while the previous batch ran joins at once
                    nxt = queue.get_nowait()
                else:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    try:
                        nxt = await asyncio.wait_for(queue.get(), remaining)
                    except TimeoutError:
                        break
                batch.append(nxt)
                size += len(nxt.jobs)
            await self._execute(batch)

    async def _execute(self, batch: list[_Pending[J, R]]) -> None:
        flat = [job for pending in batch for job in pending.jobs]
        try:
            if len(flat) <= self.inline_max_jobs:
                results = list(self.batch_fn(flat))
            else:
                results = list(await anyio.to_thread.run_sync(self.batch_fn, flat))
            if len(results) != len(flat):
                raise RuntimeError(f"batch function returned {len(results)} results for {len(flat)} jobs")
        except Exception as exc:  # every caller of the batch learns of the failure
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(exc)
            return
        self.stats.record(len(flat))
        start = 0
        for pending in batch:
            end = start + len(pending.jobs)
            if not pending.future.done():  # a caller that gave up (timeout) is skipped
                pending.future.set_result(results[start:end])
            start = end
