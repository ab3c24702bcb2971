"""ELECTRA, the second model family: HF directories and Google's TF1 checkpoints.

Tiny ELECTRAs are written by transformers itself (ElectraConfig + save_pretrained, safetensors
and the 4.x-style pytorch_model.bin) with an embedding width (20) narrower than the hidden size
(36), so ``embeddings_project`` is exercised. TF1 checkpoints are written by the test bundle
writer from those models' weights, under google-research/electra's variable names as mapped by
an independent table here (discriminator under ``electra/``, generator under ``generator/``,
``dense_1`` for the discriminator's output layer, Adam slots beside every variable). Every
export is checked through the real convert (console script or API) and then, independently of
mbexport's own parity code, against the transformers model that wrote the checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_CONFIG, load_fixture_module, run_mbexport, scale_random_weights, tiny_vocab

from mbexport.catalog import Source
from mbexport.converter import verify_export
from mbexport.errors import CheckpointFormatError
from mbexport.families import detect_family
from mbexport.families.electra import ELECTRA
from mbexport.parity import random_batch, text_batch
from mbexport.sources import load_checkpoint
from mbexport.spec import BertSpec, Checkpoint

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
ort = pytest.importorskip("onnxruntime")

pytestmark = pytest.mark.torch

ELECTRA_CONFIG = {**TINY_CONFIG, "embedding_size": 20}
# A generator narrower than its discriminator, as ELECTRA's are, sharing its embeddings.
GENERATOR_CONFIG = {**ELECTRA_CONFIG, "hidden_size": 24, "num_attention_heads": 2, "intermediate_size": 40,
                    "num_hidden_layers": 1}
CLASSES = {"base": "ElectraModel", "discriminator": "ElectraForPreTraining", "generator": "ElectraForMaskedLM",
           "classification": "ElectraForSequenceClassification"}
FIXTURES = Path(__file__).parent / "fixtures"


bundle = load_fixture_module(FIXTURES / "tf" / "bundle_writer.py", "_mbexport_tf_bundle_writer_electra")


def load(directory: Path) -> Checkpoint:
    return load_checkpoint(Source(directory.name, path=directory))


def make_model(head: str, config: dict | None = None, seed: int = 0, **options: object):
    """A transformers ELECTRA with scaled-up random weights, so layers do real work."""
    torch.manual_seed(seed)
    cfg = transformers.ElectraConfig(**(config or ELECTRA_CONFIG), **options)
    if head == "classification":
        cfg.num_labels = 3
    model = getattr(transformers, CLASSES[head])(cfg).eval()
    scale_random_weights(model)
    model.tie_weights()
    model.set_attn_implementation("eager")
    return model


def write_vocab(out: Path) -> None:
    (out / "vocab.txt").write_text("\n".join(tiny_vocab()) + "\n", encoding="utf-8")
    (out / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True, "model_max_length": 64}))


def save_hf(model, out: Path, fmt: str) -> Path:
    out.mkdir(parents=True)
    model.save_pretrained(out, safe_serialization=fmt == "safetensors")
    if fmt == "bin" and not (out / "pytorch_model.bin").exists():
        torch.save(model.state_dict(), out / "pytorch_model.bin")  # as transformers 4.x wrote it, tied copy included
        (out / "model.safetensors").unlink(missing_ok=True)
    write_vocab(out)
    return out


def onnx_outputs(path: Path, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds), strict=True))


def assert_matches_model(export: Path, model, vocab_dir: Path) -> float:
    """The export's outputs against ``model`` on a random and a real-text batch, real tokens only;
    returns the largest |diff| relative to the reference's scale (<= 1e-4 asserted)."""
    spec_like = BertSpec(2, 36, 3, 52, vocab_size=99, max_position_embeddings=64)
    worst = 0.0
    for feeds in (random_batch(spec_like, seed=3), text_batch(vocab_dir, spec_like)):
        ours = onnx_outputs(export / "model.onnx", feeds)
        with torch.no_grad():
            result = model(**{k: torch.from_numpy(v) for k, v in feeds.items()})
        real = feeds["attention_mask"].astype(bool)
        for name, got in ours.items():
            if name == "sentence_embedding":  # ELECTRA has no sentence-transformers config: the [CLS] row, as is
                record = json.loads((export / "mbexport.json").read_text())["sentence_embedding"]
                assert record == {"pooling": "cls", "normalize": False}
                ref = result.last_hidden_state[:, 0].numpy()
            else:
                ref = getattr(result, name).numpy()
            if ref.ndim >= 2 and ref.shape[:2] == real.shape:
                ref, got = ref[real], got[real]
            scale = max(1.0, float(np.abs(ref).max()))
            diff = float(np.abs(got - ref).max()) / scale
            assert diff <= 1e-4, (name, diff)
            worst = max(worst, diff)
    return worst


