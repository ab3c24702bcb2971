"""Parity figures per export: max |diff|, mean |diff|, cosine and argmax agreement vs PyTorch.

Real MiniLM weights (base head) and a BERT-base-shaped BertForPreTraining (pretraining
head), in each flavor and precision; random ids and real text batches. The benchmark
times the parity check itself; the figures land in ``extra_info`` and the test fails
when any is beyond tolerance.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("torch")

CASES = [
    ("minilm", "base", "fused", "fp32"),
    ("minilm", "base", "fused", "fp16"),
    ("minilm", "base", "portable", "fp32"),
    ("minilm", "base", "fused", "int8"),
    ("bert", "pretraining", "fused", "fp32"),
    ("bert", "pretraining", "fused", "fp16"),
]


@pytest.mark.parametrize(("model", "head", "flavor", "precision"), CASES)
def test_parity(benchmark, model, head, flavor, precision, minilm_dir: Path, bert_checkpoint: Path, tmp_path):
    from mbexport.catalog import Source
    from mbexport.export.build import build_model
    from mbexport.export.quantize import quantize_in_place
    from mbexport.parity import HISTOGRAM_DECADES, check_parity
    from mbexport.sources import load_checkpoint

    src = minilm_dir if model == "minilm" else bert_checkpoint
    checkpoint = load_checkpoint(Source(label=model, path=src))
    built = build_model(checkpoint, head=head, flavor=flavor, precision=precision)
    path = tmp_path / "model.onnx"
    path.write_bytes(built.model.SerializeToString())
    if precision == "int8":
        quantize_in_place(path)
    benchmark.group = "parity"
    report = benchmark.pedantic(lambda: check_parity(path, checkpoint, built.head, precision, "torch"),
                                rounds=1, iterations=1)
    benchmark.extra_info["engine"] = f"{model} {head} {flavor} {precision}"
    for output in report.outputs:
        benchmark.extra_info[f"{output.name}_max_abs"] = float(f"{output.max_abs:.3g}")
        benchmark.extra_info[f"{output.name}_cosine"] = round(output.mean_cosine, 7)
        if output.argmax_agreement is not None:
            benchmark.extra_info[f"{output.name}_argmax"] = round(output.argmax_agreement, 4)
    first = report.outputs[0]  # the hidden states or the head's main logits: the report plots its histogram
    benchmark.extra_info["abs_diff_histogram"] = {"output": first.name, "decades": list(HISTOGRAM_DECADES),
                                                  "counts": first.abs_diff_histogram}
    assert report.passed, report.to_dict()
