"""``classification``: BertForSequenceClassification, ``classifier`` [labels, H] on the pooler output.

Three HF classes name their head ``classifier.*``; which one a checkpoint is comes from its
config's ``architectures`` (``core.CLASSIFIER_ARCHITECTURES``). A checkpoint naming none of them
(TF1 run_classifier.py checkpoints, configs without ``architectures``) is a sequence classifier.
"""

from __future__ import annotations

from collections.abc import Set as AbstractSet
from typing import TYPE_CHECKING

import numpy as np

from mbexport.heads.core import (
    CLASSIFIER_ARCHITECTURES,
    SEQUENCE_CLASSIFIER,
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


def is_classifier(architecture: str, names: AbstractSet[str], architectures: AbstractSet[str],
                  rivals: AbstractSet[str] = CLASSIFIER_ARCHITECTURES,
                  unnamed: str | None = SEQUENCE_CLASSIFIER) -> bool:
    """Whether the checkpoint's ``classifier.*`` belongs to ``architecture``'s head: the one of
    ``rivals`` (the classes sharing those names) the config names, else ``unnamed``'s."""
    if "classifier.weight" not in names:
        return False
    named = architectures & rivals
    return architecture in named if named else architecture == unnamed


class SequenceClassification(Head):
    def weights(self, spec: BertSpec) -> Shapes:
        return linear_shapes("classifier", spec.num_labels, spec.hidden_size)

    def detect(self, names: AbstractSet[str], architectures: AbstractSet[str]) -> bool:
        return is_classifier(self.architecture, names, architectures)

    def emit(self, g: Graph, spec: BertSpec, w: Weights, hidden: str, inputs: list[str]) -> list[str]:
        return [classifier(g, w, pooler(g, w, hidden), "classifier")]

    def forward(self, spec: BertSpec, w: Weights, encoded: dict[str, np.ndarray],
                feeds: Feeds) -> dict[str, np.ndarray]:
        return {"logits": np_dense(encoded["pooler_output"], w, "classifier")}


CLASSIFICATION = SequenceClassification("classification", SEQUENCE_CLASSIFIER, {"logits": ("batch", "labels")},
                                        priority=40, needs_pooler=True, uses_labels=True,
                                        # google-research/bert run_classifier.py: [labels, H], transpose_b=True.
                                        tf1={"output_weights": ("classifier.weight", "copy"),
                                             "output_bias": ("classifier.bias", "copy")})
