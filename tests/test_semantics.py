"""An export means exactly what its source means.

- sentence-transformers models: the export keeps modules.json / sentence_bert_config.json /
  1_Pooling/, records pooling, normalisation and max length in its manifest, and the default
  ``mbexport embed`` equals ``SentenceTransformer(source).encode`` (the reference) on real
  multilingual text with texts beyond max_seq_length;
- classifiers keep id2label / label2id: onnxruntime's argmax through the export's config names
  the same labels as the transformers pipeline on the source;
- ``--from`` copies are checked against what the catalogue knows; a mismatch writes nothing.
"""

from __future__ import annotations

import json
import subprocess
import warnings
from pathlib import Path

import faker
import numpy as np
import onnxruntime as ort
import pytest
import torch
import transformers
from conftest import assert_one_line_error, run_mbexport, write_tiny_checkpoint
from sentence_transformers import SentenceTransformer

from mbexport import Embedder
from mbexport.catalog import Source
from mbexport.errors import CatalogError
from mbexport.provenance import identity
from mbexport.spec import BertSpec, Checkpoint

ST_FILES = ("modules.json", "sentence_bert_config.json", "config_sentence_transformers.json", "1_Pooling/config.json")


def run(*args: str) -> tuple[int, str, str]:
    result = run_mbexport(*args, text=True)
    return result.returncode, result.stdout, result.stderr


def assert_one_line_failure(code: int, stderr: str, pattern: str) -> None:
    line = assert_one_line_error(subprocess.CompletedProcess([], code, "", stderr))
    assert pattern.lower() in line.lower(), line


def multilingual_texts() -> list[str]:
    """One Faker text per locale, every other one three paragraphs long (beyond 256 tokens).

    A capital sigma is written lower-case: sentence-transformers tokenizes with HF's fast
    tokenizer, which lowercases a word-final Σ to σ where mbexport, like BertTokenizer, writes ς
    (docs/TOKENIZER.md); every other character goes through unchanged. Newlines become spaces
    because the input file holds one text per line.
    """
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i, locale in enumerate(sorted(faker.config.AVAILABLE_LOCALES)):
            fake = faker.Faker(locale)
            fake.seed_instance(i)
            try:
                text = " ".join(fake.paragraph(nb_sentences=12) for _ in range(3)) if i % 2 else fake.sentence()
            except (AttributeError, ValueError):
                text = fake.word()
            out.append(" ".join(text.split()).replace("Σ", "σ"))
    return out


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.fixture(scope="module")
def minilm_export(minilm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("semantics") / "minilm"
    code, _, stderr = run("convert", str(minilm_dir), "--out", str(out), "--no-parity")
    assert code == 0, stderr
    return out


@pytest.fixture(scope="module")
def sentence_transformer(minilm_dir: Path) -> SentenceTransformer:
    return SentenceTransformer(str(minilm_dir), device="cpu")


def test_default_embed_equals_sentence_transformers(minilm_export, sentence_transformer, tmp_path):
    texts = multilingual_texts()
    long = sum(len(ids) > 256 for ids in sentence_transformer.tokenizer(texts)["input_ids"])
    assert long >= 40  # the 256-token limit is exercised, not just the pooling
    src = tmp_path / "texts.txt"
    src.write_text("\n".join(texts) + "\n", encoding="utf-8")
    code, stdout, stderr = run("embed", str(minilm_export), str(src), "--out", str(tmp_path / "out.npy"))
    assert code == 0, stderr

    got = np.load(tmp_path / "out.npy")
    want = sentence_transformer.encode(texts, batch_size=32)
    assert got.shape == want.shape == (len(texts), 384)
    assert cosines(got, want).min() >= 0.9999
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)  # normalised, as the model says
    for row in ("mean (from sentence-transformers)", "yes (from sentence-transformers)",
                "256 (from sentence-transformers)", f"{long} texts longer than 256 tokens"):
        assert row in stdout, stdout


def test_export_carries_sentence_transformers_files_and_records_semantics(minilm_export, minilm_dir):
    for name in ST_FILES:
        assert (minilm_export / name).read_bytes() == (minilm_dir / name).read_bytes(), name
    manifest = json.loads((minilm_export / "mbexport.json").read_text())
    assert manifest["embedding"] == {"pooling": "mean", "normalize": True, "max_length": 256,
                                     "from": "sentence-transformers"}
    emb = Embedder(minilm_export)
    assert (emb.pooling, emb.normalize, emb.max_length) == ("mean", True, 256)
    assert set(emb.origins.values()) == {"sentence-transformers"}


