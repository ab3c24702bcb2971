"""onnxruntime on CUDA: batches staged by the native CudaStager, run with IO binding.

Inputs are written into pinned host buffers and copied on the session's own stream (two slots:
batch b+1 is staged while batch b runs); the requested output is bound on the device and copied
to the host once, so with ``sentence_embedding`` only [rows, hidden] leaves the GPU.

Given an export's padding-free graph (``--flavor packed``: the Embedder opens ``model.packed.onnx``
here), batches are the Batcher's packed int32 arrays (real tokens only, ``token_offset``,
``cu_seqlens``), gathered for batch b+1 while batch b runs and bound as host inputs that
onnxruntime copies on the session's stream; they are a few bytes per token, a fraction of the
padded int64 batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from mbexport import _native
from mbexport.layout import PACKED_INPUTS
from mbexport.runtime.backends import Backend, Batch, register
from mbexport.runtime.session import (
    ORT_ERRORS,
    create_session,
    cuda_library_paths,
    cuda_problems,
)

SLOTS = 2  # double buffering
T = TypeVar("T")


def one_ahead(prepare: Callable[[int], T], count: int, name: str) -> Iterator[T]:
    """``prepare(0) .. prepare(count - 1)`` in order, each next one running on a worker thread while the
    caller consumes the current one (``prepare`` releases the GIL: staging, packing)."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"mbexport-{name}") as worker:
        pending = worker.submit(prepare, 0) if count else None
        for b in range(count):
            assert pending is not None
            current = pending.result()
            if b + 1 < count:
                pending = worker.submit(prepare, b + 1)
            yield current


@register
class OrtCuda(Backend):
    """onnxruntime's CUDA provider (CPU provider for the few ops it lacks) on device 0."""

    name = "cuda"
    device = "cuda"
    provider = "cuda"  # create_session's device: the provider list
    runs_packed = True

    def __init__(self, model_path: Path, threads: int | None, capacity: int, spin: bool = True,
                 compute: str = "fp32") -> None:
        super().__init__(model_path, threads, capacity, spin, compute)
        self.stager = _native.CudaStager(capacity, SLOTS, cuda_library_paths())
        self.session = create_session(model_path, self.provider, threads, cuda_stream=self.stager.stream_ptr,
                                      spin=spin)
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.packed = "cu_seqlens" in self.inputs  # the padding-free graph (layout.PACKED_INPUTS)

    @classmethod
    def problems(cls) -> tuple[str, ...]:
        return cuda_problems()

    def batches(self, batcher: Any, output: str) -> Iterator[Batch]:
        """Slot b+1 last held batch b-1, whose run has returned, so its device memory is free to refill
        while batch b runs (staging and running both release the GIL)."""
        if self.packed:
            yield from self._packed_batches(batcher, output)
            return
        for indices, slot, lengths in one_ahead(lambda b: batcher.stage(b, self.stager), len(batcher), "stage"):
            rows, width = self.stager.shape(slot)
            mask = (np.arange(width)[None, :] < lengths[:, None]).astype(np.int64)
            yield indices, self._run_slot(slot, rows, width, output), mask

    def _run_slot(self, slot: int, rows: int, width: int, output: str) -> np.ndarray:
        binding = self.session.io_binding()
        for name, ptr in zip(("input_ids", "attention_mask", "token_type_ids"), self.stager.device_ptrs(slot)):
            if name in self.inputs:
                binding.bind_input(name, "cuda", 0, np.int64, [rows, width], ptr)
        return self._run_bound(binding, output)

    def _packed_batches(self, batcher: Any, output: str) -> Iterator[Batch]:
        """A packed Batcher's batches through the padding-free graph; batch b+1 is gathered (GIL released)
        while batch b runs. ``last_hidden_state`` ([tokens, H] there) comes back as [rows, width, H] with
        zeros at padding, as the padded graph's, so host pooling reads it the same way."""
        for indices, *arrays in one_ahead(batcher.packed, len(batcher), "pack"):
            token_offset, cu_seqlens = arrays[3], arrays[4]
            mask = (np.arange(token_offset.shape[1])[None, :] < np.diff(cu_seqlens)[:, None]).astype(np.int64)
            rows = self._run_packed(dict(zip(PACKED_INPUTS, arrays, strict=True)), output)
            if output == "last_hidden_state":
                padded = np.zeros((*mask.shape, rows.shape[-1]), dtype=rows.dtype)
                padded[mask.astype(bool)] = rows  # row-major order of the real slots is packed order
                rows = padded
            yield indices, rows, mask

    def _run_packed(self, feeds: dict[str, np.ndarray], output: str) -> np.ndarray:
        binding = self.session.io_binding()
        for name, array in feeds.items():
            binding.bind_cpu_input(name, array)
        return self._run_bound(binding, output)

    def _run_bound(self, binding: Any, output: str) -> np.ndarray:
        """Run with ``binding``'s inputs; ``output`` is bound on the device and copied to the host once."""
        binding.bind_output(output, "cuda", 0)
        try:
            self.session.run_with_iobinding(binding)
        except ORT_ERRORS as e:
            raise self.run_failed(e) from None
        return binding.copy_outputs_to_cpu()[0]
