"""``pretraining``: BertForPreTraining's two outputs, masked-LM scores and next-sentence logits.

The MLM half is ``masked_lm``'s; NSP is a [2, H] linear on the pooler output.
"""

from __future__ import annotations

from collections.abc import Set as AbstractSet
from typing import TYPE_CHECKING

import numpy as np

from mbexport.heads.core import (
    Feeds,
    Head,
    Shapes,
    TfRule,
    Weights,
    classifier,
    linear_shapes,
    np_dense,
    pooler,
    tf_linear,
)
from mbexport.heads.masked_lm import (
    MASKED_LM,
    MLM_BIAS,
    MLM_TF1,
    MLM_TF2,
    emit_mlm,
    mlm_logits,
    mlm_shapes,
)

if TYPE_CHECKING:
    from mbexport.export.graph import Graph
    from mbexport.spec import BertSpec

NSP = "cls.seq_relationship"


# TF1: output_weights are [2, H] already (run_pretraining.py multiplies with transpose_b=True).
NSP_TF1: dict[str, TfRule] = {"cls/seq_relationship/output_weights": (NSP + ".weight", "copy"),
                              "cls/seq_relationship/output_bias": (NSP + ".bias", "copy")}
# TF2 Model Garden: the NSP head is BertPretrainerV2's classification head "next_sentence", a
# pooler of its own (checkpoint item "next_sentence.pooler_dense", escaped "..") and an out_proj
# under the model. That pooler is the one NSP trained (the encoder's pooler gets no gradient
# there), so it is the pooler: what Model Garden's export does with copy_pooler_dense_to_encoder.
NSP_TF2: dict[str, TfRule] = {**tf_linear("classification_heads/0/out_proj", NSP),
                              **tf_linear("next_sentence..pooler_dense", "pooler.dense")}


class Pretraining(Head):
    def weights(self, spec: BertSpec) -> Shapes:
        return {**mlm_shapes(spec), **linear_shapes(NSP, 2, spec.hidden_size)}

    def optional_weights(self, spec: BertSpec) -> Shapes:
        return MASKED_LM.optional_weights(spec)

    def detect(self, names: AbstractSet[str], architectures: AbstractSet[str]) -> bool:
        return MLM_BIAS in names and NSP + ".weight" in names

    def emit(self, g: Graph, spec: BertSpec, w: Weights, hidden: str, inputs: list[str]) -> list[str]:
        return [emit_mlm(g, spec, w, hidden), classifier(g, w, pooler(g, w, hidden), NSP)]

    def forward(self, spec: BertSpec, w: Weights, encoded: dict[str, np.ndarray],
                feeds: Feeds) -> dict[str, np.ndarray]:
        return {"prediction_logits": mlm_logits(spec, w, encoded["last_hidden_state"]),
                "seq_relationship_logits": np_dense(encoded["pooler_output"], w, NSP)}


PRETRAINING = Pretraining("pretraining", "BertForPreTraining", {"prediction_logits": ("batch", "sequence", "vocab"),
                                                               "seq_relationship_logits": ("batch", "2")},
                          priority=20, needs_pooler=True, tf1={**MLM_TF1, **NSP_TF1}, tf2={**MLM_TF2, **NSP_TF2})
