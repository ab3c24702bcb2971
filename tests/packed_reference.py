"""numpy implementations of the onnxruntime contrib ops a packed graph uses, written from their schemas
(onnxruntime's docs/ContribOperators.md, the same text as ``get_all_operator_schema()``), for
``onnx.reference.ReferenceEvaluator(model, new_ops=CONTRIB_OPS)``: onnxruntime has no CPU kernel for
PackedAttention, so this is how the packed graph runs on a machine without a GPU.

Nothing here comes from mbexport: attention scatters the packed tokens to the padded [B, S] layout
through ``token_offset`` (the RemovePadding layout: entry k < tokens is packed token k's padded
position), masks keys past each row's length from ``cumulative_sequence_length``, and gathers the
context back through ``token_offset`` -- so a wrong token_offset gives wrong numbers, not just a
wrong shape. All arithmetic is float64; outputs are cast back to the input's dtype.
"""

from __future__ import annotations

import math

import numpy as np
from onnx.reference import ReferenceEvaluator
from onnx.reference.op_run import OpRun

_erf = np.vectorize(math.erf, otypes=[np.float64])


def _layer_norm(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray | None, eps: float) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * gamma + (0.0 if beta is None else beta)


class EmbedLayerNormalization(OpRun):
    """LayerNorm(word[ids] + position[position_ids or 0..S-1] + segment[segment_ids]); mask_index = mask row sums."""

    op_domain = "com.microsoft"

    def _run(self, input_ids, segment_ids, word_embedding, position_embedding, segment_embedding, gamma, beta,
             mask=None, position_ids=None, epsilon=None, mask_index_type=None):  # noqa: ANN001, ANN202
        positions = (np.arange(input_ids.shape[1])[None, :] if position_ids is None else position_ids)
        positions = np.broadcast_to(positions, input_ids.shape)  # (B, S) or (1, S)
        x = word_embedding[input_ids].astype(np.float64) + position_embedding[positions]
        if segment_ids is not None:
            x = x + segment_embedding[segment_ids]
        out = _layer_norm(x, gamma.astype(np.float64), beta.astype(np.float64), epsilon)
        mask_index = (np.zeros(input_ids.shape[0]) if mask is None else mask.sum(1)).astype(np.int32)
        return out.astype(word_embedding.dtype), mask_index


class SkipLayerNormalization(OpRun):
    """LayerNorm(input + skip + bias) * gamma + beta."""

    op_domain = "com.microsoft"

    def _run(self, x, skip, gamma, beta=None, bias=None, epsilon=None):  # noqa: ANN001, ANN202
        total = x.astype(np.float64) + skip + (0.0 if bias is None else bias)
        return (_layer_norm(total, gamma.astype(np.float64), beta, epsilon).astype(x.dtype),)


class BiasGelu(OpRun):
    """Gelu(A + B), the exact erf form."""

    op_domain = "com.microsoft"

    def _run(self, a, b):  # noqa: ANN001, ANN202
        y = a.astype(np.float64) + b
        return ((0.5 * y * (1.0 + _erf(y / math.sqrt(2.0)))).astype(a.dtype),)


class FastGelu(OpRun):
    """The tanh approximation of Gelu(X + bias)."""

    op_domain = "com.microsoft"

    def _run(self, x, bias=None):  # noqa: ANN001, ANN202
        y = x.astype(np.float64) + (0.0 if bias is None else bias)
        return ((0.5 * y * (1.0 + np.tanh(0.7978845608 * (y + 0.044715 * y**3)))).astype(x.dtype),)


class PackedAttention(OpRun):
    """Self-attention over packed tokens: input [T, D] @ weights [D, 3D] + bias, per row of cu_seqlens."""

    op_domain = "com.microsoft"

    def _run(self, x, weights, bias, token_offset, cumulative_sequence_length, attention_bias=None,  # noqa: ANN001
             num_heads=None, scale=None, qkv_hidden_sizes=None):  # noqa: ANN001, ANN202
        tokens = x.shape[0]
        batch, seq = token_offset.shape
        qkv = x.astype(np.float64) @ weights + bias
        hidden = qkv.shape[1] // 3
        head = hidden // num_heads
        where = token_offset.reshape(-1)[:tokens]
        padded = np.zeros((batch * seq, 3 * hidden))
        padded[where] = qkv
        q, k, v = (padded[:, i * hidden:(i + 1) * hidden].reshape(batch, seq, num_heads, head).transpose(0, 2, 1, 3)
                   for i in range(3))
        scores = q @ k.transpose(0, 1, 3, 2) * (scale or 1.0 / math.sqrt(head))
        lengths = np.diff(cumulative_sequence_length)
        keys = np.arange(seq)[None, :] < lengths[:, None]
        scores = np.where(keys[:, None, None, :], scores, -np.inf)
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        context = (scores / scores.sum(-1, keepdims=True)) @ v
        context = context.transpose(0, 2, 1, 3).reshape(batch * seq, hidden)
        return (context[where].astype(x.dtype),)


CONTRIB_OPS = [EmbedLayerNormalization, SkipLayerNormalization, BiasGelu, FastGelu, PackedAttention]


def evaluator(model) -> ReferenceEvaluator:  # noqa: ANN001 - an onnx.ModelProto
    """The onnx reference runtime for ``model`` with the contrib ops above."""
    return ReferenceEvaluator(model, new_ops=CONTRIB_OPS)
