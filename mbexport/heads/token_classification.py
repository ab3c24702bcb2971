"""``token-classification``: BertForTokenClassification, ``classifier`` [labels, H] on every token.

Its weights have a sequence classifier's names and shapes: only the config's ``architectures``
tells them apart (see ``classification.is_classifier``).
"""

from __future__ import annotations

from collections.abc import Set as AbstractSet
from typing import TYPE_CHECKING

import numpy as np

from mbexport.heads.classification import is_classifier
from mbexport.heads.core import Feeds, Head, Shapes, Weights, linear_shapes, np_dense

if TYPE_CHECKING:
    from mbexport.export.graph import Graph
    from mbexport.spec import BertSpec


class TokenClassification(Head):
    def weights(self, spec: BertSpec) -> Shapes:
        return linear_shapes("classifier", spec.num_labels, spec.hidden_size)

    def detect(self, names: AbstractSet[str], architectures: AbstractSet[str]) -> bool:
        return is_classifier(self.architecture, names, architectures)

    def emit(self, g: Graph, spec: BertSpec, w: Weights, hidden: str, inputs: list[str]) -> list[str]:
        return [g.linear(hidden, w["classifier.weight"], w["classifier.bias"], "classifier")]

    def forward(self, spec: BertSpec, w: Weights, encoded: dict[str, np.ndarray],
                feeds: Feeds) -> dict[str, np.ndarray]:
        return {"logits": np_dense(encoded["last_hidden_state"], w, "classifier")}


TOKEN_CLASSIFICATION = TokenClassification("token-classification", "BertForTokenClassification",
                                           {"logits": ("batch", "sequence", "labels")}, priority=40, uses_labels=True)
