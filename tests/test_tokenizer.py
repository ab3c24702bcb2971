"""Native WordPiece tokenizer: tables of cases on a tiny handcrafted vocab, the Python face, bad input.

Every table case is also checked against the reference (transformers' BertTokenizerLegacy) when
transformers is installed, so a wrong expectation cannot hide a wrong tokenizer.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from mbexport import WordPieceTokenizer, _native
from mbexport.errors import TokenizerInputError, VocabError

TINY_VOCAB = [
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]",
    "a", "abc", "abcdefghi", "##de", "##defgxy", "##deh", "##f", "##ghz", "##ghi",
    "un", "##aff", "##able", "the", "cat", "Cat", ",", ".", "!", "'", "[", "]", "#", "$", "`",
    "e", "é", "cafe", "café", "i", "istanbul", "ı", "##ı",
    "ο", "##δ", "##ος", "##ο", "##σ", "##ς", "σ", "ς", "中", "文", "x", "##x", "ﬁ", "##s",
]


@dataclass
class Spec:
    input: str
    tokens: list[str]
    offsets: list[tuple[int, int]] | None = None
    options: dict = field(default_factory=dict)


SPECS = [
    # WordPiece: longest match first, ## continuations, failure -> one [UNK] for the whole word.
    Spec("abcdefghi", ["abcdefghi"], [(0, 9)]),
    Spec("abcdefghz", ["abc", "##de", "##f", "##ghz"], [(0, 3), (3, 5), (5, 6), (6, 9)]),
    Spec("abcdeh", ["abc", "##deh"], [(0, 3), (3, 6)]),
    Spec("abcdefgxy", ["abc", "##defgxy"]),
    Spec("abcq", ["[UNK]"], [(0, 4)]),
    Spec("unaffable", ["un", "##aff", "##able"], [(0, 2), (2, 5), (5, 9)]),
    Spec("xxxx", ["x", "##x", "##x", "##x"]),
    Spec("x" * 100, ["x"] + ["##x"] * 99),
    Spec("x" * 101, ["[UNK]"], [(0, 101)]),
    # Clean text, whitespace, punctuation (Unicode P* and ASCII symbols).
    Spec("", []),
    Spec(" \t\n\r\u3000\u2028 ", []),
    Spec("the\x00cat", ["[UNK]"]),
    Spec("ca\u200bt", ["cat"], [(0, 4)]),
    Spec("the,cat!", ["the", ",", "cat", "!"], [(0, 3), (3, 4), (4, 7), (7, 8)]),
    Spec("$a`#", ["$", "a", "`", "#"]),
    Spec("a\ufffd\x7fa", ["[UNK]"]),
    # Lowercase + strip accents (uncased), the reference's strip_accents interplay.
    Spec("THE Cat", ["the", "cat"]),
    Spec("Café", ["cafe"], [(0, 4)]),
    Spec("Cafe\u0301", ["cafe"], [(0, 4)]),
    Spec("café", ["café"], options={"do_lower_case": False}),
    Spec("Café", ["[UNK]"], options={"do_lower_case": False, "strip_accents": True}),
    Spec("CAFÉ", ["café"], options={"strip_accents": False}),
    Spec("Cat", ["Cat"], options={"do_lower_case": False}),
    # Python's str.lower(): İ -> i + U+0307 (stripped), Greek final sigma by context.
    Spec("İstanbul", ["istanbul"], [(0, 8)]),
    Spec("ΟΔΟΣ", ["ο", "##δ", "##ος"]),
    Spec("ΟΔΟΣ'Α", ["ο", "##δ", "##ο", "##σ", "'", "[UNK]"]),
    Spec("Σ", ["σ"]),
    # CJK ideographs become words of their own; compatibility ideographs are NFC-mapped.
    Spec("中文x", ["中", "文", "x"], [(0, 1), (1, 2), (2, 3)]),
    Spec("x中", ["x", "中"]),
    Spec("中文x", ["[UNK]"], options={"tokenize_chinese_chars": False}),
    # Full-width and compatibility forms are not NFKC-folded by BERT.
    Spec("ﬁ", ["ﬁ"]),
    Spec("ａ", ["[UNK]"]),
    # Special tokens written in the text stay whole (case-sensitive), even inside words.
    Spec("[CLS]", ["[CLS]"], [(0, 5)]),
    Spec("a[SEP]the", ["a", "[SEP]", "the"], [(0, 1), (1, 6), (6, 9)]),
    Spec("[cls]", ["[", "[UNK]", "]"]),
    Spec("[MA\x00SK]", ["[MASK]"]),
    Spec("x[MA\x00SK]", ["x", "[", "[UNK]", "]"]),
]


def _write_tiny(tmp: Path, vocab: list[str] = TINY_VOCAB, **config) -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    (tmp / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 16, **config}))
    return tmp


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write_tiny(tmp_path_factory.mktemp("tiny"))


def _reference(vocab_dir: Path, **options):
    legacy = pytest.importorskip("transformers.models.bert.tokenization_bert_legacy")
    return legacy.BertTokenizerLegacy(str(vocab_dir / "vocab.txt"), **options)


@pytest.mark.parametrize("spec", SPECS, ids=[repr(s.input[:24]) + str(s.options) for s in SPECS])
def test_tiny_vocab_table(spec: Spec, tiny_dir: Path) -> None:
    tok = WordPieceTokenizer.from_pretrained(tiny_dir, **spec.options)
    assert tok.tokenize(spec.input) == spec.tokens
    enc = tok(spec.input, add_special_tokens=False, return_offsets_mapping=True)
    assert enc["input_ids"] == tok.convert_tokens_to_ids(spec.tokens)
    if spec.offsets is not None:
        assert enc["offset_mapping"] == spec.offsets
    assert tok.tokenize(spec.input) == _reference(tiny_dir, **spec.options).tokenize(spec.input)


POST_SPECS = [
    # (kwargs, expected input_ids as tokens, token_type_ids)
    ({"text": "a the", "text_pair": "cat"}, [["[CLS]", "a", "the", "[SEP]", "cat", "[SEP]"]], [[0, 0, 0, 0, 1, 1]]),
    ({"text": "a the cat x", "truncation": True, "max_length": 4}, [["[CLS]", "a", "the", "[SEP]"]], None),
    ({"text": "a the cat x", "truncation": True, "max_length": 4, "stride": 1, "return_overflowing_tokens": True},
     [["[CLS]", "a", "the", "[SEP]"], ["[CLS]", "the", "cat", "[SEP]"], ["[CLS]", "cat", "x", "[SEP]"]], None),
    ({"text": "a the cat", "text_pair": "x cat", "truncation": "only_second", "max_length": 7},
     [["[CLS]", "a", "the", "cat", "[SEP]", "x", "[SEP]"]], [[0, 0, 0, 0, 0, 1, 1]]),
    ({"text": ["a", "a the cat"], "padding": True},
     [["[CLS]", "a", "[SEP]", "[PAD]", "[PAD]"], ["[CLS]", "a", "the", "cat", "[SEP]"]], None),
    ({"text": ["a"], "padding": True, "pad_to_multiple_of": 4}, [["[CLS]", "a", "[SEP]", "[PAD]"]], None),
    ({"text": ["a"], "padding": "max_length", "max_length": 5}, [["[CLS]", "a", "[SEP]", "[PAD]", "[PAD]"]], None),
]


@pytest.mark.parametrize("kwargs,tokens,types", POST_SPECS)
def test_post_processing_table(kwargs: dict, tokens: list, types: list | None, tiny_dir: Path) -> None:
    tok = WordPieceTokenizer.from_pretrained(tiny_dir)
    enc = tok(**kwargs, return_tensors="np")
    assert [tok.convert_ids_to_tokens(row) for row in enc["input_ids"].tolist()] == tokens
    assert enc["input_ids"].dtype == np.int64
    assert enc["attention_mask"].tolist() == [[int(t != "[PAD]") for t in row] for row in tokens]
    if types is not None:
        assert enc["token_type_ids"].tolist() == types


def test_single_text_returns_flat_lists(tiny_dir: Path) -> None:
    tok = WordPieceTokenizer.from_pretrained(tiny_dir)
    enc = tok("a the")
    assert list(enc) == ["input_ids", "token_type_ids", "attention_mask"]
    assert enc.input_ids == [2, 5, 17, 3]
    assert tok.encode("a the", add_special_tokens=False) == [5, 17]
    assert tok.decode([2, 5, 17, 22, 3], skip_special_tokens=True) == "a the!"
    assert tok.decode(tok.encode("unaffable cat")) == "[CLS] unaffable cat [SEP]"
    assert tok.convert_ids_to_tokens(5) == "a" and tok.convert_tokens_to_ids("nope") == 1


def test_empty_batch_and_empty_strings(tiny_dir: Path) -> None:
    tok = WordPieceTokenizer.from_pretrained(tiny_dir)
    assert tok([])["input_ids"] == []
    assert tok([], return_tensors="np")["input_ids"].shape == (0, 0)
    assert tok(["", ""], padding=True)["input_ids"] == [[2, 3], [2, 3]]
    ids, cu_seqlens = tok.encode_batch_arrays(["", "a the"])[0], tok.encode_batch_arrays(["", "a the"])[2]
    assert ids.dtype == np.int32 and cu_seqlens.tolist() == [0, 2, 6]


def test_encode_batch_arrays_matches_call(tiny_dir: Path) -> None:
    tok = WordPieceTokenizer.from_pretrained(tiny_dir)
    texts = ["a the cat " * k for k in range(6)]
    ids, types, cu, max_len = tok.encode_batch_arrays(texts, max_length=8)
    ref = tok(texts, truncation=True, max_length=8)
    assert [ids[cu[i]:cu[i + 1]].tolist() for i in range(len(texts))] == ref["input_ids"]
    assert max_len == max(map(len, ref["input_ids"]))
    ids, types, cu, _ = tok.encode_batch_arrays(["a"], text_pairs=["cat"], max_length=None)
    assert ids.tolist() == [2, 5, 3, 18, 3] and types.tolist() == [0, 0, 0, 1, 1]


# ---------------------------------------------------------------- bad input
def test_non_str_items_name_the_index(tiny_dir: Path) -> None:
    tok = WordPieceTokenizer.from_pretrained(tiny_dir)
    with pytest.raises(TypeError, match="item 2 is int"):
        tok(["a", "b", 3])
    with pytest.raises(TypeError, match="text_pair item 1 is bytes"):
        tok(["a", "b"], ["c", b"d"])
    with pytest.raises(TypeError):
        tok.tokenize(None)  # type: ignore[arg-type]


def test_lone_surrogate_names_the_index(tiny_dir: Path) -> None:
    tok = WordPieceTokenizer.from_pretrained(tiny_dir)
    with pytest.raises(TokenizerInputError, match=r"item 1: .*lone surrogate U\+D800 at character 2"):
        tok(["ok", "ab\ud800"])
    with pytest.raises(TokenizerInputError, match="text_pair item 0"):
        tok(["ok"], ["\udfff"])


def test_a_stopped_text_is_still_refused_for_a_lone_surrogate_past_the_stop(tiny_dir: Path) -> None:
    """encode_batch_arrays stops reading a text past max_length tokens, yet refuses it as a full read
    would: a surrogate in the unread rest is named with its position, in UCS-2 and UCS-4 texts."""
    tok = WordPieceTokenizer.from_pretrained(tiny_dir)
    for head in ("a the cat " * 50, "\u00e9\u4e00 " * 50, "\U0001f600 the " * 50):
        text = head + "\ud800 cat"
        with pytest.raises(TokenizerInputError, match=f"item 1: .*lone surrogate U\\+D800 at character {len(head)}"):
            tok.encode_batch_arrays(["ok", text], max_length=8)
        cu = tok.encode_batch_arrays(["ok", head + "cat"], max_length=8)[2]
        assert cu.tolist() == [0, 3, 11]


@pytest.mark.parametrize("content,match", [
    (b"[PAD]\n[UNK]\n\xff\xfe\n", "not valid UTF-8 .line 3"),
    (b"[PAD]\n[UNK]\na\na\n", "duplicate entry 'a' on lines 3 and 4"),
    (b"[PAD]\na\n", "no unknown token '\\[UNK\\]'"),
])
def test_bad_vocab_raises_vocab_error(tmp_path: Path, content: bytes, match: str) -> None:
    (tmp_path / "vocab.txt").write_bytes(content)
    with pytest.raises(VocabError, match=match):
        WordPieceTokenizer.from_pretrained(tmp_path)


def test_missing_vocab_raises_vocab_error(tmp_path: Path) -> None:
    with pytest.raises(VocabError, match="has no vocab.txt"):
        WordPieceTokenizer.from_pretrained(tmp_path)
    with pytest.raises(VocabError, match="cannot be read"):
        WordPieceTokenizer.from_pretrained(tmp_path / "nope.txt")
    with pytest.raises(VocabError, match="cannot be read"):
        _native.read_vocab(str(tmp_path / "nope.txt"))


def test_vocab_past_any_vocabularys_size_is_refused_unheld(tmp_path: Path) -> None:
    """A vocab.txt over 64 MiB (sparse here), or one that never ends (/dev/zero), is refused after at most
    64 MiB is read, never held whole."""
    with open(tmp_path / "vocab.txt", "wb") as f:
        f.truncate((64 << 20) + 1)
    for path in (tmp_path / "vocab.txt", Path("/dev/zero")):
        with pytest.raises(VocabError, match="is over 64 MiB, more than any WordPiece vocabulary"):
            _native.read_vocab(str(path))
    with pytest.raises(VocabError, match="is over 64 MiB"):
        WordPieceTokenizer.from_pretrained(tmp_path)


def test_vocab_lines_as_python_reads_them() -> None:
    assert _native.parse_vocab(b"a\r\nb\rc\n\nd") == ["a", "b", "c", "", "d"]
    assert _native.parse_vocab(b"") == []


@pytest.mark.parametrize("kwargs,match", [
    ({"truncation": "only_second", "max_length": 3}, "needs a text_pair"),
    ({"truncation": True, "max_length": 1}, "too low to hold the special tokens"),
    ({"truncation": True, "max_length": 4, "stride": 2, "return_overflowing_tokens": True}, "stride"),
    ({"truncation": "bogus"}, "truncation must be"),
    ({"padding": "bogus"}, "padding must be"),
    ({"return_tensors": "tf"}, "not supported"),
    ({"truncation": True, "max_length": 6, "padding": True, "pad_to_multiple_of": 4}, "multiple of"),
])
def test_bad_options(tiny_dir: Path, kwargs: dict, match: str) -> None:
    tok = WordPieceTokenizer.from_pretrained(tiny_dir)
    with pytest.raises(TokenizerInputError, match=match):
        tok("a the cat x x x", **kwargs)


def test_ragged_np_without_padding_is_an_error(tiny_dir: Path) -> None:
    tok = WordPieceTokenizer.from_pretrained(tiny_dir)
    with pytest.raises(TokenizerInputError, match="padding=True"):
        tok(["a", "a the"], return_tensors="np")


# ---------------------------------------------------------------- scale and threads
def test_ten_megabyte_string_is_linear(tiny_dir: Path) -> None:
    tok = WordPieceTokenizer.from_pretrained(tiny_dir)
    unit = "abcdefghz unaffable the, café 中 x" + "x" * 150 + " "
    small, big = unit * 5500, unit * 55000  # ~1 MB and ~10 MB of characters
    t0 = time.perf_counter()
    n_small = len(tok(small)["input_ids"])
    t1 = time.perf_counter()
    n_big = len(tok(big)["input_ids"])
    t2 = time.perf_counter()
    assert n_big - 2 == 10 * (n_small - 2)
    assert (t2 - t1) < 25 * max(t1 - t0, 1e-3) and (t2 - t1) < 10
    one_word = "x" * 10_000_000
    assert tok.tokenize(one_word) == ["[UNK]"]


def test_many_python_threads_share_one_tokenizer(tiny_dir: Path) -> None:
    tok = WordPieceTokenizer.from_pretrained(tiny_dir)
    texts = [f"a the cat{'x' * (i % 7)} unaffable {'中' * (i % 3)}" for i in range(400)]
    expected = tok(texts, padding=True, return_tensors="np", threads=1)["input_ids"]
    results: list = [None] * 8
    errors: list = []

    def work(k: int) -> None:
        try:
            for _ in range(5):
                got = tok(texts, padding=True, return_tensors="np", threads=1 + k % 3)["input_ids"]
                assert np.array_equal(got, expected)
            results[k] = True
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and all(results)


def test_thread_count_does_not_change_output(tiny_dir: Path) -> None:
    tok = WordPieceTokenizer.from_pretrained(tiny_dir)
    texts = [("a the cat " * (i % 13)) + "unaffable" for i in range(1000)]
    one = tok(texts, padding=True, return_tensors="np", return_offsets_mapping=True, threads=1)
    many = tok(texts, padding=True, return_tensors="np", return_offsets_mapping=True, threads=7)
    for k in one:
        assert np.array_equal(one[k], many[k])
