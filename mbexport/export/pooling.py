"""The in-graph ``sentence_embedding`` output: pooling and L2 normalisation as ONNX nodes.

An export whose head yields ``last_hidden_state`` also yields ``sentence_embedding`` [batch, hidden],
pooled the way its source means (``Checkpoint.embedding``: a sentence-transformers model's own
Pooling / Normalize modules, else ``cls`` without normalisation). A runtime then reads only the pooled
rows, so on a GPU the [batch, sequence, hidden] states never leave the device. The nodes compute in
float32 on the head's float32 outputs (fp16 graphs cast those first), with the same arithmetic as
``mbexport.runtime.pooling`` (host pooling), which parity and the tests hold them to::

    cls     last_hidden_state --Gather(0, axis=1)--------------------------------------> [B, H]
    mean    last_hidden_state --Where(mask != 0, ., 0)--ReduceSum(1)--Div(max(count, 1))--> [B, H]
    pooler  pooler_output -------------------------------------------------------------> [B, H]
    normalize (optional)  x --Div(max(ReduceL2(x, 1), 1e-12))-->  sentence_embedding

The manifest's ``"sentence_embedding"`` record says which pooling and normalisation the output holds.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from onnx import TensorProto

from mbexport.export.graph import Graph
from mbexport.layout import SENTENCE_EMBEDDING as OUTPUT
from mbexport.layout import PooledOutput

# sentence-transformers' Normalize (torch.nn.functional.normalize) and the host l2_normalize divide by max(norm, eps).
NORM_EPS = 1e-12


def sentence_embedding(g: Graph, outputs: list[str], attention_mask: str, pooled: PooledOutput) -> str | None:
    """Emit ``sentence_embedding`` from the graph's float32 ``outputs``; None when they cannot make it
    (a head without ``last_hidden_state``, or ``pooler`` pooling without ``pooler_output``)."""
    return pool_rows(g, outputs, pooled,
                     cls=lambda source: g.op("Gather", [source, g.const("index0", 0, np.int64)], "pooling/Gather",
                                             axis=1),
                     mean=lambda source: _masked_mean(g, source, attention_mask))


def pool_rows(g: Graph, outputs: list[str], pooled: PooledOutput, cls: Callable[[str], str],
              mean: Callable[[str], str]) -> str | None:
    """``sentence_embedding`` from ``outputs`` with the layout-specific ``cls`` / ``mean`` node builders (padded
    [B, S, H] here, packed [tokens, H] in export/packed.py); None when ``outputs`` cannot make it."""
    source = "pooler_output" if pooled.pooling == "pooler" else "last_hidden_state"
    if source not in outputs:
        return None
    vectors = cls(source) if pooled.pooling == "cls" else mean(source) if pooled.pooling == "mean" else source
    return finish(g, vectors, pooled)


def finish(g: Graph, vectors: str, pooled: PooledOutput) -> str:
    """``sentence_embedding`` from pooled [B, H] float32 ``vectors``: L2-normalised when ``pooled`` says so."""
    if pooled.normalize:
        norm = g.op("ReduceL2", [vectors], "normalize/ReduceL2", axes=[1], keepdims=1)
        floor = g.op("Max", [norm, g.const("normalize_eps", NORM_EPS, np.float32)], "normalize/Max")
        vectors = g.op("Div", [vectors, floor], "normalize/Div")
    return str(g.op("Identity", [vectors], OUTPUT))


def _masked_mean(g: Graph, hidden: str, attention_mask: str) -> str:
    """Mean over real tokens; a select, not a multiply, so nothing at a padded position (NaN, Inf) leaks in."""
    real = g.op("Cast", [attention_mask], "pooling/mask/Cast", to=TensorProto.BOOL)
    real3 = g.op("Unsqueeze", [real, g.const("pool_axis_last", [-1], np.int64)], "pooling/mask/Unsqueeze")
    kept = g.op("Where", [real3, hidden, g.const("pool_zero", 0.0, np.float32)], "pooling/Where")
    axis1 = g.const("pool_axis1", [1], np.int64)
    summed = g.op("ReduceSum", [kept, axis1], "pooling/ReduceSum", keepdims=0)
    count = g.op("ReduceSum", [g.op("Cast", [real], "pooling/count/Cast", to=TensorProto.FLOAT), axis1],
                 "pooling/count/ReduceSum", keepdims=1)
    floor = g.op("Max", [count, g.const("pool_one", 1.0, np.float32)], "pooling/count/Max")
    return str(g.op("Div", [summed, floor], "pooling/Div"))


def host_pooled(outputs: dict[str, np.ndarray], attention_mask: np.ndarray, pooled: PooledOutput) -> np.ndarray:
    """What ``sentence_embedding`` holds, computed on the host from the head's outputs (the reference)."""
    from mbexport.runtime.pooling import l2_normalize, output_for, pool

    vectors = pool(np.asarray(outputs[output_for(pooled.pooling)], dtype=np.float32), attention_mask, pooled.pooling)
    return l2_normalize(vectors) if pooled.normalize else vectors
