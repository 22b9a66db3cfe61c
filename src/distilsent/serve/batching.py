"""Dynamic batching for the server: many requests' token sequences packed into few model calls.

Requests wait at most ``max_wait_ms`` for company, then the batcher packs sequences from every waiting
request, round-robin, until the token budget or the request cap is reached. A request with many texts
is served a fair share per model call, so a short request arriving behind it is answered in the next
call instead of after the whole long one. Inference runs on one worker thread, off the event loop.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

__all__ = ["Batcher", "DeadlineError", "QueueFullError"]

# A refused client is never told to wait longer than this, however many came before it (clients that
# ignore Retry-After would otherwise push the booked slots ever further out).
_MAX_RETRY_AFTER = 120.0


class QueueFullError(Exception):
    """More work is waiting than the server accepts; the client should retry after ``retry_after`` s."""

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class DeadlineError(Exception):
    """A request was not answered within its deadline; its remaining work was dropped."""


@dataclass(eq=False)
class _Job:
    sequences: list[list[int]]
    future: asyncio.Future[np.ndarray]
    logits: list[np.ndarray | None] = field(default_factory=list)
    next: int = 0
    done: int = 0
    queued_at: float = field(default_factory=time.perf_counter)
    first_call_at: float | None = None
    model_seconds: float = 0.0


@dataclass
class BatchStats:
    """What the batcher has done so far, for metrics and tests."""

    model_calls: int = 0
    sequences: int = 0
    batch_sizes: collections.deque[int] = field(default_factory=lambda: collections.deque(maxlen=1000))
    """Sequences in each of the last 1,000 model calls (bounded: a server runs for months)."""


class Batcher:
    """Packs token sequences from concurrent callers into shared calls of ``infer``.

    ``infer`` takes a list of token-id sequences and returns their logits, shape ``(n, labels)``; it
    runs on ``executor``, a single thread (one is made when none is given).
    ``on_batch(sequences, tokens, seconds)`` is called after each call.
    """

    def __init__(
        self,
        infer: Callable[[list[list[int]]], np.ndarray],
        *,
        max_tokens: int,
        max_requests: int,
        max_wait_ms: float,
        max_pending: int,
        on_batch: Callable[[int, int, float], None] | None = None,
        executor: ThreadPoolExecutor | None = None,
        max_queue_seconds: float | None = None,
        deadline_seconds: float | None = None,
    ) -> None:
        self._infer = infer
        self.max_queue_seconds = max_queue_seconds
        self.deadline_seconds = deadline_seconds
        self.queued_tokens = 0
        """Tokens submitted and not yet sent to the model."""
        self._booked_until = 0.0
        """time.monotonic() at which the slots booked by refused requests (see retry_after) end."""
        self.tokens_per_second: float | None = None
        """The model's measured rate (a moving average over calls); None before the first call."""
        self.max_tokens = max_tokens
        self.max_requests = max_requests
        self.max_wait = max_wait_ms / 1000
        self.max_pending = max_pending
        self._on_batch = on_batch
        self._queue: collections.deque[_Job] = collections.deque()
        self._wakeup = asyncio.Event()
        self._owns_executor = executor is None
        self._executor = executor or ThreadPoolExecutor(1, thread_name_prefix="distilsent-model")
        self._task: asyncio.Task[None] | None = None
        self.stats = BatchStats()

    @property
    def pending(self) -> int:
        """Requests waiting for (part of) their answer."""
        return len(self._queue)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self.run(), name="distilsent-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._owns_executor:
            self._executor.shutdown(wait=True)

    def queue_seconds(self, extra_tokens: int = 0) -> float | None:
        """How long the queued tokens (plus ``extra_tokens``) take at the measured rate; None before
        the first model call."""
        if not self.tokens_per_second:
            return None
        return (self.queued_tokens + extra_tokens) / self.tokens_per_second

    async def submit(
        self, sequences: Sequence[list[int]], timing: dict[str, float] | None = None
    ) -> np.ndarray:
        """Logits for ``sequences``, in order, once the batcher has run them.

        ``timing``, when given, receives ``queue`` (seconds until the first model call that carried
        these sequences) and ``inference`` (seconds of the model calls that carried them).

        Refused (``QueueFullError``) when ``max_pending`` requests wait already, or when the queued
        tokens and these would take the model longer than ``max_queue_seconds`` at its measured rate;
        ``DeadlineError`` when not answered within ``deadline_seconds``.
        """
        if self._task is None or self._task.done():
            raise RuntimeError("the batcher is not running")
        tokens = sum(map(len, sequences))
        if len(self._queue) >= self.max_pending:
            raise QueueFullError(f"{len(self._queue)} requests are already waiting", self.retry_after(tokens))
        wait = self.queue_seconds(tokens)
        # A request is always admitted into an empty queue, however large: it could never be otherwise.
        limit = self.max_queue_seconds
        if limit is not None and wait is not None and self.queued_tokens and wait > limit:
            raise QueueFullError(
                f"{self.queued_tokens:,} tokens are queued, {wait:.1f} s of work with this request "
                f"(the limit is {limit:g} s)",
                self.retry_after(tokens),
            )
        job = _Job(list(sequences), asyncio.get_running_loop().create_future())
        job.logits = [None] * len(job.sequences)
        self._queue.append(job)
        self.queued_tokens += tokens
        self._wakeup.set()
        try:
            if self.deadline_seconds is None:
                return await job.future
            try:
                return await asyncio.wait_for(asyncio.shield(job.future), self.deadline_seconds)
            except TimeoutError:
                job.future.cancel()  # the batcher drops what is left of it
                raise DeadlineError(
                    f"not answered within {self.deadline_seconds:g} s (the server is overloaded)"
                ) from None
        finally:
            if timing is not None:
                started = job.first_call_at if job.first_call_at is not None else time.perf_counter()
                timing["queue"] = started - job.queued_at
                timing["inference"] = job.model_seconds

    def fail_pending(self, error: Exception) -> None:
        """Answer every waiting request with ``error`` now (their remaining work is dropped)."""
        for job in self._queue:
            if not job.future.done():
                job.future.set_exception(error)
        self._drop_finished()

    def retry_after(self, tokens: int = 0) -> int:
        """Seconds a refused request of ``tokens`` should wait before it comes back: until the queue has
        drained below the admission limit and the requests refused before it have had their turn, at
        the measured rate.

        Each refusal books its slot after the previous ones, so that refused clients return spread
        out at the pace the model can take them; a Retry-After of one second for all of them (what
        the queue alone suggests) brings them back together, and under 1,024 clients the server
        spent its two cores answering their retries instead of running the model.
        """
        rate = self.tokens_per_second
        if not rate:
            return 1
        now = time.monotonic()
        drained = now + max(0.0, self.queued_tokens / rate - (self.max_queue_seconds or 0))
        start = min(max(drained, self._booked_until), now + _MAX_RETRY_AFTER)
        self._booked_until = start + tokens / rate
        return max(1, math.ceil(start - now))

    def _pack(self) -> list[tuple[_Job, int, int]]:
        """Slices ``(job, start, end)`` of waiting jobs to run next: a fair share each, then leftovers."""
        live = [job for job in self._queue if not job.future.done()][: self.max_requests]
        if not live:
            return []
        budget = self.max_tokens
        share = max(1, budget // len(live))
        ends: dict[_Job, int] = {}
        for job in live:  # every job gets at least one sequence
            end, tokens = job.next, 0
            while end < len(job.sequences):
                size = len(job.sequences[end])
                if end > job.next and tokens + size > share:
                    break
                tokens += size
                end += 1
            ends[job] = end
            budget -= tokens
        for job in live:  # what is left of the budget goes in arrival order
            end = ends[job]
            while end < len(job.sequences) and len(job.sequences[end]) <= budget:
                budget -= len(job.sequences[end])
                end += 1
            ends[job] = end
        return [(job, job.next, end) for job, end in ends.items() if end > job.next]

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
            waiting = sum(len(seq) for j in self._queue for seq in j.sequences[j.next :])
            if self.max_wait > 0 and waiting < self.max_tokens and len(self._queue) < self.max_requests:
                # Few texts waiting: give other clients a moment to join this model call.
                await asyncio.sleep(self.max_wait)
            slices = self._pack()
            if not slices:
                self._drop_finished()
                continue
            for job, start, end in slices:
                job.next = end
                self.queued_tokens -= sum(len(seq) for seq in job.sequences[start:end])
            batch = [seq for job, start, end in slices for seq in job.sequences[start:end]]
            began = time.perf_counter()
            for job, _, _ in slices:
                if job.first_call_at is None:
                    job.first_call_at = began
            try:
                logits = await loop.run_in_executor(self._executor, self._infer, batch)
            except Exception as e:  # the callers get the error; the batcher carries on
                for job, _, _ in slices:
                    if not job.future.done():
                        job.future.set_exception(e)
                self._drop_finished()
                continue
            seconds = time.perf_counter() - began
            for job, _, _ in slices:
                job.model_seconds += seconds
            rate = sum(map(len, batch)) / max(seconds, 1e-6)
            self.tokens_per_second = (
                rate if self.tokens_per_second is None else 0.8 * self.tokens_per_second + 0.2 * rate
            )
            self.stats.model_calls += 1
            self.stats.sequences += len(batch)
            self.stats.batch_sizes.append(len(batch))
            if self._on_batch is not None:
                self._on_batch(len(batch), sum(map(len, batch)), seconds)
            row = 0
            for job, start, end in slices:
                for i in range(start, end):
                    job.logits[i] = logits[row]
                    row += 1
                job.done += end - start
                if job.done == len(job.sequences) and not job.future.done():
                    job.future.set_result(np.stack(job.logits))  # type: ignore[arg-type]
            self._drop_finished()

    def _drop_finished(self) -> None:
        # Finished and cancelled (client went away) jobs leave the queue; order of the rest is kept.
        if any(job.future.done() for job in self._queue):
            for job in self._queue:
                if job.future.done():  # a cancelled job's unsent tokens leave the count
                    self.queued_tokens -= sum(len(seq) for seq in job.sequences[job.next :])
            self._queue = collections.deque(job for job in self._queue if not job.future.done())
