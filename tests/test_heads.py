"""Heads as objects (mbexport/heads/): the new heads against transformers, detection, TF2 Model Garden heads.

Every new head (token classification, masked-LM only, multiple choice) is converted from a
checkpoint transformers wrote, through the API and through the real console script, and its
ONNX outputs are compared with that checkpoint loaded back by transformers itself (not with
mbexport's own parity code). Detection: the config's ``architectures`` decides between the
heads that share ``classifier.*``; a head the checkpoint lacks is a one-line error.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from conftest import run_mbexport

from mbexport.catalog import Source
from mbexport.converter import convert_detailed
from mbexport.errors import ExportError
from mbexport.export.build import build_model
from mbexport.heads import HEADS
from mbexport.parity import numpy_reference, random_batch, torch_reference
from mbexport.sources import load_checkpoint
from mbexport.sources.tf_bundle import BundleReader
from mbexport.sources.tf_checkpoint import TF2_SUFFIX, load_tf_checkpoint

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
ort = pytest.importorskip("onnxruntime")

NEW_HEADS = {"token-classification": "BertForTokenClassification", "masked-lm": "BertForMaskedLM",
             "multiple-choice": "BertForMultipleChoice"}
TF = Path(__file__).parent / "fixtures" / "tf"


def load(path: Path):
    return load_checkpoint(Source(label=path.name, path=path))


def inputs_for(head: str, checkpoint, seed: int = 7) -> dict[str, np.ndarray]:
    """Random padded ids; multiple choice gets them as [batch, 2 choices, sequence]."""
    feeds = random_batch(checkpoint.spec, seed=seed)
    if head == "multiple-choice":
        feeds = {k: v.reshape(2, 2, v.shape[-1]) for k, v in feeds.items()}
    return feeds


def transformers_logits(directory: Path, feeds: dict[str, np.ndarray]) -> np.ndarray:
    """The checkpoint's own class, loaded back by transformers (eager attention, eval mode)."""
    config = transformers.AutoConfig.from_pretrained(directory)
    cls = getattr(transformers, config.architectures[0])
    model = cls.from_pretrained(directory, attn_implementation="eager").eval()
    with torch.no_grad():
        return model(**{k: torch.from_numpy(v) for k, v in feeds.items()}).logits.numpy()


def onnx_outputs(model_path: Path, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, feeds), strict=True))


def max_diff(ours: np.ndarray, ref: np.ndarray, mask: np.ndarray) -> float:
    """Max |diff| over real tokens for per-token outputs, over everything for per-sequence ones."""
    assert ours.shape == ref.shape
    if ours.shape[:mask.ndim] == mask.shape:
        ours, ref = ours[mask.astype(bool)], ref[mask.astype(bool)]
    return float(np.abs(ours.astype(np.float64) - ref).max())


def _one_line(message: str) -> str:
    assert "\n" not in message.strip()
    return message


# ---------------------------------------------------------------------------------------------
# Parity of the new heads against transformers, through the API and the console script

@pytest.mark.parametrize("flavor", ["fused", "portable"])
@pytest.mark.parametrize("head", NEW_HEADS)
def test_new_head_through_the_api_matches_transformers(tiny_checkpoint, tmp_path, head, flavor):
    src = tiny_checkpoint(head=head, fmt="safetensors", seed=5)
    result = convert_detailed(str(src), out=tmp_path / "out", head=head, flavor=flavor, reference="torch")
    assert result.head == head
    assert result.parity is not None and result.parity.passed and result.parity.reference.startswith("torch")
    assert all(o.max_abs <= 1e-4 for o in result.parity.outputs), result.parity.to_dict()
    checkpoint = load(src)
    feeds = inputs_for(head, checkpoint)
    ours = onnx_outputs(tmp_path / "out" / "model.onnx", feeds)
    assert list(ours) == ["logits"]
    assert max_diff(ours["logits"], transformers_logits(src, feeds), feeds["attention_mask"]) <= 1e-4


