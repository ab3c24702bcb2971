"""Is a local copy what its catalogue name claims? The identity record of every export.

``convert seed_3 step_40k --from DIR`` names a published checkpoint and says where a copy
lives. Nothing published lets us check the weights themselves (no digests), so the copy is
checked against what the catalogue knows of the family: the architecture (layers, hidden
size, heads, intermediate size) and the vocabulary (its size, and for the uncased English
vocabulary its exact sha256). A mismatch is a one-line ``CatalogError`` before anything is
written. The step is checked where the checkpoint records it: a TF checkpoint's
``global_step``. HF directories (config.json + weights, as the MultiBERTs / EarlyBERTs hub
repos ship) record no step, so there it is listed as not checked.

``identity(...)`` returns the manifest's ``"identity"`` record: what was claimed, what was
checked and what could not be.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mbexport.catalog import GOOGLE_BERT, Source
from mbexport.errors import CatalogError
from mbexport.sources.tf_bundle import BundleReader
from mbexport.sources.tf_checkpoint import find_prefix, is_tf_checkpoint
from mbexport.spec import Checkpoint, sha256_files

__all__ = ["UNCASED_VOCAB_SHA256", "identity"]

# sha256 of bert-base-uncased's vocab.txt (30,522 lines), shared by every uncased English BERT
# Google released, MultiBERTs and EarlyBERTs included.
UNCASED_VOCAB_SHA256 = "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3"


@dataclass(frozen=True)
class _Known:
    """What the catalogue knows of a family's checkpoints."""

    layers: int
    hidden: int
    heads: int
    intermediate: int
    vocab_size: int
    vocab_sha256: str | None = None  # None: the size is checked, not the contents


_BASE_UNCASED = _Known(12, 768, 12, 3072, 30522, UNCASED_VOCAB_SHA256)
_LARGE_UNCASED = _Known(24, 1024, 16, 4096, 30522, UNCASED_VOCAB_SHA256)
_LARGE_CASED = _Known(24, 1024, 16, 4096, 28996)
_GOOGLE: dict[str, _Known] = {
    "bert-base-uncased": _BASE_UNCASED,
    "bert-base-cased": _Known(12, 768, 12, 3072, 28996),
    "bert-base-multilingual-uncased": _Known(12, 768, 12, 3072, 105879),
    "bert-base-multilingual-cased": _Known(12, 768, 12, 3072, 119547),
    "bert-base-chinese": _Known(12, 768, 12, 3072, 21128),
    **{name: _LARGE_UNCASED for name in GOOGLE_BERT if name.startswith("bert-large-uncased")},
    **{name: _LARGE_CASED for name in GOOGLE_BERT if name.startswith("bert-large-cased")},
}


def _known(source: Source) -> _Known | None:
    repo = source.repo_id or ""
    if repo.startswith(("google/multiberts-", "personads/earlyberts-")):
        return _BASE_UNCASED
    return _GOOGLE.get(repo.removeprefix("google-bert/")) if repo in GOOGLE_BERT.values() else None


def identity(source: Source, checkpoint: Checkpoint) -> dict[str, Any]:
    """Check a ``--from`` copy against its catalogue name (``CatalogError`` on a mismatch) and
    return the manifest's identity record."""
    if source.repo_id is None:
        return {"claimed": None, "label": source.label, "checked": [], "not_checked": []}
    if source.path is None:
        return {"claimed": source.label, "checked": [f"downloaded from {source.repo_id}"], "not_checked": []}
    known = _known(source)
    if known is None:
        return {"claimed": source.label, "checked": [],
                "not_checked": ["architecture (the catalogue does not know this repo)", "weights"]}
    spec = checkpoint.spec
    found = (spec.num_layers, spec.hidden_size, spec.num_heads, spec.intermediate_size)
    expected = (known.layers, known.hidden, known.heads, known.intermediate)
    if found != expected:
        raise CatalogError(
            f"--from {source.path}: {_dims(found)} is not {source.label} ({_dims(expected)}); give a copy of "
            "that checkpoint, or convert the directory itself (mbexport convert DIR --label NAME)")
    checked = ["architecture", "vocab size"]
    if spec.vocab_size != known.vocab_size:
        raise CatalogError(f"--from {source.path}: vocabulary of {spec.vocab_size:,} tokens, but {source.label} "
                           f"has {known.vocab_size:,}; give a copy of that checkpoint or use --label NAME")
    if known.vocab_sha256 is not None:
        digest = sha256_files([checkpoint.vocab_file])
        if digest != known.vocab_sha256:
            raise CatalogError(f"--from {source.path}: {checkpoint.vocab_file.name} (sha256 {digest[:12]}) is not "
                               f"the vocabulary of {source.label}; give a copy of that checkpoint or use --label NAME")
        checked.append("vocab sha256")
    not_checked = ["weights (no published digest)"]
    claimed_step = _claimed_step(source)
    if claimed_step is not None:
        recorded = _recorded_step(source.path)
        if recorded is None:
            not_checked.append("step (the checkpoint does not record it)")
        elif recorded != claimed_step:
            raise CatalogError(f"--from {source.path}: the checkpoint records global_step {recorded:,}, but "
                               f"{source.label} is step {claimed_step:,}; give a copy of that checkpoint")
        else:
            checked.append("global_step")
    return {"claimed": source.label, "checked": checked, "not_checked": not_checked}


def _claimed_step(source: Source) -> int | None:
    """The training step a catalogue source names (None: a final checkpoint or a release)."""
    if m := re.search(r"-step_(\d+)k$", source.repo_id or ""):
        return int(m[1]) * 1000
    early = (source.repo_id or "").startswith("personads/earlyberts-")
    if early and (m := re.fullmatch(r"step(\d+)", source.revision or "")):
        return int(m[1])
    return None


def _recorded_step(path: Path) -> int | None:
    """``global_step`` of a TF checkpoint; HF directories (config.json + weights) record no step."""
    if not is_tf_checkpoint(path):
        return None
    with BundleReader(find_prefix(path)) as reader:
        if "global_step" not in reader.entries:
            return None
        return int(reader.view("global_step"))


def _dims(dims: tuple[int, int, int, int]) -> str:
    layers, hidden, heads, intermediate = dims
    return f"{layers} layers x {hidden} hidden x {heads} heads, intermediate {intermediate}"
