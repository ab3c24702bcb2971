"""The neutral form every checkpoint source produces and every exporter consumes.

``Checkpoint`` = ``BertSpec`` (dimensions, activation, epsilon, which heads exist)
+ a flat ``dict[str, np.ndarray]`` of weights + tokenizer files + provenance.

Weight naming scheme (HF ``BertFor*`` names with the ``bert.`` prefix removed,
linear weights in PyTorch layout ``[out_features, in_features]``, LayerNorm as
``weight``/``bias``)::

    embeddings.{word,position,token_type}_embeddings.weight
    embeddings.LayerNorm.{weight,bias}
    encoder.layer.{i}.attention.self.{query,key,value}.{weight,bias}
    encoder.layer.{i}.attention.output.dense.{weight,bias}
    encoder.layer.{i}.attention.output.LayerNorm.{weight,bias}
    encoder.layer.{i}.intermediate.dense.{weight,bias}
    encoder.layer.{i}.output.dense.{weight,bias}
    encoder.layer.{i}.output.LayerNorm.{weight,bias}
    pooler.dense.{weight,bias}                                  (optional)
    cls.predictions.transform.dense.{weight,bias}               (pretraining / MLM)
    cls.predictions.transform.LayerNorm.{weight,bias}
    cls.predictions.bias                                        (decoder tied to word embeddings)
    cls.seq_relationship.{weight,bias}                          (NSP)
    qa_outputs.{weight,bias}                                    (question answering, [2, H])
    classifier.{weight,bias}                                    (sequence or token classification [L, H],
                                                                 multiple choice [1, H])

Sources translate their own names into this scheme with ``canonical_name``. The heads' weights
(and which heads exist) are the head registry's (``mbexport.heads``); this module asks it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from mbexport import jsonfiles
from mbexport.errors import CheckpointFormatError, ShapeError
from mbexport.heads import HEADS, head_shapes, optional_shapes
from mbexport.semantics import DEFAULT, EmbeddingSemantics

# Activations the exporter can emit; names as in HF configs.
ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "relu")


# Bounds on config values, so a hostile or mistyped config is refused before it sizes anything
# (the expected-weights table holds 16 entries per layer). Real BERTs sit far inside them:
# BERT-large has 24 layers, hidden 1024, intermediate 4096, 512 positions; the largest
# WordPiece vocabularies (multilingual BERT) hold ~120k tokens.
MAX_LAYERS = 256
MAX_HIDDEN = 16384
MAX_INTERMEDIATE = 4 * MAX_HIDDEN
MAX_VOCAB = 1 << 21
MAX_POSITIONS = 1 << 16
MAX_TYPE_VOCAB = 1024  # BERT uses 2; a few variants 16
MAX_LABELS = 1 << 16
MIN_VOCAB = 2  # [PAD] and at least one real token (parity draws ids from 1..vocab_size-1)

# HF BertConfig options that change the forward pass in ways mbexport does not build:
# option -> the only value mbexport implements (absent means that value).
UNSUPPORTED_OPTIONS: dict[str, Any] = {
    "position_embedding_type": "absolute",  # relative_key(_query) add distance embeddings to attention
    "is_decoder": False,  # a causal attention mask
    "add_cross_attention": False,  # cross-attention layers over an encoder's states
    "is_encoder_decoder": False,
    "pruned_heads": {},  # layers with fewer attention heads than the config says
}


def is_int(value: Any) -> bool:
    """A JSON/pickle integer proper: ``True`` is an int to Python, never a size to us."""
    return isinstance(value, int) and not isinstance(value, bool)


def _config_int(config: Mapping[str, Any], key: str, low: int, high: int, where: str,
                default: int | None = None) -> int:
    """A whole number in [low, high]: an int, or a float with no fraction (never a bool or string)."""
    value = config.get(key, default)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not is_int(value) or not low <= value <= high:
        raise CheckpointFormatError(f"{where}: {key} is {value!r:.40}; it must be a whole number from {low} "
                                    f"to {high}, fix the config")
    return value


def _config_eps(config: Mapping[str, Any], where: str) -> float:
    value = config.get("layer_norm_eps", 1e-12)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        raise CheckpointFormatError(f"{where}: layer_norm_eps is {value!r:.40}; it must be a number between "
                                    "0 and 1 (BERT uses 1e-12), fix the config")
    return float(value)


def _config_labels(config: Mapping[str, Any], where: str) -> int:
    """The label count: ``id2label``'s (keys 0..n-1) when present, else ``num_labels``; both must agree."""
    id2label = config.get("id2label")
    if id2label is None:
        return _config_int(config, "num_labels", 1, MAX_LABELS, where, 2)
    try:
        keys = sorted(int(k) for k in id2label) if isinstance(id2label, Mapping) else None
    except (TypeError, ValueError):
        keys = None
    if keys is None or keys != list(range(len(keys))) or not 1 <= len(keys) <= MAX_LABELS:
        raise CheckpointFormatError(f"{where}: id2label must map the ids 0..n-1 (n from 1 to {MAX_LABELS}) to label "
                                    "names; fix the config")
    if "num_labels" in config and _config_int(config, "num_labels", 1, MAX_LABELS, where) != len(keys):
        raise CheckpointFormatError(f"{where}: num_labels {config['num_labels']} disagrees with the {len(keys)} "
                                    "labels of id2label; remove one of them or make them agree")
    return len(keys)


