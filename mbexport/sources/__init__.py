"""Checkpoint sources: every format in, one neutral ``Checkpoint`` out.

``load_checkpoint(source)`` fetches a hub repo through the HF cache when the ``Source``
has no local path, then hands the directory (or TF prefix) to the first registered format
that claims it (``mbexport.sources.registry``):

- ``hf_dir``: config.json + model.safetensors / pytorch_model.bin (sharded or not);
- ``tf_checkpoint``: a TF1 checkpoint (``bert_model.ckpt.index`` + data + bert_config.json).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from mbexport.errors import CheckpointFormatError, SourceNotFoundError
from mbexport.sources import registry
from mbexport.sources.hub import fetch

if TYPE_CHECKING:
    from mbexport.catalog import Source
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
        path = fetch(source.repo_id, source.revision)
    else:
        raise SourceNotFoundError(f"{source.label}: neither a hub repo nor a local path to load from")
    fmt = registry.claiming(path)
    if fmt is None:
        raise CheckpointFormatError(
            f"{path} is neither an HF model directory nor a TF1 checkpoint prefix; give the directory that holds "
            "config.json and the weights"
        )
    return fmt.load(path, label, source.revision)
