"""A small graph-assembly helper: nodes, initializers and names, in one precision.

The exporter emits ONNX directly (no tracing), so this is the only place that
touches ``onnx.helper``; the parts in ``encoder.py`` and ``heads.py`` describe
*what* to emit in terms of it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from mbexport.errors import ExportError

MS_DOMAIN = "com.microsoft"
ONNX_OPSET = 17
MS_OPSET = 1
FP16_MAX = float(np.finfo(np.float16).max)


@dataclass
class Graph:
    """Accumulates nodes and initializers; ``float_dtype`` is float32 or float16."""

    float_dtype: type = np.float32
    nodes: list[onnx.NodeProto] = field(default_factory=list)
    initializers: list[tuple[str, np.ndarray]] = field(default_factory=list)  # kept as arrays: see writer.py
    _names: set[str] = field(default_factory=set)
    _count: dict[str, int] = field(default_factory=dict)

    @property
    def onnx_float(self) -> int:
        return TensorProto.FLOAT16 if self.float_dtype == np.float16 else TensorProto.FLOAT

    def weight(self, name: str, array: np.ndarray, *, dtype: type | None = None) -> str:
        """Add an initializer (cast to the graph's float dtype unless ``dtype`` says otherwise)."""
        if name in self._names:
            return name
        target = dtype or (self.float_dtype if np.issubdtype(array.dtype, np.floating) else array.dtype)
        if target == np.float16 and array.size and float(np.abs(array).max()) > FP16_MAX:
            raise ExportError(f"weight {name!r} holds values up to {float(np.abs(array).max()):.3g}, beyond "
                              f"float16's range ({FP16_MAX:.0f}); export with --precision fp32")
        self.initializers.append((name, np.asarray(array, dtype=target, order="C")))
        self._names.add(name)
        return name

    def const(self, name: str, value: float | int | list[int], dtype: type | None = None) -> str:
        """A small constant initializer (scalars and shape vectors)."""
        return self.weight(name, np.array(value, dtype=dtype or self.float_dtype), dtype=dtype)

    def op(self, op_type: str, inputs: list[str], name: str, *, domain: str = "", **attrs: Any) -> str:
        """Emit one single-output node named ``name``; its output is ``name`` too."""
        return self.op_multi(op_type, inputs, name, 1, domain=domain, **attrs)[0]

    def op_multi(self, op_type: str, inputs: list[str], name: str, outputs: int, *, domain: str = "",
                 **attrs: Any) -> list[str]:
        """Emit one node with ``outputs`` outputs, named ``name:0``, ``name:1``, ... (``name`` when one)."""
        n = self._count.get(name, 0)
        self._count[name] = n + 1
        node_name = name if n == 0 else f"{name}_{n}"
        out_names = [node_name] if outputs == 1 else [f"{node_name}:{i}" for i in range(outputs)]
        self.nodes.append(helper.make_node(op_type, inputs, out_names, name=node_name, domain=domain, **attrs))
        return out_names

    def ms(self, op_type: str, inputs: list[str], name: str, **attrs: Any) -> str:
        """Emit a single-output onnxruntime contrib op (com.microsoft domain)."""
        return self.op(op_type, inputs, name, domain=MS_DOMAIN, **attrs)

    def ms_multi(self, op_type: str, inputs: list[str], name: str, outputs: int, **attrs: Any) -> list[str]:
        """Emit a contrib op with several outputs (see ``op_multi``)."""
        return self.op_multi(op_type, inputs, name, outputs, domain=MS_DOMAIN, **attrs)

    def linear(self, x: str, weight: np.ndarray, bias: np.ndarray | None, name: str) -> str:
        """``x @ weight.T + bias`` for a PyTorch-layout ``[out, in]`` weight (stored transposed)."""
        y = self.op("MatMul", [x, self.weight(f"{name}.weight.T", weight.T)], f"{name}/MatMul")
        if bias is None:
            return y
        return self.op("Add", [y, self.weight(f"{name}.bias", bias)], f"{name}/Add")

    def model(
        self, inputs: list[onnx.ValueInfoProto], outputs: list[onnx.ValueInfoProto], *, name: str, doc: str
    ) -> onnx.ModelProto:
        """The model without initializer data (the skeleton); ``with_weights`` adds it."""
        graph = helper.make_graph(self.nodes, name, inputs, outputs)
        opsets = [helper.make_opsetid("", ONNX_OPSET)]
        if any(node.domain == MS_DOMAIN for node in self.nodes):
            opsets.append(helper.make_opsetid(MS_DOMAIN, MS_OPSET))
        model = helper.make_model(graph, opset_imports=opsets, producer_name="mbexport", doc_string=doc)
        model.ir_version = 8  # onnxruntime >= 1.14 reads IR 8; keeps exports loadable by older runtimes
        return model


def with_weights(skeleton: onnx.ModelProto, initializers: list[tuple[str, np.ndarray]]) -> onnx.ModelProto:
    """A complete in-memory ModelProto: the skeleton plus every initializer (copies the weights)."""
    model = onnx.ModelProto()
    model.CopyFrom(skeleton)
    model.graph.initializer.extend(numpy_helper.from_array(array, name) for name, array in initializers)
    return model
