"""The checkpoint formats mbexport reads, each declared once by its own module.

A format is a ``SourceFormat``: whether it can load a path, how to load it, which files of a hub
repo to download for it, and which fixed weight-file names mark it in the HF cache. Its module
calls ``register`` at import; ``formats()`` imports the modules named in ``MODULES`` and returns
their formats in that order, which is the probe order of ``load_checkpoint``, the preference order
of the hub download and the set ``catalog.local_status`` looks for. A new format is one module
plus its name in ``MODULES``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mbexport.spec import Checkpoint

# Probe order: the first format that claims a path loads it.
MODULES = ("mbexport.sources.hf_dir", "mbexport.sources.tf_checkpoint")


@dataclass(frozen=True)
class SourceFormat:
    """One checkpoint format. ``load(path, label, revision)`` reads it into the neutral ``Checkpoint``."""

    name: str
    claims: Callable[[Path], bool]  # can this format load ``path``? (cheap: looks at file names only)
    load: Callable[[Path, str, str | None], Checkpoint]
    download_patterns: Callable[[list[str]], list[str]]  # allow_patterns for a repo with these files; [] if absent
    weight_files: tuple[str, ...] = ()  # fixed weight-file names whose presence in a snapshot marks this format
    explains_directories: bool = False  # loads any directory no format claims, to say what it lacks


_registered: dict[str, SourceFormat] = {}


def register(fmt: SourceFormat) -> SourceFormat:
    """Called by a format's module at import; registering a name again replaces it (module reloads)."""
    _registered[fmt.name] = fmt
    return fmt


def formats() -> tuple[SourceFormat, ...]:
    """Every format: the built-in ones in ``MODULES`` order, then any registered from elsewhere."""
    for module in MODULES:
        importlib.import_module(module)
    rank = {module: i for i, module in enumerate(MODULES)}
    return tuple(sorted(_registered.values(), key=lambda fmt: rank.get(fmt.load.__module__, len(MODULES))))


def claiming(path: Path) -> SourceFormat | None:
    """The first format that claims ``path``; else, for a directory, the one that explains what it lacks."""
    every = formats()
    for fmt in every:
        if fmt.claims(path):
            return fmt
    if path.is_dir():
        return next((fmt for fmt in every if fmt.explains_directories), None)
    return None


def download_patterns(repo_files: list[str]) -> list[str]:
    """allow_patterns for the one format to download from a repo with these files (the first present)."""
    for fmt in formats():
        patterns = fmt.download_patterns(repo_files)
        if patterns:
            return patterns
    return []


def weight_files() -> tuple[str, ...]:
    """Every fixed weight-file name of every format, in preference order (for cache look-ups)."""
    return tuple(name for fmt in formats() for name in fmt.weight_files)
