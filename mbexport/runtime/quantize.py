"""int8 exports: onnxruntime dynamic quantization of an fp32 export (``--precision int8``).

MatMul weights become int8 (per output channel, symmetric); activations are
quantized on the fly at run time, so no calibration data is needed. CPU only: the
quantized contrib ops (DynamicQuantizeMatMul, QAttention) have CPU kernels. The result
is a complete export directory (manifest precision ``int8``), written atomically with
the exporter's own staging + commit.

Wiring into convert (converter.py): build and write the fp32 export as usual into the
staging dir, then ``quantize_model(staging / "model.onnx", staging / "model.onnx")``
and set the manifest's precision to ``int8``; parity for int8 is a cosine check
(mean cosine >= 0.99 vs PyTorch), not the fp32 max-abs tolerance.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from mbexport.errors import ExportDirError
from mbexport.export.manifest import read_manifest

# Per-channel int8 MatMul weights only: on MiniLM (real text) this keeps min cosine vs fp32
# ~0.99, where per-tensor weights or quantized Attention/embeddings drop it to 0.90-0.98.
OP_TYPES = ["MatMul"]


def quantize_model(src: Path, dst: Path) -> dict[str, Any]:
    """Dynamic int8 quantization of ``src`` into ``dst`` (may be the same path); returns what was done."""
    from onnx import TensorProto
    from onnxruntime.quantization import QuantType, quantize_dynamic

    tmp = dst.with_name(dst.name + ".int8-tmp")
    quantize_dynamic(str(src), str(tmp), weight_type=QuantType.QInt8, op_types_to_quantize=OP_TYPES,
                     per_channel=True, extra_options={"MatMulConstBOnly": True, "DefaultTensorType": TensorProto.FLOAT})
    tmp.replace(dst)
    return {"method": "onnxruntime.quantization.quantize_dynamic", "weight_type": "QInt8", "per_channel": True,
            "op_types": OP_TYPES}


def quantize_export(export_dir: Path | str, out: Path | str) -> Path:
    """A new export directory ``out``: ``export_dir`` (fp32) with an int8 model.onnx."""
    from mbexport.export.writer import check_replaceable, commit, export_lock, staging_dir
    from mbexport.spec import sha256_files

    export_dir, out = Path(export_dir), Path(out)
    manifest = read_manifest(export_dir)
    if manifest.get("precision") != "fp32":
        raise ExportDirError(f"{export_dir} is {manifest.get('precision')}; int8 quantization starts from an fp32 export")
    if (export_dir / "model.onnx.data").exists():
        raise ExportDirError(f"{export_dir} keeps weights in model.onnx.data; int8 of >2 GB models is not supported")
    with export_lock(out):
        check_replaceable(out)
        with staging_dir(out) as staging:
            for f in export_dir.iterdir():
                if f.is_file() and f.name not in ("model.onnx", "mbexport.json"):
                    shutil.copy2(f, staging / f.name)
            info = quantize_model(export_dir / "model.onnx", staging / "model.onnx")
            model = staging / "model.onnx"
            manifest = {**manifest, "precision": "int8", "quantization": {**info, "from": str(export_dir)},
                        "files": {"model.onnx": {"bytes": model.stat().st_size, "sha256": sha256_files([model])}},
                        "parity": {**manifest.get("parity", {}), "note": "parity figures are of the fp32 export"}}
            (staging / "mbexport.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
            commit(staging, out)
    return out
