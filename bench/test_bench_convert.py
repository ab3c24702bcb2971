"""Convert speed, two ways.

In this process: mbexport's direct graph build vs torch.onnx.export + onnxruntime's transformer
optimizer, both on the same BERT-base-shaped checkpoint and ending with a fused fp32 ONNX file;
parity is off for ours (the baseline does none) and timed separately.

As whole processes (what a user waits for): ``mbexport convert`` with parity against
``optimum-cli export onnx --optimize O2`` (its validation included) from the peers venv
(bench/peers.py), on the same checkpoint, in the same run. Ratios (baseline / ours) land in
``extra_info["speedup"]``.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections import Counter
from pathlib import Path

import onnx
import pytest
from peers import offline_env, optimum_export, run_timed

pytest.importorskip("torch")

RESULTS: dict[str, float] = {}


def torch_export_and_optimize(checkpoint: Path, out: Path) -> Path:
    """What users do without mbexport: trace with torch.onnx.export, fuse with onnxruntime's optimizer."""
    import torch
    import transformers
    from onnxruntime.transformers.optimizer import optimize_model

    model = transformers.BertModel.from_pretrained(checkpoint, attn_implementation="eager").eval()

    class Positional(torch.nn.Module):  # the TorchScript exporter cannot pass BertModel's keyword-only extras
        def __init__(self) -> None:
            super().__init__()
            self.bert = model

        def forward(self, input_ids, attention_mask, token_type_ids):  # noqa: ANN001, ANN202
            result = self.bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
            return result.last_hidden_state, result.pooler_output

    ids = torch.ones(2, 16, dtype=torch.long)
    raw = out / "raw.onnx"
    with torch.no_grad():
        torch.onnx.export(Positional().eval(), (ids, torch.ones_like(ids), torch.zeros_like(ids)), raw, dynamo=False,
                          input_names=["input_ids", "attention_mask", "token_type_ids"],
                          output_names=["last_hidden_state", "pooler_output"], opset_version=17,
                          dynamic_axes={n: {0: "batch", 1: "sequence"}
                                        for n in ("input_ids", "attention_mask", "token_type_ids")})
    config = model.config
    optimized = optimize_model(str(raw), model_type="bert", num_heads=config.num_attention_heads,
                               hidden_size=config.hidden_size)
    path = out / "model.onnx"
    optimized.save_model_to_file(str(path))
    return path


# The TorchScript exporter (deprecated but still the one whose graphs ORT's optimizer fuses).
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
def test_convert_baseline_torch_onnx_export(benchmark, bert_checkpoint, tmp_path, quick):
    benchmark.group = "convert"
    rounds = 1 if quick else 3

    def run() -> Path:
        out = tmp_path / "baseline"
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir()
        return torch_export_and_optimize(bert_checkpoint, out)

    path = benchmark.pedantic(run, rounds=rounds, iterations=1)
    ops = Counter(node.op_type for node in onnx.load(str(path), load_external_data=False).graph.node)
    benchmark.extra_info.update({"engine": "torch.onnx.export + ORT optimizer", "fused_attention": ops["Attention"]})
    RESULTS["baseline"] = benchmark.stats.stats.mean


def test_convert_mbexport(benchmark, bert_checkpoint, tmp_path, quick):
    from mbexport.converter import convert_detailed

    benchmark.group = "convert"
    rounds = 1 if quick else 3
    result = benchmark.pedantic(lambda: convert_detailed(str(bert_checkpoint), out=tmp_path / "ours", head="base",
                                                         parity=False), rounds=rounds, iterations=1)
    verified = convert_detailed(str(bert_checkpoint), out=tmp_path / "verified", head="base")
    benchmark.extra_info.update({
        "engine": "mbexport convert (no parity)",
        "fused_attention": result.op_counts["Attention"],
        "parity_seconds": round(verified.seconds["verify"], 3),
        "parity_max_abs": max(o.max_abs for o in verified.parity.outputs),
    })
    if "baseline" in RESULTS:
        benchmark.extra_info["speedup"] = round(RESULTS["baseline"] / benchmark.stats.stats.mean, 2)


def test_convert_process_optimum_cli(benchmark, bert_checkpoint, tmp_path, quick):
    out = tmp_path / "optimum"
    command = optimum_export(bert_checkpoint, out)
    benchmark.group = "convert-process"
    benchmark.pedantic(lambda: run_timed(command), setup=lambda: shutil.rmtree(out, ignore_errors=True),
                       rounds=1 if quick else 3, iterations=1)
    ops = Counter(node.op_type for node in onnx.load(str(out / "model.onnx"), load_external_data=False).graph.node)
    benchmark.extra_info.update({"engine": "optimum-cli export onnx --optimize O2 (validation included)",
                                 "fused_attention": ops["Attention"]})
    RESULTS["optimum_process"] = benchmark.stats.stats.mean


def test_convert_process_mbexport(benchmark, bert_checkpoint, tmp_path, quick):
    out = tmp_path / "ours"
    command = [str(Path(sys.executable).parent / "mbexport"), "convert", str(bert_checkpoint), "--out", str(out),
               "--head", "base"]
    benchmark.group = "convert-process"
    benchmark.pedantic(lambda: run_timed(command, offline_env(MBEXPORT_HOME=str(tmp_path / "home"))),
                       setup=lambda: shutil.rmtree(out, ignore_errors=True), rounds=1 if quick else 3, iterations=1)
    parity = json.loads((out / "mbexport.json").read_text())["parity"]
    assert parity["passed"] and parity["reference"].startswith("torch")
    benchmark.extra_info.update({"engine": "mbexport convert (parity against torch included)",
                                 "parity_max_abs": parity["outputs"]["last_hidden_state"]["max_abs"]})
    if "optimum_process" in RESULTS:
        benchmark.extra_info["speedup"] = round(RESULTS["optimum_process"] / benchmark.stats.stats.mean, 2)
