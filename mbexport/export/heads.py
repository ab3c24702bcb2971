"""Output heads on top of the encoder, one function each, and their declarative configs.

A head config says which graph outputs exist, their dynamic axes and which
HF class is the parity reference; ``build.py`` composes encoder + head from it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from mbexport.errors import ExportError
from mbexport.export.encoder import activation, layer_norm
from mbexport.export.graph import Graph
from mbexport.spec import BertSpec, Checkpoint

Weights = Mapping[str, np.ndarray]


def pooler(g: Graph, w: Weights, hidden: str) -> str:
    """tanh(dense(hidden[:, 0])): the [CLS] vector through the pooler::

        hidden [B, S, H] --Gather(0, axis=1)--> [B, H] --Gemm--> Tanh --> pooler_output
    """
    first = g.op("Gather", [hidden, g.const("index0", 0, np.int64)], "pooler/Gather", axis=1)
    dense = g.op("Gemm", [first, g.weight("pooler.dense.weight", w["pooler.dense.weight"]),
                          g.weight("pooler.dense.bias", w["pooler.dense.bias"])], "pooler.dense/Gemm", transB=1)
    return g.op("Tanh", [dense], "pooler/Tanh")


def classifier(g: Graph, w: Weights, pooled: str, name: str) -> str:
    """``pooled @ W.T + b`` with W in [out, in] layout (Gemm transB, no copy)."""
    return g.op("Gemm", [pooled, g.weight(name + ".weight", w[name + ".weight"]),
                         g.weight(name + ".bias", w[name + ".bias"])], name + "/Gemm", transB=1)


def masked_lm(g: Graph, spec: BertSpec, w: Weights, hidden: str) -> str:
    """Transform (dense, activation, LayerNorm) then the decoder, tied to the word embeddings.

    A tied decoder reads ``embeddings.word_embeddings.weight`` through a Transpose node
    rather than a transposed copy, so the vocab matrix is stored once; an untied one
    (``cls.predictions.decoder.weight`` present) uses its own matrix.
    """
    p = "cls.predictions.transform."
    x = g.linear(hidden, w[p + "dense.weight"], None, p + "dense")
    x = activation(g, x, w[p + "dense.bias"], spec.hidden_act, p + "dense", fused=False)
    x = layer_norm(g, x, w, p + "LayerNorm", spec.layer_norm_eps)
    tied = "cls.predictions.decoder.weight" not in w
    name = "embeddings.word_embeddings.weight" if tied else "cls.predictions.decoder.weight"
    embeddings = g.weight(name, w[name])
    decoder = g.op("Transpose", [embeddings], "cls.predictions.decoder/Transpose", perm=[1, 0])
    logits = g.op("MatMul", [x, decoder], "cls.predictions.decoder/MatMul")
    return g.op("Add", [logits, g.weight("cls.predictions.bias", w["cls.predictions.bias"])],
                "cls.predictions/Add")


def span_logits(g: Graph, w: Weights, hidden: str) -> list[str]:
    """QA: one linear to [B, S, 2], split into start and end logits [B, S]."""
    both = g.linear(hidden, w["qa_outputs.weight"], w["qa_outputs.bias"], "qa_outputs")
    start, end = g.op("Split", [both, g.const("split_1_1", [1, 1], np.int64)], "qa_outputs/Split", outputs=2,
                      axis=-1)
    axis = g.const("axis_last", [-1], np.int64)
    return [g.op("Squeeze", [start, axis], "start_logits/Squeeze"), g.op("Squeeze", [end, axis], "end_logits/Squeeze")]


@dataclass(frozen=True)
class HeadConfig:
    """What a head emits: output names with their dims, and its parity reference class."""

    name: str
    outputs: dict[str, tuple[str, ...]]
    reference_class: str
    emit: Callable[[Graph, BertSpec, Weights, str], list[str]]
    needs_pooler: bool


def _base(g: Graph, spec: BertSpec, w: Weights, hidden: str) -> list[str]:
    return [hidden, pooler(g, w, hidden)] if "pooler.dense.weight" in w else [hidden]


def _pretraining(g: Graph, spec: BertSpec, w: Weights, hidden: str) -> list[str]:
    return [masked_lm(g, spec, w, hidden), classifier(g, w, pooler(g, w, hidden), "cls.seq_relationship")]


def _qa(g: Graph, spec: BertSpec, w: Weights, hidden: str) -> list[str]:
    return span_logits(g, w, hidden)


def _classification(g: Graph, spec: BertSpec, w: Weights, hidden: str) -> list[str]:
    return [classifier(g, w, pooler(g, w, hidden), "classifier")]


BSH = ("batch", "sequence", "hidden")
HEAD_CONFIGS: dict[str, HeadConfig] = {
    "base": HeadConfig("base", {"last_hidden_state": BSH, "pooler_output": ("batch", "hidden")}, "BertModel",
                       _base, needs_pooler=False),
    "pretraining": HeadConfig("pretraining", {"prediction_logits": ("batch", "sequence", "vocab"),
                                              "seq_relationship_logits": ("batch", "2")},
                              "BertForPreTraining", _pretraining, needs_pooler=True),
    "qa": HeadConfig("qa", {"start_logits": ("batch", "sequence"), "end_logits": ("batch", "sequence")},
                     "BertForQuestionAnswering", _qa, needs_pooler=False),
    "classification": HeadConfig("classification", {"logits": ("batch", "labels")},
                                 "BertForSequenceClassification", _classification, needs_pooler=True),
}

# --head auto prefers the most specific head a checkpoint carries.
AUTO_ORDER = ("qa", "classification", "pretraining", "base")


def choose_head(checkpoint: Checkpoint, requested: str, heads: Mapping[str, HeadConfig] = HEAD_CONFIGS,
                auto_order: tuple[str, ...] = AUTO_ORDER) -> HeadConfig:
    """Resolve ``--head`` against what the checkpoint carries, with a clear error when it lacks it;
    ``heads`` and ``auto_order`` are the checkpoint's family's (mbexport/families/)."""
    available = checkpoint.spec.heads
    if requested == "auto":
        requested = next(h for h in auto_order if h in available)
    if requested not in heads:
        raise ExportError(f"unknown head {requested!r}; choose one of: auto, {', '.join(heads)}")
    if requested not in available:
        raise ExportError(
            f"{checkpoint.source} has no {requested} head (it carries: {', '.join(available)}); "
            f"use --head {available[-1]} or --head base"
        )
    config = heads[requested]
    if config.needs_pooler and not checkpoint.has_pooler:
        raise ExportError(f"{checkpoint.source} has no pooler weights, which the {requested} head needs")
    return config


def output_names(config: HeadConfig, checkpoint: Checkpoint) -> list[str]:
    names = list(config.outputs)
    if "pooler_output" in names and not checkpoint.has_pooler:
        names.remove("pooler_output")
    return names
