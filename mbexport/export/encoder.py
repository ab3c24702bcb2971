"""The BERT encoder as ONNX: embeddings, self-attention and feed-forward per layer.

Two flavors emit the same function:
- ``fused``: onnxruntime contrib ops (EmbedLayerNormalization, Attention,
  SkipLayerNormalization, BiasGelu/FastGelu) -- what onnxruntime's optimizer would
  produce after fusion, written directly;
- ``portable``: standard ONNX ops only (opset 17), for runtimes without contrib ops.

Names follow the checkpoint's parameters (``encoder.layer.3.attention...``) so a
graph reads like the model in Netron.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # the head registry (mbexport.heads) imports this module while spec.py loads
    from mbexport.export.graph import Graph
    from mbexport.spec import BertSpec

Weights = Mapping[str, np.ndarray]

# Additive bias for masked-out keys in the portable graph. -10000 (BERT's own value)
# is representable in fp16, unlike float32's min; exp(-10000) is 0 in both.
MASK_FILTER_VALUE = -10000.0


def embeddings_fused(g: Graph, spec: BertSpec, w: Weights, ids32: str, types32: str,
                     positions32: str | None = None) -> str:
    """word + position + token_type embeddings and LayerNorm in one op::

        input_ids, token_type_ids (, position_ids) --> EmbedLayerNormalization --> hidden [B, S, H]

    Without ``positions32`` a row's positions are 0..S-1 (the packed flavor passes its own).
    """
    p = "embeddings."
    return g.ms_multi(
        "EmbedLayerNormalization",
        [
            ids32,
            types32,
            g.weight(p + "word_embeddings.weight", w[p + "word_embeddings.weight"]),
            g.weight(p + "position_embeddings.weight", w[p + "position_embeddings.weight"]),
            g.weight(p + "token_type_embeddings.weight", w[p + "token_type_embeddings.weight"]),
            g.weight(p + "LayerNorm.weight", w[p + "LayerNorm.weight"]),
            g.weight(p + "LayerNorm.bias", w[p + "LayerNorm.bias"]),
            *(["", positions32] if positions32 else []),  # no mask; position_ids
        ],
        "embeddings/EmbedLayerNormalization",
        2,  # output and mask_index: the op's schema requires both
        epsilon=spec.layer_norm_eps,
    )[0]


def embeddings_portable(g: Graph, spec: BertSpec, w: Weights, input_ids: str, token_type_ids: str) -> str:
    """Gather(word) + Gather(position, 0..S-1) + Gather(token_type) -> LayerNormalization."""
    p = "embeddings."
    words = g.op("Gather", [g.weight(p + "word_embeddings.weight", w[p + "word_embeddings.weight"]), input_ids],
                 "embeddings/word/Gather")
    types = g.op("Gather", [g.weight(p + "token_type_embeddings.weight", w[p + "token_type_embeddings.weight"]),
                            token_type_ids], "embeddings/token_type/Gather")
    shape = g.op("Shape", [input_ids], "embeddings/Shape", start=1, end=2)
    seq_len = g.op("Squeeze", [shape, g.const("axis0", [0], np.int64)], "embeddings/seq_len")
    positions = g.op("Range", [g.const("zero_i64", 0, np.int64), seq_len, g.const("one_i64", 1, np.int64)],
                     "embeddings/positions")
    pos = g.op("Gather", [g.weight(p + "position_embeddings.weight", w[p + "position_embeddings.weight"]), positions],
               "embeddings/position/Gather")
    total = g.op("Add", [g.op("Add", [words, types], "embeddings/Add"), pos], "embeddings/Add")
    return layer_norm(g, total, w, p + "LayerNorm", spec.layer_norm_eps)


def layer_norm(g: Graph, x: str, w: Weights, name: str, eps: float) -> str:
    return g.op("LayerNormalization", [x, g.weight(name + ".weight", w[name + ".weight"]),
                                       g.weight(name + ".bias", w[name + ".bias"])],
                name + "/LayerNormalization", axis=-1, epsilon=eps)


def attention_fused(g: Graph, spec: BertSpec, w: Weights, x: str, mask32: str, prefix: str) -> str:
    """Q, K, V projections, scaled dot-product with the [B, S] mask, heads merged::

        hidden --> Attention(W_qkv [H, 3H], b_qkv, mask) --> context [B, S, H]
    """
    p = prefix + "attention.self."
    return g.ms("Attention", [x, *qkv_weights(g, w, p), mask32], p + "Attention", num_heads=spec.num_heads)


def qkv_weights(g: Graph, w: Weights, p: str) -> list[str]:
    """The merged Q/K/V projection the contrib attention ops take: weight [H, 3H] and bias [3H]."""
    qkv_w = np.concatenate([w[p + n + ".weight"].T for n in ("query", "key", "value")], axis=1)
    qkv_b = np.concatenate([w[p + n + ".bias"] for n in ("query", "key", "value")])
    return [g.weight(p + "qkv.weight", qkv_w), g.weight(p + "qkv.bias", qkv_b)]


def attention_portable(g: Graph, spec: BertSpec, w: Weights, x: str, mask_bias: str, prefix: str) -> str:
    """The same attention in standard ops: MatMul, Reshape, Transpose, Softmax."""
    p = prefix + "attention.self."
    split_shape = g.const("shape_heads", [0, 0, spec.num_heads, spec.head_size], np.int64)
    merged_shape = g.const("shape_merged", [0, 0, spec.hidden_size], np.int64)

    def heads(name: str, perm: list[int]) -> str:
        projected = g.linear(x, w[p + name + ".weight"], w[p + name + ".bias"], p + name)
        split = g.op("Reshape", [projected, split_shape], p + name + "/Reshape")
        return g.op("Transpose", [split], p + name + "/Transpose", perm=perm)

    q = heads("query", [0, 2, 1, 3])  # [B, nh, S, hs]
    k = heads("key", [0, 2, 3, 1])  # [B, nh, hs, S]
    v = heads("value", [0, 2, 1, 3])
    scores = g.op("MatMul", [q, k], p + "scores/MatMul")
    scaled = g.op("Mul", [scores, g.const("attention_scale", 1.0 / math.sqrt(spec.head_size))], p + "scores/Mul")
    masked = g.op("Add", [scaled, mask_bias], p + "scores/Add")
    probs = g.op("Softmax", [masked], p + "Softmax", axis=-1)
    context = g.op("MatMul", [probs, v], p + "context/MatMul")
    merged = g.op("Transpose", [context], p + "context/Transpose", perm=[0, 2, 1, 3])
    return g.op("Reshape", [merged, merged_shape], p + "context/Reshape")


def mask_bias_portable(g: Graph, attention_mask: str) -> str:
    """[B, S] int mask -> [B, 1, 1, S] additive bias: 0 for real tokens, -10000 for padding."""
    as_float = g.op("Cast", [attention_mask], "mask/Cast", to=g.onnx_float)
    inverted = g.op("Sub", [g.const("one", 1.0), as_float], "mask/Sub")
    bias = g.op("Mul", [inverted, g.const("mask_filter_value", MASK_FILTER_VALUE)], "mask/Mul")
    return g.op("Unsqueeze", [bias, g.const("axes_1_2", [1, 2], np.int64)], "mask/Unsqueeze")


def activation(g: Graph, x: str, bias: np.ndarray, act: str, name: str, fused: bool) -> str:
    """``act(x + bias)``: BiasGelu (exact erf GELU, as BERT uses), FastGelu (tanh approx.) or Relu."""
    b = g.weight(name + ".bias", bias)
    if fused and act == "gelu":
        return g.ms("BiasGelu", [x, b], name + "/BiasGelu")
    if fused and act in ("gelu_new", "gelu_pytorch_tanh"):
        return g.ms("FastGelu", [x, b], name + "/FastGelu")
    return apply_activation(g, g.op("Add", [x, b], name + "/Add"), act, name)


def apply_activation(g: Graph, y: str, act: str, name: str) -> str:
    """``act(y)`` in standard ONNX ops: exact (Erf) or tanh-approximated GELU, Relu or Tanh."""
    if act == "relu":
        return g.op("Relu", [y], name + "/Relu")
    if act == "tanh":
        return g.op("Tanh", [y], name + "/Tanh")
    half = g.op("Mul", [y, g.const("half", 0.5)], name + "/gelu/Mul")
    if act == "gelu":
        erf = g.op("Erf", [g.op("Mul", [y, g.const("inv_sqrt2", 1.0 / math.sqrt(2.0))], name + "/gelu/Mul")],
                   name + "/gelu/Erf")
        return g.op("Mul", [half, g.op("Add", [erf, g.const("one", 1.0)], name + "/gelu/Add")], name + "/gelu/Mul")
    cube = g.op("Mul", [g.op("Mul", [y, y], name + "/gelu/Mul"), y], name + "/gelu/Mul")
    inner = g.op("Add", [y, g.op("Mul", [cube, g.const("gelu_c", 0.044715)], name + "/gelu/Mul")], name + "/gelu/Add")
    tanh = g.op("Tanh", [g.op("Mul", [inner, g.const("sqrt_2_over_pi", math.sqrt(2.0 / math.pi))],
                              name + "/gelu/Mul")], name + "/gelu/Tanh")
    return g.op("Mul", [half, g.op("Add", [tanh, g.const("one", 1.0)], name + "/gelu/Add")], name + "/gelu/Mul")


def residual_layer_norm(g: Graph, x: str, residual: str, w: Weights, dense: str, norm: str, eps: float,
                        fused: bool) -> str:
    """LayerNorm(x + dense.bias + residual): one SkipLayerNormalization when fused."""
    bias = g.weight(dense + ".bias", w[dense + ".bias"])
    if fused:
        gamma = g.weight(norm + ".weight", w[norm + ".weight"])
        beta = g.weight(norm + ".bias", w[norm + ".bias"])
        return g.ms("SkipLayerNormalization", [x, residual, gamma, beta, bias], norm + "/SkipLayerNormalization",
                    epsilon=eps)
    summed = g.op("Add", [g.op("Add", [x, bias], dense + "/Add"), residual], norm + "/Add")
    return layer_norm(g, summed, w, norm, eps)


# (g, spec, weights, hidden, mask, layer prefix) -> attention context: a flavor's self-attention.
Attention = Callable[["Graph", "BertSpec", Weights, str, str, str], str]


def encoder_layer(g: Graph, spec: BertSpec, w: Weights, x: str, mask: str, index: int, fused: bool,
                  attention: Attention | None = None) -> str:
    """One transformer block: attention, add & norm, feed-forward, add & norm. ``attention`` replaces
    the flavor's own (the packed flavor's PackedAttention, export/packed.py)."""
    p = f"encoder.layer.{index}."
    eps = spec.layer_norm_eps
    if attention is not None:
        context = attention(g, spec, w, x, mask, p)
    elif fused:
        context = attention_fused(g, spec, w, x, mask, p)
    else:
        context = attention_portable(g, spec, w, x, mask, p)
    out = p + "attention.output."
    projected = g.linear(context, w[out + "dense.weight"], None, out + "dense")
    x = residual_layer_norm(g, projected, x, w, out + "dense", out + "LayerNorm", eps, fused)
    hidden = g.linear(x, w[p + "intermediate.dense.weight"], None, p + "intermediate.dense")
    hidden = activation(g, hidden, w[p + "intermediate.dense.bias"], spec.hidden_act, p + "intermediate.dense", fused)
    projected = g.linear(hidden, w[p + "output.dense.weight"], None, p + "output.dense")
    return residual_layer_norm(g, projected, x, w, p + "output.dense", p + "output.LayerNorm", eps, fused)


def encoder(g: Graph, spec: BertSpec, w: Weights, input_ids: str, attention_mask: str, token_type_ids: str,
            fused: bool, project: Callable[[Graph, BertSpec, Weights, str], str] | None = None) -> str:
    """Embeddings, ``project`` (a family's step between embeddings and layers, e.g. ELECTRA's
    embeddings_project) and every layer; returns the last hidden state [B, S, H]."""
    if fused:
        ids32 = g.op("Cast", [input_ids], "input_ids/Cast", to=6)  # contrib ops take int32
        types32 = g.op("Cast", [token_type_ids], "token_type_ids/Cast", to=6)
        mask = g.op("Cast", [attention_mask], "attention_mask/Cast", to=6)
        x = embeddings_fused(g, spec, w, ids32, types32)
    else:
        mask = mask_bias_portable(g, attention_mask)
        x = embeddings_portable(g, spec, w, input_ids, token_type_ids)
    if project is not None:
        x = project(g, spec, w, x)
    for index in range(spec.num_layers):
        x = encoder_layer(g, spec, w, x, mask, index, fused)
    return x
