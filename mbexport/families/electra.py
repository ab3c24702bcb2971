"""ELECTRA (Clark et al. 2020): BERT's blocks and WordPiece vocabulary, with three differences.

- The embedding tables may be narrower than the layers (``embedding_size``, 128 in
  ELECTRA-small): an ``embeddings_project`` linear maps them to ``hidden_size``.
- No pooler: sentence heads read the first token's hidden state directly.
- Its own heads: the discriminator (``ElectraForPreTraining``: replaced-token logits per
  token), the generator (``ElectraForMaskedLM``: vocabulary logits through a LayerNorm of
  width ``embedding_size`` and an output layer tied to the word embeddings), sequence
  classification (``ElectraForSequenceClassification``: dense, GELU, out_proj on [CLS]) and
  the fine-tuned heads of ``electra_finetuned`` (question answering, token classification,
  multiple choice).

Canonical names are transformers' with the ``electra.`` prefix removed::

    embeddings.*, embeddings_project.{weight,bias}, encoder.layer.{i}.*       (as BERT's)
    discriminator_predictions.{dense,dense_prediction}.{weight,bias}          (discriminator)
    generator_predictions.dense.{weight,bias}, generator_predictions.LayerNorm.{weight,bias},
    generator_lm_head.bias (+ generator_lm_head.weight when untied)           (generator)
    classifier.dense.{weight,bias}, classifier.out_proj.{weight,bias}        (classification)
    qa_outputs.{weight,bias}                                                  (qa)
    classifier.{weight,bias}                           (token-classification [L, H], multiple-choice [1, H])
    sequence_summary.summary.{weight,bias}             (multiple-choice, when summary_use_proj)

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
from collections.abc import Callable, Iterable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, cast

import numpy as np

from mbexport.export.encoder import activation, layer_norm
from mbexport.families.base import OTHER_NETWORK, ModelFamily
from mbexport.families.electra_finetuned import FINETUNED, SequenceSummary, refuse_unnamed
from mbexport.heads import architectures_of
from mbexport.heads.core import (
    Feeds,
    Head,
    Shapes,
    TfRule,
    Weights,
    linear_shapes,
    np_activation,
    np_dense,
    np_layer_norm,
    tf_linear,
)
from mbexport.spec import MAX_HIDDEN, BertSpec, _config_int, _labels

if TYPE_CHECKING:
    from mbexport.export.graph import Graph

ARCHITECTURES = {
    "base": "ElectraModel",
    "discriminator": "ElectraForPreTraining",
    "generator": "ElectraForMaskedLM",
    "classification": "ElectraForSequenceClassification",
    **{head.name: head.architecture for head in FINETUNED},
}
DEFAULT_EMBEDDING_SIZE = 128  # transformers' ElectraConfig default, used when a config omits it


@dataclass(frozen=True)
class ElectraSpec(BertSpec):
    """A BERT spec plus the width of the embedding tables and the multiple-choice summary."""

    family: ClassVar[str] = "electra"
    embedding_size: int = DEFAULT_EMBEDDING_SIZE
    summary: SequenceSummary = dataclasses.field(default_factory=SequenceSummary)

    @property
    def embedding_width(self) -> int:
        return self.embedding_size

    @classmethod
    def from_config(cls, config: Mapping[str, Any], heads: tuple[str, ...] = ("base",),
                    where: str = "config") -> ElectraSpec:
        spec = cast(ElectraSpec, super().from_config(config, heads, where))
        embedding_size = _config_int(config, "embedding_size", 1, MAX_HIDDEN, where, DEFAULT_EMBEDDING_SIZE)
        summary = SequenceSummary.from_config(config, where)
        return dataclasses.replace(spec, embedding_size=embedding_size, summary=summary)

    def encoder_shapes(self) -> dict[str, tuple[int, ...]]:
        shapes = super().encoder_shapes()
        if self.embedding_size != self.hidden_size:
            shapes["embeddings_project.weight"] = (self.hidden_size, self.embedding_size)
            shapes["embeddings_project.bias"] = (self.hidden_size,)
        return shapes

    def expected_shapes(self) -> dict[str, tuple[int, ...]]:
        shapes = self.encoder_shapes()
        for name in self.heads:
            shapes.update(HEADS[name].weights(self))
        return shapes

    def optional_shapes(self) -> dict[str, tuple[int, ...]]:
        return {name: shape for head in HEADS.values() for name, shape in head.optional_weights(self).items()}

    def known_shapes(self) -> dict[str, tuple[int, ...]]:
        every_head = dataclasses.replace(self, heads=tuple(HEADS)).expected_shapes()
        return {**every_head, **self.optional_shapes(), **self.expected_shapes()}

    def to_hf_config(self, source_config: Mapping[str, Any] | None = None) -> dict[str, Any]:
        config = BertSpec.to_hf_config(dataclasses.replace(self, heads=("base",)))
        config.update(model_type="electra", embedding_size=self.embedding_size,
                      architectures=[HEADS[h].architecture for h in self.heads if h != "base"] or ["ElectraModel"])
        if source_config is None:  # the parity reference: the summary this spec builds
            config.update(summary_type="first", summary_use_proj=self.summary.use_proj,
                          summary_activation=self.summary.activation or "")  # transformers 5 types it str
        else:  # an export's config.json: the source's summary settings as it gave them
            config.update({key: value for key, value in source_config.items() if key.startswith("summary_")})
        if any(HEADS[h].uses_labels for h in self.heads):
            config["num_labels"] = self.num_labels
            config.update(_labels(source_config or {}, self.num_labels))
        return config


# --- heads ---------------------------------------------------------------------------------------

DISC = "discriminator_predictions."
GEN = "generator_predictions."
LM_BIAS, LM_WEIGHT = "generator_lm_head.bias", "generator_lm_head.weight"


class ElectraBase(Head):
    """ElectraModel's one output (no pooler)."""

    def detect(self, names: AbstractSet[str], architectures: AbstractSet[str]) -> bool:
        return True

    def emit(self, g: Graph, spec: BertSpec, w: Weights, hidden: str, inputs: list[str]) -> list[str]:
        return [hidden]

    def forward(self, spec: BertSpec, w: Weights, encoded: dict[str, np.ndarray],
                feeds: Feeds) -> dict[str, np.ndarray]:
        return {"last_hidden_state": encoded["last_hidden_state"]}


