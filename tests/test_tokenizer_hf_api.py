"""The parts of HF's tokenizer API that users call, each against transformers itself.

return_tensors="pt", word_ids()/sequence_ids(), padding_side="left" (constructor and per call),
is_split_into_words=True (singles and pairs) and save_pretrained. Reference for what a call
returns: HF's BertTokenizer (Rust) on the same vocab, on texts where its plain ids equal the
reference's (docs/TOKENIZER.md lists where they differ); the ids themselves follow the legacy
BertTokenizer (tests/test_tokenizer_parity.py). Inputs: tables of cases plus Faker text in many
locales.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from test_no_torch import run_without_torch
from test_tokenizer_parity import EDGE_CASES, _faker_texts

from mbexport import WordPieceTokenizer
from mbexport.errors import TokenizerInputError

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")
legacy_mod = pytest.importorskip("transformers.models.bert.tokenization_bert_legacy")


@pytest.fixture(scope="module")
def ours(minilm_dir: Path) -> WordPieceTokenizer:
    return WordPieceTokenizer.from_pretrained(minilm_dir)


@pytest.fixture(scope="module")
def hf(minilm_dir: Path):
    return transformers.AutoTokenizer.from_pretrained(minilm_dir)


@pytest.fixture(scope="module")
def texts(ours: WordPieceTokenizer, hf) -> list[str]:
    """Edge cases and Faker text whose plain ids agree between HF's Rust tokenizer and ours."""
    candidates = EDGE_CASES + _faker_texts(2, seed=11)
    a, b = ours(candidates)["input_ids"], hf(candidates)["input_ids"]
    agreed = [t for t, x, y in zip(candidates, a, b) if x == y]
    assert len(agreed) > 0.9 * len(candidates)
    return agreed


def _plain(value):
    return value.tolist() if hasattr(value, "tolist") else value


def _same(ours_enc, hf_enc, rows: int) -> None:
    """Same keys, values, word ids and sequence ids as HF's encoding."""
    assert set(ours_enc) == set(hf_enc)
    for key in hf_enc:
        assert _plain(ours_enc[key]) == _plain(hf_enc[key]), key
    for r in range(rows):
        assert ours_enc.word_ids(r) == hf_enc.word_ids(r), r
        assert ours_enc.sequence_ids(r) == hf_enc.sequence_ids(r), r


# (args, kwargs) of calls covering the options that move tokens, rows and padding.
CALLS = [
    (("Hello, world! don't [SEP] stop中文 unaffable",), {"return_offsets_mapping": True}),
    (("hello world foo bar baz unaffable",), {"max_length": 6, "truncation": True, "stride": 2,
                                              "return_overflowing_tokens": True}),
    ((["hello world", "x", "unaffable things, really"],), {"padding": True, "padding_side": "left",
                                                            "return_special_tokens_mask": True,
                                                            "return_offsets_mapping": True}),
    ((["hello world foo bar baz", "x y"], ["a b c", "unaffable q"]),
     {"max_length": 7, "truncation": True, "stride": 1, "return_overflowing_tokens": True, "padding": "max_length",
      "padding_side": "left", "return_offsets_mapping": True, "return_special_tokens_mask": True}),
    ((["hello world", "x"], ["a b c", "q"]), {"add_special_tokens": False, "padding": True}),
    ((["hello world", "x"],), {"padding": "max_length", "max_length": 8, "pad_to_multiple_of": 4,
                               "padding_side": "left", "return_tensors": "np", "return_offsets_mapping": True,
                               "return_length": True}),
    ((["hello world", "x"], ["y", "the longest second text"]), {"padding": True, "padding_side": "left",
                                                                "return_tensors": "pt"}),
    ((["Hello", "wor,ld  x"],), {"is_split_into_words": True, "return_offsets_mapping": True}),
    ((["Hello", "", "a b", "x"], ["p", "q"]), {"is_split_into_words": True, "return_offsets_mapping": True}),
    (([["Hello", "x"], ["a"], []],), {"is_split_into_words": True, "padding": True, "padding_side": "left",
                                      "return_special_tokens_mask": True, "return_offsets_mapping": True}),
    (([["naïve", "café's"], ["中文字", "ok"]], [["x"], ["unaffable", "[SEP]", "y."]]),
     {"is_split_into_words": True, "truncation": "only_second", "max_length": 9, "padding": True,
      "return_offsets_mapping": True, "return_tensors": "pt"}),
]


