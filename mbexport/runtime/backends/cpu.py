"""onnxruntime on the CPU: padded int64 batches fed from the Batcher's arrays."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mbexport.runtime.backends import Backend, Batch, register
from mbexport.runtime.session import ORT_ERRORS, create_session


@register
class OrtCpu(Backend):
    """onnxruntime's CPU provider, ``threads`` intra-op threads (default: every usable core)."""

    name = "cpu"
    device = "cpu"

    def __init__(self, model_path: Path, threads: int | None, capacity: int, spin: bool = True,
                 compute: str = "fp32") -> None:
        super().__init__(model_path, threads, capacity, spin, compute)
        self.session = create_session(model_path, "cpu", threads, spin=spin)
        self.inputs = [i.name for i in self.session.get_inputs()]

    def batches(self, batcher: Any, output: str) -> Iterator[Batch]:
        for b in range(len(batcher)):
            indices, input_ids, mask, types = batcher.padded(b)
            feeds = {"input_ids": input_ids, "attention_mask": mask, "token_type_ids": types}
            try:
                rows = self.session.run([output], {k: feeds[k] for k in self.inputs})[0]
            except ORT_ERRORS as e:
                raise self.run_failed(e) from None
            yield indices, rows, mask
