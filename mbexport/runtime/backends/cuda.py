"""onnxruntime on CUDA: batches staged by the native CudaStager, run with IO binding.

Inputs are written into pinned host buffers and copied on the session's own stream (two slots:
batch b+1 is staged while batch b runs); the requested output is bound on the device and copied
to the host once, so with ``sentence_embedding`` only [rows, hidden] leaves the GPU.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from mbexport import _native
from mbexport.runtime.backends import Backend, Batch, register
from mbexport.runtime.session import (
    ORT_ERRORS,
    create_session,
    cuda_library_paths,
    cuda_problems,
)

SLOTS = 2  # double buffering


@register
class OrtCuda(Backend):
    """onnxruntime's CUDA provider (CPU provider for the few ops it lacks) on device 0."""

    name = "cuda"
    device = "cuda"
    provider = "cuda"  # create_session's device: the provider list

    def __init__(self, model_path: Path, threads: int | None, capacity: int, spin: bool = True) -> None:
        super().__init__(model_path, threads, capacity, spin)
        self.stager = _native.CudaStager(capacity, SLOTS, cuda_library_paths())
        self.session = create_session(model_path, self.provider, threads, cuda_stream=self.stager.stream_ptr,
                                      spin=spin)
        self.inputs = [i.name for i in self.session.get_inputs()]

    @classmethod
    def problems(cls) -> tuple[str, ...]:
        return cuda_problems()

    def batches(self, batcher: Any, output: str) -> Iterator[Batch]:
        """Slot b+1 last held batch b-1, whose run has returned, so its device memory is free to refill
        while batch b runs (staging and running both release the GIL)."""
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="mbexport-stage") as stager:
            staged = stager.submit(batcher.stage, 0, self.stager) if len(batcher) else None
            for b in range(len(batcher)):
                assert staged is not None
                indices, slot, lengths = staged.result()
                if b + 1 < len(batcher):
                    staged = stager.submit(batcher.stage, b + 1, self.stager)
                rows, width = self.stager.shape(slot)
                mask = (np.arange(width)[None, :] < lengths[:, None]).astype(np.int64)
                yield indices, self._run_slot(slot, rows, width, output), mask

    def _run_slot(self, slot: int, rows: int, width: int, output: str) -> np.ndarray:
        binding = self.session.io_binding()
        for name, ptr in zip(("input_ids", "attention_mask", "token_type_ids"), self.stager.device_ptrs(slot)):
            if name in self.inputs:
                binding.bind_input(name, "cuda", 0, np.int64, [rows, width], ptr)
        binding.bind_output(output, "cuda", 0)
        try:
            self.session.run_with_iobinding(binding)
        except ORT_ERRORS as e:
            raise self.run_failed(e) from None
        return binding.copy_outputs_to_cpu()[0]
