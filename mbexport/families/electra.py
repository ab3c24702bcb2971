"""ELECTRA (Clark et al. 2020): BERT's blocks and WordPiece vocabulary, with three differences.

- The embedding tables may be narrower than the layers (``embedding_size``, 128 in
  ELECTRA-small): an ``embeddings_project`` linear maps them to ``hidden_size``.
- No pooler: sentence heads read the first token's hidden state directly.
- Its own heads: the discriminator (``ElectraForPreTraining``: replaced-token logits per
  token), the generator (``ElectraForMaskedLM``: vocabulary logits through a LayerNorm of
  width ``embedding_size`` and an output layer tied to the word embeddings) and sequence
  classification (``ElectraForSequenceClassification``: dense, GELU, out_proj on [CLS]).

Canonical names are transformers' with the ``electra.`` prefix removed::

    embeddings.*, embeddings_project.{weight,bias}, encoder.layer.{i}.*       (as BERT's)
    discriminator_predictions.{dense,dense_prediction}.{weight,bias}          (discriminator)
    generator_predictions.dense.{weight,bias}, generator_predictions.LayerNorm.{weight,bias},
    generator_lm_head.bias (+ generator_lm_head.weight when untied)           (generator)
    classifier.dense.{weight,bias}, classifier.out_proj.{weight,bias}        (classification)

Google's TF1 checkpoints (google-research/electra run_pretraining.py) hold both networks:
the discriminator under ``electra/`` with ``discriminator_predictions/dense`` and ``dense_1``,
the generator under ``generator/`` (its own ``embeddings_project`` and layers, the shared
``electra/embeddings``) with ``generator_predictions/{dense,LayerNorm,output_bias}``. Which
one a conversion reads is the config's: ``architectures: ["ElectraForMaskedLM"]`` (the
config transformers publishes for ``*-generator``) reads the generator, anything else the
discriminator; the other network's tensors are skipped.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, cast

import numpy as np

from mbexport.export.encoder import activation, layer_norm
from mbexport.export.graph import Graph
from mbexport.export.heads import BSH, HeadConfig
from mbexport.families.base import OTHER_NETWORK, ModelFamily, TFRule, Weights
from mbexport.spec import MAX_HIDDEN, BertSpec, _config_int, _labels

ARCHITECTURES = {
    "base": "ElectraModel",
    "discriminator": "ElectraForPreTraining",
    "generator": "ElectraForMaskedLM",
    "classification": "ElectraForSequenceClassification",
}
DEFAULT_EMBEDDING_SIZE = 128  # transformers' ElectraConfig default, used when a config omits it


@dataclass(frozen=True)
class ElectraSpec(BertSpec):
    """A BERT spec plus the width of the embedding tables."""

    family: ClassVar[str] = "electra"
    embedding_size: int = DEFAULT_EMBEDDING_SIZE

    @property
    def embedding_width(self) -> int:
        return self.embedding_size

    @classmethod
    def from_config(cls, config: Mapping[str, Any], heads: tuple[str, ...] = ("base",),
                    where: str = "config") -> ElectraSpec:
        spec = cast(ElectraSpec, super().from_config(config, heads, where))
        embedding_size = _config_int(config, "embedding_size", 1, MAX_HIDDEN, where, DEFAULT_EMBEDDING_SIZE)
        return dataclasses.replace(spec, embedding_size=embedding_size)

    def encoder_shapes(self) -> dict[str, tuple[int, ...]]:
        shapes = super().encoder_shapes()
        if self.embedding_size != self.hidden_size:
            shapes["embeddings_project.weight"] = (self.hidden_size, self.embedding_size)
            shapes["embeddings_project.bias"] = (self.hidden_size,)
        return shapes

    def expected_shapes(self) -> dict[str, tuple[int, ...]]:
        h, e = self.hidden_size, self.embedding_size
        shapes = self.encoder_shapes()
        if "discriminator" in self.heads:
            shapes.update({"discriminator_predictions.dense.weight": (h, h),
                           "discriminator_predictions.dense.bias": (h,),
                           "discriminator_predictions.dense_prediction.weight": (1, h),
                           "discriminator_predictions.dense_prediction.bias": (1,)})
        if "generator" in self.heads:
            shapes.update({"generator_predictions.dense.weight": (e, h), "generator_predictions.dense.bias": (e,),
                           "generator_predictions.LayerNorm.weight": (e,),
                           "generator_predictions.LayerNorm.bias": (e,),
                           "generator_lm_head.bias": (self.vocab_size,)})
        if "classification" in self.heads:
            shapes.update({"classifier.dense.weight": (h, h), "classifier.dense.bias": (h,),
                           "classifier.out_proj.weight": (self.num_labels, h),
                           "classifier.out_proj.bias": (self.num_labels,)})
        return shapes

    def known_shapes(self) -> dict[str, tuple[int, ...]]:
        shapes = dataclasses.replace(self, heads=tuple(ARCHITECTURES)).expected_shapes()
        shapes["generator_lm_head.weight"] = (self.vocab_size, self.embedding_size)
        return shapes

    def to_hf_config(self, source_config: Mapping[str, Any] | None = None) -> dict[str, Any]:
        config = BertSpec.to_hf_config(dataclasses.replace(self, heads=("base",)))
        config.update(model_type="electra", embedding_size=self.embedding_size,
                      architectures=[ARCHITECTURES[h] for h in self.heads if h != "base"] or ["ElectraModel"])
        if "classification" in self.heads:
            config["num_labels"] = self.num_labels
            config.update(_labels(source_config or {}, self.num_labels))
        return config


# --- heads ---------------------------------------------------------------------------------------

def discriminator(g: Graph, spec: BertSpec, w: Weights, hidden: str) -> list[str]:
    """Replaced-token logits, one per token::

        hidden [B, S, H] --dense, act--> [B, S, H] --dense_prediction--> [B, S, 1] --Squeeze--> logits [B, S]
    """
    p = "discriminator_predictions."
    x = g.linear(hidden, w[p + "dense.weight"], None, p + "dense")
    x = activation(g, x, w[p + "dense.bias"], spec.hidden_act, p + "dense", fused=False)
    x = g.linear(x, w[p + "dense_prediction.weight"], w[p + "dense_prediction.bias"], p + "dense_prediction")
    return [g.op("Squeeze", [x, g.const("axis_last", [-1], np.int64)], p + "Squeeze")]


def generator(g: Graph, spec: BertSpec, w: Weights, hidden: str) -> list[str]:
    """Vocabulary logits: dense to the embedding width, GELU (always, as transformers and
    Google's code build it), LayerNorm, then the output layer, tied to the word embeddings
    (read through a Transpose, stored once) unless the checkpoint carries its own."""
    p = "generator_predictions."
    x = g.linear(hidden, w[p + "dense.weight"], None, p + "dense")
    x = activation(g, x, w[p + "dense.bias"], "gelu", p + "dense", fused=False)
    x = layer_norm(g, x, w, p + "LayerNorm", spec.layer_norm_eps)
    name = "generator_lm_head.weight" if "generator_lm_head.weight" in w else "embeddings.word_embeddings.weight"
    table = g.op("Transpose", [g.weight(name, w[name])], "generator_lm_head/Transpose", perm=[1, 0])
    logits = g.op("MatMul", [x, table], "generator_lm_head/MatMul")
    return [g.op("Add", [logits, g.weight("generator_lm_head.bias", w["generator_lm_head.bias"])],
                 "generator_lm_head/Add")]


def classification(g: Graph, spec: BertSpec, w: Weights, hidden: str) -> list[str]:
    """Sequence logits from the first token: dense, GELU, out_proj (no tanh pooler)."""
    first = g.op("Gather", [hidden, g.const("index0", 0, np.int64)], "classifier/Gather", axis=1)
    x = g.linear(first, w["classifier.dense.weight"], None, "classifier.dense")
    x = activation(g, x, w["classifier.dense.bias"], "gelu", "classifier.dense", fused=False)
    return [g.linear(x, w["classifier.out_proj.weight"], w["classifier.out_proj.bias"], "classifier.out_proj")]


HEADS: dict[str, HeadConfig] = {
    "base": HeadConfig("base", {"last_hidden_state": BSH}, ARCHITECTURES["base"],
                       lambda g, spec, w, hidden: [hidden], needs_pooler=False),
    "discriminator": HeadConfig("discriminator", {"logits": ("batch", "sequence")}, ARCHITECTURES["discriminator"],
                                discriminator, needs_pooler=False),
    "generator": HeadConfig("generator", {"logits": ("batch", "sequence", "vocab")}, ARCHITECTURES["generator"],
                            generator, needs_pooler=False),
    "classification": HeadConfig("classification", {"logits": ("batch", "labels")},
                                 ARCHITECTURES["classification"], classification, needs_pooler=False),
}


# --- TF1 names -----------------------------------------------------------------------------------

def _linear(leaf: str) -> str:
    return "T" if leaf == "kernel" else "copy"


def _leaf(leaf: str) -> str:
    return "weight" if leaf in ("kernel", "gamma") else "bias"


def _head_rule(name: str) -> TFRule | None:
    """The prediction heads' TF1 names (both networks')."""
    if m := re.fullmatch(r"discriminator_predictions/(dense|dense_1)/(kernel|bias)", name):
        module = "dense" if m[1] == "dense" else "dense_prediction"
        return f"discriminator_predictions.{module}.{_leaf(m[2])}", _linear(m[2])
    if m := re.fullmatch(r"generator_predictions/(dense/kernel|dense/bias|LayerNorm/gamma|LayerNorm/beta)", name):
        module, leaf = m[1].split("/")
        return f"generator_predictions.{module}.{_leaf(leaf)}", _linear(leaf)
    if name == "generator_predictions/output_bias":
        return "generator_lm_head.bias", "copy"
    return None


class ElectraFamily(ModelFamily):
    name = "electra"
    display = "ELECTRA"
    model_types = ("electra",)
    architecture_prefix = "Electra"
    hf_prefix = "electra."
    tf_scope = "electra/"
    spec_class = ElectraSpec
    config_class = "ElectraConfig"
    base_class = "ElectraModel"
    heads = HEADS
    auto_order = ("classification", "discriminator", "generator", "base")
    tied: ClassVar[Mapping[str, str]] = {"generator_lm_head.weight": "embeddings.word_embeddings.weight"}
    encoder_parts = ("embeddings.", "embeddings_project.", "encoder.")

    def claims_names(self, names: Any) -> bool:
        return any(n.startswith(("electra.", "electra/", "generator/", "discriminator_predictions"))
                   for n in names)

    def detect_heads(self, names: set[str]) -> tuple[str, ...]:
        heads = ["base"]
        if "discriminator_predictions.dense_prediction.weight" in names:
            heads.append("discriminator")
        if "generator_predictions.dense.weight" in names and "generator_lm_head.bias" in names:
            heads.append("generator")
        if "classifier.out_proj.weight" in names:
            heads.append("classification")
        return tuple(heads)

    def project_embeddings(self, g: Graph, spec: BertSpec, w: Weights, x: str) -> str:
        """``embeddings_project`` (embedding width -> hidden size) when the widths differ."""
        if "embeddings_project.weight" not in w:
            return x
        return g.linear(x, w["embeddings_project.weight"], w["embeddings_project.bias"], "embeddings_project")

    def tf_rule(self, name: str, config: Mapping[str, Any], num_layers: int,
                bert_rule: Callable[[str, int], TFRule | None]) -> TFRule | None:
        """The network the config describes (``generator_network``) maps through BERT's TF1 names
        under its own scope; the other network's tensors are ``OTHER_NETWORK``."""
        generator_net = generator_network(config)
        scope, other = ("generator/", "electra/") if generator_net else ("electra/", "generator/")
        if m := re.fullmatch(r"(electra|generator)/embeddings_project/(kernel|bias)", name):
            if f"{m[1]}/" != scope:
                return OTHER_NETWORK
            return f"embeddings_project.{_leaf(m[2])}", _linear(m[2])
        if name.startswith("electra/embeddings/"):  # shared by both networks
            return bert_rule("bert/" + name.removeprefix("electra/"), num_layers)
        if name.startswith(scope + "encoder/"):
            return bert_rule("bert/" + name.removeprefix(scope), num_layers)
        if name.startswith(other + "encoder/"):
            return OTHER_NETWORK
        rule = _head_rule(name)
        if rule is not None and rule[0].startswith("generator") != generator_net:
            return OTHER_NETWORK
        return rule


def generator_network(config: Mapping[str, Any]) -> bool:
    """Whether a config describes ELECTRA's generator (transformers publishes the generators'
    configs with ``architectures: ["ElectraForMaskedLM"]``) rather than its discriminator."""
    architectures = config.get("architectures")
    return isinstance(architectures, list) and ARCHITECTURES["generator"] in architectures


ELECTRA = ElectraFamily()
