"""tokenizer.json-only checkpoints (what transformers 5 ``save_pretrained`` writes: no vocab.txt).

A tiny BertModel and a BertTokenizerFast built on the real bert-base-uncased vocab (or a cased
extension of it) are saved by transformers itself; the export must hold vocab.txt and the
normaliser options taken from tokenizer.json, so that our tokenizer gives the reference's ids
(transformers' legacy BertTokenizer with the same vocab and options) and HF's AutoTokenizer
behaves as it did on the source. Tokenizers that are not BERT WordPiece are refused.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import TINY_CONFIG, run_mbexport, write_tiny_checkpoint
from test_sources import _FakeHub
from test_tokenizer_parity import EDGE_CASES, _faker_texts

from mbexport import WordPieceTokenizer
from mbexport.catalog import resolve
from mbexport.errors import VocabError
from mbexport.export.writer import write_tokenizer_files
from mbexport.sources import load_checkpoint
from mbexport.sources.hf_dir import load_hf_dir
from mbexport.sources.tokenizer_json import read_tokenizer_json

transformers = pytest.importorskip("transformers")
legacy_mod = pytest.importorskip("transformers.models.bert.tokenization_bert_legacy")
tokenizers = pytest.importorskip("tokenizers")

# (name, do_lower_case, strip_accents, tokenize_chinese_chars, cased vocab)
VARIANTS = [
    ("uncased", True, None, True, False),
    ("cased", False, None, True, True),
    ("cased-strip", False, True, True, True),
    ("uncased-keep-accents", True, False, True, False),
    ("no-chinese-split", True, None, False, False),
]


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return EDGE_CASES + _faker_texts(3, seed=7)


def _vocab(minilm_dir: Path, cased: bool) -> list[str]:
    vocab = (minilm_dir / "vocab.txt").read_text(encoding="utf-8").split("\n")[:-1]
    if not cased:
        return vocab
    seen, extra = set(vocab), []
    for tok in vocab:
        if tok.isalpha():
            for form in (tok.capitalize(), tok.upper()):
                if form not in seen:
                    seen.add(form)
                    extra.append(form)
    return vocab + extra


def _hf5_checkpoint(out: Path, vocab: list[str], lower: bool, strip: bool | None, chinese: bool) -> Path:
    """A checkpoint as transformers 5 saves it: model files + tokenizer.json + tokenizer_config.json."""
    write_tiny_checkpoint(out, head="base", fmt="safetensors", config={**TINY_CONFIG, "vocab_size": len(vocab)})
    for name in ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        (out / name).unlink()
    fast = transformers.BertTokenizerFast(vocab={t: i for i, t in enumerate(vocab)}, do_lower_case=lower,
                                          strip_accents=strip, tokenize_chinese_chars=chinese)
    fast.save_pretrained(out)
    return out


def _reference(vocab: list[str], tmp: Path, lower: bool, strip: bool | None, chinese: bool):
    """transformers' legacy BertTokenizer (google-research/bert behaviour) on the same vocab and options."""
    tmp.mkdir(exist_ok=True)
    (tmp / "vocab.txt").write_text("".join(t + "\n" for t in vocab), encoding="utf-8")
    return legacy_mod.BertTokenizerLegacy(str(tmp / "vocab.txt"), do_lower_case=lower, strip_accents=strip,
                                          tokenize_chinese_chars=chinese)


def test_transformers5_saves_no_vocab_txt(tmp_path: Path, minilm_dir: Path) -> None:
    """The premise: a BERT tokenizer saved by transformers 5 has tokenizer.json and no vocab.txt."""
    ckpt = _hf5_checkpoint(tmp_path / "ck", _vocab(minilm_dir, False), True, None, True)
    assert (ckpt / "tokenizer.json").is_file() and not (ckpt / "vocab.txt").exists()