# ---------------------------------------------------------------------------------------------
# HF directories


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
@pytest.mark.parametrize("head", ["discriminator", "generator", "classification", "base"])
def test_hf_directory_converts(tmp_path: Path, head: str, fmt: str) -> None:
    """Every network from both file formats, through the API (the console script converts ELECTRA in the
    TF1 and fine-tuned-head tests; each of its runs pays torch's imports again)."""
    import mbexport

    model = make_model(head)
    source = save_hf(model, tmp_path / "src", fmt)
    out = mbexport.convert(str(source), out=tmp_path / "export", flavor="portable")
    manifest = json.loads((out / "mbexport.json").read_text())
    assert manifest["head"] == head  # --head auto picks the checkpoint's own head
    assert manifest["parity"]["passed"] and all(o["max_abs"] <= o["tolerance"]
                                                for o in manifest["parity"]["outputs"].values())
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "electra" and config["architectures"] == [CLASSES[head]]
    assert config["embedding_size"] == 20
    assert_matches_model(out, model, source)
    # The export is an ELECTRA transformers can rebuild from its own config.json.
    assert transformers.AutoConfig.from_pretrained(out).embedding_size == 20


# fp16 on the discriminator: this tiny random generator has a top-2 vocab gap of 5e-5 at one
# token, which float16 cannot resolve, so its argmax-agreement gate would test the model, not us.
@pytest.mark.parametrize(("head", "flavor", "precision"),
                         [("generator", "fused", "fp32"), ("generator", "portable", "fp32"),
                          ("discriminator", "fused", "fp16")])
def test_api_convert(tmp_path: Path, head: str, flavor: str, precision: str) -> None:
    import mbexport

    model = make_model(head)
    source = save_hf(model, tmp_path / "src", "safetensors")
    out = mbexport.convert(str(source), out=tmp_path / "export", flavor=flavor, precision=precision)
    manifest = json.loads((out / "mbexport.json").read_text())
    assert manifest["outputs"] == ["logits"] and manifest["parity"]["passed"]
    if precision == "fp32":
        assert_matches_model(out, model, source)


def test_untied_generator_output_layer_is_its_own(tmp_path: Path) -> None:
    """A generator whose output layer is not tied reads its own matrix, not the word embeddings."""
    import mbexport

    model = make_model("generator", tie_word_embeddings=False)
    assert not torch.equal(model.generator_lm_head.weight, model.electra.embeddings.word_embeddings.weight)
    source = save_hf(model, tmp_path / "src", "safetensors")
    checkpoint = load(source)
    assert "generator_lm_head.weight" in checkpoint.weights
    out = mbexport.convert(str(source), out=tmp_path / "export", flavor="portable")
    assert_matches_model(out, model, source)


def test_tied_copy_in_bin_is_dropped(tmp_path: Path) -> None:
    source = save_hf(make_model("generator"), tmp_path / "src", "bin")
    checkpoint = load(source)
    assert "generator_lm_head.weight" not in checkpoint.weights
    assert checkpoint.spec.heads == ("base", "generator")


def test_equal_widths_need_no_projection(tmp_path: Path) -> None:
    """embedding_size == hidden_size: transformers builds no embeddings_project and neither do we."""
    from mbexport.export.build import build_model

    model = make_model("discriminator", {**ELECTRA_CONFIG, "embedding_size": 36})
    assert not hasattr(model.electra, "embeddings_project")
    source = save_hf(model, tmp_path / "src", "safetensors")
    checkpoint = load(source)
    built = build_model(checkpoint, head="discriminator", flavor="fused")
    assert not any(n.name.startswith("embeddings_project") for n in built.skeleton.graph.node)
    narrow = load(save_hf(make_model("discriminator"), tmp_path / "narrow", "safetensors"))
    nodes = build_model(narrow, head="discriminator", flavor="fused").skeleton.graph.node
    assert [n.op_type for n in nodes if n.name.startswith("embeddings_project")] == ["MatMul", "Add"]