def _check_options(config: Mapping[str, Any], where: str) -> None:
    """Refuse the architecture options mbexport would silently build wrong."""
    for key, supported in UNSUPPORTED_OPTIONS.items():
        value = config.get(key)
        if value and value != supported:  # false, empty and absent all mean the default
            raise CheckpointFormatError(f"{where}: {key} is {value!r:.60}; mbexport builds only "
                                        f"{key}={supported!r} BERTs, so this model cannot be converted")


@dataclass(frozen=True)
class BertSpec:
    """Shape and behaviour of a BERT encoder and the heads present in its weights (other families
    subclass it: mbexport/families/)."""

    family: ClassVar[str] = "bert"
    num_layers: int
    hidden_size: int
    num_heads: int
    intermediate_size: int
    vocab_size: int
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-12
    num_labels: int = 2
    heads: tuple[str, ...] = ("base",)

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def embedding_width(self) -> int:
        """Width of the embedding tables (BERT: the hidden size; ELECTRA may factorize them)."""
        return self.hidden_size

    @classmethod
    def from_config(cls, config: Mapping[str, Any], heads: tuple[str, ...] = ("base",),
                    where: str = "config") -> BertSpec:
        """Read an HF ``config.json`` or a Google ``bert_config.json`` (same keys), every value
        type- and range-checked; ``where`` names the file in errors."""
        missing = [k for k in ("num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size",
                               "vocab_size") if k not in config]
        if missing:
            raise CheckpointFormatError(
                f"{where} is missing {missing[0]!r}: a BERT config needs num_hidden_layers, hidden_size, "
                "num_attention_heads, intermediate_size and vocab_size"
            )
        _check_options(config, where)
        hidden = _config_int(config, "hidden_size", 1, MAX_HIDDEN, where)
        spec = cls(
            num_layers=_config_int(config, "num_hidden_layers", 1, MAX_LAYERS, where),
            hidden_size=hidden,
            num_heads=_config_int(config, "num_attention_heads", 1, hidden, where),
            intermediate_size=_config_int(config, "intermediate_size", 1, MAX_INTERMEDIATE, where),
            vocab_size=_config_int(config, "vocab_size", MIN_VOCAB, MAX_VOCAB, where),
            max_position_embeddings=_config_int(config, "max_position_embeddings", 1, MAX_POSITIONS, where, 512),
            type_vocab_size=_config_int(config, "type_vocab_size", 1, MAX_TYPE_VOCAB, where, 2),
            hidden_act=config.get("hidden_act", "gelu"),
            layer_norm_eps=_config_eps(config, where),
            num_labels=_config_labels(config, where),
            heads=heads,
        )
        spec.validate(where)
        return spec

    def validate(self, where: str = "config") -> None:
        if self.hidden_size % self.num_heads:
            raise CheckpointFormatError(
                f"{where}: hidden_size {self.hidden_size} is not divisible by num_attention_heads {self.num_heads}"
            )
        if not isinstance(self.hidden_act, str) or self.hidden_act not in ACTIVATIONS:
            raise CheckpointFormatError(
                f"{where}: hidden_act {self.hidden_act!r:.40} is not supported; supported: {', '.join(ACTIVATIONS)}"
            )

    def to_hf_config(self, source_config: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """An HF ``config.json`` for this model (written into every export); a classifier keeps
        ``source_config``'s ``id2label`` / ``label2id``, so pipelines show its real labels."""
        config: dict[str, Any] = {
            "architectures": [HEADS[h].architecture for h in self.heads if h != "base"] or ["BertModel"],
            "model_type": "bert",
            "hidden_size": self.hidden_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "intermediate_size": self.intermediate_size,
            "vocab_size": self.vocab_size,
            "max_position_embeddings": self.max_position_embeddings,
            "type_vocab_size": self.type_vocab_size,
            "hidden_act": self.hidden_act,
            "layer_norm_eps": self.layer_norm_eps,
            "hidden_dropout_prob": 0.1,
            "attention_probs_dropout_prob": 0.1,
            "initializer_range": 0.02,
            "pad_token_id": 0,
            "position_embedding_type": "absolute",
        }
        if any(HEADS[h].uses_labels for h in self.heads):
            config["num_labels"] = self.num_labels
            config.update(_labels(source_config or {}, self.num_labels))
        return config

    def encoder_shapes(self) -> dict[str, tuple[int, ...]]:
        """Shape of every canonical weight of the embeddings and the layers."""
        h, i, e = self.hidden_size, self.intermediate_size, self.embedding_width
        shapes: dict[str, tuple[int, ...]] = {
            "embeddings.word_embeddings.weight": (self.vocab_size, e),
            "embeddings.position_embeddings.weight": (self.max_position_embeddings, e),
            "embeddings.token_type_embeddings.weight": (self.type_vocab_size, e),
            "embeddings.LayerNorm.weight": (e,),
            "embeddings.LayerNorm.bias": (e,),
        }
        for n in range(self.num_layers):
            p = f"encoder.layer.{n}."
            for proj in ("query", "key", "value"):
                shapes[f"{p}attention.self.{proj}.weight"] = (h, h)
                shapes[f"{p}attention.self.{proj}.bias"] = (h,)
            shapes[f"{p}attention.output.dense.weight"] = (h, h)
            shapes[f"{p}attention.output.dense.bias"] = (h,)
            shapes[f"{p}attention.output.LayerNorm.weight"] = (h,)
            shapes[f"{p}attention.output.LayerNorm.bias"] = (h,)
            shapes[f"{p}intermediate.dense.weight"] = (i, h)
            shapes[f"{p}intermediate.dense.bias"] = (i,)
            shapes[f"{p}output.dense.weight"] = (h, i)
            shapes[f"{p}output.dense.bias"] = (h,)
            shapes[f"{p}output.LayerNorm.weight"] = (h,)
            shapes[f"{p}output.LayerNorm.bias"] = (h,)
        return shapes

    def expected_shapes(self) -> dict[str, tuple[int, ...]]:
        """Shape of every canonical weight this spec needs (heads included)."""
        return {**self.encoder_shapes(), **head_shapes(self, self.heads)}

    def optional_shapes(self) -> dict[str, tuple[int, ...]]:
        """Weights some head reads when present (an untied MLM decoder), with their shapes."""
        return optional_shapes(self)

    def known_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every canonical weight a checkpoint of this spec may carry: the encoder, the pooler and
        every head mbexport knows, whichever heads this spec has (its own heads' shapes win where
        heads share a name, as classifiers do)."""
        h = self.hidden_size
        return {**head_shapes(self, HEADS), **self.optional_shapes(), **self.expected_shapes(),
                "pooler.dense.weight": (h, h), "pooler.dense.bias": (h,)}


def _labels(config: Mapping[str, Any], num_labels: int) -> dict[str, Any]:
    """``id2label`` / ``label2id`` of an HF config when they name exactly ``num_labels`` classes."""
    id2label = config.get("id2label")
    try:
        labels = {int(k): str(v) for k, v in id2label.items()} if isinstance(id2label, Mapping) else {}
    except (TypeError, ValueError):
        return {}
    if sorted(labels) != list(range(num_labels)):
        return {}
    return {"id2label": {str(i): labels[i] for i in range(num_labels)},
            "label2id": {labels[i]: i for i in range(num_labels)}}


_RENAMES = (
    (re.compile(r"^bert\."), ""),
    (re.compile(r"\.gamma$"), ".weight"),
    (re.compile(r"\.beta$"), ".bias"),
)


def canonical_name(name: str) -> str:
    """Map an HF/PyTorch parameter name (any ``BertFor*`` class, old gamma/beta LayerNorm
    names included) onto the neutral scheme."""
    for pattern, replacement in _RENAMES:
        name = pattern.sub(replacement, name)
    return name


@dataclass
class Checkpoint:
    """A checkpoint in neutral form, whatever format it came from."""

    spec: BertSpec
    weights: dict[str, np.ndarray]
    vocab_file: Path
    source: str  # what the user named: repo id, path, catalogue name
    revision: str | None = None
    weights_sha256: str = ""  # sha256 of the source weight file(s), for the manifest
    tokenizer_files: dict[str, Path] = field(default_factory=dict)  # extra files to carry (tokenizer_config.json, ...)
    config: dict[str, Any] = field(default_factory=dict)  # the original config, as read
    st_files: dict[str, Path] = field(default_factory=dict)  # sentence-transformers files, by relative name
    embedding: EmbeddingSemantics = DEFAULT  # what its sentence vectors mean (mbexport.semantics)

    def validate(self) -> None:
        """Check every weight the spec needs is present with the shape the config implies, that no
        weight goes unused (a silently dropped weight makes a wrong model that still passes parity)
        and that every weight is a finite float."""
        for name, shape in self.spec.expected_shapes().items():
            if name not in self.weights:
                raise ShapeError(
                    f"{self.source}: weight {name!r} is missing (the config implies shape {shape}); "
                    "is this a BERT checkpoint of the architecture its config describes?"
                )
            actual = tuple(self.weights[name].shape)
            if actual != shape:
                raise ShapeError(
                    f"{self.source}: weight {name!r} has shape {actual} but the config implies {shape}; "
                    "the config and weights come from different models"
                )
        known = self.spec.known_shapes()
        unused = sorted(set(self.weights) - set(known))
        if unused:
            raise CheckpointFormatError(
                f"{self.source}: {len(unused)} weight(s) that no part of a {self.spec.num_layers}-layer "
                f"{self.spec.family.upper()} uses: "
                f"{', '.join(unused[:3])}{', ...' if len(unused) > 3 else ''}; the config describes a different "
                "architecture (more layers? relative positions?) than the weights, fix it or use the right checkpoint")
        for name in ("pooler.dense.weight", "pooler.dense.bias", *self.spec.optional_shapes()):
            w = self.weights.get(name)
            if w is not None and tuple(w.shape) != known[name]:
                raise ShapeError(f"{self.source}: weight {name!r} has shape {tuple(w.shape)}, expected {known[name]}")
        for name, array in self.weights.items():
            if not np.issubdtype(array.dtype, np.floating):
                raise CheckpointFormatError(f"{self.source}: weight {name!r} has dtype {array.dtype}; a BERT weight "
                                            "must be floating point, the checkpoint is corrupt")
            if not np.isfinite(array).all():
                raise CheckpointFormatError(f"{self.source}: weight {name!r} holds NaN or Inf values; the checkpoint "
                                            "is corrupt or diverged, use another one")

    @property
    def has_pooler(self) -> bool:
        return "pooler.dense.weight" in self.weights


def sha256_files(paths: list[Path]) -> str:
    """One digest over several files, in the given order (sharded weights)."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                digest.update(chunk)
    return digest.hexdigest()


def read_json(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise CheckpointFormatError(f"{path} is missing: the checkpoint needs it next to its weights")
    return jsonfiles.read_object(path, CheckpointFormatError, "re-download or fix the file")