def test_explicit_options_win(minilm_export, minilm_dir, tmp_path):
    texts = multilingual_texts()[:12]
    src = tmp_path / "texts.txt"
    src.write_text("\n".join(texts) + "\n", encoding="utf-8")
    code, stdout, stderr = run("embed", str(minilm_export), str(src), "--out", str(tmp_path / "out.npy"),
                               "--pooling", "cls", "--no-normalize", "--max-length", "128")
    assert code == 0, stderr
    for row in ("cls (from option)", "no (from option)", "128 (from option)"):
        assert row in stdout, stdout

    tokenizer = transformers.AutoTokenizer.from_pretrained(str(minilm_dir))
    model = transformers.BertModel.from_pretrained(str(minilm_dir)).eval()
    enc = tokenizer(texts, padding=True, truncation=True, max_length=128, return_tensors="pt")
    with torch.inference_mode():
        want = model(**enc).last_hidden_state[:, 0].numpy()
    got = np.load(tmp_path / "out.npy")
    assert cosines(got, want).min() >= 0.9999
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), np.linalg.norm(want, axis=1), rtol=1e-3)


def test_source_without_sentence_transformers_files_keeps_defaults(tmp_path):
    src = write_tiny_checkpoint(tmp_path / "src", head="base", fmt="safetensors")
    out = tmp_path / "export"
    code, _, stderr = run("convert", str(src), "--out", str(out), "--no-parity")
    assert code == 0, stderr
    assert not (out / "modules.json").exists()
    manifest = json.loads((out / "mbexport.json").read_text())
    assert manifest["embedding"] == {"pooling": "cls", "normalize": False, "max_length": None, "from": "default"}
    emb = Embedder(out)
    assert (emb.pooling, emb.normalize, emb.max_length) == ("cls", False, 64)
    assert set(emb.origins.values()) == {"default"}


def add_sentence_transformers(directory: Path, pooling: dict, modules: tuple[str, ...] = ("Pooling",),
                              max_seq_length: int = 48) -> Path:
    chain = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}]
    for i, kind in enumerate(modules, start=1):
        chain.append({"idx": i, "name": str(i), "path": f"{i}_{kind}", "type": f"sentence_transformers.models.{kind}"})
    (directory / "modules.json").write_text(json.dumps(chain))
    (directory / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": max_seq_length,
                                                                     "do_lower_case": False}))
    (directory / "1_Pooling").mkdir()
    (directory / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 36, **pooling}))
    return directory