class Discriminator(Head):
    """Replaced-token logits, one per token::

        hidden [B, S, H] --dense, act--> [B, S, H] --dense_prediction--> [B, S, 1] --Squeeze--> logits [B, S]
    """

    def weights(self, spec: BertSpec) -> Shapes:
        h = spec.hidden_size
        return {**linear_shapes(DISC + "dense", h, h), **linear_shapes(DISC + "dense_prediction", 1, h)}

    def detect(self, names: AbstractSet[str], architectures: AbstractSet[str]) -> bool:
        return DISC + "dense_prediction.weight" in names

    def emit(self, g: Graph, spec: BertSpec, w: Weights, hidden: str, inputs: list[str]) -> list[str]:
        x = g.linear(hidden, w[DISC + "dense.weight"], None, DISC + "dense")
        x = activation(g, x, w[DISC + "dense.bias"], spec.hidden_act, DISC + "dense", fused=False)
        x = g.linear(x, w[DISC + "dense_prediction.weight"], w[DISC + "dense_prediction.bias"],
                     DISC + "dense_prediction")
        return [g.op("Squeeze", [x, g.const("axis_last", [-1], np.int64)], DISC + "Squeeze")]

    def forward(self, spec: BertSpec, w: Weights, encoded: dict[str, np.ndarray],
                feeds: Feeds) -> dict[str, np.ndarray]:
        hidden = np_activation(np_dense(encoded["last_hidden_state"], w, DISC + "dense"), spec.hidden_act)
        return {"logits": np_dense(hidden, w, DISC + "dense_prediction")[..., 0]}


