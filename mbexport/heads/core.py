"""What a head is: the ``Head`` base class, and the graph and numpy parts heads share.

A head is everything mbexport knows about one output on top of the encoder, in one object:
the canonical weights it needs (and their shapes, given a spec), how to tell from a
checkpoint's tensor names and its config's ``architectures`` that it is there, the ONNX it
emits, an independent float64 numpy forward (parity's reference without torch), the
transformers class that is parity's torch reference, its TF1/TF2 variable names, its outputs
and their dims, whether it needs the pooler, and its ``--head auto`` priority.

The spec and the graph are imported for typing only: ``mbexport.spec`` loads the registry.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from mbexport.export.graph import Graph
    from mbexport.spec import BertSpec

Weights = Mapping[str, np.ndarray]
Feeds = dict[str, np.ndarray]
Shapes = dict[str, tuple[int, ...]]
# A TF variable's canonical name and transform: "copy", or "T" for a Dense kernel ([in, out] -> [out, in]).
TfRule = tuple[str, str]

# HF classes that all name their head ``classifier.*``: the config's ``architectures`` says which
# one a checkpoint is; a checkpoint that names none of them (TF1 run_classifier.py, an edited
# config) holds a sequence classifier, the only one of the three Google's BERT scripts make.
SEQUENCE_CLASSIFIER = "BertForSequenceClassification"
CLASSIFIER_ARCHITECTURES = frozenset({SEQUENCE_CLASSIFIER, "BertForTokenClassification", "BertForMultipleChoice"})


@dataclass(frozen=True, eq=False)
class Head:
    """One output head: its facts as fields; subclasses override the methods that differ."""

    name: str  # the --head value and the manifest's "head"
    architecture: str  # transformers class: parity's torch reference, config.json's architectures
    outputs: Mapping[str, tuple[str, ...]]  # graph output -> dims ("2": a fixed size)
    priority: int  # --head auto takes the highest-priority head the checkpoint is
    input_dims: tuple[str, ...] = ("batch", "sequence")
    needs_pooler: bool = False
    uses_labels: bool = False  # sized by the config's num_labels / id2label
    within: tuple[str, ...] = ()  # heads whose checkpoints carry this one too (MLM in pretraining)
    tf1: Mapping[str, TfRule] = field(default_factory=dict)  # google-research/bert variable -> rule
    tf2: Mapping[str, TfRule] = field(default_factory=dict)  # Model Garden path (no root, no suffix) -> rule

    def weights(self, spec: BertSpec) -> Shapes:
        """Every canonical weight the head reads, with the shape ``spec`` implies."""
        return {}

    def optional_weights(self, spec: BertSpec) -> Shapes:
        """Weights the head reads when present (an untied MLM decoder), with their shapes."""
        return {}

    def detect(self, names: AbstractSet[str], architectures: AbstractSet[str]) -> bool:
        """Whether a checkpoint with these canonical weight names (and config architectures) is this head."""
        raise NotImplementedError

    def output_names(self, has_pooler: bool) -> list[str]:
        return list(self.outputs)

    def graph_inputs(self, g: Graph, inputs: list[str]) -> list[str]:
        """The encoder's [batch, sequence] inputs from the graph's (``input_dims``) ones."""
        return inputs

    def emit(self, g: Graph, spec: BertSpec, w: Weights, hidden: str, inputs: list[str]) -> list[str]:
        """The head's graph on the last hidden state; one tensor per output name, in order."""
        raise NotImplementedError

    def forward(self, spec: BertSpec, w: Weights, encoded: dict[str, np.ndarray],
                feeds: Feeds) -> dict[str, np.ndarray]:
        """The outputs in float64 numpy from the encoder's (``last_hidden_state``, ``pooler_output``)."""
        raise NotImplementedError

    def feeds(self, feeds: Feeds) -> Feeds:
        """A parity batch ([batch, sequence] inputs) laid out as this head's inputs."""
        return feeds


# --- graph parts -----------------------------------------------------------------------------------

def pooler(g: Graph, w: Weights, hidden: str) -> str:
    """tanh(dense(hidden[:, 0])): the [CLS] vector through the pooler::

        hidden [B, S, H] --Gather(0, axis=1)--> [B, H] --Gemm--> Tanh --> pooler_output
    """
    return pooler_dense(g, w, g.op("Gather", [hidden, g.const("index0", 0, np.int64)], "pooler/Gather", axis=1))


def pooler_dense(g: Graph, w: Weights, first: str) -> str:
    """tanh(dense(first)) on the [B, H] first-token vectors (the packed flavor gathers them its own way)."""
    dense = g.op("Gemm", [first, g.weight("pooler.dense.weight", w["pooler.dense.weight"]),
                          g.weight("pooler.dense.bias", w["pooler.dense.bias"])], "pooler.dense/Gemm", transB=1)
    return g.op("Tanh", [dense], "pooler/Tanh")


def classifier(g: Graph, w: Weights, pooled: str, name: str) -> str:
    """``pooled @ W.T + b`` with W in [out, in] layout (Gemm transB, no copy)."""
    return g.op("Gemm", [pooled, g.weight(name + ".weight", w[name + ".weight"]),
                         g.weight(name + ".bias", w[name + ".bias"])], name + "/Gemm", transB=1)


# --- numpy reference parts (float64) ---------------------------------------------------------------

_erf = np.frompyfunc(math.erf, 1, 1)


def np_activation(x: np.ndarray, name: str) -> np.ndarray:
    if name == "relu":
        return np.maximum(x, 0)
    if name == "tanh":
        return np.tanh(x)
    if name == "gelu":
        return 0.5 * x * (1.0 + np.asarray(_erf(x / math.sqrt(2.0)), dtype=np.float64))
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def np_layer_norm(x: np.ndarray, w: Weights, name: str, eps: float) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * w[name + ".weight"] + w[name + ".bias"]


def np_dense(x: np.ndarray, w: Weights, name: str) -> np.ndarray:
    return x @ w[name + ".weight"].T + w[name + ".bias"]


def linear_shapes(name: str, out: int, hidden: int) -> Shapes:
    """A ``name.weight`` [out, hidden] and ``name.bias`` [out] pair."""
    return {f"{name}.weight": (out, hidden), f"{name}.bias": (out,)}


def tf_linear(tf_name: str, canonical: str, kernel: str = "kernel") -> dict[str, TfRule]:
    """A TF Dense layer's kernel ([in, out], transposed) and bias, by their variable names."""
    return {f"{tf_name}/{kernel}": (f"{canonical}.weight", "T"), f"{tf_name}/bias": (f"{canonical}.bias", "copy")}