@pytest.mark.parametrize("head", NEW_HEADS)
def test_new_head_auto_matches_transformers(tiny_checkpoint, tmp_path, head):
    """``convert(DIR)`` (head auto) picks the checkpoint's own head, and the export agrees with it (the console
    script's --head is checked below; each of its runs pays torch's imports again)."""
    import mbexport

    src = tiny_checkpoint(head=head, fmt="bin", seed=9)
    out = mbexport.convert(str(src), out=tmp_path / "out")
    manifest = json.loads((out / "mbexport.json").read_text())
    assert manifest["head"] == head and manifest["outputs"] == ["logits"]
    assert manifest["parity"]["passed"]
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == [NEW_HEADS[head]]
    feeds = inputs_for(head, load(src))
    ours = onnx_outputs(out / "model.onnx", feeds)["logits"]
    reference = transformers_logits(src, feeds)
    assert max_diff(ours, reference, feeds["attention_mask"]) <= 1e-4
    expected_shape = {"token-classification": (4, 24, 3), "masked-lm": (4, 24, 99), "multiple-choice": (2, 2)}
    assert ours.shape == expected_shape[head]


@pytest.mark.parametrize("head", NEW_HEADS)
def test_numpy_reference_of_new_heads_equals_transformers(tiny_checkpoint, head):
    """Each head's own numpy forward (parity's reference without torch) agrees with its transformers class."""
    checkpoint = load(tiny_checkpoint(head=head, seed=6))
    batches = [HEADS[head].feeds(random_batch(checkpoint.spec, seed=5))]
    ours = numpy_reference(checkpoint, HEADS[head], batches)[0]
    theirs = torch_reference(checkpoint, HEADS[head], batches)[0]
    assert list(ours) == list(theirs) == ["logits"]
    assert max_diff(ours["logits"], theirs["logits"], batches[0]["attention_mask"]) < 1e-5


def test_token_classification_export_keeps_its_labels(tiny_checkpoint, tmp_path):
    src = tiny_checkpoint(head="token-classification", fmt="safetensors")
    config = json.loads((src / "config.json").read_text())
    config["id2label"] = {"0": "O", "1": "B-PER", "2": "I-PER"}
    config["label2id"] = {"O": 0, "B-PER": 1, "I-PER": 2}
    (src / "config.json").write_text(json.dumps(config))
    convert_detailed(str(src), out=tmp_path / "out", parity=False)
    written = json.loads((tmp_path / "out" / "config.json").read_text())
    assert written["id2label"] == {"0": "O", "1": "B-PER", "2": "I-PER"} and written["num_labels"] == 3


def test_multiple_choice_graph_takes_choices(tiny_checkpoint):
    built = build_model(load(tiny_checkpoint(head="multiple-choice")), head="auto", flavor="portable")
    inputs = {i.name: [d.dim_param for d in i.type.tensor_type.shape.dim] for i in built.model.graph.input}
    assert inputs["input_ids"] == ["batch", "choices", "sequence"]
    assert [d.dim_param for d in built.model.graph.output[0].type.tensor_type.shape.dim] == ["batch", "choices"]


def test_masked_lm_of_a_pretraining_checkpoint_is_its_prediction_logits(tiny_checkpoint, tmp_path):
    """A pretraining checkpoint also exports as masked-lm alone (fill-mask, no NSP); auto stays pretraining."""
    src = tiny_checkpoint(head="pretraining", fmt="safetensors", seed=4)
    checkpoint = load(src)
    assert checkpoint.spec.heads == ("base", "pretraining")
    assert build_model(checkpoint, head="auto").head.name == "pretraining"
    result = convert_detailed(str(src), out=tmp_path / "out", head="masked-lm", reference="torch")
    assert result.parity is not None and result.parity.passed
    feeds = random_batch(checkpoint.spec, seed=2)
    ours = onnx_outputs(tmp_path / "out" / "model.onnx", feeds)
    model = transformers.BertForPreTraining.from_pretrained(src, attn_implementation="eager").eval()
    with torch.no_grad():
        reference = model(**{k: torch.from_numpy(v) for k, v in feeds.items()}).prediction_logits.numpy()
    assert list(ours) == ["logits"]
    assert max_diff(ours["logits"], reference, feeds["attention_mask"]) <= 1e-4


