"""``multiple-choice``: BertForMultipleChoice, one score per choice.

Inputs are [batch, choices, sequence]; the graph flattens them to [batch * choices, sequence]
for the encoder, scores each row with ``classifier`` [1, H] on its ``summary`` (BERT: the pooler
output; ELECTRA's subclass reads the first token), and reshapes the scores to [batch, choices]::

    input_* [B, C, S] --Flatten(2)--> [B*C, S] --encoder, pooler--> [B*C, H] --Gemm--> [B*C, 1]
        --Reshape(Shape(input_ids)[:2])--> logits [B, C]
"""

from __future__ import annotations

from collections.abc import Set as AbstractSet
from typing import TYPE_CHECKING

import numpy as np

from mbexport.heads.classification import is_classifier
from mbexport.heads.core import (
    Feeds,
    Head,
    Shapes,
    Weights,
    classifier,
    linear_shapes,
    np_dense,
    pooler,
)

if TYPE_CHECKING:
    from mbexport.export.graph import Graph
    from mbexport.spec import BertSpec

CHOICES = 2  # parity pairs up the rows of its [batch, sequence] batches


class MultipleChoice(Head):
    def weights(self, spec: BertSpec) -> Shapes:
        return linear_shapes("classifier", 1, spec.hidden_size)

    def detect(self, names: AbstractSet[str], architectures: AbstractSet[str]) -> bool:
        return is_classifier(self.architecture, names, architectures)

    def graph_inputs(self, g: Graph, inputs: list[str]) -> list[str]:
        return [g.op("Flatten", [name], f"{name}/Flatten", axis=2) for name in inputs]

    def summary(self, g: Graph, spec: BertSpec, w: Weights, hidden: str) -> str:
        """The [B*C, H] vector each choice is scored from: BERT's pooler output."""
        return pooler(g, w, hidden)

    def np_summary(self, spec: BertSpec, w: Weights, encoded: dict[str, np.ndarray]) -> np.ndarray:
        """``summary`` in float64 numpy."""
        return encoded["pooler_output"]

    def emit(self, g: Graph, spec: BertSpec, w: Weights, hidden: str, inputs: list[str]) -> list[str]:
        scores = classifier(g, w, self.summary(g, spec, w, hidden), "classifier")
        batch_choices = g.op("Shape", [inputs[0]], "choices/Shape", start=0, end=2)
        return [g.op("Reshape", [scores, batch_choices], "choices/Reshape")]

    def forward(self, spec: BertSpec, w: Weights, encoded: dict[str, np.ndarray],
                feeds: Feeds) -> dict[str, np.ndarray]:
        scores = np_dense(self.np_summary(spec, w, encoded), w, "classifier")
        return {"logits": scores.reshape(feeds["input_ids"].shape[:-1])}

    def feeds(self, feeds: Feeds) -> Feeds:
        rows = len(feeds["input_ids"]) // CHOICES * CHOICES
        return {k: v[:rows].reshape(-1, CHOICES, v.shape[-1]) for k, v in feeds.items()}


MULTIPLE_CHOICE = MultipleChoice("multiple-choice", "BertForMultipleChoice", {"logits": ("batch", "choices")},
                                 priority=40, input_dims=("batch", "choices", "sequence"), needs_pooler=True)