@pytest.mark.parametrize(("pooling", "modules", "expected"), [
    ({"pooling_mode": "cls"}, ("Pooling",), ("cls", False)),
    ({"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False}, ("Pooling", "Normalize"), ("cls", True)),
    ({"pooling_mode": "mean"}, ("Pooling", "Normalize"), ("mean", True)),
    ({}, ("Pooling",), ("mean", False)),  # no mode set: sentence-transformers' default, mean
])
def test_tiny_sentence_transformers_model_matches_its_reference(tmp_path, pooling, modules, expected):
    src = add_sentence_transformers(write_tiny_checkpoint(tmp_path / "src", head="base", fmt="safetensors"),
                                    pooling, modules)
    out = tmp_path / "export"
    code, _, stderr = run("convert", str(src), "--out", str(out), "--no-parity")
    assert code == 0, stderr
    emb = Embedder(out)
    assert (emb.pooling, emb.normalize, emb.max_length) == (*expected, 48)
    texts = ["hello world", "the model is fast", "a bert export on nx " * 20, "seed step token text"]
    want = SentenceTransformer(str(src), device="cpu").encode(texts)
    assert cosines(emb.embed(texts), want).min() >= 0.9999


@pytest.mark.parametrize(("pooling", "modules", "pattern"), [
    ({"pooling_mode": "max"}, ("Pooling",), "pooling mode 'max' is not supported"),
    ({"pooling_mode_max_tokens": True}, ("Pooling",), "pooling mode 'max' is not supported"),
    ({"pooling_mode": ["cls", "mean"]}, ("Pooling",), "is not supported"),
    ({"pooling_mode": "lasttoken"}, ("Pooling",), "lasttoken"),
    ({"pooling_mode": "mean"}, ("Pooling", "Dense"), "module 'Dense' is not supported"),
])
def test_unreproducible_sentence_transformers_chain_is_refused(tmp_path, pooling, modules, pattern):
    src = add_sentence_transformers(write_tiny_checkpoint(tmp_path / "src", head="base", fmt="safetensors"),
                                    pooling, modules)
    out = tmp_path / "export"
    code, _, stderr = run("convert", str(src), "--out", str(out), "--no-parity")
    assert_one_line_failure(code, stderr, pattern)
    assert not out.exists()


@pytest.mark.parametrize(("edit", "pattern"), [
    (lambda d: (d / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
        {"idx": 2, "name": "2", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}])),
     "Transformer -> Normalize -> Pooling are not Transformer -> Pooling"),
    (lambda d: (d / "sentence_bert_config.json").write_text('{"max_seq_length": "48"}'), "max_seq_length '48'"),
    (lambda d: (d / "sentence_bert_config.json").write_text('{"max_seq_length": 48.0}'), "max_seq_length 48.0"),
    (lambda d: (d / "sentence_bert_config.json").write_text('{"max_seq_length": 1}'), "max_seq_length 1 "),
    (lambda d: (d / "sentence_bert_config.json").write_text('{"max_seq_length": 65}'), "max_seq_length 65 is not an "
                                                                                         "integer in [2, 64]"),
    (lambda d: (d / "config_sentence_transformers.json").write_text(json.dumps(
        {"prompts": {"query": "query: ", "passage": ""}, "default_prompt_name": "query"})),
     "default_prompt_name 'query'"),
    (lambda d: (d / "modules.json").write_text("[" * 100_000), "modules.json is not valid JSON (it is nested deeper"),
])
def test_sentence_transformers_settings_mbexport_cannot_mean_are_refused(tmp_path, edit, pattern):
    """A module order, max_seq_length or default prompt that would make the export mean something else
    than sentence-transformers does is one error line at convert time, not a silently different vector."""
    src = add_sentence_transformers(write_tiny_checkpoint(tmp_path / "src", head="base", fmt="safetensors"),
                                    {"pooling_mode": "mean"}, ("Pooling", "Normalize"))
    edit(src)
    out = tmp_path / "export"
    code, _, stderr = run("convert", str(src), "--out", str(out), "--no-parity")
    assert_one_line_failure(code, stderr, pattern)
    assert not out.exists()


def minilm_variant(minilm_dir: Path, directory: Path) -> Path:
    """A copy of the MiniLM sentence-transformers directory to edit (its weights linked, not copied)."""
    for path in minilm_dir.rglob("*"):
        target = directory / path.relative_to(minilm_dir)
        target.parent.mkdir(parents=True, exist_ok=True)
        if path.is_file():
            target.symlink_to(path) if path.suffix == ".safetensors" else target.write_bytes(path.read_bytes())
    return directory


def edit_json(path: Path, **changes) -> None:
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def cased_tokenizer_lowercased_by_sentence_transformers(d: Path) -> None:
    """A cased tokenizer (no tokenizer.json to override it) that sentence_bert_config's do_lower_case
    lowercases: sentence-transformers then lowercases the text and keeps its accents."""
    (d / "tokenizer.json").unlink()
    edit_json(d / "tokenizer_config.json", do_lower_case=False)
    edit_json(d / "sentence_bert_config.json", do_lower_case=True)


def cls_unnormalised_at_128_tokens(d: Path) -> None:
    edit_json(d / "1_Pooling" / "config.json", pooling_mode="cls")
    modules = json.loads((d / "modules.json").read_text())
    (d / "modules.json").write_text(json.dumps([m for m in modules if not m["type"].endswith("Normalize")]))
    edit_json(d / "sentence_bert_config.json", max_seq_length=128)


