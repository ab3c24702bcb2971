"""Checkpoint sources: every format in, one neutral ``Checkpoint`` out.

``load_checkpoint(source)`` fetches a hub repo through the HF cache when the ``Source``
has no local path, then hands the directory (or TF prefix) to the reader for its format:

- ``hf_dir``: config.json + model.safetensors / pytorch_model.bin (sharded or not);
- ``tf_checkpoint``: a TF1 checkpoint (``bert_model.ckpt.index`` + data + bert_config.json).
"""

from __future__ import annotations

from pathlib import Path

from mbexport.catalog import Source
from mbexport.errors import CheckpointFormatError, SourceNotFoundError
from mbexport.sources.hf_dir import WEIGHT_FILES, load_hf_dir
from mbexport.sources.tf_checkpoint import is_tf_checkpoint, load_tf_checkpoint
from mbexport.spec import Checkpoint

__all__ = ["load_checkpoint"]


def load_checkpoint(source: Source) -> Checkpoint:
    """Read the checkpoint ``source`` names into the neutral form (downloading it if needed)."""
    label = source.repo_id or str(source.path)
    if source.path is not None:
        path = source.path
        if not path.exists() and not Path(f"{path}.index").is_file():
            raise SourceNotFoundError(f"{path} does not exist: give an existing checkpoint directory or TF prefix")
    elif source.repo_id is not None:
        from mbexport.sources.hub import fetch

        path = fetch(source.repo_id, source.revision)
    else:
        raise SourceNotFoundError(f"{source.label}: neither a hub repo nor a local path to load from")

    if path.is_dir() and any((path / name).is_file() for name in WEIGHT_FILES):
        return load_hf_dir(path, label, source.revision)
    if path.is_dir() and (path / "config.json").is_file() and not is_tf_checkpoint(path):
        return load_hf_dir(path, label, source.revision)  # reports what is missing
    if is_tf_checkpoint(path):
        checkpoint = load_tf_checkpoint(path, label)
        checkpoint.revision = checkpoint.revision or source.revision
        return checkpoint
    if path.is_dir():
        return load_hf_dir(path, label, source.revision)
    raise CheckpointFormatError(
        f"{path} is neither an HF model directory nor a TF1 checkpoint prefix; give the directory that holds "
        "config.json and the weights"
    )
