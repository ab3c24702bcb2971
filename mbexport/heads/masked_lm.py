"""``masked-lm``: BertForMaskedLM's vocabulary scores per token (``cls.predictions.*``, no NSP).

Also offered for pretraining checkpoints, whose MLM half it is (a fill-mask model without the
NSP output and the pooler). The decoder is tied to the word embeddings unless the checkpoint
carries its own ``cls.predictions.decoder.weight``.
"""

from __future__ import annotations

from collections.abc import Set as AbstractSet
from typing import TYPE_CHECKING

import numpy as np

from mbexport.export.encoder import activation, layer_norm
from mbexport.heads.core import (
    Feeds,
    Head,
    Shapes,
    TfRule,
    Weights,
    np_activation,
    np_dense,
    np_layer_norm,
    tf_linear,
)

if TYPE_CHECKING:
    from mbexport.export.graph import Graph
    from mbexport.spec import BertSpec

MLM_BIAS = "cls.predictions.bias"
UNTIED_DECODER = "cls.predictions.decoder.weight"
TRANSFORM = "cls.predictions.transform."

# google-research/bert run_pretraining.py
MLM_TF1: dict[str, TfRule] = {
    **tf_linear("cls/predictions/transform/dense", TRANSFORM + "dense"),
    "cls/predictions/transform/LayerNorm/gamma": (TRANSFORM + "LayerNorm.weight", "copy"),
    "cls/predictions/transform/LayerNorm/beta": (TRANSFORM + "LayerNorm.bias", "copy"),
    "cls/predictions/output_bias": (MLM_BIAS, "copy"),
}
# TF Model Garden BertPretrainerV2.checkpoint_items["masked_lm"] (layers.MaskedLM): its bias is
# add_weight("output_bias/bias"), which TF escapes to "output_bias.Sbias"; "embedding_table" is the
# encoder's word embeddings, reached through the MLM first (checkpoints store each variable once).
MLM_TF2: dict[str, TfRule] = {
    **tf_linear("masked_lm/dense", TRANSFORM + "dense"),
    "masked_lm/layer_norm/gamma": (TRANSFORM + "LayerNorm.weight", "copy"),
    "masked_lm/layer_norm/beta": (TRANSFORM + "LayerNorm.bias", "copy"),
    "masked_lm/output_bias.Sbias": (MLM_BIAS, "copy"),
    "masked_lm/embedding_table": ("embeddings.word_embeddings.weight", "copy"),
}


def mlm_shapes(spec: BertSpec) -> Shapes:
    h = spec.hidden_size
    return {TRANSFORM + "dense.weight": (h, h), TRANSFORM + "dense.bias": (h,), TRANSFORM + "LayerNorm.weight": (h,),
            TRANSFORM + "LayerNorm.bias": (h,), MLM_BIAS: (spec.vocab_size,)}


def emit_mlm(g: Graph, spec: BertSpec, w: Weights, hidden: str) -> str:
    """Transform (dense, activation, LayerNorm) then the decoder, tied to the word embeddings.

    A tied decoder reads ``embeddings.word_embeddings.weight`` through a Transpose node
    rather than a transposed copy, so the vocab matrix is stored once; an untied one
    (``cls.predictions.decoder.weight`` present) uses its own matrix.
    """
    x = g.linear(hidden, w[TRANSFORM + "dense.weight"], None, TRANSFORM + "dense")
    x = activation(g, x, w[TRANSFORM + "dense.bias"], spec.hidden_act, TRANSFORM + "dense", fused=False)
    x = layer_norm(g, x, w, TRANSFORM + "LayerNorm", spec.layer_norm_eps)
    name = UNTIED_DECODER if UNTIED_DECODER in w else "embeddings.word_embeddings.weight"
    decoder = g.op("Transpose", [g.weight(name, w[name])], "cls.predictions.decoder/Transpose", perm=[1, 0])
    logits = g.op("MatMul", [x, decoder], "cls.predictions.decoder/MatMul")
    return g.op("Add", [logits, g.weight(MLM_BIAS, w[MLM_BIAS])], "cls.predictions/Add")


def mlm_logits(spec: BertSpec, w: Weights, hidden: np.ndarray) -> np.ndarray:
    t = np_layer_norm(np_activation(np_dense(hidden, w, TRANSFORM + "dense"), spec.hidden_act), w,
                      TRANSFORM + "LayerNorm", spec.layer_norm_eps)
    decoder = w[UNTIED_DECODER] if UNTIED_DECODER in w else w["embeddings.word_embeddings.weight"]
    return t @ decoder.T + w[MLM_BIAS]


class MaskedLM(Head):
    def weights(self, spec: BertSpec) -> Shapes:
        return mlm_shapes(spec)

    def optional_weights(self, spec: BertSpec) -> Shapes:
        return {UNTIED_DECODER: (spec.vocab_size, spec.hidden_size)}

    def detect(self, names: AbstractSet[str], architectures: AbstractSet[str]) -> bool:
        return MLM_BIAS in names and "cls.seq_relationship.weight" not in names

    def emit(self, g: Graph, spec: BertSpec, w: Weights, hidden: str, inputs: list[str]) -> list[str]:
        return [emit_mlm(g, spec, w, hidden)]

    def forward(self, spec: BertSpec, w: Weights, encoded: dict[str, np.ndarray],
                feeds: Feeds) -> dict[str, np.ndarray]:
        return {"logits": mlm_logits(spec, w, encoded["last_hidden_state"])}


MASKED_LM = MaskedLM("masked-lm", "BertForMaskedLM", {"logits": ("batch", "sequence", "vocab")}, priority=10,
                     within=("pretraining",), tf1=MLM_TF1, tf2=MLM_TF2)
