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
from mbexport.tokenizer import WordPieceTokenizer  # noqa: E402
from mbexport.runtime import Embedder  # noqa: E402

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
    "convert",
    "_native",
]