@pytest.mark.parametrize(("edit", "expected"), [
    (cased_tokenizer_lowercased_by_sentence_transformers, ("mean", True, 256)),
    (cls_unnormalised_at_128_tokens, ("cls", False, 128)),
])
def test_edited_sentence_transformers_model_equals_its_reference(minilm_dir, tmp_path, edit, expected):
    src = minilm_variant(minilm_dir, tmp_path / "src")
    edit(src)
    out = tmp_path / "export"
    code, _, stderr = run("convert", str(src), "--out", str(out), "--no-parity")
    assert code == 0, stderr
    emb = Embedder(out)
    assert (emb.pooling, emb.normalize, emb.max_length) == expected
    texts = [*multilingual_texts()[:24], "Straße GRÖSSE Café ÄPFEL naïve FAÇADE Ünïcödé"]
    model = SentenceTransformer(str(src), device="cpu")
    assert sum(len(ids) > expected[2] for ids in model.tokenizer(texts)["input_ids"]) >= 5
    want = model.encode(texts)
    got = emb.embed(texts)
    assert cosines(got, want).min() >= 0.9999
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), np.linalg.norm(want, axis=1), rtol=1e-3)


CLASSIFY_TEXTS = [f"{t} {'the ' * i}" for i, t in enumerate(
    ["hello world", "the model is fast", "a token of text", "bert export on nx", "seed step"] * 4)]


def write_labelled_classifier(out: Path) -> Path:
    """A tiny classifier whose config names its labels neg/neu/pos and whose classifier bias is
    centred on CLASSIFY_TEXTS, so that more than one label wins on them."""
    src = write_tiny_checkpoint(out, head="classification", fmt="safetensors")
    model = transformers.BertForSequenceClassification.from_pretrained(str(src)).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(src))
    with torch.no_grad():
        logits = model(**tokenizer(CLASSIFY_TEXTS, padding=True, return_tensors="pt")).logits
        model.classifier.bias -= logits.mean(0)
    model.config.id2label = {0: "neg", 1: "neu", 2: "pos"}
    model.config.label2id = {"neg": 0, "neu": 1, "pos": 2}
    model.save_pretrained(str(src))
    return src


def test_classifier_export_keeps_its_labels(tmp_path):
    src = write_labelled_classifier(tmp_path / "src")
    out = tmp_path / "export"
    code, _, stderr = run("convert", str(src), "--out", str(out))
    assert code == 0, stderr

    assert transformers.AutoConfig.from_pretrained(str(out)).id2label == {0: "neg", 1: "neu", 2: "pos"}
    pipe = transformers.pipeline("text-classification", model=str(src), tokenizer=str(src), device="cpu")
    want = [r["label"] for r in pipe(CLASSIFY_TEXTS)]
    assert len(set(want)) >= 2 and set(want) <= {"neg", "neu", "pos"}

    tokenizer = transformers.AutoTokenizer.from_pretrained(str(out))
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    id2label = json.loads((out / "config.json").read_text())["id2label"]
    inputs = {i.name for i in session.get_inputs()}
    enc = {k: v for k, v in tokenizer(CLASSIFY_TEXTS, padding=True, return_tensors="np").items() if k in inputs}
    logits = session.run(["logits"], {k: v.astype(np.int64) for k, v in enc.items()})[0]
    assert [id2label[str(i)] for i in logits.argmax(1)] == want


@pytest.mark.parametrize(("name", "source", "pattern"), [
    (["seed_3", "step_40k"], "minilm", "6 layers x 384 hidden x 12 heads, intermediate 1536 is not MultiBERTs"),
    (["seed_3"], "minilm", "is not MultiBERTs seed_3"),
    (["earlyberts-seed1", "step7000"], "tiny", "is not EarlyBERTs seed1 step7000"),
    (["bert-base-cased"], "minilm", "is not Google BERT bert-base-cased"),
])
def test_from_copy_that_is_not_the_named_checkpoint_is_refused(minilm_dir, tmp_path, name, source, pattern):
    path = minilm_dir if source == "minilm" else write_tiny_checkpoint(tmp_path / "src", "pretraining", "safetensors")
    out = tmp_path / "export"
    code, _, stderr = run("convert", *name, "--from", str(path), "--out", str(out), "--no-parity")
    assert_one_line_failure(code, stderr, pattern)
    assert not out.exists()


