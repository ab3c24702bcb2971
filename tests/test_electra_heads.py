"""ELECTRA's fine-tuned heads (mbexport/families/electra_finetuned.py) against transformers.

Tiny ELECTRAs of each class (ElectraForQuestionAnswering, ElectraForTokenClassification,
ElectraForMultipleChoice) are written by transformers itself with an embedding width (20)
narrower than the hidden size (36), converted through the console script and the API, and
their ONNX outputs compared, independently of mbexport's parity code, with the model that wrote
them: on random ids with right padding and both segments, and on real texts and text pairs.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import run_mbexport, scale_random_weights
from test_electra import ELECTRA_CONFIG, load, onnx_outputs, save_hf

import mbexport
from mbexport.converter import verify_export
from mbexport.errors import CheckpointFormatError, ExportError
from mbexport.families.electra import ELECTRA
from mbexport.parity import numpy_reference, random_batch, text_batch

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
ort = pytest.importorskip("onnxruntime")

pytestmark = pytest.mark.torch

CLASSES = {"qa": "ElectraForQuestionAnswering", "token-classification": "ElectraForTokenClassification",
           "multiple-choice": "ElectraForMultipleChoice"}
OUTPUTS = {"qa": ["start_logits", "end_logits"], "token-classification": ["logits"], "multiple-choice": ["logits"]}
LABELS = {"0": "O", "1": "B-PER", "2": "I-PER", "3": "B-LOC", "4": "I-LOC"}
CHOICES = 3


def make_model(head: str, seed: int = 0, **options: object):
    """A transformers ELECTRA head with scaled-up random weights (five labels for the token classifier)."""
    torch.manual_seed(seed)
    config = {**ELECTRA_CONFIG, **options}
    if head == "token-classification":
        config.update(id2label=LABELS, label2id={v: int(k) for k, v in LABELS.items()})
    model = getattr(transformers, CLASSES[head])(transformers.ElectraConfig(**config)).eval()
    scale_random_weights(model)
    model.set_attn_implementation("eager")
    return model


def batches(head: str, source: Path) -> list[dict[str, np.ndarray]]:
    """Random ids (right padding of four lengths, both segments) and real texts (pairs among them);
    multiple choice gets them as [batch, 3 choices, sequence]."""
    spec = load(source).spec
    random = [random_batch(spec, seed=s) for s in (3, 4, 5)]
    feeds = [{k: np.concatenate([b[k] for b in random]) for k in random[0]}, text_batch(source, spec)]
    if head == "multiple-choice":
        feeds = [{k: v.reshape(-1, CHOICES, v.shape[-1]) for k, v in f.items()} for f in feeds]
    return feeds


def worst_diff(export: Path, model, feeds: list[dict[str, np.ndarray]]) -> dict[str, float]:
    """Max |diff| per output between the export and ``model`` over real tokens (per-token outputs)
    or every value (per-choice outputs)."""
    worst: dict[str, float] = {}
    for batch in feeds:
        ours = onnx_outputs(export / "model.onnx", batch)
        with torch.no_grad():
            result = model(**{k: torch.from_numpy(v) for k, v in batch.items()})
        mask = batch["attention_mask"].astype(bool)
        for name, got in ours.items():
            ref = getattr(result, name).numpy()
            assert got.shape == ref.shape, name
            if got.shape[:mask.ndim] == mask.shape:
                got, ref = got[mask], ref[mask]
            worst[name] = max(worst.get(name, 0.0), float(np.abs(got.astype(np.float64) - ref).max()))
    return worst


def one_line(message: str) -> str:
    assert "\n" not in message.strip(), message
    return message


# ---------------------------------------------------------------------------------------------
# Each head through the API (--head auto, flavors, precisions), against transformers


@pytest.mark.parametrize("head", list(CLASSES))
def test_auto_converts_each_head_and_matches_transformers(tmp_path: Path, head: str) -> None:
    """Head auto through the API (the console script converts ELECTRA in the TF1 test and refuses a head below)."""
    model = make_model(head)
    source = save_hf(model, tmp_path / "src", "safetensors")
    out = mbexport.convert(str(source), out=tmp_path / "export")
    manifest = json.loads((out / "mbexport.json").read_text())
    assert manifest["head"] == head and manifest["outputs"] == OUTPUTS[head]
    assert manifest["parity"]["passed"] and manifest["parity"]["reference"].startswith("torch")
    assert all(o["max_abs"] <= 1e-4 for o in manifest["parity"]["outputs"].values()), manifest["parity"]
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "electra" and config["architectures"] == [CLASSES[head]]
    assert config["embedding_size"] == 20
    diffs = worst_diff(out, model, batches(head, source))
    assert list(diffs) == OUTPUTS[head] and max(diffs.values()) <= 1e-4, diffs
    print(f"{head} fused fp32 max|diff| vs transformers: {diffs}")


@pytest.mark.parametrize(("flavor", "precision", "fmt", "bound"), [("portable", "fp32", "bin", 1e-4),
                                                               ("fused", "fp16", "safetensors", 2e-2)])
@pytest.mark.parametrize("head", list(CLASSES))
def test_api_flavors_and_precisions_match_transformers(tmp_path: Path, head: str, flavor: str, precision: str,
                                                       fmt: str, bound: float) -> None:
    """Through the Python API: the portable fp32 graph (from .bin) within fp32's bound, the fused fp16 one
    (from safetensors) within fp16's, against the transformers class."""
    model = make_model(head, seed=1 if precision == "fp32" else 2)
    source = save_hf(model, tmp_path / "src", fmt)
    out = mbexport.convert(str(source), out=tmp_path / "export", head=head, flavor=flavor, precision=precision)
    manifest = json.loads((out / "mbexport.json").read_text())
    assert manifest["precision"] == precision and manifest["flavor"] == flavor and manifest["parity"]["passed"]
    diffs = worst_diff(out, model, batches(head, source))
    assert max(diffs.values()) <= bound, diffs
    assert precision == "fp32" or max(diffs.values()) > 0.0, diffs  # a float16 graph really ran
    print(f"{head} {flavor} {precision} max|diff| vs transformers: {diffs}")