@pytest.mark.parametrize(("args", "kwargs"), CALLS, ids=[str(i) for i in range(len(CALLS))])
def test_calls_equal_hf(ours: WordPieceTokenizer, hf, args: tuple, kwargs: dict) -> None:
    got, want = ours(*args, **kwargs), hf(*args, **kwargs)
    ids = want["input_ids"]
    _same(got, want, 1 if np.ndim(ids[0]) == 0 else len(ids))


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("tensors", [None, "np", "pt"])
def test_faker_batches_equal_hf(ours: WordPieceTokenizer, hf, texts: list[str], side: str,
                                tensors: str | None) -> None:
    """Padded multilingual batches and pairs: every key, word_ids and sequence_ids as HF's."""
    pairs = texts[1:] + texts[:1]
    kwargs = {"padding": True, "truncation": True, "max_length": 48, "padding_side": side,
              "return_tensors": tensors, "return_offsets_mapping": True, "return_special_tokens_mask": True}
    _same(ours(texts, pairs, **kwargs), hf(texts, pairs, **kwargs), len(texts))


def test_faker_split_into_words_equals_hf(ours: WordPieceTokenizer, hf, texts: list[str]) -> None:
    """Faker text split on spaces (and a second split on commas, so words hold spaces): HF's result."""
    words = [t.split() for t in texts] + [t.split(",") for t in texts]
    pairs = words[3:] + words[:3]
    kwargs = {"is_split_into_words": True, "return_offsets_mapping": True, "truncation": True,
              "max_length": 40, "stride": 3, "return_overflowing_tokens": True}
    want = hf(words, pairs, **kwargs)
    _same(ours(words, pairs, **kwargs), want, len(want["input_ids"]))


def test_return_tensors_pt_types(ours: WordPieceTokenizer) -> None:
    enc = ours(["a b", "c"], padding=True, return_tensors="pt", return_length=True,
               return_overflowing_tokens=True)
    assert all(isinstance(v, torch.Tensor) and v.dtype == torch.int64 for v in enc.values())
    ragged = pytest.raises(TokenizerInputError, match="return_tensors='pt'")
    with ragged:
        ours(["a b", "c"], return_tensors="pt")


def test_return_tensors_pt_without_torch(minilm_dir: Path) -> None:
    """Without torch, 'pt' is a TokenizerInputError naming the fix; 'np' still works."""
    result = run_without_torch(f"""
        from mbexport import WordPieceTokenizer
        from mbexport.errors import TokenizerInputError
        tok = WordPieceTokenizer.from_pretrained({str(minilm_dir)!r})
        print(tok(["a b"], return_tensors="np")["input_ids"].tolist())
        try:
            tok(["a b"], return_tensors="pt")
        except TokenizerInputError as e:
            print("TokenizerInputError:", e)
    """)
    assert result.stdout.splitlines() == [
        "[[101, 1037, 1038, 102]]",
        ("TokenizerInputError: return_tensors='pt' needs torch, which is not installed: pip install torch, "
         "or use return_tensors='np'")], result.stderr


def test_constructor_padding_side(minilm_dir: Path, hf) -> None:
    """padding_side as an attribute (constructor / from_pretrained), overridden per call, as HF's."""
    left = WordPieceTokenizer.from_pretrained(minilm_dir, padding_side="left")
    hf_left = transformers.AutoTokenizer.from_pretrained(minilm_dir, padding_side="left")
    batch = ["hello world", "x"]
    _same(left(batch, padding=True), hf_left(batch, padding=True), 2)
    _same(left(batch, padding=True, padding_side="right"), hf(batch, padding=True), 2)
    with pytest.raises(TokenizerInputError, match="padding_side must be 'left' or 'right'"):
        left(batch, padding=True, padding_side="middle")


