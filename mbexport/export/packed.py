"""The ``packed`` flavor's graph: the fused encoder over padding-free batches (onnxruntime's PackedAttention).

A padded batch computes every layer on rows x width tokens; a packed one on the real tokens only.
onnxruntime runs PackedAttention on CUDA only, so a packed export also carries the padded fused
graph (``model.onnx``) for every other device; this graph is ``layout.PACKED_MODEL``. Its inputs are
what the native Batcher's packed mode writes (``Batcher.packed``), all int32::

    input_ids, token_type_ids, position_ids  [tokens]            the batch's real tokens, row after row
    token_offset                              [batch, sequence]  entry k < tokens: where packed token k sits
                                                                 in the padded [batch, sequence] layout;
                                                                 then the padding slots (RemovePadding's layout)
    cu_seqlens                                [batch + 1]        row r is tokens [cu_seqlens[r], cu_seqlens[r+1])

and the graph::

    ids, types, positions --Unsqueeze(0)--> [1, T] --EmbedLayerNormalization--> [1, T, H] --Squeeze--> [T, H]
      per layer: PackedAttention(x, W_qkv, b_qkv, token_offset, cu_seqlens) --MatMul--> SkipLayerNormalization
                 --MatMul--> BiasGelu --MatMul--> SkipLayerNormalization            (as the fused flavor)
      --> last_hidden_state [T, H]
      first token of each row: Gather(hidden, cu_seqlens[:-1]) --> pooler dense, tanh --> pooler_output [B, H]
      sentence_embedding [B, H], with export/pooling.py's semantics:
        cls    Gather(last_hidden_state, cu_seqlens[:-1])
        mean   ScatterND(zeros [B*S, H], token_offset[:T], last_hidden_state) --Reshape--> [B, S, H]
               --ReduceSum(1)--> / max(cu_seqlens[1:] - cu_seqlens[:-1], 1)
        pooler pooler_output
        then L2 normalisation when the source means it (pooling.finish)

Only the encoder's own outputs exist in packed form (``--head base``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from onnx import TensorProto

from mbexport.export.encoder import Weights, embeddings_fused, encoder_layer, qkv_weights
from mbexport.export.graph import Graph
from mbexport.export.pooling import pool_rows
from mbexport.heads.core import pooler_dense
from mbexport.layout import PACKED_INPUTS, PooledOutput
from mbexport.spec import BertSpec

INPUT_DIMS: dict[str, tuple[str, ...]] = {
    "input_ids": ("tokens",), "token_type_ids": ("tokens",), "position_ids": ("tokens",),
    "token_offset": ("batch", "sequence"), "cu_seqlens": ("batch_plus_1",),
}
# The outputs a packed graph can have, and their dims.
OUTPUT_DIMS: dict[str, tuple[str, ...]] = {
    "last_hidden_state": ("tokens", "hidden"), "pooler_output": ("batch", "hidden"),
    "sentence_embedding": ("batch", "hidden"),
}
Project = Callable[[Graph, BertSpec, Weights, str], str]


def packed_encoder(g: Graph, spec: BertSpec, w: Weights, project: Project | None = None) -> str:
    """Embeddings, ``project`` (a family's step before the layers) and every layer on the graph's
    packed inputs (``PACKED_INPUTS``); returns the last hidden state [tokens, H]."""
    ids, types, positions, token_offset, cu_seqlens = PACKED_INPUTS
    axis0 = g.const("axis0", [0], np.int64)
    row = [g.op("Unsqueeze", [name, axis0], f"{name}/Unsqueeze") for name in (ids, types, positions)]
    x = g.op("Squeeze", [embeddings_fused(g, spec, w, row[0], row[1], row[2]), axis0], "embeddings/Squeeze")
    if project is not None:
        x = project(g, spec, w, x)

    def attention(g: Graph, spec: BertSpec, w: Weights, x: str, offsets: str, prefix: str) -> str:
        p = prefix + "attention.self."
        return g.ms("PackedAttention", [x, *qkv_weights(g, w, p), offsets, cu_seqlens], p + "PackedAttention",
                    num_heads=spec.num_heads)

    for index in range(spec.num_layers):
        x = encoder_layer(g, spec, w, x, token_offset, index, fused=True, attention=attention)
    return x


def row_starts(g: Graph) -> str:
    """cu_seqlens[:-1] (int32 [B]): each row's first packed token, its [CLS]. Emit once per graph."""
    return g.op("Slice", ["cu_seqlens", g.const("slice_start0", [0], np.int64),
                          g.const("slice_end_last", [-1], np.int64)], "packing/starts")


def packed_pooler(g: Graph, w: Weights, hidden: str, starts: str) -> str:
    """The pooler on each row's first token: [T, H] --Gather(starts)--> [B, H] --dense, tanh-->."""
    return pooler_dense(g, w, g.op("Gather", [hidden, starts], "pooler/Gather", axis=0))


def packed_sentence_embedding(g: Graph, outputs: list[str], starts: str, pooled: PooledOutput) -> str | None:
    """``sentence_embedding`` [B, H] from the float32 packed ``outputs``; None when they cannot make it."""
    return pool_rows(g, outputs, pooled,
                     cls=lambda source: g.op("Gather", [source, starts], "pooling/Gather", axis=0),
                     mean=lambda source: _packed_mean(g, source, starts))


def _packed_mean(g: Graph, hidden: str, starts: str) -> str:
    """Mean over each row's tokens: the rows restored to [B, S, H] with zeros at the padding slots,
    summed over S and divided by the row's length (what the padded graph's masked mean computes)."""
    axis0 = g.const("pool_axis0", [0], np.int64)
    last = g.const("pool_axis_last", [-1], np.int64)
    tokens = g.op("Shape", [hidden], "pooling/tokens", start=0, end=1)
    flat = g.op("Reshape", ["token_offset", last], "pooling/token_offset/Reshape")
    real = g.op("Slice", [flat, axis0, tokens], "pooling/token_offset/Slice")
    indices = g.op("Unsqueeze", [g.op("Cast", [real], "pooling/indices/Cast", to=TensorProto.INT64), last],
                   "pooling/indices/Unsqueeze")
    cells = g.op("Unsqueeze", [g.op("Size", ["token_offset"], "pooling/cells"), axis0], "pooling/cells/Unsqueeze")
    width = g.op("Shape", [hidden], "pooling/hidden_size", start=1)
    zeros = g.op("ConstantOfShape", [g.op("Concat", [cells, width], "pooling/zeros_shape", axis=0)],
                 "pooling/zeros")  # float32 zeros by default
    restored = g.op("ScatterND", [zeros, indices, hidden], "pooling/ScatterND")
    shape = g.op("Concat", [g.op("Shape", ["token_offset"], "pooling/padded_shape"), width], "pooling/shape", axis=0)
    padded = g.op("Reshape", [restored, shape], "pooling/Reshape")
    summed = g.op("ReduceSum", [padded, g.const("pool_axis1", [1], np.int64)], "pooling/ReduceSum", keepdims=0)
    ends = g.op("Slice", ["cu_seqlens", g.const("slice_start1", [1], np.int64),
                          g.const("slice_end_max", [np.iinfo(np.int64).max], np.int64)], "packing/ends")
    lengths = g.op("Sub", [ends, starts], "pooling/lengths")
    count = g.op("Cast", [g.op("Unsqueeze", [lengths, last], "pooling/count/Unsqueeze")], "pooling/count/Cast",
                 to=TensorProto.FLOAT)
    floor = g.op("Max", [count, g.const("pool_one", 1.0, np.float32)], "pooling/count/Max")
    return str(g.op("Div", [summed, floor], "pooling/Div"))
