"""Model families, one object each (``families/base.py`` says what a family owns).

``FAMILIES`` lists them in detection order; ``detect_family`` picks the one a checkpoint
belongs to, ``family_of`` the one a spec was read as. Adding a family is one module
with its ``ModelFamily`` subclass, listed here, plus its tests.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from mbexport.errors import CheckpointFormatError
from mbexport.families.base import OTHER_NETWORK, ModelFamily
from mbexport.families.bert import BERT
from mbexport.families.electra import ELECTRA
from mbexport.spec import BertSpec

__all__ = ["FAMILIES", "OTHER_NETWORK", "ModelFamily", "detect_family", "family_of", "head_names"]

FAMILIES: dict[str, ModelFamily] = {family.name: family for family in (BERT, ELECTRA)}


def family_of(spec: BertSpec) -> ModelFamily:
    """The family a spec belongs to (its class says which)."""
    return FAMILIES[spec.family]


def detect_family(config: Mapping[str, Any], names: Iterable[str], where: str) -> ModelFamily:
    """The family of a checkpoint: its config's ``model_type`` (or ``architectures``) when it
    names one, else its tensor names, else BERT (Google's bert_config.json names none)."""
    model_type = config.get("model_type")
    for family in FAMILIES.values():
        if family.claims_config(config):
            return family
    if model_type is not None:
        displays = " and ".join(family.display for family in reversed(FAMILIES.values()))
        types = ", ".join(t for family in FAMILIES.values() for t in family.model_types)
        raise CheckpointFormatError(f"{where}: model_type is {model_type!r:.40}; mbexport converts {displays} models "
                                    f"only (model_type {types})")
    names = list(names)
    return next((family for family in FAMILIES.values() if family is not BERT and family.claims_names(names)), BERT)


def head_names() -> tuple[str, ...]:
    """Every head some family offers, in first-seen order (the CLI's ``--head`` choices, ``auto`` aside)."""
    return tuple(dict.fromkeys(name for family in FAMILIES.values() for name in family.heads))
