"""Parity: the export's outputs against a reference forward on the same inputs.

The reference is PyTorch (a fresh transformers model in eval mode, eager
attention, the checkpoint's own weights) when torch is installed, else an
independent float64 numpy forward. Only real tokens count: padding positions are
masked out of every figure.

Tolerances (DESIGN.md): fp32 max |diff| <= 1e-4; fp16 mean cosine >= 0.9999 and
max |diff| <= 2e-2; int8 (quantized weights) mean cosine >= 0.98 per token, no max |diff|
bound. Head logits (vocab scores, spans) are compared with the same tolerance scaled by
the reference's magnitude when that exceeds 1, since their absolute size grows with the
vocabulary and the model, and must agree on argmax.
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mbexport.errors import ParityError
from mbexport.export.pooling import host_pooled
from mbexport.families import family_of
from mbexport.heads import Head
from mbexport.heads.core import np_activation, np_dense, np_layer_norm
from mbexport.layout import SENTENCE_EMBEDDING as POOLED_OUTPUT
from mbexport.layout import PooledOutput
from mbexport.spec import BertSpec, Checkpoint

if TYPE_CHECKING:
    from mbexport.reference_worker import Pending

@dataclass(frozen=True)
class Tolerance:
    """One precision's bounds: max |diff| (None: not bounded), mean cosine and argmax agreement floors."""

    max_abs: float | None
    min_cosine: float
    min_argmax_agreement: float


TOLERANCES = {
    "fp32": Tolerance(max_abs=1e-4, min_cosine=0.99999, min_argmax_agreement=0.999),
    "fp16": Tolerance(max_abs=2e-2, min_cosine=0.9999, min_argmax_agreement=0.999),
    # int8 weights move values by far more than a fixed bound: held to direction and ranking only.
    "int8": Tolerance(max_abs=None, min_cosine=0.98, min_argmax_agreement=0.9),
}
# Hidden states (and vectors pooled from them) are held to the absolute bound; logits to a bound scaled by their size.
ABSOLUTE_OUTPUTS = ("last_hidden_state", "pooler_output", "sentence_embedding")
# |diff| histogram bins, by decade: below 1e-10, [1e-10, 1e-9), ..., [1e-1, 1), 1 and above.
HISTOGRAM_DECADES = tuple(range(-10, 1))

# Real text for the second parity batch: several scripts, casing, punctuation, a pair.
PARITY_TEXTS = [
    ("The quick brown fox jumps over the lazy dog.", None),
    ("MultiBERTs: 25 seeds, 28 checkpoints each -- reproducible BERT!", "Is the seed variance large?"),
    ("Ceci n'est pas une pipe; ça, c'est un modèle.", None),
    ("東京は日本の首都です。", "Берлин — столица Германии."),
    ("ΟΔΥΣΣΕΥΣ went home after twenty years", None),
    ("a", None),
]


Feeds = dict[str, np.ndarray]