def test_numpy_reference_agrees(tmp_path: Path) -> None:
    """mbexport's torch-free parity reference knows ELECTRA's projection and heads."""
    from mbexport.converter import convert_detailed

    for head in ("discriminator", "generator", "classification"):
        source = save_hf(make_model(head), tmp_path / head, "safetensors")
        result = convert_detailed(str(source), out=tmp_path / f"{head}-export", reference="numpy")
        assert result.parity is not None and result.parity.passed and "numpy" in result.parity.reference


def test_family_detection(tmp_path: Path) -> None:
    assert detect_family({"model_type": "electra"}, [], "c").name == "electra"
    assert detect_family({"architectures": ["ElectraForPreTraining"]}, [], "c").name == "electra"
    assert detect_family({}, ["electra.embeddings.word_embeddings.weight"], "c").name == "electra"
    assert detect_family({}, ["bert/embeddings/word_embeddings"], "c").name == "bert"
    with pytest.raises(CheckpointFormatError, match="model_type is 'roberta'; mbexport converts ELECTRA and BERT"):
        detect_family({"model_type": "roberta"}, [], "c")
    # A config that names no family: the weights' names decide.
    source = save_hf(make_model("discriminator"), tmp_path / "src", "safetensors")
    config = json.loads((source / "config.json").read_text())
    del config["model_type"], config["architectures"]
    (source / "config.json").write_text(json.dumps(config))
    assert load(source).spec.family == "electra"


def test_config_values_are_checked(tmp_path: Path) -> None:
    source = save_hf(make_model("discriminator"), tmp_path / "src", "safetensors")
    config = json.loads((source / "config.json").read_text())
    for bad, fragment in ((0, "embedding_size is 0"), (24, "the config implies (99, 24)")):
        (source / "config.json").write_text(json.dumps({**config, "embedding_size": bad}))
        with pytest.raises(CheckpointFormatError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
            load(source)


# ---------------------------------------------------------------------------------------------
# Google's TF1 checkpoints (google-research/electra), written from transformers models


def _tf_encoder(state: dict[str, np.ndarray], scope: str) -> dict[str, np.ndarray]:
    """transformers ``electra.*`` parameters under TF1 ``scope``: kernels [in, out], LayerNorm gamma/beta."""
    out = {}
    for name, value in state.items():
        if not name.startswith("electra."):
            continue
        parts = name.removeprefix("electra.").split(".")
        if parts[0] == "embeddings":
            tf_scope = "electra"  # both networks read the discriminator's embeddings
        else:
            tf_scope = scope
        if parts[0] == "encoder":
            parts = ["encoder", f"layer_{parts[2]}", *parts[3:]]
        leaf = parts[-1]
        if "LayerNorm" in parts:
            parts[-1] = "gamma" if leaf == "weight" else "beta"
        elif parts[-2].endswith("_embeddings"):
            parts = parts[:-1]
        else:
            parts[-1] = "kernel" if leaf == "weight" else "bias"
            value = value.T if leaf == "weight" else value
        out[f"{tf_scope}/" + "/".join(parts)] = np.ascontiguousarray(value)
    return out


def write_tf1_pretraining(directory: Path) -> tuple[object, object]:
    """A tiny pretraining checkpoint as run_pretraining.py saves it: discriminator, generator
    (sharing the discriminator's embeddings), both prediction heads, Adam slots, global_step."""
    disc = make_model("discriminator", seed=1)
    gen = make_model("generator", GENERATOR_CONFIG, seed=2)
    with torch.no_grad():  # the generator reads electra/embeddings, as Google's code shares them
        gen.electra.embeddings.load_state_dict(disc.electra.embeddings.state_dict())
        gen.tie_weights()
    d = {k: v.numpy() for k, v in disc.state_dict().items() if not k.endswith("_ids")}
    g = {k: v.numpy() for k, v in gen.state_dict().items() if not k.endswith("_ids")}
    tensors = {**_tf_encoder(g, "generator"), **_tf_encoder(d, "electra")}
    tensors.update({
        "discriminator_predictions/dense/kernel": d["discriminator_predictions.dense.weight"].T.copy(),
        "discriminator_predictions/dense/bias": d["discriminator_predictions.dense.bias"],
        "discriminator_predictions/dense_1/kernel": d["discriminator_predictions.dense_prediction.weight"].T.copy(),
        "discriminator_predictions/dense_1/bias": d["discriminator_predictions.dense_prediction.bias"],
        "generator_predictions/dense/kernel": g["generator_predictions.dense.weight"].T.copy(),
        "generator_predictions/dense/bias": g["generator_predictions.dense.bias"],
        "generator_predictions/LayerNorm/gamma": g["generator_predictions.LayerNorm.weight"],
        "generator_predictions/LayerNorm/beta": g["generator_predictions.LayerNorm.bias"],
        "generator_predictions/output_bias": g["generator_lm_head.bias"],
    })
    tensors.update({f"{name}/adam_m": np.zeros_like(v) for name, v in list(tensors.items())})
    tensors["global_step"] = np.array(1000, dtype=np.int64)
    directory.mkdir(parents=True)
    bundle.write_bundle(directory / "model.ckpt-1000", tensors)
    (directory / "checkpoint").write_text('model_checkpoint_path: "model.ckpt-1000"\n')
    write_vocab(directory)
    return disc, gen


def _hf_config(model, architecture: str) -> dict:
    config = model.config.to_dict()
    config["architectures"] = [architecture]
    return config


@pytest.fixture(scope="module")
def tf1_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object, object]:
    directory = tmp_path_factory.mktemp("electra_tf1") / "electra_tiny"
    disc, gen = write_tf1_pretraining(directory)
    return directory, disc, gen


