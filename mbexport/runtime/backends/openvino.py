"""OpenVINO's CPU plugin: the export's model.onnx (or its calibrated int8 model) in fp32, bf16 or int8.

The CPU plugin computes in bf16 where the CPU has bf16 arithmetic (AVX512-BF16, AMX) and in int8 with
VNNI, which onnxruntime's CPU provider does not use for these graphs. ``compute`` picks the arithmetic:
``fp32`` compiles model.onnx as is; ``bf16`` asks the plugin to run it in bf16 (refused on a CPU without
it); ``int8`` runs the model ``mbexport calibrate`` wrote (int8 weights and activations where it
quantized, bf16 for the rest where the CPU has it, else fp32). Batches are the Batcher's padded ones,
as on onnxruntime's CPU provider.

A window of one batch runs on a model compiled for latency (one stream: the batch on every thread).
A window of several runs on a second compilation, made on first use, for throughput: the plugin's
streams (2 on 2 threads, one thread each) each run a batch, and as many batches run at once. No
thread then waits for another inside a layer. On 2 cores, over the 2,000 held-out texts of
bench/'s embed-cpu-limit, the model alone ran fp32 8%, bf16 12% and int8 33% faster this way. The
cost is a second copy of the weights, made only by an Embedder that gets a window of several batches.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path
from typing import Any

import numpy as np

from mbexport import _openvino
from mbexport.errors import ArgumentError, ExportDirError
from mbexport.runtime.backends import Backend, Batch, register
from mbexport.runtime.session import check_threads

# compute -> OpenVINO's INFERENCE_PRECISION_HINT (int8: what the layers calibration kept in float run in)
PRECISION_HINTS = {"fp32": "f32", "bf16": "bf16", "int8": "bf16"}


@register
class OpenVinoCpu(Backend):
    """OpenVINO's CPU plugin, ``threads`` inference threads (default: every usable core)."""

    name = "openvino"
    device = "cpu"
    computes = ("fp32", "bf16", "int8")

    def __init__(self, model_path: Path, threads: int | None, capacity: int, spin: bool = True,
                 compute: str = "fp32") -> None:
        super().__init__(model_path, threads, capacity, spin, compute)
        self.config = {"INFERENCE_NUM_THREADS": check_threads(threads),
                       "INFERENCE_PRECISION_HINT": self.precision_hint(compute)}
        latency = self._compile("LATENCY")
        self.inputs = [port.get_any_name() for port in latency.inputs]
        self.outputs = {name for port in latency.outputs for name in port.get_names()}
        self.request = latency.create_infer_request()
        self._throughput_requests: list[Any] = []  # compiled on the first window of several batches

    def _compile(self, hint: str) -> Any:
        try:
            return _openvino.core().compile_model(str(self.model_path), "CPU", {**self.config,
                                                                                "PERFORMANCE_HINT": hint})
        except RuntimeError as e:
            raise _openvino.ov_error(self.model_path, "load", e, "re-run mbexport convert (or mbexport calibrate "
                                     "for the int8 model) to rebuild it") from None

    def requests(self, batches: int) -> list[Any]:
        """The infer requests a window of ``batches`` runs on: the latency model's one, or the throughput
        model's (one per stream) when there are several batches to run at once."""
        if batches < 2:
            return [self.request]
        if not self._throughput_requests:
            compiled = self._compile("THROUGHPUT")
            self._throughput_requests = [compiled.create_infer_request()
                                         for _ in range(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))]
        return self._throughput_requests

    @classmethod
    def problems(cls) -> tuple[str, ...]:
        missing = _openvino.missing()
        return (missing,) if missing else ()

    @staticmethod
    def precision_hint(compute: str) -> str:
        """The plugin's precision for ``compute``: bf16 needs the CPU's bf16 arithmetic (refused without
        it); int8's float remainder falls back to f32 without it."""
        if PRECISION_HINTS[compute] == "bf16" and not _openvino.cpu_has_bf16():
            if compute == "bf16":
                raise ArgumentError("compute='bf16' needs a CPU with bf16 arithmetic (AVX512-BF16 or AMX) and this "
                                    "one has none; use compute='int8' (after mbexport calibrate) or 'fp32'")
            return "f32"
        return PRECISION_HINTS[compute]

    def batches(self, batcher: Any, output: str) -> Iterator[Batch]:
        """The batches in order, up to one per request in flight: a request's output is read (and
        yielded) before the request takes its next batch."""
        if output not in self.outputs:
            raise ExportDirError(f"{self.model_path} has no {output!r} output; re-run mbexport convert "
                                 "(and mbexport calibrate for the int8 model)")
        requests = self.requests(len(batcher))
        running: deque[tuple[Any, np.ndarray, np.ndarray, dict[str, np.ndarray]]] = deque()
        try:
            for b in range(len(batcher)):
                if len(running) == len(requests):
                    yield self._finish(*running.popleft(), output)
                indices, input_ids, mask, types = batcher.padded(b)
                feeds = {"input_ids": input_ids, "attention_mask": mask, "token_type_ids": types}
                request = requests[b % len(requests)]  # the oldest one's: the one just read
                try:
                    request.start_async({k: feeds[k] for k in self.inputs}, share_inputs=True)
                except RuntimeError as e:
                    raise self.run_failed(e) from None
                running.append((request, indices, mask, feeds))  # feeds: the arrays stay alive while it runs
            while running:
                yield self._finish(*running.popleft(), output)
        finally:  # a caller that stops early (an error, Ctrl-C): no request may outlive the arrays it reads
            for request, *_ in running:
                with suppress(RuntimeError):
                    request.wait()

    def _finish(self, request: Any, indices: np.ndarray, mask: np.ndarray, feeds: dict[str, np.ndarray],
                output: str) -> Batch:
        try:
            request.wait()
        except RuntimeError as e:
            raise self.run_failed(e) from None
        return indices, request.get_tensor(output).data, mask

    def run_failed(self, error: BaseException) -> ExportDirError:
        return _openvino.ov_error(self.model_path, "run", error, "lower --batch-tokens or re-run mbexport convert")
