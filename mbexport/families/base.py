"""What a model family is: the one object that says how a BERT relative differs from BERT.

A family owns everything that changes between architectures built from the same
transformer blocks: how its config becomes a spec (and which spec class: the spec says
which weights the encoder and its heads need), which config ``model_type`` /
``architectures`` and tensor names identify it, the prefix of its HF parameter names, its
tied weights, the heads it offers (``mbexport.heads.Head`` objects, BERT's being the
registry ``mbexport.heads.HEADS``), the graph step between embeddings and the first layer
(and its numpy twin), its TF variable names, and the transformers config class parity
builds. The rest of mbexport asks the family (``mbexport.families.family_of``) instead of
assuming BERT.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from collections.abc import Set as AbstractSet
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from mbexport.heads import architectures_of
from mbexport.heads.core import Head, TfRule, Weights
from mbexport.spec import BertSpec, canonical_name

if TYPE_CHECKING:
    from mbexport.export.graph import Graph

# A TF tensor that belongs to the checkpoint but not to the network being read (an ELECTRA
# discriminator's checkpoint also holds its generator): skipped on purpose, never an error.
OTHER_NETWORK = ("", "skip")


class ModelFamily:
    """One architecture family; subclasses set the class attributes and override the hooks."""

    name: ClassVar[str]  # "bert": the spec's ``family`` and the manifest's
    display: ClassVar[str]  # "BERT": in messages
    model_types: ClassVar[tuple[str, ...]]  # HF config ``model_type`` values it claims
    architecture_prefix: ClassVar[str]  # "Bert": HF ``architectures`` entries it claims
    hf_prefix: ClassVar[str]  # "bert.": the encoder's parameter prefix in HF head classes
    tf_scope: ClassVar[str]  # "bert/": the encoder's TF1 variable scope
    spec_class: ClassVar[type[BertSpec]]
    config_class: ClassVar[str]  # transformers config class, for the parity reference
    base_class: ClassVar[str]  # transformers class of the bare encoder
    heads: ClassVar[Mapping[str, Head]]  # by --head name; --head auto takes the highest priority
    # Output weights tied to another weight: dropped when equal to it, so the graph reads one matrix.
    tied: ClassVar[Mapping[str, str]] = {}
    # Top-level parameter groups of the encoder (prefixed with ``hf_prefix`` in HF head classes).
    encoder_parts: ClassVar[tuple[str, ...]] = ("embeddings.", "encoder.")

    def spec_from_config(self, config: Mapping[str, Any], heads: tuple[str, ...] = ("base",),
                         where: str = "config") -> BertSpec:
        """The config, type- and range-checked, as this family's spec."""
        return self.spec_class.from_config(config, heads=heads, where=where)

    def claims_config(self, config: Mapping[str, Any]) -> bool:
        """Whether an HF config names this family (``model_type``, else ``architectures``)."""
        model_type = config.get("model_type")
        if isinstance(model_type, str):
            return model_type in self.model_types
        architectures = config.get("architectures")
        return isinstance(architectures, list) and any(
            isinstance(a, str) and a.startswith(self.architecture_prefix) for a in architectures)

    def claims_names(self, names: Iterable[str]) -> bool:
        """Whether HF parameter names or TF variable names are this family's."""
        return any(n.startswith((self.hf_prefix, self.tf_scope)) for n in names)

    def canonical_name(self, name: str) -> str:
        """An HF parameter name in the neutral scheme: the encoder prefix dropped, old
        gamma/beta LayerNorm leaves renamed."""
        return canonical_name(name.removeprefix(self.hf_prefix))

    def drop_tied(self, weights: dict[str, np.ndarray]) -> None:
        """Remove output weights that are copies of the weight they are tied to."""
        for name, source in self.tied.items():
            copy, original = weights.get(name), weights.get(source)
            if copy is not None and original is not None and copy.shape == original.shape \
                    and np.array_equal(copy, original):
                del weights[name]

    def detect_heads(self, names: AbstractSet[str], config: Mapping[str, Any] | None = None) -> tuple[str, ...]:
        """The heads a checkpoint is, from its canonical weight names and its config's ``architectures``."""
        architectures = architectures_of(config)
        return tuple(h.name for h in self.heads.values() if h.detect(names, architectures))

    def project_embeddings(self, g: Graph, spec: BertSpec, w: Weights, x: str) -> str:
        """The graph between the embeddings' LayerNorm and the first layer (BERT: nothing)."""
        return x

    def project_embeddings_np(self, w: Weights, x: np.ndarray) -> np.ndarray:
        """``project_embeddings`` in float64 numpy, for parity's torch-free reference."""
        return x

    def tf_rule(self, name: str, config: Mapping[str, Any], num_layers: int,
                bert_rule: Callable[[str, int], TfRule | None]) -> TfRule | None:
        """How the TF variable ``name`` maps onto the neutral scheme, ``OTHER_NETWORK`` for a
        tensor of another network in the same checkpoint, None for an unknown name.
        ``bert_rule`` maps BERT's own TF1/TF2 names (sources/tf_checkpoint.py)."""
        return bert_rule(name, num_layers)

    def reference_options(self, head: Head, has_pooler: bool) -> dict[str, Any]:
        """Keyword arguments for the transformers reference class of ``head``."""
        return {}
