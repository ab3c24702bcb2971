"""OpenVINO's CPU plugin: the export's model.onnx (or its calibrated int8 model) in fp32, bf16 or int8.

The CPU plugin computes in bf16 where the CPU has bf16 arithmetic (AVX512-BF16, AMX) and in int8 with
VNNI, which onnxruntime's CPU provider does not use for these graphs. ``compute`` picks the arithmetic:
``fp32`` compiles model.onnx as is; ``bf16`` asks the plugin to run it in bf16 (refused on a CPU without
it); ``int8`` runs the model ``mbexport calibrate`` wrote (int8 weights and activations where it
quantized, bf16 for the rest where the CPU has it, else fp32). Batches are the Batcher's padded ones,
as on onnxruntime's CPU provider.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mbexport import _openvino
from mbexport.errors import ArgumentError, ExportDirError
from mbexport.runtime.backends import Backend, Batch, register
from mbexport.runtime.session import check_threads

# compute -> OpenVINO's INFERENCE_PRECISION_HINT (int8: what the layers calibration kept in float run in)
PRECISION_HINTS = {"fp32": "f32", "bf16": "bf16", "int8": "bf16"}


@register
class OpenVinoCpu(Backend):
    """OpenVINO's CPU plugin, ``threads`` inference threads (default: every usable core), latency mode."""

    name = "openvino"
    device = "cpu"
    computes = ("fp32", "bf16", "int8")

    def __init__(self, model_path: Path, threads: int | None, capacity: int, spin: bool = True,
                 compute: str = "fp32") -> None:
        super().__init__(model_path, threads, capacity, spin, compute)
        config = {"INFERENCE_NUM_THREADS": check_threads(threads), "PERFORMANCE_HINT": "LATENCY",
                  "INFERENCE_PRECISION_HINT": self.precision_hint(compute)}
        try:
            self.compiled = _openvino.core().compile_model(str(model_path), "CPU", config)
        except RuntimeError as e:
            raise _openvino.ov_error(model_path, "load", e, "re-run mbexport convert (or mbexport calibrate for "
                                     "the int8 model) to rebuild it") from None
        self.inputs = [port.get_any_name() for port in self.compiled.inputs]
        self.request = self.compiled.create_infer_request()

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
        try:
            port = self.compiled.output(output)
        except RuntimeError:
            raise ExportDirError(f"{self.model_path} has no {output!r} output; re-run mbexport convert "
                                 "(and mbexport calibrate for the int8 model)") from None
        for b in range(len(batcher)):
            indices, input_ids, mask, types = batcher.padded(b)
            feeds = {"input_ids": input_ids, "attention_mask": mask, "token_type_ids": types}
            try:
                rows = self.request.infer({k: feeds[k] for k in self.inputs}, share_inputs=True)[port]
            except RuntimeError as e:
                raise _openvino.ov_error(self.model_path, "run", e, "lower --batch-tokens or re-run "
                                         "mbexport convert") from None
            yield indices, rows, mask