@pytest.mark.parametrize(("name", "lower", "strip", "chinese", "cased"), VARIANTS, ids=[v[0] for v in VARIANTS])
def test_export_tokenizer_files_round_trip(tmp_path: Path, minilm_dir: Path, texts: list[str], name: str,
                                           lower: bool, strip: bool | None, chinese: bool, cased: bool) -> None:
    """Source tokenizer.json -> export vocab.txt + tokenizer_config.json: ours equals the reference, HF's
    AutoTokenizer on the export equals HF's on the source, options are carried (not guessed)."""
    vocab = _vocab(minilm_dir, cased)
    ckpt = _hf5_checkpoint(tmp_path / "ck", vocab, lower, strip, chinese)
    if name == "uncased-keep-accents":  # the config says otherwise; tokenizer.json (what the fast tokenizer runs) wins
        cfg = json.loads((ckpt / "tokenizer_config.json").read_text())
        (ckpt / "tokenizer_config.json").write_text(json.dumps({**cfg, "strip_accents": None}))
    checkpoint = load_hf_dir(ckpt)
    out = tmp_path / "export"
    out.mkdir()
    write_tokenizer_files(checkpoint, checkpoint.spec.to_hf_config(), out)

    assert (out / "vocab.txt").read_text(encoding="utf-8").split("\n")[:-1] == vocab
    cfg = json.loads((out / "tokenizer_config.json").read_text())
    assert (cfg["do_lower_case"], cfg["strip_accents"], cfg["tokenize_chinese_chars"]) == (lower, strip, chinese)

    ref = _reference(vocab, tmp_path / "ref", lower, strip, chinese)
    ours = WordPieceTokenizer.from_pretrained(out)
    ref_ids = [ref(t)["input_ids"] for t in texts]
    assert ours(texts)["input_ids"] == ref_ids
    # Straight from the source directory (tokenizer.json, no vocab.txt) too.
    assert WordPieceTokenizer.from_pretrained(ckpt)(texts)["input_ids"] == ref_ids

    # HF runs the source's tokenizer.json as written; AutoTokenizer on the export must do the same.
    # (transformers 5's AutoTokenizer on the source rebuilds the normaliser from tokenizer_config.json
    # and its defaults, ignoring tokenizer.json's: the export states the options explicitly.)
    hf_export = transformers.AutoTokenizer.from_pretrained(out)
    hf_source = transformers.PreTrainedTokenizerFast(tokenizer_file=str(ckpt / "tokenizer.json"))
    assert hf_export(texts)["input_ids"] == hf_source(texts)["input_ids"]


def test_convert_cli_tokenizer_json_only(tmp_path: Path, minilm_dir: Path, texts: list[str]) -> None:
    """Acceptance: `mbexport convert` of a transformers 5 checkpoint without vocab.txt; the export's ids
    (ours and AutoTokenizer's) equal the reference on multilingual text."""
    vocab = _vocab(minilm_dir, False)
    ckpt = _hf5_checkpoint(tmp_path / "ck", vocab, True, None, True)
    out = tmp_path / "export"
    proc = run_mbexport("convert", str(ckpt), "--out", str(out), text=True)
    assert proc.returncode == 0, proc.stderr
    assert (out / "vocab.txt").is_file()
    ref = _reference(vocab, tmp_path / "ref", True, None, True)
    ref_ids = [ref(t)["input_ids"] for t in texts]
    assert WordPieceTokenizer.from_pretrained(out)(texts)["input_ids"] == ref_ids
    hf_ids = transformers.AutoTokenizer.from_pretrained(out)(texts)["input_ids"]
    # HF's Rust tokenizer differs from the reference where docs/TOKENIZER.md says (final sigma, NFC,
    # unassigned code points); everywhere else it must agree.
    same = [i for i, t in enumerate(texts) if not any(c in t for c in "Σ\u0301\u0300\u0308\u0316\u0323\u0304\u030a"
                                                          "\u1100\u1161\u11a8\U000e0001\U000f0000")]
    assert len(same) > len(texts) * 0.8
    assert [hf_ids[i] for i in same] == [ref_ids[i] for i in same]