# ---------------------------------------------------------------------------------------------
# Detection: architectures decide between heads sharing classifier.*; missing heads are refused

@pytest.mark.parametrize("head", ["token-classification", "multiple-choice"])
def test_per_token_or_per_choice_classifier_is_never_a_sequence_classifier(tiny_checkpoint, tmp_path, head):
    src = tiny_checkpoint(head=head, fmt="safetensors")
    checkpoint = load(src)
    assert checkpoint.spec.heads == ("base", head)
    with pytest.raises(ExportError) as error:
        build_model(checkpoint, head="classification")
    message = _one_line(str(error.value))
    assert f"has no classification head (it carries: base, {head}); use --head {head} or --head base" in message
    result = run_mbexport("convert", str(src), "--head", "classification", "--out", str(tmp_path / "out"), text=True)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "has no classification head" in result.stderr
    assert not (tmp_path / "out").exists()


def test_without_architectures_a_classifier_is_a_sequence_classifier(tiny_checkpoint):
    """No ``architectures`` (as TF1 run_classifier.py checkpoints): the classifier is read as a sequence
    classifier, as before; naming the per-token class in the config makes the same weights that head."""
    src = tiny_checkpoint(head="token-classification", fmt="safetensors")
    config = json.loads((src / "config.json").read_text())
    del config["architectures"]
    (src / "config.json").write_text(json.dumps(config))
    checkpoint = load(src)
    assert checkpoint.spec.heads == ("base", "classification")
    with pytest.raises(ExportError) as error:
        build_model(checkpoint, head="token-classification")
    assert 'add "BertForTokenClassification" to architectures in its config.json' in _one_line(str(error.value))
    config["architectures"] = ["BertForTokenClassification"]
    (src / "config.json").write_text(json.dumps(config))
    assert build_model(load(src), head="auto").head.name == "token-classification"


def test_masked_lm_checkpoint_lacks_pretraining_and_pooler(tiny_checkpoint):
    checkpoint = load(tiny_checkpoint(head="masked-lm", fmt="safetensors"))
    assert checkpoint.spec.heads == ("base", "masked-lm") and not checkpoint.has_pooler
    with pytest.raises(ExportError) as error:
        build_model(checkpoint, head="pretraining")
    assert "has no pretraining head (it carries: base, masked-lm); use --head masked-lm or --head base" in \
        _one_line(str(error.value))
    assert build_model(checkpoint, head="base").outputs == ["last_hidden_state", "sentence_embedding"]


# ---------------------------------------------------------------------------------------------
# TF2 Model Garden BertPretrainerV2 checkpoints: masked_lm/* and the next_sentence head

