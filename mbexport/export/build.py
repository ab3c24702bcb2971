"""Compose encoder + head into one ONNX model, in a flavor and a precision.

    input_ids, attention_mask, token_type_ids (int64 [batch, sequence]; the head's input_dims)
      -> encoder (fused contrib ops or portable standard ops)
      -> head outputs (float32 always: fp16 graphs cast at the end, so callers
         never see a dtype that depends on the export)
      -> sentence_embedding [batch, hidden] (export/pooling.py) when the head yields last_hidden_state

The ``packed`` flavor is the fused graph plus a second, padding-free one (``BuiltModel.packed``,
export/packed.py) that CUDA runs; the fused one serves every other device.
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
from mbexport.export.packed import INPUT_DIMS as PACKED_INPUT_DIMS
from mbexport.export.packed import OUTPUT_DIMS as PACKED_OUTPUT_DIMS
from mbexport.export.packed import packed_encoder, packed_pooler, packed_sentence_embedding, row_starts
from mbexport.export.pooling import sentence_embedding
from mbexport.families import ModelFamily, family_of
from mbexport.heads import Head, choose_head
from mbexport.layout import PACKED_INPUTS, PooledOutput
from mbexport.layout import SENTENCE_EMBEDDING as POOLED_OUTPUT
from mbexport.spec import Checkpoint

FLAVORS = ("fused", "portable", "packed")
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
    packed: BuiltModel | None = None  # flavor "packed": the padding-free graph (layout.PACKED_MODEL)

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
    if flavor == "packed":
        _check_packable(config, precision)
    built = _build_padded(checkpoint, family, config, flavor, precision)
    if flavor == "packed":
        built.packed = _build_packed(checkpoint, family, config, precision)
    return built


def _check_packable(config: Head, precision: str) -> None:
    if not set(config.outputs) <= set(PACKED_OUTPUT_DIMS):
        raise ExportError(f"--flavor packed exports the encoder for embedding; head {config.name!r} has no packed "
                          "form: use --head base, or --flavor fused for this head")
    if precision == "int8":
        raise ExportError("--flavor packed runs on CUDA, where int8 graphs do not: use --precision fp32 or fp16, "
                          "or --flavor fused for int8")


def _build_padded(checkpoint: Checkpoint, family: ModelFamily, config: Head, flavor: str,
                  precision: str) -> BuiltModel:
    spec, weights = checkpoint.spec, checkpoint.weights
    g = Graph(float_dtype=PRECISIONS[precision])

    graph_inputs = list(INPUT_NAMES)
    ids, mask, types = config.graph_inputs(g, graph_inputs)
    hidden = encoder(g, spec, weights, ids, mask, types, fused=flavor != "portable",
                     project=family.project_embeddings)
    names = config.output_names(checkpoint.has_pooler)
    tensors = config.emit(g, spec, weights, hidden, graph_inputs)
    _name_outputs(g, names, tensors, precision)

    wanted = PooledOutput.of(checkpoint.embedding)
    pooled = wanted if sentence_embedding(g, names, graph_inputs[1], wanted) else None
    dims = dict(config.outputs)
    if pooled:
        names.append(POOLED_OUTPUT)
        dims[POOLED_OUTPUT] = ("batch", "hidden")

    inputs = [helper.make_tensor_value_info(n, TensorProto.INT64, list(config.input_dims)) for n in INPUT_NAMES]
    outputs = _outputs(names, dims)
    skeleton = g.model(inputs, outputs, name=f"{family.name}_{config.name}",
                       doc=_doc(checkpoint, family, config, flavor, precision))
    return BuiltModel(skeleton, g.initializers, config, names, flavor, precision, pooled)


def _build_packed(checkpoint: Checkpoint, family: ModelFamily, config: Head, precision: str) -> BuiltModel:
    """The padding-free graph (export/packed.py): int32 packed inputs, the same outputs as the padded one
    with ``last_hidden_state`` as [tokens, hidden]."""
    spec, weights = checkpoint.spec, checkpoint.weights
    g = Graph(float_dtype=PRECISIONS[precision])
    hidden = packed_encoder(g, spec, weights, family.project_embeddings)
    starts = row_starts(g)
    names = config.output_names(checkpoint.has_pooler)
    tensors = {"last_hidden_state": hidden}
    if "pooler_output" in names:
        tensors["pooler_output"] = packed_pooler(g, weights, hidden, starts)
    _name_outputs(g, names, [tensors[n] for n in names], precision)
    wanted = PooledOutput.of(checkpoint.embedding)
    pooled = wanted if packed_sentence_embedding(g, names, starts, wanted) else None
    if pooled:
        names.append(POOLED_OUTPUT)
    inputs = [helper.make_tensor_value_info(n, TensorProto.INT32, list(PACKED_INPUT_DIMS[n])) for n in PACKED_INPUTS]
    skeleton = g.model(inputs, _outputs(names, PACKED_OUTPUT_DIMS), name=f"{family.name}_{config.name}_packed",
                       doc=_doc(checkpoint, family, config, "packed (padding-free)", precision))
    return BuiltModel(skeleton, g.initializers, config, names, "packed", precision, pooled)


def _name_outputs(g: Graph, names: list[str], tensors: list[str], precision: str) -> None:
    """Every output gets a node of its own name: Cast for fp16, Identity for fp32."""
    for name, tensor in zip(names, tensors, strict=True):
        if precision == "fp16":
            g.op("Cast", [tensor], name, to=TensorProto.FLOAT)
        else:
            g.op("Identity", [tensor], name)


def _outputs(names: list[str], dims: dict[str, tuple[str, ...]]) -> list[onnx.ValueInfoProto]:
    outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(dims[n])) for n in names]
    for output in outputs:  # fixed-size dims ("2") are numbers, not symbols
        for dim in output.type.tensor_type.shape.dim:
            if dim.dim_param.isdigit():
                dim.dim_value = int(dim.dim_param)
    return outputs


def _doc(checkpoint: Checkpoint, family: ModelFamily, config: Head, flavor: str, precision: str) -> str:
    spec = checkpoint.spec
    return (f"{checkpoint.source} ({checkpoint.revision or 'no revision'}): {family.display} "
            f"{spec.num_layers}L/{spec.hidden_size}H, head {config.name}, {flavor}, {precision}")