def test_hub_repo_without_vocab_txt_fetches_tokenizer_json(tmp_path: Path, minilm_dir: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A hub repo saved by transformers 5: fetch takes tokenizer.json (and no other extra file) and loads."""
    ckpt = _hf5_checkpoint(tmp_path / "ck", _vocab(minilm_dir, False), True, None, True)
    files = {p.name: p.read_bytes() for p in ckpt.iterdir()}
    files["README.md"] = b"# card"
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    with _FakeHub("org/bert-v5", files) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        checkpoint = load_checkpoint(resolve("org/bert-v5"))
        fetched = {r.rsplit("/", 1)[1] for r in hub.requests if r.startswith("GET") and "/resolve/" in r}
    assert fetched == {"config.json", "tokenizer.json", "tokenizer_config.json", "model.safetensors"}
    assert checkpoint.vocab_file.name == "tokenizer.json"
    assert read_tokenizer_json(checkpoint.vocab_file).vocab == _vocab(minilm_dir, False)


def _bpe_checkpoint(tmp_path: Path) -> Path:
    ckpt = write_tiny_checkpoint(tmp_path / "bpe", head="base", fmt="safetensors")
    for name in ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        (ckpt / name).unlink()
    bpe = tokenizers.ByteLevelBPETokenizer()
    bpe.train_from_iterator(["hello world", "the model exports fast", "tokens and more tokens"], vocab_size=300)
    bpe.save(str(ckpt / "tokenizer.json"))
    return ckpt


def test_convert_cli_refuses_bpe(tmp_path: Path) -> None:
    """A BPE tokenizer.json is refused with one line naming the field; nothing is written."""
    ckpt = _bpe_checkpoint(tmp_path)
    out = tmp_path / "export"
    proc = run_mbexport("convert", str(ckpt), "--out", str(out), text=True)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "model.type is 'BPE'" in lines[0] and "tokenizer.json" in lines[0], proc.stderr
    assert not out.exists()


def _wordpiece_json(tmp_path: Path) -> dict:
    fast = transformers.BertTokenizerFast(vocab={t: i for i, t in enumerate(
        ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "##b"])})
    fast.save_pretrained(tmp_path / "wp")
    return json.loads((tmp_path / "wp" / "tokenizer.json").read_text())


# (what is changed in a valid BERT tokenizer.json, the text the error must contain)
REFUSED = [
    ({"model": {"type": "Unigram", "vocab": [["a", 0.0]]}}, "model.type is 'Unigram'"),
    ({"normalizer": {"type": "Sequence", "normalizers": [{"type": "NFD"}, {"type": "Lowercase"}]}},
     "normalizer is 'Sequence'"),
    ({"normalizer": None}, "normalizer is None"),
    ({"pre_tokenizer": {"type": "Whitespace"}}, "pre_tokenizer.type is 'Whitespace'"),
    ({"model": {"continuing_subword_prefix": "@@"}}, "continuing_subword_prefix"),
    ({"model": {"max_input_chars_per_word": 200}}, "max_input_chars_per_word is 200"),
    ({"normalizer": {"clean_text": False}}, "clean_text=false"),
    ({"model": {"vocab": {"[UNK]": 0, "a": 2}}}, "out of range or repeated"),
    ({"model": {"unk_token": "<unk>"}}, "unk_token '<unk>' is not in the vocabulary"),
]


@pytest.mark.parametrize(("change", "message"), REFUSED, ids=[m for _, m in REFUSED])
def test_refuses_what_is_not_bert_wordpiece(tmp_path: Path, change: dict, message: str) -> None:
    data = _wordpiece_json(tmp_path)
    for key, value in change.items():
        data[key] = {**data[key], **value} if isinstance(value, dict) and value.get("type") is None \
            and isinstance(data.get(key), dict) else value
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(data))
    with pytest.raises(VocabError, match="^[^\n]*$") as info:
        read_tokenizer_json(path)
    assert message in str(info.value) and str(path) in str(info.value)
    with pytest.raises(VocabError):
        WordPieceTokenizer.from_pretrained(path)


@pytest.mark.parametrize(("name", "content", "message"), [
    ("tokenizer.json", b'{"model": ' * 100_000, "is not valid JSON (it is nested deeper than the JSON parser goes)"),
    ("tokenizer_config.json", b"[1]", "holds a JSON list, not an object"),
    ("special_tokens_map.json", b"[" * 100_000, "is not valid JSON (it is nested deeper than the JSON parser goes)"),
])
def test_hostile_tokenizer_files_are_one_line_errors(tmp_path: Path, name: str, content: bytes, message: str) -> None:
    """Beside a vocab.txt (or alone, for tokenizer.json): nesting past the parser's depth, or a config that is
    not an object, is a VocabError naming the file, never a RecursionError or TypeError."""
    if name != "tokenizer.json":
        (tmp_path / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\na\n", encoding="utf-8")
    (tmp_path / name).write_bytes(content)
    with pytest.raises(VocabError, match="^[^\n]*$") as info:
        WordPieceTokenizer.from_pretrained(tmp_path)
    assert str(tmp_path / name) in str(info.value) and message in str(info.value)


def test_reads_specials_and_options(tmp_path: Path) -> None:
    """Specials from the post-processor and added tokens; options from the BertNormalizer."""
    data = _wordpiece_json(tmp_path)
    data["normalizer"].update(lowercase=False, strip_accents=True, handle_chinese_chars=False)
    data["added_tokens"].append({"id": 7, "content": "<ent>", "single_word": False, "lstrip": False,
                                 "rstrip": False, "normalized": False, "special": True})
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(data))
    got = read_tokenizer_json(path)
    assert got.vocab == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "##b"]
    assert (got.do_lower_case, got.strip_accents, got.tokenize_chinese_chars) == (False, True, False)
    assert got.specials == {"unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]", "pad_token": "[PAD]",
                            "mask_token": "[MASK]"}
    assert got.added_tokens == {7: "<ent>"}
    tok = WordPieceTokenizer.from_pretrained(path)
    assert tok("ab <ent>")["input_ids"] == [2, 5, 6, 7, 3]