@pytest.mark.parametrize("network", ["discriminator", "generator"])
def test_tf1_checkpoint_converts_each_network(tmp_path: Path, tf1_checkpoint, network: str) -> None:
    """One pretraining checkpoint, two models: the config (transformers' published
    electra-*-discriminator / -generator configs) says which network to read."""
    directory, disc, gen = tf1_checkpoint
    model = disc if network == "discriminator" else gen
    local = tmp_path / "ckpt"
    local.mkdir()
    for p in directory.iterdir():
        (local / p.name).symlink_to(p)
    (local / "config.json").write_text(json.dumps(_hf_config(model, CLASSES[network])))
    checkpoint = load(local)
    assert checkpoint.spec.heads == ("base", network)
    assert checkpoint.spec.hidden_size == model.config.hidden_size
    state = {k.removeprefix("electra."): v.numpy() for k, v in model.state_dict().items()}
    for name, value in checkpoint.weights.items():
        np.testing.assert_array_equal(value, state[name], err_msg=name)

    out = tmp_path / "export"
    result = run_mbexport("convert", str(local), "--out", str(out), text=True)
    assert result.returncode == 0, result.stderr
    assert json.loads((out / "mbexport.json").read_text())["head"] == network
    assert_matches_model(out, model, local)
    assert verify_export(out).passed  # finds the head in ELECTRA's family again


def test_tf1_unknown_tensor_is_named(tmp_path: Path, tf1_checkpoint) -> None:
    directory, disc, _ = tf1_checkpoint
    from mbexport.sources.tf_bundle import BundleReader

    with BundleReader(directory / "model.ckpt-1000") as reader:
        tensors = {name: reader.read(name) for name in reader.entries}
    tensors["electra/encoder/layer_0/adapter/kernel"] = np.zeros((36, 4), np.float32)
    local = tmp_path / "bad"
    local.mkdir()
    bundle.write_bundle(local / "model.ckpt-1000", tensors)
    write_vocab(local)
    (local / "config.json").write_text(json.dumps(_hf_config(disc, "ElectraForPreTraining")))
    with pytest.raises(CheckpointFormatError, match="'electra/encoder/layer_0/adapter/kernel'.*ELECTRA layout"):
        load(local)