def random_batch(spec: BertSpec, seed: int = 0, batch: int = 4, seq: int = 24) -> Feeds:
    """Random ids with right padding of several lengths and both segment ids."""
    rng = np.random.default_rng(seed)
    seq = min(seq, spec.max_position_embeddings)
    ids = rng.integers(1, spec.vocab_size, size=(batch, seq), dtype=np.int64)
    lengths = [seq, max(1, seq - 5), max(1, seq // 2), 1][:batch]
    mask = (np.arange(seq)[None, :] < np.array(lengths)[:, None]).astype(np.int64)
    types = np.zeros_like(ids)
    if spec.type_vocab_size > 1:
        for row, length in enumerate(lengths):
            types[row, length // 2: length] = 1
    ids[mask == 0] = 0
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def text_batch(vocab_dir: Path, spec: BertSpec) -> Feeds:
    """PARITY_TEXTS through the native WordPiece tokenizer."""
    from mbexport.tokenizer import WordPieceTokenizer

    tokenizer = WordPieceTokenizer.from_pretrained(vocab_dir)
    first = [a for a, _ in PARITY_TEXTS]
    second = [b or "" for _, b in PARITY_TEXTS]
    encoded = tokenizer(first, second, padding=True, truncation=True,
                        max_length=min(64, spec.max_position_embeddings), return_tensors="np")
    feeds = {k: np.asarray(encoded[k], dtype=np.int64) for k in ("input_ids", "attention_mask", "token_type_ids")}
    if spec.type_vocab_size < 2:
        feeds["token_type_ids"][:] = 0
    return feeds


# --- references ------------------------------------------------------------------------------------

def torch_reference(checkpoint: Checkpoint, head: Head, batches: list[Feeds],
                    model_dir: Path | None = None) -> list[dict[str, np.ndarray]]:
    """Outputs of a fresh transformers model (eval mode, eager attention) holding the same weights.

    With ``model_dir`` (an HF directory) transformers reads the weights itself, independently of
    mbexport's reader, so a reader bug shows as a parity failure; otherwise the model gets
    ``checkpoint.weights``."""
    import torch
    import transformers  # a lazy module: only the family's modeling code is imported

    family = family_of(checkpoint.spec)
    config = getattr(transformers, family.config_class)(**checkpoint.spec.to_hf_config())
    if head.uses_labels:
        config.num_labels = checkpoint.spec.num_labels
    config.tie_word_embeddings = not any(name in checkpoint.weights for name in family.tied)
    model_class = getattr(transformers, head.architecture)
    options = family.reference_options(head, checkpoint.has_pooler)
    if model_dir is not None:
        model, info = model_class.from_pretrained(model_dir, config=config, dtype=torch.float32,
                                                  attn_implementation="eager", output_loading_info=True, **options)
        _check_missing(set(info["missing_keys"]), model_dir, tuple(family.tied))
    else:
        model = _model_from_arrays(model_class, config, options, head, checkpoint)
    model.set_attn_implementation("eager")
    model.eval()
    outputs = []
    with torch.no_grad():
        for feeds in batches:
            result = model(**{k: torch.from_numpy(v) for k, v in feeds.items()})
            outputs.append({name: getattr(result, name).float().numpy() for name in head.outputs
                            if getattr(result, name, None) is not None})
    return outputs


def _model_from_arrays(model_class: Any, config: Any, options: dict[str, Any], head: Head,
                       checkpoint: Checkpoint) -> Any:
    """The reference model holding ``checkpoint.weights`` (no random init: every weight is assigned)."""
    import torch
    from transformers.initialization import no_init_weights

    family = family_of(checkpoint.spec)
    with no_init_weights():
        model = model_class(config, **options)
    prefix = "" if head.architecture == family.base_class else family.hf_prefix
    state = {(prefix + k if k.startswith(family.encoder_parts) else k): torch.from_numpy(_float32(v))
             for k, v in checkpoint.weights.items()}
    expected = set(model.state_dict())
    if "cls.predictions.bias" in state:  # one MLM output bias, whichever name the model class reads
        state.setdefault("cls.predictions.decoder.bias", state["cls.predictions.bias"])
    tied = tuple(family.tied)
    _check_missing(expected - set(state), checkpoint.source, tied)
    model.load_state_dict({k: v for k, v in state.items() if k in expected}, strict=False, assign=True)
    if config.tie_word_embeddings and any(k.endswith(tied) for k in expected):
        model.tie_weights()
    return model


def _float32(array: np.ndarray) -> np.ndarray:
    """A writable float32 array, shared with ``array`` when it already is one (torch wants writable)."""
    if array.dtype == np.float32 and array.flags.writeable and array.flags.c_contiguous:
        return array
    return np.array(array, dtype=np.float32)


def _check_missing(missing: set[str], where: object, tied: tuple[str, ...]) -> None:
    """Weights the reference model has and the checkpoint lacks, except those derived or tied."""
    needed = {k for k in missing if not k.endswith(("position_ids", "decoder.bias", *tied))}
    if needed:
        raise ParityError(f"{where}: the reference model needs weights the checkpoint lacks: {sorted(needed)[:3]}")


def numpy_reference(checkpoint: Checkpoint, head: Head, batches: list[Feeds]) -> list[dict[str, np.ndarray]]:
    """An independent float64 forward in numpy, for machines without torch."""
    return [_numpy_forward(checkpoint, head, feeds) for feeds in batches]


def _numpy_forward(checkpoint: Checkpoint, head: Head, feeds: Feeds) -> dict[str, np.ndarray]:
    """The encoder (on inputs flattened to [rows, sequence]) then the head's own numpy forward."""
    spec = checkpoint.spec
    w = {k: v.astype(np.float64) for k, v in checkpoint.weights.items()}
    ids, mask, types = (feeds[k].reshape(-1, feeds[k].shape[-1])
                        for k in ("input_ids", "attention_mask", "token_type_ids"))
    batch, seq = ids.shape
    eps, nh, hs = spec.layer_norm_eps, spec.num_heads, spec.head_size

    x = (w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:seq]
         + w["embeddings.token_type_embeddings.weight"][types])
    x = family_of(spec).project_embeddings_np(w, np_layer_norm(x, w, "embeddings.LayerNorm", eps))
    bias = (1.0 - mask[:, None, None, :]) * np.finfo(np.float64).min
    for i in range(spec.num_layers):
        p = f"encoder.layer.{i}."

        def heads(name: str, p: str = p, x: np.ndarray = x) -> np.ndarray:
            return np_dense(x, w, p + "attention.self." + name).reshape(batch, seq, nh, hs).transpose(0, 2, 1, 3)

        scores = heads("query") @ heads("key").transpose(0, 1, 3, 2) / math.sqrt(hs) + bias
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        probs = scores / scores.sum(-1, keepdims=True)
        context = (probs @ heads("value")).transpose(0, 2, 1, 3).reshape(batch, seq, nh * hs)
        x = np_layer_norm(np_dense(context, w, p + "attention.output.dense") + x, w, p + "attention.output.LayerNorm",
                          eps)
        inner = np_activation(np_dense(x, w, p + "intermediate.dense"), spec.hidden_act)
        x = np_layer_norm(np_dense(inner, w, p + "output.dense") + x, w, p + "output.LayerNorm", eps)
    encoded: dict[str, np.ndarray] = {"last_hidden_state": x}
    if "pooler.dense.weight" in w:
        encoded["pooler_output"] = np.tanh(np_dense(x[:, 0], w, "pooler.dense"))
    out = head.forward(spec, w, encoded, feeds)
    return {k: v for k, v in out.items() if k in head.outputs}


# --- comparison ------------------------------------------------------------------------------------

@dataclass
class OutputParity:
    name: str
    max_abs: float
    mean_abs: float
    mean_cosine: float
    min_cosine: float
    argmax_agreement: float | None
    tolerance: float | None  # max |diff| bound; None where the precision bounds direction only (int8)
    min_mean_cosine: float
    min_argmax_agreement: float
    abs_diff_histogram: list[int]  # counts per HISTOGRAM_DECADES bin (len + 1 bins)
    non_finite: int = 0  # real-token values that are NaN or Inf on either side (figures cover the rest)

    @property
    def passed(self) -> bool:
        return (not self.non_finite and (self.tolerance is None or self.max_abs <= self.tolerance)
                and self.mean_cosine >= self.min_mean_cosine
                and (self.argmax_agreement is None or self.argmax_agreement >= self.min_argmax_agreement))

    def worst_ratio(self) -> float:
        """How close to failing (1.0 = at the bound), over every bound this output has."""
        if self.non_finite:
            return math.inf
        ratios = [(1 - self.mean_cosine) / max(1 - self.min_mean_cosine, 1e-12)]
        if self.tolerance is not None:
            ratios.append(self.max_abs / self.tolerance)
        if self.argmax_agreement is not None:
            ratios.append((1 - self.argmax_agreement) / (1 - self.min_argmax_agreement))
        return max(ratios)


@dataclass
class ParityReport:
    reference: str
    precision: str
    batches: list[str]
    outputs: list[OutputParity] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(o.passed for o in self.outputs)

    def to_dict(self) -> dict[str, Any]:
        return {"reference": self.reference, "precision": self.precision, "batches": self.batches,
                "passed": self.passed, "tolerances": asdict(TOLERANCES[self.precision]),
                "outputs": {o.name: {k: v for k, v in asdict(o).items() if k != "name"} for o in self.outputs}}

    def summary(self) -> str:
        worst = max(self.outputs, key=OutputParity.worst_ratio)
        if worst.non_finite:
            return f"{worst.name} has {worst.non_finite} NaN or Inf values on real tokens vs {self.reference}"
        bound = "unbounded" if worst.tolerance is None else f"tol {worst.tolerance:.0e}"
        agree = "" if worst.argmax_agreement is None else f", argmax agreement {worst.argmax_agreement:.4f}"
        return (f"{worst.name} max|diff| {worst.max_abs:.2e} ({bound}), mean cosine {worst.mean_cosine:.6f}"
                f"{agree} vs {self.reference}")


def _rows(array: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows to compare, float64, and which of their values count (from the mask, never from the
    values): one row per real token for [B, S, X] outputs, one per sequence for [B, S] span
    logits (padding positions not counted) and [B, X]."""
    array = array.astype(np.float64)
    if array.ndim == 3:
        array = array[mask.astype(bool)]
        return array, np.ones(array.shape, dtype=bool)
    if array.shape == mask.shape:
        return array, mask.astype(bool)
    return array, np.ones(array.shape, dtype=bool)


def compare(name: str, ours: list[np.ndarray], refs: list[np.ndarray], masks: list[np.ndarray],
            precision: str) -> OutputParity:
    """Figures for one output over all batches, real tokens only. A NaN or Inf there, on either
    side, fails the output; the figures cover the finite values."""
    diffs, cosines, agreements, peaks, non_finite = [], [], [], [1.0], 0
    for got, ref, mask in zip(ours, refs, masks):
        (a, valid), (b, _) = _rows(got, mask), _rows(ref, mask)
        finite = valid & np.isfinite(a) & np.isfinite(b)
        non_finite += int(np.count_nonzero(valid & ~finite))
        a0, b0 = np.where(finite, a, 0.0), np.where(finite, b, 0.0)
        diffs.append(np.abs(a0 - b0)[finite])
        peaks.append(float(np.abs(b0).max(initial=0.0)))
        norms = np.linalg.norm(a0, axis=-1) * np.linalg.norm(b0, axis=-1)
        cosines.append(np.where(norms > 0, (a0 * b0).sum(-1) / np.where(norms > 0, norms, 1.0), 1.0))
        agreements.append(np.where(finite, a, -np.inf).argmax(-1) == np.where(finite, b, -np.inf).argmax(-1))
    diff, cosine = np.concatenate(diffs), np.concatenate(cosines)
    is_hidden = name in ABSOLUTE_OUTPUTS
    bounds = TOLERANCES[precision]
    tolerance = bounds.max_abs
    if tolerance is not None and not is_hidden:
        tolerance *= max(peaks)
    return OutputParity(
        name=name,
        max_abs=float(diff.max(initial=0.0)),
        mean_abs=float(diff.mean()) if diff.size else 0.0,
        mean_cosine=float(cosine.mean()),
        min_cosine=float(cosine.min()),
        argmax_agreement=None if is_hidden else float(np.concatenate(agreements).mean()),
        tolerance=tolerance,
        min_mean_cosine=bounds.min_cosine,
        min_argmax_agreement=bounds.min_argmax_agreement,
        abs_diff_histogram=np.bincount(np.searchsorted(np.power(10.0, HISTOGRAM_DECADES), diff, side="right"),
                                       minlength=len(HISTOGRAM_DECADES) + 1).tolist(),
        non_finite=non_finite,
    )


def reference_name(use_torch: bool) -> str:
    if use_torch:
        import torch
        import transformers

        return f"torch {torch.__version__} + transformers {transformers.__version__} (eager, eval)"
    return "numpy float64 forward (torch not installed)"


def torch_available() -> bool:
    """Whether torch and transformers are installed (found, not imported: importing takes seconds)."""
    return all(importlib.util.find_spec(name) is not None for name in ("torch", "transformers"))


def _use_torch(reference: str) -> bool:
    if reference not in ("auto", "torch", "numpy"):
        raise ParityError(f"unknown parity reference {reference!r}; choose auto, torch or numpy")
    use_torch = torch_available() if reference == "auto" else reference == "torch"
    if use_torch and not torch_available():
        raise ParityError("the torch parity reference needs torch and transformers: "
                          "pip install 'mbexport[torch]', or use the numpy reference")
    return use_torch


def prestart_reference(reference: str = "auto") -> None:
    """Start the torch reference's process now (when it is the one ``reference`` picks), so that
    importing torch overlaps the caller's conversion."""
    if _use_torch(reference):
        from mbexport import reference_worker

        reference_worker.prestart()


@dataclass
class ReferenceRun:
    """The parity batches and the reference started on them (before the export exists)."""

    batches: list[Feeds]
    descriptions: list[str]
    pending: Pending | None  # the torch reference's job in its process; None: numpy, run when collected


def start_reference(checkpoint: Checkpoint, head: Head, reference: str = "auto",
                    from_source: bool = False) -> ReferenceRun:
    """Build the parity batches (a random and a real-text one) and start the reference on them.

    ``from_source``: the torch reference reads the weights from the checkpoint's own files where
    transformers can (an HF directory), not from ``checkpoint.weights`` as mbexport read them."""
    use_torch = _use_torch(reference)
    batches = [head.feeds(random_batch(checkpoint.spec)),
               head.feeds(text_batch(checkpoint.vocab_file, checkpoint.spec))]
    descriptions = ["random ids, right padding, both segments", f"{len(PARITY_TEXTS)} real texts, native tokenizer"]
    pending = None
    if use_torch:
        from mbexport import reference_worker

        pending = reference_worker.submit(checkpoint, head, batches, from_source)
    return ReferenceRun(batches, descriptions, pending)


def check_parity(model_path: Path, checkpoint: Checkpoint, head: Head, precision: str,
                 reference: str = "auto", providers: list[str] | None = None,
                 started: ReferenceRun | None = None, from_source: bool = False) -> ParityReport:
    """Run the export at ``model_path`` and the reference (``started``, or started now) on the same batches."""
    from mbexport._ort import onnxruntime as ort

    run = started or start_reference(checkpoint, head, reference, from_source)
    session = ort.InferenceSession(str(model_path), providers=providers or ["CPUExecutionProvider"])
    output_names = [o.name for o in session.get_outputs()]
    ours = [dict(zip(output_names, session.run(None, feeds))) for feeds in run.batches]
    if run.pending is not None:
        name, refs = run.pending.outputs()
    else:
        name, refs = reference_name(False), numpy_reference(checkpoint, head, run.batches)
    if POOLED_OUTPUT in output_names:  # the in-graph pooling against host pooling of the reference's states
        pooled = PooledOutput.of(checkpoint.embedding)
        for ref, feeds in zip(refs, run.batches):
            ref[POOLED_OUTPUT] = host_pooled(ref, feeds["attention_mask"], pooled)

    report = ParityReport(name, precision, run.descriptions)
    masks = [feeds["attention_mask"] for feeds in run.batches]
    for output in output_names:
        report.outputs.append(compare(output, [o[output] for o in ours], [r[output] for r in refs], masks, precision))
    return report
