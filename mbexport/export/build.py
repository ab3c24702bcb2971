"""Compose encoder + head into one ONNX model, in a flavor and a precision.

    input_ids, attention_mask, token_type_ids (int64 [batch, sequence]; the head's input_dims)
      -> encoder (fused contrib ops or portable standard ops)
      -> head outputs (float32 always: fp16 graphs cast at the end, so callers
         never see a dtype that depends on the export)
      -> sentence_embedding [batch, hidden] (export/pooling.py) when the head yields last_hidden_state
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper

from mbexport.errors import ExportError
from mbexport.export.encoder import encoder
from mbexport.export.graph import Graph, with_weights
from mbexport.export.pooling import sentence_embedding
from mbexport.families import family_of
from mbexport.heads import Head, choose_head
from mbexport.layout import SENTENCE_EMBEDDING as POOLED_OUTPUT
from mbexport.layout import PooledOutput
from mbexport.spec import Checkpoint

FLAVORS = ("fused", "portable")
# int8 is built in fp32 and quantized after writing (export/quantize.py).
PRECISIONS = {"fp32": np.float32, "fp16": np.float16, "int8": np.float32}
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")


@dataclass
class BuiltModel:
    """The graph (``skeleton``: nodes, inputs, outputs) and its weights as arrays, kept apart so
    ``writer.write_model`` can stream weights to disk without protobuf copies."""

    skeleton: onnx.ModelProto
    initializers: list[tuple[str, np.ndarray]]
    head: Head
    outputs: list[str]
    flavor: str
    precision: str
    pooled: PooledOutput | None = None  # what ``sentence_embedding`` holds, when the graph has it

    @property
    def model(self) -> onnx.ModelProto:
        """The complete ModelProto (weights copied in): for checks and small models."""
        return with_weights(self.skeleton, self.initializers)

    def op_counts(self) -> dict[str, int]:
        return dict(Counter(node.op_type for node in self.skeleton.graph.node))


def build_model(checkpoint: Checkpoint, head: str = "auto", flavor: str = "fused",
                precision: str = "fp32") -> BuiltModel:
    """Emit the ONNX graph for ``checkpoint`` directly from its spec and weights."""
    if flavor not in FLAVORS:
        raise ExportError(f"unknown flavor {flavor!r}; choose one of: {', '.join(FLAVORS)}")
    if precision not in PRECISIONS:
        raise ExportError(f"unknown precision {precision!r}; choose one of: {', '.join(PRECISIONS)}")
    checkpoint.validate()
    family = family_of(checkpoint.spec)
    config = choose_head(checkpoint, head, family.heads)
    spec, weights = checkpoint.spec, checkpoint.weights
    g = Graph(float_dtype=PRECISIONS[precision])

    graph_inputs = list(INPUT_NAMES)
    ids, mask, types = config.graph_inputs(g, graph_inputs)
    hidden = encoder(g, spec, weights, ids, mask, types, fused=flavor == "fused", project=family.project_embeddings)
    names = config.output_names(checkpoint.has_pooler)
    tensors = config.emit(g, spec, weights, hidden, graph_inputs)
    for name, tensor in zip(names, tensors, strict=True):
        # Every output gets a node of its own name: Cast for fp16, Identity for fp32.
        if precision == "fp16":
            g.op("Cast", [tensor], name, to=TensorProto.FLOAT)
        else:
            g.op("Identity", [tensor], name)

    wanted = PooledOutput.of(checkpoint.embedding)
    pooled = wanted if sentence_embedding(g, names, graph_inputs[1], wanted) else None
    dims = dict(config.outputs)
    if pooled:
        names.append(POOLED_OUTPUT)
        dims[POOLED_OUTPUT] = ("batch", "hidden")

    inputs = [helper.make_tensor_value_info(n, TensorProto.INT64, list(config.input_dims)) for n in INPUT_NAMES]
    outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(dims[n])) for n in names]
    for output in outputs:  # fixed-size dims ("2") are numbers, not symbols
        for dim in output.type.tensor_type.shape.dim:
            if dim.dim_param.isdigit():
                dim.dim_value = int(dim.dim_param)
    doc = (f"{checkpoint.source} ({checkpoint.revision or 'no revision'}): {family.display} "
           f"{spec.num_layers}L/{spec.hidden_size}H, head {config.name}, {flavor}, {precision}")
    skeleton = g.model(inputs, outputs, name=f"{family.name}_{config.name}", doc=doc)
    return BuiltModel(skeleton, g.initializers, config, names, flavor, precision, pooled)