def test_tf1_tensor_map_is_electras() -> None:
    """Google's names, as transformers' converter reads them, onto ours (TF kernels transposed)."""
    def bert_rule(name: str, layers: int) -> tuple[str, str]:  # records what BERT's map is asked
        return ("bert:" + name, "T")

    disc = {"architectures": ["ElectraForPreTraining"]}
    gen = {"architectures": ["ElectraForMaskedLM"]}
    assert ELECTRA.tf_rule("discriminator_predictions/dense_1/kernel", disc, 2, bert_rule) == \
        ("discriminator_predictions.dense_prediction.weight", "T")
    assert ELECTRA.tf_rule("generator_predictions/output_bias", gen, 2, bert_rule) == \
        ("generator_lm_head.bias", "copy")
    assert ELECTRA.tf_rule("electra/embeddings_project/kernel", disc, 2, bert_rule) == \
        ("embeddings_project.weight", "T")
    assert ELECTRA.tf_rule("generator/encoder/layer_0/output/dense/bias", gen, 2, bert_rule) == \
        ("bert:bert/encoder/layer_0/output/dense/bias", "T")
    assert ELECTRA.tf_rule("electra/embeddings/word_embeddings", gen, 2, bert_rule)[0] == \
        "bert:bert/embeddings/word_embeddings"
    for name in ("generator/encoder/layer_0/output/dense/bias", "generator_predictions/output_bias",
                 "generator/embeddings_project/kernel"):
        assert ELECTRA.tf_rule(name, disc, 2, bert_rule) == ("", "skip")
    assert ELECTRA.tf_rule("discriminator_predictions/dense/bias", gen, 2, bert_rule) == ("", "skip")
    assert ELECTRA.tf_rule("electra/pooler/dense/kernel", disc, 2, bert_rule) is None


def test_embedder_on_an_electra_export(tmp_path: Path) -> None:
    """An ELECTRA base export embeds text: mean-pooled hidden states equal transformers' own,
    tokenized by transformers' BertTokenizer (ELECTRA uses BERT's WordPiece)."""
    import mbexport

    model = make_model("base")
    source = save_hf(model, tmp_path / "src", "safetensors")
    out = mbexport.convert(str(source), out=tmp_path / "export", head="base")
    texts = ["hello world", "the fast model is a text token export", "a"]
    ours = mbexport.Embedder(out, pooling="mean", normalize=False).embed(texts)
    tokenizer = transformers.BertTokenizer(str(source / "vocab.txt"), do_lower_case=True)
    encoded = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**encoded).last_hidden_state
    mask = encoded["attention_mask"].unsqueeze(-1).float()
    reference = ((hidden * mask).sum(1) / mask.sum(1)).numpy()
    np.testing.assert_allclose(ours, reference, atol=1e-4)


def test_head_choice_is_the_familys(tmp_path: Path) -> None:
    """--head names ELECTRA's own heads; BERT's are refused with the choices ELECTRA has."""
    from mbexport.errors import ExportError
    from mbexport.export.build import build_model

    checkpoint = load(save_hf(make_model("discriminator"), tmp_path / "src", "safetensors"))
    assert build_model(checkpoint, head="auto").head.name == "discriminator"
    assert build_model(checkpoint, head="base").outputs == ["last_hidden_state", "sentence_embedding"]
    with pytest.raises(ExportError, match="has no generator head"):
        build_model(checkpoint, head="generator")
    with pytest.raises(ExportError, match="unknown head 'pretraining'; choose one of: auto, base, discriminator"):
        build_model(checkpoint, head="pretraining")


def test_weights_of_an_unknown_electra_head_are_refused(tmp_path: Path) -> None:
    """Weights no ELECTRA head reads (here a BERT pooler) are one line naming them, never dropped."""
    source = save_hf(make_model("discriminator"), tmp_path / "src", "safetensors")
    from safetensors.numpy import load_file, save_file

    tensors = load_file(source / "model.safetensors")
    tensors["electra.pooler.dense.bias"] = np.zeros(36, np.float32)
    save_file(tensors, source / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointFormatError, match="no part of a 2-layer ELECTRA uses: pooler.dense.bias"):
        load(source)
