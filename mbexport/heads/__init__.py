"""The head registry: every output head mbexport builds, one object each (``core.Head``).

Everything else iterates ``HEADS`` instead of naming a head: the spec (weights, shapes, the
exported config.json), detection in the sources, TF variable names, graph building, both parity
references and the CLI's ``--head`` choices. Adding a head is writing one module here (a
``Head`` subclass and its instance), listing the instance below, and its test.

Layout: ``core`` (the base class and shared graph/numpy parts), then one module per head.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from collections.abc import Set as AbstractSet
from typing import TYPE_CHECKING, Any

from mbexport.errors import ExportError
from mbexport.heads.base import BASE
from mbexport.heads.classification import CLASSIFICATION
from mbexport.heads.core import CLASSIFIER_ARCHITECTURES, Head, Shapes, TfRule
from mbexport.heads.masked_lm import MASKED_LM
from mbexport.heads.multiple_choice import MULTIPLE_CHOICE
from mbexport.heads.pretraining import PRETRAINING
from mbexport.heads.qa import QA
from mbexport.heads.token_classification import TOKEN_CLASSIFICATION

if TYPE_CHECKING:
    from mbexport.spec import BertSpec, Checkpoint

__all__ = ["HEADS", "Head", "available_heads", "choose_head", "detect_heads", "head_shapes", "tf_rules"]

HEADS: dict[str, Head] = {h.name: h for h in (BASE, PRETRAINING, QA, CLASSIFICATION, TOKEN_CLASSIFICATION,
                                                MASKED_LM, MULTIPLE_CHOICE)}


def architectures_of(config: Mapping[str, Any] | None) -> frozenset[str]:
    """The class names a config's ``architectures`` lists (anything malformed there counts as none)."""
    value = (config or {}).get("architectures")
    return frozenset(a for a in value if isinstance(a, str)) if isinstance(value, list) else frozenset()


def detect_heads(names: AbstractSet[str], config: Mapping[str, Any] | None = None) -> tuple[str, ...]:
    """The heads a checkpoint is, from its canonical weight names and its config (``base`` always)."""
    architectures = architectures_of(config)
    return tuple(h.name for h in HEADS.values() if h.detect(names, architectures))


def available_heads(heads: Iterable[str], registry: Mapping[str, Head] = HEADS) -> tuple[str, ...]:
    """``heads`` and the heads their checkpoints also carry (``masked-lm`` within ``pretraining``);
    ``registry`` is the checkpoint's family's heads (mbexport/families/)."""
    own = set(heads)
    return tuple(h.name for h in registry.values() if h.name in own or own.intersection(h.within))


def head_shapes(spec: BertSpec, heads: Iterable[str]) -> Shapes:
    shapes: Shapes = {}
    for name in heads:
        shapes.update(HEADS[name].weights(spec))
    return shapes


def optional_shapes(spec: BertSpec) -> Shapes:
    """Weights some head reads when present, whichever heads a spec has."""
    shapes: Shapes = {}
    for head in HEADS.values():
        shapes.update(head.optional_weights(spec))
    return shapes


def tf_rules(version: int) -> dict[str, TfRule]:
    """Every head's TF1 (``version`` 1) or TF2 Model Garden variable names -> canonical rule."""
    rules: dict[str, TfRule] = {}
    for head in HEADS.values():
        rules.update(head.tf1 if version == 1 else head.tf2)
    return rules


def _classifier_hint(checkpoint: Checkpoint, head: Head) -> str:
    """For a classifier head the weights have but the config's ``architectures`` gives to another."""
    if head.architecture not in CLASSIFIER_ARCHITECTURES or "classifier.weight" not in checkpoint.weights:
        return ""
    return (f"; its classifier is the config's architectures' (none named: a sequence classifier), add "
            f"\"{head.architecture}\" to architectures in its config.json if that is what it is")


def choose_head(checkpoint: Checkpoint, requested: str, registry: Mapping[str, Head] = HEADS) -> Head:
    """Resolve ``--head`` against what the checkpoint carries, with a clear error when it lacks it;
    ``registry`` is the checkpoint's family's heads (mbexport/families/)."""
    available = available_heads(checkpoint.spec.heads, registry)
    own = max((registry[h] for h in checkpoint.spec.heads), key=lambda h: h.priority).name
    if requested == "auto":
        requested = own
    head = registry.get(requested)
    if head is None:
        raise ExportError(f"unknown head {requested!r}; choose one of: auto, {', '.join(registry)}")
    if requested not in available:
        base = " or --head base" if own != "base" else ""
        raise ExportError(f"{checkpoint.source} has no {requested} head (it carries: {', '.join(available)}); "
                          f"use --head {own}{base}{_classifier_hint(checkpoint, head)}")
    if head.needs_pooler and not checkpoint.has_pooler:
        raise ExportError(f"{checkpoint.source} has no pooler weights, which the {requested} head needs")
    return head
