"""mbexport: BERT checkpoints to fast, verified ONNX, and a native tokenizer and batcher to run them."""

from __future__ import annotations

from mbexport import _native
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

__version__ = "0.1.0"

from mbexport.converter import convert  # noqa: E402  (needs __version__ for manifests)

__all__ = [
    "CatalogError",
    "CheckpointFormatError",
    "CudaUnavailableError",
    "ExportError",
    "MbexportError",
    "ParityError",
    "SourceNotFoundError",
    "UnsafeCheckpointError",
    "VocabError",
    "__version__",
    "convert",
    "_native",
]