def test_label_names_a_local_directory_and_claims_nothing(minilm_dir, tmp_path):
    out = tmp_path / "export"
    code, _, stderr = run("convert", str(minilm_dir), "--label", "my minilm", "--out", str(out), "--no-parity")
    assert code == 0, stderr
    manifest = json.loads((out / "mbexport.json").read_text())
    assert manifest["source"]["label"] == "my minilm" and manifest["source"]["repo_id"] is None
    assert manifest["identity"]["claimed"] is None
    code, _, stderr = run("convert", "seed_3", "--label", "x", "--out", str(tmp_path / "other"))
    assert_one_line_failure(code, stderr, "--label")
    assert not (tmp_path / "other").exists()


def bert_base_checkpoint(vocab: Path, source: str) -> Checkpoint:
    """A checkpoint's identity depends on its spec and vocabulary only; weights are not published."""
    return Checkpoint(BertSpec(12, 768, 12, 3072, 30522), {}, vocab, source)


def test_identity_checks_architecture_and_vocab_digest(minilm_dir, tmp_path):
    source = Source("MultiBERTs seed_3 step_40k", "google/multiberts-seed_3-step_40k", None, tmp_path)
    record = identity(source, bert_base_checkpoint(minilm_dir / "vocab.txt", str(tmp_path)))
    assert record == {"claimed": "MultiBERTs seed_3 step_40k", "checked": ["architecture", "vocab size", "vocab sha256"],
                      "not_checked": ["weights (no published digest)", "step (the checkpoint does not record it)"]}

    swapped = (minilm_dir / "vocab.txt").read_text(encoding="utf-8").split("\n")
    swapped[1996], swapped[1997] = swapped[1997], swapped[1996]  # "the" and "of" trade ids
    (tmp_path / "vocab.txt").write_text("\n".join(swapped), encoding="utf-8")
    with pytest.raises(CatalogError, match="sha256 .* is not the vocabulary of MultiBERTs"):
        identity(source, bert_base_checkpoint(tmp_path / "vocab.txt", str(tmp_path)))


def test_hub_download_records_its_repository(minilm_dir):
    record = identity(Source("MultiBERTs seed_3", "google/multiberts-seed_3"),
                      bert_base_checkpoint(minilm_dir / "vocab.txt", "google/multiberts-seed_3"))
    assert record == {"claimed": "MultiBERTs seed_3", "checked": ["downloaded from google/multiberts-seed_3"],
                      "not_checked": []}



def test_hub_download_brings_the_sentence_transformers_files(monkeypatch, tmp_path):
    from test_sources import _FakeHub

    from mbexport.catalog import resolve
    from mbexport.sources import load_checkpoint

    src = add_sentence_transformers(write_tiny_checkpoint(tmp_path / "src", head="base", fmt="safetensors"),
                                    {"pooling_mode": "mean"}, ("Pooling", "Normalize"))
    files = {p.relative_to(src).as_posix(): p.read_bytes() for p in src.rglob("*") if p.is_file()}
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    with _FakeHub("someone/tiny-sentence-model", files) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        checkpoint = load_checkpoint(resolve("someone/tiny-sentence-model"))
    assert sorted(checkpoint.st_files) == ["1_Pooling/config.json", "modules.json", "sentence_bert_config.json"]
    assert checkpoint.embedding.to_dict() == {"pooling": "mean", "normalize": True, "max_length": 48,
                                              "from": "sentence-transformers"}


def test_identity_checks_the_step_a_tf_checkpoint_records(minilm_dir):
    """tests/fixtures/tf/pretraining records global_step 1234, which is no MultiBERTs step."""
    tf_dir = Path(__file__).parent / "fixtures" / "tf" / "pretraining"
    source = Source("MultiBERTs seed_1 step_20k", "google/multiberts-seed_1-step_20k", None, tf_dir)
    with pytest.raises(CatalogError, match="records global_step 1,234, but MultiBERTs seed_1 step_20k is step 20,000"):
        identity(source, bert_base_checkpoint(minilm_dir / "vocab.txt", str(tf_dir)))
    early = Source("EarlyBERTs seed1 step7000", "personads/earlyberts-seed1", "step7000", tf_dir)
    with pytest.raises(CatalogError, match="is step 7,000"):
        identity(early, bert_base_checkpoint(minilm_dir / "vocab.txt", str(tf_dir)))
