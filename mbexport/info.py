"""``mbexport info``: an export's manifest as two readable tables (what it is; how it was verified).

Reading and checking the manifest is ``mbexport.layout.read_manifest``'s job; this
module only lays the figures out. Each parity figure is shown beside the gate it was judged
against (max |diff| <= tolerance, mean cosine >= its minimum, argmax agreement >= its minimum),
so a reader sees the margin, not only pass/fail.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.table import Table

from mbexport.parity import OutputParity

# Manifest keys the summary lays out itself; any other key is shown as compact JSON.
_SHOWN = {"format_version", "mbexport_version", "created", "source", "revision", "weights_sha256", "head", "outputs",
          "flavor", "precision", "opset", "onnx_version", "onnxruntime_version", "model", "op_counts", "quantization",
          "files", "parity"}


def summary_table(export_dir: Path, manifest: dict[str, Any]) -> Table:
    """Source, weights, head/flavor/precision, model dims, op counts, files, versions."""
    source = manifest.get("source") or {}
    where = source.get("path") or (source.get("repo_id") or "?") + (f"@{source['revision']}" if source.get("revision")
                                                                   else "")
    model = manifest.get("model") or {}
    ops = sorted((manifest.get("op_counts") or {}).items(), key=lambda kv: (-kv[1], kv[0]))
    table = Table(title=f"mbexport info {export_dir}", show_header=False)
    table.add_row("source", f"{source.get('label', '?')} ({where})")
    table.add_row("revision", str(manifest.get("revision") or "-"))
    table.add_row("weights sha256", str(manifest.get("weights_sha256") or "-"))
    table.add_row("head / flavor / precision", f"{manifest.get('head')} / {manifest.get('flavor')} / "
                                               f"{manifest.get('precision')}")
    table.add_row("outputs", ", ".join(manifest.get("outputs") or []))
    table.add_row("model", f"{model.get('layers')} layers, hidden {model.get('hidden')}, {model.get('heads')} heads, "
                           f"intermediate {model.get('intermediate')}, vocab {model.get('vocab')}, "
                           f"{model.get('max_position_embeddings')} positions, {model.get('activation')}")
    table.add_row("op counts", ", ".join(f"{name} {count}" for name, count in ops))
    if manifest.get("quantization"):
        table.add_row("quantization", json.dumps(manifest["quantization"], separators=(", ", ": ")))
    for name, file in (manifest.get("files") or {}).items():
        table.add_row(f"file {name}", f"{file['bytes'] / 1e6:.1f} MB, sha256 {file['sha256']}")
    opset = ", ".join(f"{domain} {version}" for domain, version in (manifest.get("opset") or {}).items())
    table.add_row("versions", f"opset {opset}; onnx {manifest.get('onnx_version')}, onnxruntime "
                              f"{manifest.get('onnxruntime_version')}, mbexport {manifest.get('mbexport_version')}")
    table.add_row("created", str(manifest.get("created")))
    for key in sorted(set(manifest) - _SHOWN):
        table.add_row(key, json.dumps(manifest[key], separators=(", ", ": ")))
    return table


def parity_table(parity: dict[str, Any]) -> Table:
    """One row per output: each figure with the gate it was judged against, and the verdict."""
    if parity.get("skipped"):
        table = Table(title="parity: skipped (converted with --no-parity)", show_header=False)
        table.add_row("re-check", "mbexport parity EXPORT_DIR")
        return table
    verdict = "passed" if parity.get("passed") else "FAILED"
    table = Table(title=f"parity {verdict} vs {parity.get('reference')} ({parity.get('precision')})")
    for column in ("output", "max |diff|", "gate", "mean cosine", "gate", "argmax agree", "gate", "ok"):
        table.add_column(column)
    for name, figures in (parity.get("outputs") or {}).items():
        o = OutputParity(name, **figures)  # judged by the same rule as at convert time
        agree = o.argmax_agreement
        table.add_row(name, f"{o.max_abs:.2e}", "unbounded" if o.tolerance is None else f"<= {o.tolerance:.1e}",
                      f"{o.mean_cosine:.7f}", f">= {o.min_mean_cosine}", "-" if agree is None else f"{agree:.4f}",
                      "-" if agree is None else f">= {o.min_argmax_agreement}", "yes" if o.passed else "NO")
    batches = parity.get("batches")
    if batches:
        table.caption = "inputs: " + "; ".join(batches)
    return table