@pytest.mark.parametrize("head", list(CLASSES))
def test_numpy_reference_agrees_with_transformers(tmp_path: Path, head: str) -> None:
    """Each head's torch-free float64 forward (parity without torch) equals its transformers class."""
    model = make_model(head, seed=3)
    source = save_hf(model, tmp_path / "src", "safetensors")
    checkpoint = load(source)
    feeds = batches(head, source)
    ours = numpy_reference(checkpoint, ELECTRA.heads[head], feeds)
    for batch, got in zip(feeds, ours, strict=True):
        with torch.no_grad():
            result = model(**{k: torch.from_numpy(v) for k, v in batch.items()})
        mask = batch["attention_mask"].astype(bool)
        assert list(got) == OUTPUTS[head]
        for name, value in got.items():
            ref = getattr(result, name).numpy()
            if value.shape[:mask.ndim] == mask.shape:
                value, ref = value[mask], ref[mask]
            assert float(np.abs(value - ref).max()) <= 1e-5, name


# ---------------------------------------------------------------------------------------------
# Labels, input rank, summary options


def test_token_classification_keeps_its_labels(tmp_path: Path) -> None:

    source = save_hf(make_model("token-classification"), tmp_path / "src", "safetensors")
    out = mbexport.convert(str(source), out=tmp_path / "export", parity=False)
    config = json.loads((out / "config.json").read_text())
    assert config["num_labels"] == 5 and config["id2label"] == LABELS
    assert config["label2id"] == {v: int(k) for k, v in LABELS.items()}
    assert transformers.AutoConfig.from_pretrained(out).id2label[3] == "B-LOC"
    logits = onnx_outputs(out / "model.onnx", batches("token-classification", source)[0])["logits"]
    assert logits.shape == (12, 24, 5)


def test_multiple_choice_takes_batch_choices_sequence(tmp_path: Path) -> None:
    from mbexport.export.build import build_model

    source = save_hf(make_model("multiple-choice"), tmp_path / "src", "safetensors")
    built = build_model(load(source), head="auto", flavor="portable")
    assert built.head.name == "multiple-choice"
    dims = {i.name: [d.dim_param for d in i.type.tensor_type.shape.dim] for i in built.model.graph.input}
    assert dims == {name: ["batch", "choices", "sequence"] for name in ("input_ids", "attention_mask", "token_type_ids")}
    assert [d.dim_param for d in built.model.graph.output[0].type.tensor_type.shape.dim] == ["batch", "choices"]
    assert not any(node.name.startswith("pooler") for node in built.model.graph.node)  # ELECTRA has none


# "" is no activation (transformers 5's ElectraConfig types summary_activation as a string).
@pytest.mark.parametrize(("use_proj", "activation"), [(True, "tanh"), (False, ""), (False, "gelu_new"),
                                                      (True, "relu"), (True, "")])
def test_multiple_choice_summary_options(tmp_path: Path, use_proj: bool, activation: str) -> None:
    """summary_use_proj and summary_activation as ElectraSequenceSummary applies them; the export's
    config.json keeps them, so re-verifying the export (`mbexport parity`) rebuilds the same reference."""
    model = make_model("multiple-choice", seed=4, summary_use_proj=use_proj, summary_activation=activation)
    assert hasattr(model.sequence_summary.summary, "weight") == use_proj
    source = save_hf(model, tmp_path / "src", "safetensors")
    out = mbexport.convert(str(source), out=tmp_path / "export", flavor="portable")
    config = json.loads((out / "config.json").read_text())
    assert (config["summary_use_proj"], config["summary_activation"]) == (use_proj, activation)
    diffs = worst_diff(out, model, batches("multiple-choice", source))
    assert diffs["logits"] <= 1e-4, diffs
    assert verify_export(out).passed


