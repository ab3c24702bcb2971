"""``qa``: BertForQuestionAnswering's span logits, one linear to [B, S, 2] split into start and end."""

from __future__ import annotations

from collections.abc import Set as AbstractSet
from typing import TYPE_CHECKING

import numpy as np

from mbexport.heads.core import (
    Feeds,
    Head,
    Shapes,
    Weights,
    linear_shapes,
    np_dense,
)

if TYPE_CHECKING:
    from mbexport.export.graph import Graph
    from mbexport.spec import BertSpec


class QuestionAnswering(Head):
    def weights(self, spec: BertSpec) -> Shapes:
        return linear_shapes("qa_outputs", 2, spec.hidden_size)

    def detect(self, names: AbstractSet[str], architectures: AbstractSet[str]) -> bool:
        return "qa_outputs.weight" in names

    def emit(self, g: Graph, spec: BertSpec, w: Weights, hidden: str, inputs: list[str]) -> list[str]:
        both = g.linear(hidden, w["qa_outputs.weight"], w["qa_outputs.bias"], "qa_outputs")
        start, end = g.op_multi("Split", [both, g.const("split_1_1", [1, 1], np.int64)], "qa_outputs/Split", 2,
                                axis=-1)
        axis = g.const("axis_last", [-1], np.int64)
        return [g.op("Squeeze", [start, axis], "start_logits/Squeeze"),
                g.op("Squeeze", [end, axis], "end_logits/Squeeze")]

    def forward(self, spec: BertSpec, w: Weights, encoded: dict[str, np.ndarray],
                feeds: Feeds) -> dict[str, np.ndarray]:
        spans = np_dense(encoded["last_hidden_state"], w, "qa_outputs")
        return {"start_logits": spans[..., 0], "end_logits": spans[..., 1]}


QA = QuestionAnswering("qa", "BertForQuestionAnswering",
                       {"start_logits": ("batch", "sequence"), "end_logits": ("batch", "sequence")}, priority=50,
                       # google-research/bert run_squad.py: [2, H], applied with transpose_b=True.
                       tf1={"cls/squad/output_weights": ("qa_outputs.weight", "copy"),
                            "cls/squad/output_bias": ("qa_outputs.bias", "copy")})
