"""The checkpoint catalogue: names people type -> a ``Source`` (hub repo + revision, or a local path).

Families it knows, with the public repositories behind them:

- MultiBERTs (Sellam et al., 2021), all BERT-base uncased, ``BertForPreTraining`` weights:
  final checkpoints for seeds 0-24 in ``google/multiberts-seed_{N}``; for seeds 0-4, 28
  intermediate checkpoints in ``google/multiberts-seed_{N}-step_{K}k`` (20k-200k every 20k,
  300k-2000k every 100k) plus the initialisation, ``step_0k``, which the hub also carries.
- EarlyBERTs (Mueller-Eberstein et al., 2023): ``personads/earlyberts-seed{N}`` for seeds
  0-4, one git revision ``step{S}`` per checkpoint, 31 of them (10, 100-1000 by 100,
  2000-20000 by 1000, 40000).
- Google's original BERT releases by release name (``bert-base-uncased`` ...), now under
  the ``google-bert`` organisation on the hub.

Spellings accepted (case-insensitive), with an optional separate ``step`` argument::

    seed_1 step_200k | seed_1 200k | seed_1 step_200000 | seed_1 (final)
    multiberts-seed_1-step_200k | google/multiberts-seed_1-step_200k | google/multiberts-seed_1
    earlyberts-seed1 step7000 | personads/earlyberts-seed1 (+ step or revision "step7000")
    bert-base-uncased | google-bert/bert-base-uncased
    any-org/any-name (+ revision)
    an existing directory, file, or TF checkpoint prefix (``x/model.ckpt`` with ``.index``)

Anything else, or a seed/step that was never published, is a ``CatalogError`` whose one-line
message says what exists.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from mbexport import registry
from mbexport.errors import CatalogError, SourceNotFoundError
from mbexport.layout import CONFIG, MANIFEST
from mbexport.sources import registry as source_formats
from mbexport.sources.hub import hub_cache_dir

__all__ = [
    "EARLYBERTS_SEEDS",
    "EARLYBERTS_STEPS",
    "GOOGLE_BERT",
    "MULTIBERTS_INIT_STEP",
    "MULTIBERTS_INTERMEDIATE_SEEDS",
    "MULTIBERTS_SEEDS",
    "MULTIBERTS_STEPS",
    "CatalogEntry",
    "LocalStatus",
    "Source",
    "entries",
    "local_status",
    "resolve",
    "training_steps",
]

MULTIBERTS_SEEDS = tuple(range(25))
MULTIBERTS_INTERMEDIATE_SEEDS = tuple(range(5))
# The 28 intermediate checkpoints per seed named on the model cards, in thousands of steps.
MULTIBERTS_STEPS = (*range(20, 201, 20), *range(300, 2001, 100))
# The initialisation, published next to them as google/multiberts-seed_{N}-step_0k.
MULTIBERTS_INIT_STEP = 0

EARLYBERTS_SEEDS = tuple(range(5))
EARLYBERTS_STEPS = (10, *range(100, 1001, 100), *range(2000, 20001, 1000), 40000)

# Release name -> hub repository. Google's originals, plus the SQuAD fine-tunes of the
# whole-word-masking models that ship beside them.
GOOGLE_BERT = {
    name: f"google-bert/{name}"
    for name in (
        "bert-base-uncased",
        "bert-base-cased",
        "bert-large-uncased",
        "bert-large-cased",
        "bert-base-multilingual-uncased",
        "bert-base-multilingual-cased",
        "bert-base-chinese",
        "bert-large-uncased-whole-word-masking",
        "bert-large-cased-whole-word-masking",
        "bert-large-uncased-whole-word-masking-finetuned-squad",
        "bert-large-cased-whole-word-masking-finetuned-squad",
    )
}


@dataclass(frozen=True)
class Source:
    """Where a checkpoint lives: a hub repo (+ revision), a local path, or both (``--from``)."""

    label: str  # for display, e.g. "MultiBERTs seed_1 step_200k"
    repo_id: str | None = None  # e.g. google/multiberts-seed_1-step_200k
    revision: str | None = None  # branch, tag or commit; None = the default branch
    path: Path | None = None  # local HF directory or TF checkpoint dir/prefix; wins over repo_id

    @property
    def slug(self) -> str:
        """A file-system-safe name for this checkpoint: its label, lowercased, runs of other
        characters as ``-`` (``MultiBERTs seed_1 step_200k`` -> ``multiberts-seed_1-step_200k``).
        Exports without ``--out`` live under ``<export home>/<slug>/``."""
        return re.sub(r"[^A-Za-z0-9_.-]+", "-", self.label).strip("-").lower() or "checkpoint"


@dataclass(frozen=True)
class CatalogEntry:
    """One published checkpoint, as ``mbexport list`` shows it."""

    family: str  # "MultiBERTs", "MultiBERTs intermediate", "MultiBERTs init", "EarlyBERTs", "Google BERT"
    name: str  # the canonical spelling: "seed_1 step_200k", "earlyberts-seed1 step7000", ...
    repo_id: str
    revision: str | None = None
    seed: int | None = None  # MultiBERTs / EarlyBERTs seed; None for Google BERT
    step: int | None = None  # training steps of an intermediate checkpoint; None for a final one

    @property
    def source(self) -> Source:
        return _resolve_name(self.name, None, self.revision if self.family != "EarlyBERTs" else None)


@dataclass(frozen=True)
class LocalStatus:
    """What of an entry is on this machine."""

    cached: bool  # config and weights are in the HF cache
    export_dir: Path | None  # an export directory holding a manifest, if any (the first of export_dirs)
    export_dirs: tuple[Path, ...] = ()  # every one: under the export root, and recorded in the registry

    @property
    def exported(self) -> bool:
        return self.export_dir is not None


# ---------------------------------------------------------------------------------------------
# Names


def _k(step: int) -> str:
    return f"{step}k"


def _steps_summary() -> str:
    return f"{_k(MULTIBERTS_INIT_STEP)} (init), " + ", ".join(_k(s) for s in MULTIBERTS_STEPS)


def _seeds_message() -> str:
    return (
        f"MultiBERTs seeds are 0–{MULTIBERTS_SEEDS[-1]}; intermediate steps exist only for seeds "
        f"0–{MULTIBERTS_INTERMEDIATE_SEEDS[-1]}: {_steps_summary()}"
    )


def _earlyberts_steps() -> str:
    return ", ".join(f"step{s}" for s in EARLYBERTS_STEPS)


_MULTIBERTS = re.compile(
    r"^(?:google/)?(?:multi-?berts?[-_ ]?)?seed[-_ ]?(?P<seed>\d+)(?:[-_ ]+(?P<step>\S+))?$", re.IGNORECASE
)
_EARLYBERTS = re.compile(
    r"^(?:personads/)?early-?berts?[-_ ]?seed[-_ ]?(?P<seed>\d+)(?:[-_ @:]+(?P<step>\S+))?$", re.IGNORECASE
)
_STEP = re.compile(r"^(?:step[-_ ]?)?(?P<n>\d+)(?P<k>k)?$", re.IGNORECASE)
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def _parse_step(text: str, *, what: str) -> tuple[int, bool]:
    """``step_200k`` / ``200k`` / ``step_200000`` / ``7000`` -> (number, had_k_suffix)."""
    m = _STEP.match(text.strip())
    if not m:
        raise CatalogError(f"{what}: cannot read step {text!r}; write it as step_200k, 200k or step_200000")
    return int(m["n"]), bool(m["k"])


def training_steps(text: str) -> int:
    """A step as people write it (``step_200k``, ``200k``, ``step7000``, ``7000``) -> training steps (200000, 7000)."""
    number, thousands = _parse_step(text, what="--step")
    return number * 1000 if thousands else number


def _multiberts(seed: int, step_text: str | None, revision: str | None) -> Source:
    if seed not in MULTIBERTS_SEEDS:
        raise CatalogError(f"there is no MultiBERTs seed {seed}: {_seeds_message()}")
    if step_text is None or step_text.lower() in ("final", "last"):
        return Source(f"MultiBERTs seed_{seed}", f"google/multiberts-seed_{seed}", revision)
    n, k = _parse_step(step_text, what=f"MultiBERTs seed_{seed}")
    thousands = n if k else n / 1000
    valid = (MULTIBERTS_INIT_STEP, *MULTIBERTS_STEPS)
    if seed not in MULTIBERTS_INTERMEDIATE_SEEDS:
        raise CatalogError(
            f"MultiBERTs seed {seed} has only its final checkpoint (seed_{seed}); {_seeds_message()}"
        )
    if thousands not in valid:
        hint = f" (did you mean {n}k?)" if not k and n in valid else ""
        raise CatalogError(
            f"MultiBERTs seed {seed} has no checkpoint at step {step_text}{hint}; its steps are {_steps_summary()}"
        )
    step = int(thousands)
    return Source(
        f"MultiBERTs seed_{seed} step_{step}k", f"google/multiberts-seed_{seed}-step_{step}k", revision
    )


def _earlyberts(seed: int, step_text: str | None, revision: str | None) -> Source:
    if seed not in EARLYBERTS_SEEDS:
        raise CatalogError(
            f"there is no EarlyBERTs seed {seed}: EarlyBERTs seeds are "
            f"0–{EARLYBERTS_SEEDS[-1]} (personads/earlyberts-seed0 … seed{EARLYBERTS_SEEDS[-1]})"
        )
    if step_text is not None and revision is not None and not _same_step(step_text, revision):
        raise CatalogError(
            f"EarlyBERTs seed{seed}: step {step_text!r} and revision {revision!r} disagree; give one of them"
        )
    step_text = step_text if step_text is not None else revision
    if step_text is None:
        raise CatalogError(
            f"EarlyBERTs seed{seed} needs a step (e.g. earlyberts-seed{seed} step7000); steps: {_earlyberts_steps()}"
        )
    n, k = _parse_step(step_text, what=f"EarlyBERTs seed{seed}")
    step = n * 1000 if k else n
    if step not in EARLYBERTS_STEPS:
        raise CatalogError(
            f"EarlyBERTs seed{seed} has no checkpoint at step {step_text}; steps: {_earlyberts_steps()}"
        )
    return Source(f"EarlyBERTs seed{seed} step{step}", f"personads/earlyberts-seed{seed}", f"step{step}")


def _same_step(a: str, b: str) -> bool:
    try:
        return _parse_step(a, what="") == _parse_step(b, what="")
    except CatalogError:
        return False


def _as_path(name: str) -> Path | None:
    """An existing checkpoint path the name denotes, if any: a file, a directory, or a TF prefix."""
    path = Path(os.path.expanduser(name))
    if path.exists():
        return path
    if Path(f"{path}.index").is_file():  # TF1 checkpoint prefix: model.ckpt -> model.ckpt.index
        return path
    return None


def _looks_like_path(name: str) -> bool:
    return name.startswith(("/", "./", "../", "~", ".\\")) or name in (".", "..") or "\\" in name


def resolve(
    name: str, step: str | None = None, *, revision: str | None = None, local: Path | None = None
) -> Source:
    """Turn a user's checkpoint name (and optional separate step) into a ``Source``.

    ``revision`` pins a hub revision (for EarlyBERTs it may name the step: ``step7000``).
    ``local`` (the CLI's ``--from PATH``) says where a local copy of a hub checkpoint lives.
    Raises ``CatalogError`` for names that do not parse or checkpoints that were never
    published, ``SourceNotFoundError`` for a path that does not exist.
    """
    text = " ".join(str(name).split())
    if not text:
        raise CatalogError("empty checkpoint name: give e.g. `seed_1 step_200k`, an HF repo id or a local path")
    step = step.strip() if step is not None and step.strip() else None

    path = _as_path(text)
    if path is None and _looks_like_path(text):
        raise SourceNotFoundError(
            f"{text} does not exist: give an existing checkpoint directory or TF checkpoint prefix"
        )
    if path is not None:
        if step is not None:
            raise CatalogError(f"{text} is a local path: a step applies only to MultiBERTs and EarlyBERTs names")
        if local is not None:
            raise CatalogError(f"{text} is already a local path: --from applies only to catalogue or hub names")
        return Source(str(path), path=path)

    source = _resolve_name(text, step, revision)
    if local is not None:
        local_path = _as_path(str(local))
        if local_path is None:
            raise SourceNotFoundError(f"--from {local} does not exist: give the directory holding {source.label}")
        source = Source(source.label, source.repo_id, source.revision, local_path)
    return source


def _resolve_name(text: str, step: str | None, revision: str | None) -> Source:
    words = text.split(" ")
    if len(words) > 2:
        raise CatalogError(f"cannot parse checkpoint name {text!r}: {_GRAMMAR}")
    head, inline_step = words[0], (words[1] if len(words) == 2 else None)
    if inline_step is not None and step is not None:
        raise CatalogError(f"{text!r} already names a step; do not also pass step {step!r}")
    step = inline_step if inline_step is not None else step

    if m := _EARLYBERTS.match(head):
        if m["step"] is not None and step is not None:
            raise CatalogError(f"{head!r} already names a step; do not also pass step {step!r}")
        return _earlyberts(int(m["seed"]), m["step"] or step, revision)
    if m := _MULTIBERTS.match(head):
        if m["step"] is not None and step is not None:
            raise CatalogError(f"{head!r} already names a step; do not also pass step {step!r}")
        return _multiberts(int(m["seed"]), m["step"] or step, revision)

    release = head.lower().removeprefix("google-bert/")
    if release in GOOGLE_BERT:
        if step is not None:
            raise CatalogError(f"{head} is a single checkpoint: steps exist only for MultiBERTs and EarlyBERTs")
        return Source(f"Google BERT {release}", GOOGLE_BERT[release], revision)
    if _REPO_ID.match(head) and ".." not in head:
        if step is not None:
            raise CatalogError(
                f"{head}: a step applies only to MultiBERTs and EarlyBERTs names; for other repos pass --revision"
            )
        label = head if revision is None else f"{head}@{revision}"
        return Source(label, head, revision)
    if head.lower().startswith(("multibert", "earlybert", "google/multibert", "personads/")):
        raise CatalogError(f"cannot parse checkpoint name {text!r}: {_GRAMMAR}")
    raise CatalogError(
        f"{text!r} is neither a catalogue name, an HF repo id (org/name) nor an existing path: {_GRAMMAR}"
    )


_GRAMMAR = (
    "use e.g. `seed_1 step_200k`, `seed_1` (final), `earlyberts-seed1 step7000`, `bert-base-uncased`, "
    "an HF repo id `org/name` or a local path; `mbexport list` shows the catalogue"
)


# ---------------------------------------------------------------------------------------------
# Listing


def entries() -> list[CatalogEntry]:
    """Every published checkpoint the catalogue knows, in a stable order."""
    out = [
        CatalogEntry("MultiBERTs", f"seed_{s}", f"google/multiberts-seed_{s}", seed=s) for s in MULTIBERTS_SEEDS
    ]
    for s in MULTIBERTS_INTERMEDIATE_SEEDS:
        for k in (MULTIBERTS_INIT_STEP, *MULTIBERTS_STEPS):
            family = "MultiBERTs init" if k == MULTIBERTS_INIT_STEP else "MultiBERTs intermediate"
            out.append(CatalogEntry(family, f"seed_{s} step_{k}k", f"google/multiberts-seed_{s}-step_{k}k",
                                    seed=s, step=k * 1000))
    for s in EARLYBERTS_SEEDS:
        for n in EARLYBERTS_STEPS:
            out.append(
                CatalogEntry("EarlyBERTs", f"earlyberts-seed{s} step{n}", f"personads/earlyberts-seed{s}", f"step{n}",
                             seed=s, step=n)
            )
    out += [CatalogEntry("Google BERT", name, repo) for name, repo in GOOGLE_BERT.items()]
    return out


def local_status(entry: CatalogEntry | Source, export_root: Path | None = None) -> LocalStatus:
    """Whether ``entry`` is in the HF cache (config + a weight file; no network) and/or exported:
    under ``export_root`` (``export_root/<slug>/mbexport.json`` or ``export_root/<slug>/*/mbexport.json``)
    or anywhere convert recorded it in the registry (``$MBEXPORT_HOME/exports.json``)."""
    from huggingface_hub import try_to_load_from_cache  # only here: importing huggingface_hub takes a while

    source = entry.source if isinstance(entry, CatalogEntry) else entry
    cached = False
    if source.repo_id is not None:
        cache_dir, repo_id = hub_cache_dir(), source.repo_id

        def hit(filename: str) -> bool:
            found = try_to_load_from_cache(repo_id, filename, cache_dir=cache_dir, revision=source.revision)
            return isinstance(found, str)

        cached = hit(CONFIG) and any(hit(f) for f in source_formats.weight_files())
    found: list[Path] = []
    if export_root is not None:
        root = Path(export_root) / source.slug
        manifests = [root / MANIFEST] if (root / MANIFEST).is_file() else []
        if not manifests and root.is_dir():  # one export per head/flavor/precision below the slug
            manifests = sorted(root.glob(f"*/{MANIFEST}"))
        found = [m.parent for m in manifests]
    known = {p.resolve() for p in found}
    found += [p for p in registry.exports_of(source.slug) if p not in known]
    return LocalStatus(cached=cached, export_dir=found[0] if found else None, export_dirs=tuple(found))