class Generator(Head):
    """Vocabulary logits: dense to the embedding width, GELU (always, as transformers and Google's
    code build it), LayerNorm, then the output layer, tied to the word embeddings (read through a
    Transpose, stored once) unless the checkpoint carries its own ``generator_lm_head.weight``."""

    def weights(self, spec: BertSpec) -> Shapes:
        e = spec.embedding_width
        return {**linear_shapes(GEN + "dense", e, spec.hidden_size), GEN + "LayerNorm.weight": (e,),
                GEN + "LayerNorm.bias": (e,), LM_BIAS: (spec.vocab_size,)}

    def optional_weights(self, spec: BertSpec) -> Shapes:
        return {LM_WEIGHT: (spec.vocab_size, spec.embedding_width)}

    def detect(self, names: AbstractSet[str], architectures: AbstractSet[str]) -> bool:
        return GEN + "dense.weight" in names and LM_BIAS in names

    def emit(self, g: Graph, spec: BertSpec, w: Weights, hidden: str, inputs: list[str]) -> list[str]:
        x = g.linear(hidden, w[GEN + "dense.weight"], None, GEN + "dense")
        x = activation(g, x, w[GEN + "dense.bias"], "gelu", GEN + "dense", fused=False)
        x = layer_norm(g, x, w, GEN + "LayerNorm", spec.layer_norm_eps)
        name = LM_WEIGHT if LM_WEIGHT in w else "embeddings.word_embeddings.weight"
        table = g.op("Transpose", [g.weight(name, w[name])], "generator_lm_head/Transpose", perm=[1, 0])
        logits = g.op("MatMul", [x, table], "generator_lm_head/MatMul")
        return [g.op("Add", [logits, g.weight(LM_BIAS, w[LM_BIAS])], "generator_lm_head/Add")]

    def forward(self, spec: BertSpec, w: Weights, encoded: dict[str, np.ndarray],
                feeds: Feeds) -> dict[str, np.ndarray]:
        x = np_activation(np_dense(encoded["last_hidden_state"], w, GEN + "dense"), "gelu")
        x = np_layer_norm(x, w, GEN + "LayerNorm", spec.layer_norm_eps)
        table = w[LM_WEIGHT] if LM_WEIGHT in w else w["embeddings.word_embeddings.weight"]
        return {"logits": x @ table.T + w[LM_BIAS]}


class Classification(Head):
    """Sequence logits from the first token: dense, GELU, out_proj (no tanh pooler)."""

    def weights(self, spec: BertSpec) -> Shapes:
        h = spec.hidden_size
        return {**linear_shapes("classifier.dense", h, h), **linear_shapes("classifier.out_proj", spec.num_labels, h)}

    def detect(self, names: AbstractSet[str], architectures: AbstractSet[str]) -> bool:
        return "classifier.out_proj.weight" in names

    def emit(self, g: Graph, spec: BertSpec, w: Weights, hidden: str, inputs: list[str]) -> list[str]:
        first = g.op("Gather", [hidden, g.const("index0", 0, np.int64)], "classifier/Gather", axis=1)
        x = g.linear(first, w["classifier.dense.weight"], None, "classifier.dense")
        x = activation(g, x, w["classifier.dense.bias"], "gelu", "classifier.dense", fused=False)
        return [g.linear(x, w["classifier.out_proj.weight"], w["classifier.out_proj.bias"], "classifier.out_proj")]

    def forward(self, spec: BertSpec, w: Weights, encoded: dict[str, np.ndarray],
                feeds: Feeds) -> dict[str, np.ndarray]:
        first = np_activation(np_dense(encoded["last_hidden_state"][:, 0], w, "classifier.dense"), "gelu")
        return {"logits": np_dense(first, w, "classifier.out_proj")}


