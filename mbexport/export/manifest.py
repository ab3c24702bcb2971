"""Writing the export manifest (``mbexport.json``): where an export came from and how it was verified.

Its file name, format version and reading it back live in ``mbexport.layout``."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import onnx

from mbexport import __version__
from mbexport._ort import onnxruntime
from mbexport.export.build import BuiltModel
from mbexport.export.graph import MS_OPSET, ONNX_OPSET
from mbexport.layout import CARRIED, FORMAT_VERSION, PACKED_INPUTS, PACKED_MODEL
from mbexport.spec import Checkpoint


def build_manifest(checkpoint: Checkpoint, built: BuiltModel, source: dict[str, Any],
                   model_files: dict[Path, str], parity: dict[str, Any], op_counts: dict[str, int],
                   quantization: dict[str, Any] | None = None, identity: dict[str, Any] | None = None
                   ) -> dict[str, Any]:
    """The manifest; ``model_files`` maps each written model file to its sha256, ``op_counts``
    are of the graph as written (after quantization, for int8), ``identity`` says how the
    source was checked to be what it claims (``mbexport.provenance``)."""
    spec = checkpoint.spec
    return {
        "format_version": FORMAT_VERSION,
        "mbexport_version": __version__,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "source": source,
        **({"identity": identity} if identity else {}),
        "revision": checkpoint.revision,
        "weights_sha256": checkpoint.weights_sha256,
        "head": built.head.name,
        "outputs": built.outputs,
        "flavor": built.flavor,
        "precision": built.precision,
        "opset": {"ai.onnx": ONNX_OPSET, **({"com.microsoft": MS_OPSET} if built.flavor != "portable" else {})},
        "onnx_version": onnx.__version__,
        "onnxruntime_version": onnxruntime.__version__,
        "model": {"layers": spec.num_layers, "hidden": spec.hidden_size, "heads": spec.num_heads,
                  "intermediate": spec.intermediate_size, "vocab": spec.vocab_size,
                  "max_position_embeddings": spec.max_position_embeddings, "activation": spec.hidden_act},
        "embedding": checkpoint.embedding.to_dict(),
        **({"sentence_embedding": built.pooled.to_dict()} if built.pooled else {}),
        "op_counts": op_counts,
        **({"packed": _packed_record(built.packed)} if built.packed else {}),
        **({"quantization": quantization} if quantization else {}),
        "files": {p.name: {"bytes": p.stat().st_size, "sha256": digest} for p, digest in model_files.items()},
        **({CARRIED: sorted(checkpoint.st_files)} if checkpoint.st_files else {}),
        "parity": parity,
    }


def _packed_record(packed: BuiltModel) -> dict[str, Any]:
    """The ``--flavor packed`` graph: its file, inputs, outputs and op counts. Parity of the export
    (``parity``) covers ``model.onnx``; onnxruntime runs this graph on CUDA only, where tests/test_packed_gpu.py
    holds it to PyTorch and to the padded graph."""
    return {"model": PACKED_MODEL, "inputs": list(PACKED_INPUTS), "outputs": packed.outputs,
            "op_counts": packed.op_counts(), "runs_on": "cuda",
            "parity": "not run at convert: onnxruntime runs PackedAttention on CUDA only"}
