"""The service's micro-batcher: concurrent callers share one call of the batch function, results stay theirs."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from bentos.batching import MicroBatcher


class Recorder:
    """A batch function that doubles numbers and records the batches it was called with."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.batches: list[list[int]] = []
        self.threads: set[int] = set()
        self.delay_s = delay_s
        self.active = 0
        self.max_active = 0
        self._lock = threading.Lock()

    def __call__(self, jobs: list[int]) -> list[int]:
        with self._lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        self.batches.append(list(jobs))
        self.threads.add(threading.get_ident())
        time.sleep(self.delay_s)
        with self._lock:
            self.active -= 1
        return [2 * j for j in jobs]


def test_concurrent_callers_share_a_batch_and_get_their_own_results():
    fn = Recorder()
    batcher = MicroBatcher(fn, max_batch_size=100, max_latency_ms=50)

    async def main() -> list[list[int]]:
        return await asyncio.gather(*(batcher.submit([10 * c + i for i in range(3)]) for c in range(5)))

    results = asyncio.run(main())
    # every caller gets its own three jobs back, doubled, in order
    assert results == [[2 * (10 * c + i) for i in range(3)] for c in range(5)]
    # the five callers arrived within the 50 ms window: one call with all 15 jobs
    assert [len(b) for b in fn.batches] == [15]
    assert batcher.stats.calls == 1 and batcher.stats.largest == 15


def test_batches_stop_at_max_size_and_keep_a_callers_jobs_together():
    fn = Recorder(delay_s=0.01)
    batcher = MicroBatcher(fn, max_batch_size=4, max_latency_ms=50)

    async def main() -> list[list[int]]:
        return await asyncio.gather(*(batcher.submit([c, c]) for c in range(6)))

    results = asyncio.run(main())
    assert results == [[2 * c, 2 * c] for c in range(6)]
    # 6 callers x 2 jobs with at most 4 jobs per batch: 3 batches of 2 callers each, pairs never split
    assert [len(b) for b in fn.batches] == [4, 4, 4]
    assert all(b[0] == b[1] and b[2] == b[3] for b in fn.batches)
    assert fn.max_active == 1  # one batch at a time: the model is never used from two threads


def test_a_lone_caller_waits_at_most_the_latency_window():
    batcher = MicroBatcher(Recorder(), max_batch_size=100, max_latency_ms=30)

    async def main() -> float:
        started = time.perf_counter()
        await batcher.submit([1])
        return time.perf_counter() - started

    elapsed = asyncio.run(main())
    assert elapsed < 0.5  # the 30 ms window plus a thread hop, far below half a second even on a busy machine


def test_a_failing_batch_fails_every_caller_in_it_and_the_next_batch_runs():
    calls = {"n": 0}

    def flaky(jobs: list[int]) -> list[int]:
        calls["n"] += 1
        if calls["n"] == 1:
            raise ValueError("model exploded")
        return jobs

    batcher = MicroBatcher(flaky, max_batch_size=10, max_latency_ms=20)

    async def main() -> tuple[list[object], list[int]]:
        first = await asyncio.gather(batcher.submit([1]), batcher.submit([2]), return_exceptions=True)
        second = await batcher.submit([3])
        return first, second

    first, second = asyncio.run(main())
    assert all(isinstance(r, ValueError) for r in first)
    assert second == [3]


def test_a_batch_function_returning_the_wrong_count_is_an_error():
    batcher = MicroBatcher(lambda jobs: jobs[:-1], max_batch_size=10, max_latency_ms=1)
    with pytest.raises(RuntimeError, match="2 results for 3 jobs"):
        asyncio.run(batcher.submit([1, 2, 3]))


def test_no_jobs_no_call():
    fn = Recorder()
    assert asyncio.run(MicroBatcher(fn, 10, 1).submit([])) == []
    assert fn.batches == []


def test_without_a_window_jobs_queued_during_a_batch_form_the_next_one():
    fn = Recorder(delay_s=0.05)
    batcher = MicroBatcher(fn, max_batch_size=100, max_latency_ms=0)

    async def main() -> list[list[int]]:
        first = asyncio.ensure_future(batcher.submit([0]))
        await asyncio.sleep(0.01)  # the first batch (one job) is running now
        rest = await asyncio.gather(*(batcher.submit([c]) for c in range(1, 6)))
        await first
        return rest

    assert asyncio.run(main()) == [[2 * c] for c in range(1, 6)]
    # no window: the lone first job ran alone at once; the five that came while it ran went together
    assert [sorted(b) for b in fn.batches] == [[0], [1, 2, 3, 4, 5]]


def test_small_batches_run_on_the_loops_thread_when_inline_and_larger_ones_in_a_worker_thread():
    fn = Recorder()
    batcher = MicroBatcher(fn, max_batch_size=100, max_latency_ms=0, inline_max_jobs=1)

    async def main() -> tuple[int, list[int], list[int]]:
        loop_thread = threading.get_ident()
        single = await batcher.submit([1])
        pair = await batcher.submit([2, 3])
        return loop_thread, single, pair

    loop_thread, single, pair = asyncio.run(main())
    assert single == [2] and pair == [4, 6]
    # the one-job batch ran on the event loop's thread, the two-job batch in a worker thread
    assert len(fn.threads) == 2 and loop_thread in fn.threads