def _bundle_writer() -> ModuleType:
    spec = importlib.util.spec_from_file_location("_mbexport_tf_bundle_writer", TF / "bundle_writer.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _tf2_pretrainer(tmp_path: Path, *, nsp_logits: bool) -> tuple[Path, dict[str, np.ndarray]]:
    """The tf2_encoder fixture (TF-written) re-saved as BertPretrainerV2's checkpoint items: the word
    embeddings reached as masked_lm/embedding_table, the MLM layer's variables, the next_sentence
    head's pooler (``next_sentence..pooler_dense``) and, from a training checkpoint, its out_proj
    under ``model/``. Returns the directory and the head variables written (TF layouts)."""
    directory = Path(shutil.copytree(TF / "tf2_encoder", tmp_path / "tf2_pretrainer"))
    with BundleReader(directory / "bert_model.ckpt") as reader:
        tensors = {n: reader.read(n) for n in reader.entries if reader.entries[n].dtype != 7}
    for p in directory.glob("bert_model.ckpt.*"):
        p.unlink()
    words = tensors.pop("encoder/layer_with_weights-0/embeddings" + TF2_SUFFIX)
    rng = np.random.default_rng(21)
    h, v = words.shape[1], words.shape[0]
    heads = {
        "masked_lm/embedding_table": words,
        "masked_lm/dense/kernel": 0.1 * rng.standard_normal((h, h)),
        "masked_lm/dense/bias": 0.1 * rng.standard_normal(h),
        "masked_lm/layer_norm/gamma": 1.0 + 0.2 * rng.standard_normal(h),
        "masked_lm/layer_norm/beta": 0.1 * rng.standard_normal(h),
        "masked_lm/output_bias.Sbias": 0.1 * rng.standard_normal(v),
        "next_sentence..pooler_dense/kernel": 0.1 * rng.standard_normal((h, h)),
        "next_sentence..pooler_dense/bias": 0.1 * rng.standard_normal(h),
    }
    if nsp_logits:
        heads["model/classification_heads/0/out_proj/kernel"] = 0.1 * rng.standard_normal((h, 2))
        heads["model/classification_heads/0/out_proj/bias"] = 0.1 * rng.standard_normal(2)
    heads = {k: a.astype(np.float32) for k, a in heads.items()}
    tensors.update({k + TF2_SUFFIX: a for k, a in heads.items()})
    _bundle_writer().write_bundle(directory / "bert_model.ckpt", tensors)
    return directory, heads


def test_tf2_pretrainer_heads_map_to_bert_for_pretraining(tmp_path):
    directory, tf = _tf2_pretrainer(tmp_path, nsp_logits=True)
    with BundleReader(TF / "tf2_encoder" / "bert_model.ckpt") as reader:
        encoder_pooler = reader.read("encoder/layer_with_weights-6/kernel" + TF2_SUFFIX)
    checkpoint = load_tf_checkpoint(directory, "tf2")
    assert checkpoint.spec.heads == ("base", "pretraining")
    expected = {  # canonical name <- TF variable, Dense kernels [in, out] transposed
        "embeddings.word_embeddings.weight": tf["masked_lm/embedding_table"],
        "cls.predictions.transform.dense.weight": tf["masked_lm/dense/kernel"].T,
        "cls.predictions.transform.dense.bias": tf["masked_lm/dense/bias"],
        "cls.predictions.transform.LayerNorm.weight": tf["masked_lm/layer_norm/gamma"],
        "cls.predictions.transform.LayerNorm.bias": tf["masked_lm/layer_norm/beta"],
        "cls.predictions.bias": tf["masked_lm/output_bias.Sbias"],
        "pooler.dense.weight": tf["next_sentence..pooler_dense/kernel"].T,
        "pooler.dense.bias": tf["next_sentence..pooler_dense/bias"],
        "cls.seq_relationship.weight": tf["model/classification_heads/0/out_proj/kernel"].T,
        "cls.seq_relationship.bias": tf["model/classification_heads/0/out_proj/bias"],
    }
    for name, value in expected.items():
        np.testing.assert_array_equal(checkpoint.weights[name], value, err_msg=name)
    # The NSP head's pooler is the pooler; the encoder's own (untrained by BertPretrainerV2) is not read.
    assert not np.array_equal(checkpoint.weights["pooler.dense.weight"], encoder_pooler.T)
    result = convert_detailed(str(directory), out=tmp_path / "out", head="pretraining", reference="torch")
    assert result.parity is not None and result.parity.passed
    assert all(o.max_abs <= 1e-4 for o in result.parity.outputs), result.parity.to_dict()


def test_tf2_pretrainer_checkpoint_items_alone_export_masked_lm(tmp_path):
    """Model Garden's converted checkpoints hold checkpoint_items only: the MLM, no NSP logits."""
    directory, tf = _tf2_pretrainer(tmp_path, nsp_logits=False)
    checkpoint = load_tf_checkpoint(directory, "tf2")
    assert checkpoint.spec.heads == ("base", "masked-lm")
    np.testing.assert_array_equal(checkpoint.weights["cls.predictions.bias"], tf["masked_lm/output_bias.Sbias"])
    result = convert_detailed(str(directory), out=tmp_path / "out", reference="torch")
    assert result.head == "masked-lm" and result.parity is not None and result.parity.passed
