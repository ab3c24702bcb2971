"""The export registry (``$MBEXPORT_HOME/exports.json``): every export convert wrote, wherever it went.

``mbexport list`` finds exports under the default location by their path; exports written
with ``--out`` elsewhere are found only through this registry. Each record is keyed by the
export's absolute path and names its source's slug (the catalogue's key for a checkpoint).

Writers take ``exports.json.lock`` and replace the file atomically (temp file + rename), so
concurrent converts never lose each other's records and readers never see half a file.
Readers need no lock. A registry that is missing or corrupt reads as empty (and is rewritten
whole by the next convert); a record whose export was deleted since is ignored and pruned.
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from mbexport import jsonfiles
from mbexport.errors import ExportError
from mbexport.layout import is_export, mbexport_home

REGISTRY = "exports.json"


def registry_path() -> Path:
    return mbexport_home() / REGISTRY


def record(export_dir: Path, slug: str) -> None:
    """Add (or refresh) ``export_dir`` as an export of the checkpoint ``slug``; drop records of deleted exports."""
    path = registry_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.parent / f"{REGISTRY}.lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            records = {key: value for key, value in _read(path).items() if is_export(Path(key))}
            records[str(export_dir.resolve())] = {"slug": slug}
            fd, tmp = tempfile.mkstemp(prefix=f".{REGISTRY}.", suffix=".tmp", dir=path.parent)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    json.dump({"exports": records}, f, indent=1, sort_keys=True)
                os.replace(tmp, path)
            except BaseException:
                os.unlink(tmp)
                raise
    except OSError as e:
        raise ExportError(f"{export_dir} was written, but recording it in {path} failed ({e.strerror}); "
                          "make $MBEXPORT_HOME writable so mbexport list can find it") from None


def exports_of(slug: str) -> list[Path]:
    """The registered exports of the checkpoint ``slug`` that still exist, sorted by path."""
    return sorted(Path(key) for key, value in _read(registry_path()).items()
                  if isinstance(value, dict) and value.get("slug") == slug and is_export(Path(key)))


def _read(path: Path) -> dict[str, Any]:
    """The records, or none when the registry is missing or unreadable (it is only an index)."""
    try:
        data = jsonfiles.read(path)
    except (OSError, ValueError):
        return {}
    records = data.get("exports") if isinstance(data, dict) else None
    return records if isinstance(records, dict) else {}
