"""Cross-request dynamic batching over one Embedder: continuous, length-homogeneous batches.

Each request is tokenized when it arrives (``Embedder.tokenize``: native, GIL released) and
queued as a *job*: packed ids + cumulative lengths. One asyncio task per model keeps a *pool*
of accepted texts (up to a budget of texts, real tokens and requests) and runs it one model
batch at a time on a dedicated worker thread: the native Batcher plans the pool into
longest-first, length-homogeneous batches (least padded tokens plus a per-batch cost), the
batch holding the oldest text runs first, and a request is answered as soon as its last text
is done. Requests that arrive while a batch runs join the pool and the pool is re-planned, so
the model never idles while work waits and never waits for a whole coalesced set to finish.

Why not one ``embed_tokenized`` call per coalesced set (the first design): on CPU a model
batch costs about its padded tokens (the GEMMs are compute-bound from a few rows), so
batching saves only the per-run overhead, while a set of 32 mixed-length single-text requests
padded 40% of its tokens (a greedy fill pads short texts to the longest), every request of a
set waited for the whole set, and the model sat idle while the set's answers were written and
the next requests read: slower than no batching at all (docs/SERVING.md has the figures).

``wait`` (a few ms) only lets simultaneous arrivals meet when the model is idle. The queue is
bounded in texts: a job that would overflow it is refused at once (:class:`QueueFull`, HTTP
429), never after waiting. ``close`` stops intake and finishes every accepted job before
returning (graceful shutdown).
"""

from __future__ import annotations

import asyncio
import collections
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from mbexport import _native
from mbexport.arguments import check_int
from mbexport.errors import ArgumentError
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
    max_batch_texts: int = 2048  # texts in the pool planned together (model batches: Embedder.batch_tokens)
    max_batch_tokens: int = 16384  # real tokens in that pool
    max_batch_requests: int = 256  # requests in that pool; 1 turns cross-request batching off
    wait: float = 0.002  # seconds an idle batcher waits for simultaneous arrivals

    def __post_init__(self) -> None:
        for name in ("max_queue", "max_batch_texts", "max_batch_tokens", "max_batch_requests"):
            option = "" if name == "max_batch_texts" else f" (--{name.replace('_', '-')})"
            check_int(f"{name}{option}", getattr(self, name), 1)
        if not self.wait >= 0:  # NaN too
            raise ArgumentError(f"the batch wait (--batch-wait-ms) must be >= 0, got {self.wait * 1000} ms")


@dataclass(eq=False)
class _Job:
    ids: np.ndarray  # packed int32 token ids
    cu: np.ndarray  # int64 cumulative lengths, cu[0] == 0
    tokens: int  # real tokens after truncation
    normalize: bool
    future: asyncio.Future[np.ndarray]
    rows: np.ndarray  # [texts, hidden] float32, filled as its texts' batches finish
    left: int  # texts not embedded yet
    enqueued: float = field(default_factory=time.perf_counter)

    @property
    def texts(self) -> int:
        return len(self.cu) - 1


@dataclass(frozen=True, eq=False)
class _Text:
    """One pending text of a job; ``age`` orders the pool by arrival."""

    job: _Job
    row: int  # its row in the job's answer
    age: int

    @property
    def ids(self) -> np.ndarray:
        return self.job.ids[self.job.cu[self.row]:self.job.cu[self.row + 1]]


