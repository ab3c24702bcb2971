"""The PyTorch parity reference in a child process, so that its cost overlaps the conversion.

Importing torch and transformers and running the reference take seconds of one core; the
conversion (read, build, write) takes seconds of another. ``prestart()`` launches the child at
the start of a convert so that it imports while the parent converts; ``ReferenceWorker.submit``
sends it a job (the checkpoint's HF directory, read by transformers itself, or mbexport's arrays
where there is no such directory) and ``Pending.outputs`` collects the result. One child serves
every convert of a process, so a sweep pays the imports once. The parent kills it at exit; a
parent killed first closes the child's stdin, and the child exits.

Protocol: pickled ``ReferenceJob`` objects on the child's stdin; on its stdout, for each job,
a pickled ``("ok", reference name, outputs)`` or ``("error", message)``.
"""

from __future__ import annotations

import atexit
import os
import pickle
import queue
import subprocess
import sys
import threading
import traceback
from collections import deque
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any

import numpy as np

from mbexport.errors import MbexportError, ParityError
from mbexport.families import family_of
from mbexport.heads import Head
from mbexport.spec import Checkpoint

Outputs = list[dict[str, np.ndarray]]
# The child: answers go to a copy of fd 1, and fd 1 to stderr, so that prints (ours, torch's, C
# libraries') cannot corrupt the answer stream; torch and transformers are imported first, before
# mbexport, since they are what the parent's conversion has to overlap.
_CHILD = ("import os, sys; answers = os.fdopen(os.dup(1), 'wb'); os.dup2(2, 1); sys.stdout = sys.stderr; "
          "import torch; from transformers.models.bert import modeling_bert; "
          "from mbexport.reference_worker import serve; serve(sys.stdin.buffer, answers)")
# Weights whose presence shapes the reference model (a pooler; an untied MLM decoder).
@dataclass
class ReferenceJob:
    checkpoint: Checkpoint  # its weights are left empty when ``model_dir`` is set: transformers reads them
    head: Head
    batches: list[dict[str, np.ndarray]]
    model_dir: Path | None


class Pending:
    """A submitted job: ``outputs()`` waits for the child's answer."""

    def __init__(self, worker: ReferenceWorker) -> None:
        self._worker = worker
        self.answer: tuple[Any, ...] | None = None

    def outputs(self) -> tuple[str, Outputs]:
        """The reference's name and outputs; a ParityError when the child failed or died."""
        self._worker.wait_for(self)
        assert self.answer is not None
        if self.answer[0] != "ok":
            raise ParityError(f"the torch parity reference failed: {self.answer[1]}")
        return self.answer[1], self.answer[2]


class ReferenceWorker:
    """One child process running ``torch_reference`` for the jobs sent to it, answering in order.

    Jobs are written by a thread, so that a parent sending a large job never blocks on a child
    that is itself blocked writing an answer nobody reads yet; answers are read in job order, so
    an answer left unread (a convert that failed after starting its reference) is skipped."""

    def __init__(self) -> None:
        env = {**os.environ, "TRANSFORMERS_VERBOSITY": "error", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
        # Run from the folder holding this mbexport (``-c`` puts the cwd first on sys.path), so the
        # child imports the same package, never a source checkout without its compiled module.
        self._process = subprocess.Popen([sys.executable, "-c", _CHILD], stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, env=env, cwd=Path(__file__).parents[1])
        self._jobs: queue.Queue[ReferenceJob | None] = queue.Queue()
        self._unanswered: deque[Pending] = deque()
        self._lock = threading.Lock()
        threading.Thread(target=self._send, name="mbexport-reference-jobs", daemon=True).start()

    def alive(self) -> bool:
        return self._process.poll() is None

    def submit(self, job: ReferenceJob) -> Pending:
        pending = Pending(self)
        with self._lock:
            self._unanswered.append(pending)
        self._jobs.put(job)
        return pending

    def wait_for(self, pending: Pending) -> None:
        """Read answers in job order until ``pending`` has its own."""
        assert self._process.stdout is not None
        with self._lock:
            while pending.answer is None:
                first = self._unanswered.popleft()
                try:
                    first.answer = pickle.load(self._process.stdout)
                except (EOFError, pickle.UnpicklingError):
                    code = self._process.wait()
                    first.answer = ("error", f"its process exited with status {code} (see the messages above)")

    def _send(self) -> None:
        stdin = self._process.stdin
        assert stdin is not None
        try:
            while (job := self._jobs.get()) is not None:
                pickle.dump(job, stdin, protocol=pickle.HIGHEST_PROTOCOL)
                stdin.flush()
            stdin.close()
        except (BrokenPipeError, ValueError):
            pass  # the child died: whoever waits for an answer is told so

    def close(self) -> None:
        """End the child now: it has no side effects, and an answer nobody collected is not needed."""
        self._jobs.put(None)
        self._process.kill()
        self._process.wait()
        if self._process.stdout is not None:
            self._process.stdout.close()


_worker: ReferenceWorker | None = None


def worker() -> ReferenceWorker:
    """This process's reference child, started on first use (or again after it died)."""
    global _worker
    if _worker is None or not _worker.alive():
        _worker = ReferenceWorker()
        atexit.register(_worker.close)
    return _worker


def prestart() -> None:
    """Start the child now, so that it imports torch while the caller converts."""
    worker()


def submit(checkpoint: Checkpoint, head: Head, batches: list[dict[str, np.ndarray]],
           from_source: bool) -> Pending:
    """Run the torch reference on ``batches`` in the child; with ``from_source`` transformers reads
    the weights itself when the checkpoint is an HF directory."""
    model_dir = hf_weights_dir(checkpoint) if from_source else None
    if model_dir is not None:  # the child reads the weights; only which ones exist shapes the model
        shaping = {"pooler.dense.weight", *family_of(checkpoint.spec).tied}
        present = {k: np.empty(0, np.float32) for k in shaping if k in checkpoint.weights}
        checkpoint = replace(checkpoint, weights=present)
    return worker().submit(ReferenceJob(checkpoint, head, batches, model_dir))


def hf_weights_dir(checkpoint: Checkpoint) -> Path | None:
    """The HF directory the checkpoint's weights came from, when it has one transformers can read."""
    from mbexport.sources.hf_dir import WEIGHT_FILES

    directory = checkpoint.vocab_file.parent.resolve()  # the child runs elsewhere
    return directory if any((directory / name).is_file() for name in WEIGHT_FILES) else None


def serve(jobs: IO[bytes], answers: IO[bytes]) -> None:
    """The child's loop: one answer per job, until the parent closes ``jobs``."""
    from mbexport.parity import reference_name, torch_reference

    name = reference_name(True)
    while True:
        try:
            job: ReferenceJob = pickle.load(jobs)
        except EOFError:
            return
        try:
            outputs = torch_reference(job.checkpoint, job.head, job.batches, job.model_dir)
            answer: tuple[Any, ...] = ("ok", name, outputs)
        except MbexportError as e:
            answer = ("error", str(e))
        except Exception as e:  # noqa: BLE001 - the parent reports it as a parity failure
            answer = ("error", f"{type(e).__name__}: {e}\n{traceback.format_exc()}")
        pickle.dump(answer, answers, protocol=pickle.HIGHEST_PROTOCOL)
        answers.flush()
