"""BERT, the first family: the behaviour mbexport always had, stated as a ``ModelFamily``.

BERT's heads are the head registry (``mbexport.heads.HEADS``); its encoder's TF1/TF2 variable
names are the base scheme of sources/tf_checkpoint.py, which other families' TF names map onto.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from mbexport.families.base import ModelFamily
from mbexport.heads import HEADS, Head
from mbexport.spec import BertSpec


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
    heads = HEADS
    tied: ClassVar[Mapping[str, str]] = {"cls.predictions.decoder.weight": "embeddings.word_embeddings.weight"}
    encoder_parts = ("embeddings.", "encoder.", "pooler.")

    def reference_options(self, head: Head, has_pooler: bool) -> dict[str, Any]:
        """``BertModel`` without a pooler when the checkpoint has none (sentence-transformers models)."""
        return {"add_pooling_layer": False} if head.architecture == self.base_class and not has_pooler else {}


BERT = BertFamily()
