"""mbexport: BERT checkpoints to fast, verified ONNX, and a native tokenizer and batcher to run them.

Attributes load on first use (PEP 562): ``from mbexport import WordPieceTokenizer`` imports the
tokenizer alone, not onnx or onnxruntime, which only the converter and the Embedder need.
"""

from __future__ import annotations

import importlib
from importlib.metadata import version
from typing import TYPE_CHECKING, Any

from mbexport.errors import (
    CatalogError,
    CheckpointFormatError,
    CudaUnavailableError,
    ExportError,
    MbexportError,
    ParityError,
    SourceNotFoundError,
    UnsafeCheckpointError,
    VocabError,
)

if TYPE_CHECKING:
    from mbexport import _native
    from mbexport.calibration import calibrate
    from mbexport.converter import convert
    from mbexport.runtime import Embedder
    from mbexport.tokenizer import WordPieceTokenizer

# pyproject.toml's [project] version is the one source; the installed metadata carries it.
__version__ = version("mbexport")

# Public name -> the module that defines it, imported when the name is first read.
_LAZY = {
    "Embedder": "mbexport.runtime",
    "WordPieceTokenizer": "mbexport.tokenizer",
    "calibrate": "mbexport.calibration",
    "convert": "mbexport.converter",
    "_native": "mbexport._native",
}

__all__ = [
    "CatalogError",
    "CheckpointFormatError",
    "CudaUnavailableError",
    "Embedder",
    "ExportError",
    "MbexportError",
    "ParityError",
    "SourceNotFoundError",
    "UnsafeCheckpointError",
    "VocabError",
    "WordPieceTokenizer",
    "__version__",
    "_native",
    "calibrate",
    "convert",
]


def __getattr__(name: str) -> Any:
    """Import a public attribute's module on first access (PEP 562) and cache the attribute here."""
    if name not in _LAZY:
        raise AttributeError(f"module 'mbexport' has no attribute {name!r}")
    module = importlib.import_module(_LAZY[name])
    value = module if name == "_native" else getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
