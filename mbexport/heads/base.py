"""``base``: the encoder's own outputs, ``last_hidden_state`` and (when the checkpoint has one) ``pooler_output``."""

from __future__ import annotations

from collections.abc import Set as AbstractSet
from typing import TYPE_CHECKING

import numpy as np

from mbexport.heads.core import Feeds, Head, Weights, pooler

if TYPE_CHECKING:
    from mbexport.export.graph import Graph
    from mbexport.spec import BertSpec


class Base(Head):
    def detect(self, names: AbstractSet[str], architectures: AbstractSet[str]) -> bool:
        return True  # every checkpoint has an encoder

    def output_names(self, has_pooler: bool) -> list[str]:
        return [n for n in self.outputs if has_pooler or n != "pooler_output"]

    def emit(self, g: Graph, spec: BertSpec, w: Weights, hidden: str, inputs: list[str]) -> list[str]:
        return [hidden, pooler(g, w, hidden)] if "pooler.dense.weight" in w else [hidden]

    def forward(self, spec: BertSpec, w: Weights, encoded: dict[str, np.ndarray],
                feeds: Feeds) -> dict[str, np.ndarray]:
        return dict(encoded)


BASE = Base("base", "BertModel", {"last_hidden_state": ("batch", "sequence", "hidden"),
                                  "pooler_output": ("batch", "hidden")}, priority=0)
