"""Exception classes of mbexport: every error a user can cause is one of these.

Each subclasses a builtin so callers can catch broadly (``except ValueError``),
and each message is one line that names the problem and the fix. The CLI prints
``str(error)`` and exits non-zero; it never shows a traceback for these.
"""

from __future__ import annotations


class MbexportError(Exception):
    """Base of all mbexport errors."""

    exit_code = 1


class CatalogError(MbexportError, ValueError):
    """A checkpoint name that does not exist in the catalogue or cannot be parsed."""

    exit_code = 2


class SourceNotFoundError(MbexportError, FileNotFoundError):
    """A checkpoint that cannot be found locally or in the hub cache (e.g. offline)."""


class CheckpointFormatError(MbexportError, ValueError):
    """A checkpoint file that is missing, truncated, corrupt or inconsistent with its config."""


class UnsafeCheckpointError(CheckpointFormatError):
    """A pickle that asks for anything beyond plain tensors; it is refused, never executed."""


class ShapeError(CheckpointFormatError):
    """A weight whose shape disagrees with the model config."""


class ExportError(MbexportError, RuntimeError):
    """The ONNX graph could not be built or written."""


class ExportLockedError(ExportError):
    """Another convert is writing the same export directory."""


class ExportDirError(MbexportError, ValueError):
    """An export directory that is missing files or was written by an incompatible version."""


class ParityError(MbexportError, ValueError):
    """The export's outputs differ from the reference beyond tolerance."""


class VocabError(MbexportError, ValueError):
    """A vocabulary file that is missing, not UTF-8, has duplicates or lacks [UNK]."""


class TokenizerInputError(MbexportError, ValueError):
    """Text the tokenizer cannot take (not a str, lone surrogates, bad arguments)."""


class CudaUnavailableError(MbexportError, RuntimeError):
    """CUDA was asked for but the CUDA runtime or onnxruntime-gpu is not usable."""


class InputFileError(MbexportError, ValueError):
    """An input file for ``mbexport embed`` that cannot be read (bad UTF-8, bad JSON, missing field)."""


class ResourceLimitError(MbexportError, MemoryError):
    """A request for more memory than the machine can give (checked before allocating), or a native
    worker that ran out of memory; the process survives and the message says what to shrink."""


class ArgumentError(MbexportError, ValueError):
    """An argument or option value out of its range or choices (``pooling="max"``, ``threads=0``)."""

    exit_code = 2


class OutputFileError(MbexportError, OSError):
    """An output that cannot be written (read-only directory, disk full, a directory in the way)."""


class MissingExtraError(MbexportError, ImportError):
    """An optional dependency is not installed; the message names the extra that brings it."""


class SweepError(MbexportError, ValueError):
    """A sweep or probe that cannot run as asked (options, manifest, dataset, another sweep running)."""
