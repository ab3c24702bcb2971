"""int8 exports (``--precision int8``): onnxruntime dynamic quantization of the written fp32 model.

MatMul weights become 8-bit (per output channel); activations are quantized to uint8 on
the fly at run time, so no calibration data is needed. Weights are uint8 (U8U8), not int8
(U8S8): onnxruntime runs U8S8 on x86 CPUs without VNNI with ``vpmaddubsw``, whose 16-bit
pair sums saturate, so the same export lost accuracy on such CPUs (MiniLM on an AVX2-only
EPYC, 20 multilingual texts vs fp32: mean cosine 0.985, min 0.952), while U8U8 is exact
integer arithmetic on every x86 CPU (there: mean 0.992, min 0.974; the same speed). The
7-bit ``reduce_range`` remedy measured mean 0.989, min 0.966. CPU only: the quantized
contrib ops (DynamicQuantizeMatMul) have CPU kernels. Parity for int8 is a cosine
check against the reference, not the fp32 max-abs bound (see parity.TOLERANCES).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mbexport.errors import ExportError
from mbexport.layout import EXTERNAL_DATA

# Per-channel 8-bit MatMul weights only: on MiniLM (real text) this keeps min cosine vs fp32
# ~0.99, where per-tensor weights or quantized Attention/embeddings drop it to 0.90-0.98.
OP_TYPES = ["MatMul"]


def quantize_in_place(path: Path) -> tuple[dict[str, Any], dict[str, int]]:
    """Replace the fp32 model at ``path`` by its int8 form; returns the manifest's record of it and
    the quantized graph's op counts."""
    if (path.parent / EXTERNAL_DATA).exists():
        raise ExportError(f"{path.parent}: int8 quantization of models past 2 GiB (external weights) is not "
                          "supported; export fp32 or fp16")
    import onnx
    from onnx import TensorProto
    from onnxruntime.quantization import QuantType, quantize_dynamic

    tmp = path.with_name(path.name + ".int8-tmp")
    with _quiet_quantizer():
        quantize_dynamic(str(path), str(tmp), weight_type=QuantType.QUInt8, op_types_to_quantize=OP_TYPES,
                         per_channel=True,
                         extra_options={"MatMulConstBOnly": True, "DefaultTensorType": TensorProto.FLOAT})
    tmp.replace(path)
    graph = onnx.load(str(path), load_external_data=False).graph
    record = {"method": "onnxruntime.quantization.quantize_dynamic", "weight_type": "QUInt8", "per_channel": True,
              "op_types": OP_TYPES}
    return record, dict(Counter(node.op_type for node in graph.node))


@contextmanager
def _quiet_quantizer() -> Iterator[None]:
    """onnxruntime's quantizer logs advice ("consider pre-processing") on the root logger: keep it off our output."""
    def from_quantizer(record: logging.LogRecord) -> bool:
        return "onnxruntime" not in record.pathname

    root = logging.getLogger()
    root.addFilter(from_quantizer)
    try:
        yield
    finally:
        root.removeFilter(from_quantizer)