class Coalescer:
    """Queues tokenized requests for one model and runs them in continuous, coalesced batches."""

    def __init__(self, name: str, embedder: Embedder, limits: BatchLimits, metrics: Metrics) -> None:
        self.name = name
        self.embedder = embedder
        self.limits = limits
        self.metrics = metrics
        self._queue: collections.deque[_Job] = collections.deque()
        self._queued_texts = 0
        self._batches: list[list[_Text]] = []  # the pool, planned; the next batch to run first
        self._arrivals = 0
        self._closing = False
        self._arrived = asyncio.Event()
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"mbexport-serve-{name}")
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name=f"mbexport-batcher-{self.name}")

    async def close(self) -> None:
        """Take no new jobs, finish the accepted ones, stop the worker thread."""
        self._closing = True
        self._arrived.set()
        if self._task is not None:
            await self._task
        self._worker.shutdown(wait=True)

    def submit(self, ids: np.ndarray, cu: np.ndarray, tokens: int, normalize: bool) -> asyncio.Future[np.ndarray]:
        """Queue one request's texts; the future gets their rows ([texts, hidden] float32)."""
        if self._closing:
            raise Closing(self.name)
        texts = len(cu) - 1
        if self._queued_texts + texts > self.limits.max_queue:
            self.metrics.rejected.labels(self.name).inc()
            raise QueueFull(self.name)
        rows = np.empty((texts, self.embedder.hidden_size), dtype=np.float32)
        job = _Job(ids, cu, tokens, normalize, asyncio.get_running_loop().create_future(), rows, texts)
        self._queue.append(job)
        self._queued_texts += texts
        self._gauge()
        self._arrived.set()
        job.future.add_done_callback(lambda future: self._withdraw(job) if future.cancelled() else None)
        return job.future

    def _withdraw(self, job: _Job) -> None:
        """A cancelled job (its client went away) leaves the queue at once, so it holds no room there."""
        if job in self._queue:  # identity (eq=False); still waiting, not in the pool yet
            self._queue.remove(job)
            self._queued_texts -= job.texts
            self._gauge()

    # -- the batching loop ----------------------------------------------------------------

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._batches and not self._queue:
                if self._closing:
                    return
                self._arrived.clear()
                await self._arrived.wait()
                continue
            if not self._batches and self.limits.wait and not self._closing and not self._full():
                await asyncio.sleep(self.limits.wait)  # the model is idle: let simultaneous arrivals meet
            if self._queue:
                self._intake()
            batch = [text for text in self._batches.pop(0) if not text.job.future.done()]  # skip gone clients
            if not batch:
                continue
            try:
                rows = await loop.run_in_executor(self._worker, self._embed, batch)
            except Exception as error:  # noqa: BLE001 - a failing batch fails its own requests, never the loop
                self._fail(batch, error)
                continue
            self._answer(batch, rows)

    def _full(self) -> bool:
        """Whether the queue already holds a whole batch (no point waiting for more)."""
        limits = self.limits
        return (len(self._queue) >= limits.max_batch_requests or self._queued_texts >= limits.max_batch_texts
                or sum(job.tokens for job in self._queue) >= limits.max_batch_tokens)

    def _intake(self) -> None:
        """Move queued jobs into the pool while it has room (always one when it is empty), re-plan it."""
        limits = self.limits
        pool = sorted((text for batch in self._batches for text in batch), key=lambda text: text.age)
        jobs = {id(text.job): text.job for text in pool}
        texts, tokens = len(pool), sum(job.tokens for job in jobs.values())
        now = time.perf_counter()
        while self._queue and len(jobs) < limits.max_batch_requests:
            job = self._queue[0]
            if pool and (texts + job.texts > limits.max_batch_texts or tokens + job.tokens > limits.max_batch_tokens):
                break
            self._queue.popleft()
            self._queued_texts -= job.texts
            jobs[id(job)] = job
            texts, tokens = texts + job.texts, tokens + job.tokens
            pool += [_Text(job, row, self._arrivals + row) for row in range(job.texts)]
            self._arrivals += job.texts
            self.metrics.queue_seconds.labels(self.name).observe(now - job.enqueued)
        self._gauge()
        self._batches = self._plan(pool)

    def _plan(self, pool: list[_Text]) -> list[list[_Text]]:
        """The pool cut into the native Batcher's batches, the one holding the oldest text first."""
        ids = np.concatenate([text.ids for text in pool])
        cu = np.zeros(len(pool) + 1, dtype=np.int64)
        np.cumsum([len(text.ids) for text in pool], out=cu[1:])
        e = self.embedder  # the plan embed_tokenized makes: same Batcher options
        plan = _native.Batcher(ids, cu, max_length=e.max_length, batch_tokens=e.batch_tokens,
                               pad_multiple=e.pad_multiple, pad_id=e.pad_id)
        order, offsets = plan.order, plan.offsets
        batches = [[pool[i] for i in order[offsets[b]:offsets[b + 1]]] for b in range(len(offsets) - 1)]
        return sorted(batches, key=lambda batch: min(text.age for text in batch))

    def _embed(self, batch: list[_Text]) -> np.ndarray:
        """Worker thread: one Embedder call over the batch's texts. Rows come normalized when every
        request in the batch wants that (an export that normalizes in its graph then needs no host
        pooling); else un-normalized, and ``_answer`` normalizes per request."""
        started = time.perf_counter()
        cu = np.zeros(len(batch) + 1, dtype=np.int64)
        np.cumsum([len(text.ids) for text in batch], out=cu[1:])
        model_batches = self.embedder.stats.batches
        normalize = all(text.job.normalize for text in batch)
        rows = self.embedder.embed_tokenized(np.concatenate([text.ids for text in batch]), cu, normalize=normalize)
        m, name = self.metrics, self.name
        m.batches.labels(name).inc()
        m.model_batches.labels(name).inc(self.embedder.stats.batches - model_batches)
        m.batch_requests.labels(name).observe(len({id(text.job) for text in batch}))
        m.batch_texts.labels(name).observe(len(batch))
        m.batch_tokens.labels(name).observe(int(np.minimum(np.diff(cu), self.embedder.max_length).sum()))
        m.batch_seconds.labels(name).observe(time.perf_counter() - started)
        return rows

    def _answer(self, batch: list[_Text], rows: np.ndarray) -> None:
        """Each text's row into its job; a job whose last text this was is answered now."""
        for text, row in zip(batch, rows):
            job = text.job
            job.rows[text.row] = row
            job.left -= 1
            if job.left:
                continue
            if job.normalize:
                l2_normalize(job.rows)
            self.metrics.texts.labels(self.name).inc(job.texts)
            self.metrics.tokens.labels(self.name).inc(job.tokens)
            if not job.future.done():  # the client may have gone away
                job.future.set_result(job.rows)

    def _fail(self, batch: list[_Text], error: Exception) -> None:
        for text in batch:
            if not text.job.future.done():
                text.job.future.set_exception(error)

    def _gauge(self) -> None:
        self.metrics.queue_texts.labels(self.name).set(self._queued_texts)
        self.metrics.queue_requests.labels(self.name).set(len(self._queue))