@pytest.mark.parametrize(("key", "value", "fragment"), [
    ("summary_type", "mean", "summary_type is 'mean'; mbexport builds ELECTRA's multiple-choice summary only "
                             "with summary_type 'first'"),
    ("summary_proj_to_labels", True, "summary_proj_to_labels is True"),
    ("summary_activation", "swish", "summary_activation is 'swish'"),
])
def test_a_summary_the_graph_cannot_build_is_refused_for_that_head_only(tmp_path: Path, key: str, value: object,
                                                                        fragment: str) -> None:
    """The multiple-choice head is refused in one line with nothing written; --head base converts the
    same checkpoint, and its config.json keeps the source's summary setting as given."""
    source = save_hf(make_model("multiple-choice"), tmp_path / "src", "safetensors")
    config = json.loads((source / "config.json").read_text())
    (source / "config.json").write_text(json.dumps({**config, key: value}))
    assert load(source).spec.heads == ("base", "multiple-choice")
    out = tmp_path / "export"
    result = run_mbexport("convert", str(source), "--out", str(out), text=True)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and fragment in result.stderr
    assert "--head base" in result.stderr
    assert not out.exists()
    mbexport.convert(str(source), out=out, head="base")
    assert json.loads((out / "config.json").read_text())[key] == value


def test_a_summary_use_proj_that_is_not_a_bool_is_refused_at_load(tmp_path: Path) -> None:
    """summary_use_proj decides which weights the checkpoint has, so every head needs it well-formed."""
    source = save_hf(make_model("multiple-choice"), tmp_path / "src", "safetensors")
    config = json.loads((source / "config.json").read_text())
    (source / "config.json").write_text(json.dumps({**config, "summary_use_proj": "yes"}))
    with pytest.raises(CheckpointFormatError) as error:
        load(source)
    assert "summary_use_proj is 'yes'; use true or false" in one_line(str(error.value))


def test_summary_options_of_other_heads_are_kept_as_given(tmp_path: Path) -> None:
    """Only a multiple-choice head reads the summary: a token classifier's odd summary_type converts, and
    its export's config.json neither drops it nor fills in defaults the source did not set."""
    source = save_hf(make_model("token-classification"), tmp_path / "src", "safetensors")
    config = {key: value for key, value in json.loads((source / "config.json").read_text()).items()
              if key != "summary_activation"}
    (source / "config.json").write_text(json.dumps({**config, "summary_type": "mean"}))
    assert load(source).spec.heads == ("base", "token-classification")
    out = mbexport.convert(str(source), out=tmp_path / "export", parity=False)
    written = json.loads((out / "config.json").read_text())
    assert written["summary_type"] == "mean" and "summary_activation" not in written


# ---------------------------------------------------------------------------------------------
# Detection: architectures decide between the heads sharing classifier.*


def test_architectures_decide_between_token_classification_and_multiple_choice(tmp_path: Path) -> None:
    """A multiple-choice checkpoint without its summary projection has exactly a one-label token
    classifier's weights: only the config's architectures tells them apart."""
    model = make_model("multiple-choice", summary_use_proj=False)
    source = save_hf(model, tmp_path / "src", "safetensors")
    assert load(source).spec.heads == ("base", "multiple-choice")
    config = json.loads((source / "config.json").read_text())
    (source / "config.json").write_text(json.dumps({**config, "architectures": [CLASSES["token-classification"]],
                                                    "num_labels": 1, "id2label": {"0": "only"}}))
    checkpoint = load(source)
    assert checkpoint.spec.heads == ("base", "token-classification")
    with pytest.raises(ExportError) as error:
        from mbexport.export.build import build_model
        build_model(checkpoint, head="multiple-choice")
    assert "has no multiple-choice head (it carries: base, token-classification)" in one_line(str(error.value))


def test_a_classifier_no_architecture_names_is_refused(tmp_path: Path) -> None:
    source = save_hf(make_model("token-classification"), tmp_path / "src", "safetensors")
    config = json.loads((source / "config.json").read_text())
    del config["architectures"]
    (source / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointFormatError) as error:
        load(source)
    assert ("classifier.weight belongs to ElectraForTokenClassification or ElectraForMultipleChoice, and its "
            "config's architectures names neither") in one_line(str(error.value))


def test_no_tf_names_for_the_finetuned_heads() -> None:
    """Google's ELECTRA fine-tuning code builds other heads: BERT's run_squad names are not ELECTRA's."""
    disc = {"architectures": ["ElectraForQuestionAnswering"]}
    assert ELECTRA.tf_rule("cls/squad/output_weights", disc, 2, lambda name, layers: None) is None
    assert all(not ELECTRA.heads[h].tf1 and not ELECTRA.heads[h].tf2 for h in CLASSES)