# google-research/electra run_pretraining.py: the discriminator's output layer is the scope's
# second unnamed tf.layers.dense ("dense_1"); the generator's bias is a plain variable.
HEADS: dict[str, Head] = {h.name: h for h in (
    ElectraBase("base", ARCHITECTURES["base"], {"last_hidden_state": ("batch", "sequence", "hidden")}, priority=0),
    Discriminator("discriminator", ARCHITECTURES["discriminator"], {"logits": ("batch", "sequence")}, priority=20,
                  tf1={**tf_linear("discriminator_predictions/dense", DISC + "dense"),
                       **tf_linear("discriminator_predictions/dense_1", DISC + "dense_prediction")}),
    Generator("generator", ARCHITECTURES["generator"], {"logits": ("batch", "sequence", "vocab")}, priority=10,
              tf1={**tf_linear("generator_predictions/dense", GEN + "dense"),
                   "generator_predictions/LayerNorm/gamma": (GEN + "LayerNorm.weight", "copy"),
                   "generator_predictions/LayerNorm/beta": (GEN + "LayerNorm.bias", "copy"),
                   "generator_predictions/output_bias": (LM_BIAS, "copy")}),
    Classification("classification", ARCHITECTURES["classification"], {"logits": ("batch", "labels")},
                   priority=40, uses_labels=True),
    *FINETUNED,
)}


# TF1 head variables -> (head, rule): a head of the other network is skipped.
_HEAD_TF1 = {tf_name: (head.name, rule) for head in HEADS.values() for tf_name, rule in head.tf1.items()}


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
    tied: ClassVar[Mapping[str, str]] = {"generator_lm_head.weight": "embeddings.word_embeddings.weight"}
    encoder_parts = ("embeddings.", "embeddings_project.", "encoder.")

    def claims_names(self, names: Iterable[str]) -> bool:
        """HF ``electra.*`` names, or TF1 names of either network or the discriminator's head."""
        return any(n.startswith(("electra.", "electra/", "generator/", "discriminator_predictions"))
                   for n in names)

    def detect_heads(self, names: AbstractSet[str], config: Mapping[str, Any] | None = None) -> tuple[str, ...]:
        """As any family's, refusing a ``classifier.weight`` whose head the config does not name."""
        heads = super().detect_heads(names, config)
        refuse_unnamed(names, heads)
        return heads

    def project_embeddings(self, g: Graph, spec: BertSpec, w: Weights, x: str) -> str:
        """``embeddings_project`` (embedding width -> hidden size) when the widths differ."""
        if "embeddings_project.weight" not in w:
            return x
        return g.linear(x, w["embeddings_project.weight"], w["embeddings_project.bias"], "embeddings_project")

    def project_embeddings_np(self, w: Weights, x: np.ndarray) -> np.ndarray:
        return np_dense(x, w, "embeddings_project") if "embeddings_project.weight" in w else x

    def tf_rule(self, name: str, config: Mapping[str, Any], num_layers: int,
                bert_rule: Callable[[str, int], TfRule | None]) -> TfRule | None:
        """The network the config describes (``generator_network``) maps through BERT's TF1 names
        under its own scope; the other network's tensors are ``OTHER_NETWORK``."""
        generator_net = generator_network(config)
        scope, other = ("generator/", "electra/") if generator_net else ("electra/", "generator/")
        project = tf_linear(scope + "embeddings_project", "embeddings_project")
        if name in project:
            return project[name]
        if name.startswith("electra/embeddings/"):  # shared by both networks
            return bert_rule("bert/" + name.removeprefix("electra/"), num_layers)
        if name.startswith(scope + "encoder/"):
            return bert_rule("bert/" + name.removeprefix(scope), num_layers)
        if name.startswith((other + "encoder/", other + "embeddings_project/")):
            return OTHER_NETWORK
        if name in _HEAD_TF1:
            head, rule = _HEAD_TF1[name]
            return rule if (head == "generator") == generator_net else OTHER_NETWORK
        return None


def generator_network(config: Mapping[str, Any]) -> bool:
    """Whether a config describes ELECTRA's generator (transformers publishes the generators'
    configs with ``architectures: ["ElectraForMaskedLM"]``) rather than its discriminator."""
    return ARCHITECTURES["generator"] in architectures_of(config)


ELECTRA = ElectraFamily()
