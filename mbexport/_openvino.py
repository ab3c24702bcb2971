"""OpenVINO and NNCF, imported in one place and only when used: they come from the ``openvino`` extra, so
the rest of mbexport (and the other backends) works without them, and this module says which extra to
install when they are missing."""

from __future__ import annotations

import importlib
from functools import lru_cache
from pathlib import Path
from types import ModuleType
from typing import Any

from mbexport.errors import ExportDirError, MissingExtraError

EXTRA = "pip install 'mbexport[openvino]'"
# What OpenVINO's CPU plugin lists in OPTIMIZATION_CAPABILITIES when the CPU has bf16 arithmetic.
BF16_CAPABILITY = "BF16"


def _load(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError as error:
        raise MissingExtraError(f"mbexport's OpenVINO path needs openvino and nncf ({error.name or name} is "
                                f"missing); {EXTRA}") from None


def openvino() -> ModuleType:
    """The ``openvino`` module (MissingExtraError naming the extra when it is not installed)."""
    return _load("openvino")


def nncf() -> ModuleType:
    """The ``nncf`` module, for calibrated int8 (MissingExtraError naming the extra when missing)."""
    return _load("nncf")


def missing() -> str | None:
    """Why the OpenVINO backend cannot run here (one line naming the extra), or None."""
    try:
        openvino()
    except MissingExtraError as error:
        return str(error)
    return None


@lru_cache(maxsize=1)
def core() -> Any:
    """One OpenVINO Core per process (it holds the plugins and their caches)."""
    return openvino().Core()


def cpu_has_bf16() -> bool:
    """Whether OpenVINO's CPU plugin computes in bf16 here (AVX512-BF16 or AMX)."""
    return BF16_CAPABILITY in core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def ov_error(model_path: Path | str, doing: str, error: BaseException, fix: str) -> ExportDirError:
    """An OpenVINO failure as one line naming the model: OpenVINO's messages start with source locations
    ("Exception from src/...", "Check '...' failed at ..."), so the first line that is not one says why."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    why = next((line for line in lines if not line.startswith(("Exception from", "Check '"))),
               lines[0] if lines else type(error).__name__)
    return ExportDirError(f"{model_path}: OpenVINO could not {doing} it ({why}); {fix}")
