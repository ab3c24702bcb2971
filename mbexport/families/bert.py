"""BERT, the first family: the behaviour mbexport always had, stated as a ``ModelFamily``.

BERT's heads are export/heads.py's ``HEAD_CONFIGS``; its TF1/TF2 variable names are the
base scheme of sources/tf_checkpoint.py, which every family's TF names map onto.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from mbexport.export.heads import AUTO_ORDER, HEAD_CONFIGS, HeadConfig
from mbexport.families.base import ModelFamily
from mbexport.spec import BertSpec, detect_heads


class BertFamily(ModelFamily):
    name = "bert"
    display = "BERT"
    model_types = ("bert",)
    architecture_prefix = "Bert"
    hf_prefix = "bert."
    tf_scope = "bert/"
    spec_class = BertSpec
    config_class = "BertConfig"
    base_class = "BertModel"
    heads = HEAD_CONFIGS
    auto_order = AUTO_ORDER
    tied: ClassVar[Mapping[str, str]] = {"cls.predictions.decoder.weight": "embeddings.word_embeddings.weight"}
    encoder_parts = ("embeddings.", "encoder.", "pooler.")

    def detect_heads(self, names: set[str]) -> tuple[str, ...]:
        return detect_heads(names)

    def reference_options(self, head: HeadConfig, has_pooler: bool) -> dict[str, Any]:
        """``BertModel`` without a pooler when the checkpoint has none (sentence-transformers models)."""
        return {"add_pooling_layer": False} if head.name == "base" and not has_pooler else {}


BERT = BertFamily()
