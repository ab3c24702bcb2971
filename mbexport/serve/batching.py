"""Cross-request dynamic batching over one Embedder.

Each request is tokenized when it arrives (``Embedder.tokenize``: native, GIL released) and
queued as a *job*: packed ids + cumulative lengths. One asyncio task per model takes jobs
in arrival order up to a budget (texts, real tokens, requests), concatenates them into one
packed array and runs ``Embedder.embed_tokenized`` on a dedicated worker thread, so the
native Batcher plans longest-first, token-budget batches across all of them: ten clients
sending one short text each cost one model batch, not ten. Rows are split back per job.

Requests that arrive while a batch runs wait in the queue and form the next batch, so the
batcher needs no timer under load; ``wait`` (a few ms) only lets simultaneous arrivals meet
when the server is idle. The queue is bounded in texts: a job that would overflow it is
refused at once (:class:`QueueFull`, HTTP 429), never after waiting. ``close`` stops intake
and finishes every accepted job before returning (graceful shutdown).
"""

from __future__ import annotations

import asyncio
import collections
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from mbexport.runtime import Embedder, l2_normalize
from mbexport.serve.metrics import Metrics


class QueueFull(Exception):
    """The queue holds too many texts to accept this request now (answered 429)."""


class Closing(Exception):
    """The batcher is shutting down and takes no new work (answered 503)."""


@dataclass(frozen=True)
class BatchLimits:
    """How much work the service accepts and how much one coalesced batch may hold."""

    max_queue: int = 4096  # texts accepted and waiting; beyond it requests get 429
    max_batch_texts: int = 2048
    max_batch_tokens: int = 16384  # real tokens per coalesced batch (the native Batcher splits it further)
    max_batch_requests: int = 256  # 1 turns cross-request batching off
    wait: float = 0.002  # seconds an idle batcher waits for simultaneous arrivals

    def __post_init__(self) -> None:
        for name in ("max_queue", "max_batch_texts", "max_batch_tokens", "max_batch_requests"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.wait < 0:
            raise ValueError(f"batch wait must be >= 0 seconds, got {self.wait}")


@dataclass
class _Job:
    ids: np.ndarray  # packed int32 token ids
    cu: np.ndarray  # int64 cumulative lengths, cu[0] == 0
    tokens: int  # real tokens after truncation
    normalize: bool
    future: asyncio.Future
    enqueued: float = field(default_factory=time.perf_counter)

    @property
    def texts(self) -> int:
        return len(self.cu) - 1


class Coalescer:
    """Queues tokenized requests for one model and runs them in coalesced batches."""

    def __init__(self, name: str, embedder: Embedder, limits: BatchLimits, metrics: Metrics) -> None:
        self.name = name
        self.embedder = embedder
        self.limits = limits
        self.metrics = metrics
        self._queue: collections.deque[_Job] = collections.deque()
        self._queued_texts = 0
        self._closing = False
        self._arrived = asyncio.Event()
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"mbexport-serve-{name}")
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name=f"mbexport-batcher-{self.name}")

    async def close(self) -> None:
        """Take no new jobs, finish the accepted ones, stop the worker thread."""
        self._closing = True
        self._arrived.set()
        if self._task is not None:
            await self._task
        self._worker.shutdown(wait=True)

    def submit(self, ids: np.ndarray, cu: np.ndarray, tokens: int, normalize: bool) -> asyncio.Future:
        """Queue one request's texts; the future gets their rows ([texts, hidden] float32)."""
        if self._closing:
            raise Closing(self.name)
        texts = len(cu) - 1
        if self._queued_texts + texts > self.limits.max_queue:
            self.metrics.rejected.labels(self.name).inc()
            raise QueueFull(self.name)
        job = _Job(ids, cu, tokens, normalize, asyncio.get_running_loop().create_future())
        self._queue.append(job)
        self._queued_texts += texts
        self._gauge()
        self._arrived.set()
        return job.future

    # -- the batching loop ----------------------------------------------------------------

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._arrived.wait()
            if not self._queue:
                if self._closing:
                    return
                self._arrived.clear()
                continue
            if self.limits.wait and not self._closing and not self._full():
                await asyncio.sleep(self.limits.wait)
            jobs = self._take()
            try:
                rows = await loop.run_in_executor(self._worker, self._embed, jobs)
            except Exception as error:  # noqa: BLE001 - a failing batch fails its own requests, never the loop
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(error)
                continue
            self._answer(jobs, rows)

    def _full(self) -> bool:
        """Whether the queue already holds a whole batch (no point waiting for more)."""
        limits = self.limits
        return (len(self._queue) >= limits.max_batch_requests or self._queued_texts >= limits.max_batch_texts
                or sum(job.tokens for job in self._queue) >= limits.max_batch_tokens)

    def _take(self) -> list[_Job]:
        """Jobs in arrival order while they fit the budget; always at least one."""
        limits = self.limits
        jobs = [self._queue.popleft()]
        texts, tokens = jobs[0].texts, jobs[0].tokens
        while self._queue and len(jobs) < limits.max_batch_requests:
            nxt = self._queue[0]
            if texts + nxt.texts > limits.max_batch_texts or tokens + nxt.tokens > limits.max_batch_tokens:
                break
            jobs.append(self._queue.popleft())
            texts, tokens = texts + nxt.texts, tokens + nxt.tokens
        self._queued_texts -= texts
        self._gauge()
        now = time.perf_counter()
        for job in jobs:
            self.metrics.queue_seconds.labels(self.name).observe(now - job.enqueued)
        return jobs

    def _embed(self, jobs: list[_Job]) -> np.ndarray:
        """Worker thread: one Embedder call over the concatenated jobs (un-normalized rows)."""
        started = time.perf_counter()
        ids = np.concatenate([job.ids for job in jobs])
        offsets = np.cumsum([0] + [len(job.ids) for job in jobs[:-1]])
        cu = np.concatenate([[0]] + [job.cu[1:] + offset for job, offset in zip(jobs, offsets)]).astype(np.int64)
        model_batches = self.embedder.stats.batches
        rows = self.embedder.embed_tokenized(ids, cu, normalize=False)
        m, name = self.metrics, self.name
        m.batches.labels(name).inc()
        m.model_batches.labels(name).inc(self.embedder.stats.batches - model_batches)
        m.batch_requests.labels(name).observe(len(jobs))
        m.batch_texts.labels(name).observe(len(rows))
        m.batch_tokens.labels(name).observe(sum(job.tokens for job in jobs))
        m.batch_seconds.labels(name).observe(time.perf_counter() - started)
        return rows

    def _answer(self, jobs: list[_Job], rows: np.ndarray) -> None:
        start = 0
        for job in jobs:
            mine = rows[start:start + job.texts]
            start += job.texts
            if job.normalize:
                l2_normalize(mine)
            self.metrics.texts.labels(self.name).inc(job.texts)
            self.metrics.tokens.labels(self.name).inc(job.tokens)
            if not job.future.done():  # the client may have gone away
                job.future.set_result(mine)

    def _gauge(self) -> None:
        self.metrics.queue_texts.labels(self.name).set(self._queued_texts)
        self.metrics.queue_requests.labels(self.name).set(len(self._queue))
