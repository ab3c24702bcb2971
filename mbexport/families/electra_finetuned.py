"""ELECTRA's fine-tuned heads as transformers defines them: ``qa``, ``token-classification``, ``multiple-choice``.

The first two are BERT's heads (mbexport/heads/) under ELECTRA's class names: the same weights
(``qa_outputs.*``; ``classifier.*`` [labels, H]) and the same math on the last hidden state.
``multiple-choice`` is BERT's, scoring each choice from transformers' ``ElectraSequenceSummary``
instead of a pooler::

    hidden [B*C, S, H] --Gather(0, axis=1)--> [B*C, H] --Gemm sequence_summary.summary (summary_use_proj)
        --summary_activation--> [B*C, H] --Gemm classifier--> [B*C, 1] --Reshape--> logits [B, C]

The summary's dropouts are identities at inference. ``summary_type`` other than ``first`` and
``summary_proj_to_labels`` are refused when the multiple-choice head is built (``summary_of``), not
built differently; the other heads of such a checkpoint convert.

Token classification and multiple choice share ``classifier.*``: the config's ``architectures``
says which a checkpoint is, and a checkpoint that names neither is refused (``refuse_unnamed``).

No TF names: google-research/electra's fine-tuning code (finetune/qa, finetune/tagging) builds
other heads (a separate start layer and a 512-wide joint end layer for QA), under task-named
scopes, and has no multiple-choice task, so none of its checkpoints maps onto these classes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from mbexport.errors import CheckpointFormatError, ExportError
from mbexport.export.encoder import apply_activation
from mbexport.heads.classification import is_classifier
from mbexport.heads.core import Head, Shapes, Weights, classifier, linear_shapes, np_activation, np_dense
from mbexport.heads.multiple_choice import MultipleChoice
from mbexport.heads.qa import QA
from mbexport.heads.token_classification import TOKEN_CLASSIFICATION, TokenClassification

if TYPE_CHECKING:
    from mbexport.export.graph import Graph
    from mbexport.spec import BertSpec

TOKEN_CLASSIFIER = "ElectraForTokenClassification"
MULTIPLE_CHOICE = "ElectraForMultipleChoice"
CLASSIFIERS = frozenset({TOKEN_CLASSIFIER, MULTIPLE_CHOICE})  # both name their head classifier.{weight,bias}
SUMMARY = "sequence_summary.summary"
# summary_activation values the graph emits (transformers' get_activation names); None or "" is none.
SUMMARY_ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "relu", "tanh")


@dataclass(frozen=True)
class SequenceSummary:
    """What ``ElectraSequenceSummary`` does at inference (ElectraConfig's defaults): the first
    token, through a hidden-to-hidden linear when ``use_proj``, then ``activation`` (None: none).
    ``unsupported`` says why the graph cannot build the config's summary: only building the
    multiple-choice head refuses it, so ``--head base`` still converts such a checkpoint."""

    use_proj: bool = True
    activation: str | None = "gelu"
    unsupported: str | None = None

    @classmethod
    def from_config(cls, config: Mapping[str, Any], where: str) -> SequenceSummary:
        """The config's ``summary_*`` fields; a ``summary_use_proj`` that is not a bool is refused here
        (it decides which weights the checkpoint has), the settings the graph cannot build are recorded."""
        summary_type = config.get("summary_type", "first")
        use_proj, activation = config.get("summary_use_proj", True), config.get("summary_activation", "gelu")
        to_labels = config.get("summary_proj_to_labels")
        if not isinstance(use_proj, bool):
            raise CheckpointFormatError(f"{where}: summary_use_proj is {use_proj!r:.40}; use true or false")
        checks = (("summary_type", summary_type, "'first' (the first token)", summary_type == "first"),
                  ("summary_proj_to_labels", to_labels, "false or absent", not (use_proj and to_labels)),
                  ("summary_activation", activation, f"null or one of {', '.join(SUMMARY_ACTIVATIONS)}",
                   activation in (None, "", *SUMMARY_ACTIVATIONS)))
        unsupported = next((f"{where}: {key} is {value!r:.40}; mbexport builds ELECTRA's multiple-choice summary "
                            f"only with {key} {supported} (--head base exports the encoder)"
                            for key, value, supported, ok in checks if not ok), None)
        return cls(use_proj, activation if isinstance(activation, str) and activation else None, unsupported)

    def buildable(self) -> SequenceSummary:
        """This summary, or the error saying why the graph cannot build it (listing weights needs no check)."""
        if self.unsupported:
            raise CheckpointFormatError(self.unsupported)
        return self


def summary_of(spec: BertSpec) -> SequenceSummary:
    """The spec's summary (an ELECTRA spec has one)."""
    summary = getattr(spec, "summary", None)
    if not isinstance(summary, SequenceSummary):
        raise ExportError(f"the ELECTRA multiple-choice head needs an ELECTRA spec, not a {spec.family} one")
    return summary


class _Named:
    """Detection of a head whose ``classifier.*`` only the config's ``architectures`` attributes."""

    architecture: str

    def detect(self, names: AbstractSet[str], architectures: AbstractSet[str]) -> bool:
        return is_classifier(self.architecture, names, architectures, CLASSIFIERS, unnamed=None)


class ElectraTokenClassification(_Named, TokenClassification):
    """BERT's token classifier, detected by ELECTRA's class name."""


class ElectraMultipleChoice(_Named, MultipleChoice):
    """BERT's multiple-choice head on ``ElectraSequenceSummary`` instead of the pooler."""

    def weights(self, spec: BertSpec) -> Shapes:
        h = spec.hidden_size
        proj = linear_shapes(SUMMARY, h, h) if summary_of(spec).use_proj else {}
        return {**proj, **super().weights(spec)}

    def summary(self, g: Graph, spec: BertSpec, w: Weights, hidden: str) -> str:
        summary = summary_of(spec).buildable()
        x = g.op("Gather", [hidden, g.const("index0", 0, np.int64)], "sequence_summary/Gather", axis=1)
        if summary.use_proj:
            x = classifier(g, w, x, SUMMARY)
        return apply_activation(g, x, summary.activation, "sequence_summary") if summary.activation else x

    def np_summary(self, spec: BertSpec, w: Weights, encoded: dict[str, np.ndarray]) -> np.ndarray:
        summary = summary_of(spec).buildable()
        x = encoded["last_hidden_state"][:, 0]
        if summary.use_proj:
            x = np_dense(x, w, SUMMARY)
        return np_activation(x, summary.activation) if summary.activation else x


def refuse_unnamed(names: AbstractSet[str], heads: tuple[str, ...]) -> None:
    """A ``classifier.weight`` neither classifier claimed: the config's ``architectures`` names neither."""
    if "classifier.weight" in names and not {"token-classification", "multiple-choice"} & set(heads):
        raise CheckpointFormatError(
            f"this ELECTRA checkpoint's classifier.weight belongs to {TOKEN_CLASSIFIER} or {MULTIPLE_CHOICE}, and "
            "its config's architectures names neither; add the one it is to architectures in its config.json")


FINETUNED: tuple[Head, ...] = (
    dataclasses.replace(QA, architecture="ElectraForQuestionAnswering", tf1={}, tf2={}),
    ElectraTokenClassification("token-classification", TOKEN_CLASSIFIER, TOKEN_CLASSIFICATION.outputs,
                               priority=TOKEN_CLASSIFICATION.priority, uses_labels=True),
    ElectraMultipleChoice("multiple-choice", MULTIPLE_CHOICE, {"logits": ("batch", "choices")}, priority=40,
                          input_dims=("batch", "choices", "sequence")),
)