def test_word_ids_without_fresh_state(ours: WordPieceTokenizer) -> None:
    """A pickled encoding keeps its data; asking it for word ids says why it cannot."""
    enc = pickle.loads(pickle.dumps(ours("hello world")))
    assert enc["input_ids"] == ours("hello world")["input_ids"]
    with pytest.raises(TokenizerInputError, match="call the tokenizer again"):
        enc.word_ids()


def test_split_into_words_rejects_non_lists(ours: WordPieceTokenizer) -> None:
    with pytest.raises(TypeError, match="list of words"):
        ours("hello world", is_split_into_words=True)
    with pytest.raises(TypeError, match="words must be str"):
        ours(["hello", 3], is_split_into_words=True)


# (constructor options) for save_pretrained round trips.
SAVE_CASES = [
    {},
    {"do_lower_case": False},
    {"do_lower_case": False, "strip_accents": True},
    {"strip_accents": False},
    {"tokenize_chinese_chars": False, "model_max_length": 16},
    {"additional_special_tokens": ["<ent>"], "padding_side": "left"},
]


@pytest.mark.parametrize("options", SAVE_CASES, ids=[json.dumps(o) for o in SAVE_CASES])
def test_save_pretrained_round_trips(tmp_path: Path, minilm_dir: Path, texts: list[str], options: dict) -> None:
    """Saved directory: ours and HF's AutoTokenizer load it with the same options and give the same ids;
    the ids equal the legacy reference with those options."""
    tok = WordPieceTokenizer.from_pretrained(minilm_dir, **options)
    files = tok.save_pretrained(tmp_path / "saved")
    assert sorted(Path(f).name for f in files) == ["special_tokens_map.json", "tokenizer_config.json", "vocab.txt"]
    again = WordPieceTokenizer.from_pretrained(tmp_path / "saved")
    theirs = transformers.AutoTokenizer.from_pretrained(tmp_path / "saved")
    for name in ("do_lower_case", "strip_accents", "tokenize_chinese_chars", "model_max_length", "padding_side"):
        assert getattr(again, name) == getattr(tok, name), name
    assert theirs.model_max_length == tok.model_max_length and theirs.padding_side == tok.padding_side
    assert set(theirs.all_special_tokens) == set(again.all_special_tokens)
    sample = [t + " <ent>" for t in texts[:40]]
    plain = again(sample, truncation=True)["input_ids"]
    assert plain == tok(sample, truncation=True)["input_ids"]
    ref = legacy_mod.BertTokenizerLegacy(
        str(minilm_dir / "vocab.txt"), do_lower_case=options.get("do_lower_case", True),
        strip_accents=options.get("strip_accents"), tokenize_chinese_chars=options.get("tokenize_chinese_chars", True),
        additional_special_tokens=options.get("additional_special_tokens"))
    assert plain == [ref(t, truncation=True, max_length=tok.model_max_length)["input_ids"] for t in sample]
    # AutoTokenizer on the saved directory behaves as HF's BertTokenizer built with these options ...
    direct = transformers.BertTokenizer(str(minilm_dir / "vocab.txt"), **options)
    direct_ids = direct(sample, truncation=True)["input_ids"]
    assert theirs(sample, truncation=True)["input_ids"] == direct_ids
    # ... and, where HF's Rust ids agree with the reference (docs/TOKENIZER.md lists where they do not),
    # gives what ours gives, padding included.
    agree = [t for t, a, b in zip(sample, plain, direct_ids) if a == b]
    assert len(agree) > 30
    _same(again(agree, padding=True, truncation=True), theirs(agree, padding=True, truncation=True), len(agree))
