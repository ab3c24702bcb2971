"""The Unicode tables equal this interpreter's unicodedata, and normalisation equals Python's per code point.

The per-code-point test builds its vocabulary from the reference's own BasicTokenizer output, so
every word the reference produces is one id: any difference in cleaning, CJK spacing, NFC,
str.lower() (final sigma, multi-char lowercasings), NFD or accent stripping changes an id.
"""

from __future__ import annotations

import importlib.util
import unicodedata
from pathlib import Path

import pytest

from mbexport import WordPieceTokenizer

ROOT = Path(__file__).resolve().parents[1]
legacy_mod = pytest.importorskip("transformers.models.bert.tokenization_bert_legacy")


def test_checked_in_tables_equal_this_interpreter() -> None:
    spec = importlib.util.spec_from_file_location("gen_tables", ROOT / "csrc" / "unicode" / "gen_tables.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    text = (ROOT / "csrc" / "unicode" / "unicode_tables.cpp").read_text(encoding="utf-8")
    assert f'kUnicodeVersion[] = "{unicodedata.unidata_version}"' in text, "regenerate: python csrc/unicode/gen_tables.py"
    assert gen.build() == text, "csrc/unicode/unicode_tables.cpp is stale: python csrc/unicode/gen_tables.py"


def _code_points(step: int, every_assigned: bool = False) -> list[int]:
    """Every code point below U+3400 (scripts, marks, Greek, symbols), then every step-th one, and with
    ``every_assigned`` every one with a character too. The rest are unassigned or private use (category Cn
    or Co): the reference drops each as a control character, so a sample of them (every step-th, which
    reaches each 256-code-point block of our tables several times) checks what the whole set would."""
    def taken(cp: int) -> bool:
        return (cp - 0x3400) % step == 0 or (every_assigned and unicodedata.category(chr(cp)) not in ("Cn", "Co"))

    cps = list(range(1, 0x3400)) + [cp for cp in range(0x3400, 0x110000) if taken(cp)]
    return [cp for cp in cps if not 0xD800 <= cp <= 0xDFFF]


def _texts(cps: list[int]) -> list[str]:
    out = []
    for k in range(0, len(cps), 40):
        chunk = [chr(cp) for cp in cps[k:k + 40]]
        # The char alone, after a cased letter and before Σ (final-sigma context), after Σ, and
        # between a letter and a combining mark (NFC composition / canonical order).
        out.append(" ".join(f"{c} A{c}Σ Σ{c} e{c}\u0301 {c}\u0345\u0300" for c in chunk))
    return out


VARIANTS = [{"do_lower_case": True}, {"do_lower_case": False}, {"do_lower_case": True, "strip_accents": False},
            {"do_lower_case": False, "strip_accents": True}]
VARIANT_IDS = ["uncased", "cased", "lower-keep-accents", "cased-strip"]


def _check(tmp_path: Path, options: dict, code_points: list[int], whole_reference: bool) -> None:
    """Our ids against the reference's. ``whole_reference`` runs BertTokenizerLegacy itself; otherwise its
    BasicTokenizer's words are looked up directly (half the time, for the every-code-point runs): WordPiece
    maps a word of this vocabulary to its own id, its longest match being the whole word, up to
    max_input_chars_per_word characters (the sampled runs check that with the whole reference)."""
    texts = _texts(code_points)
    basic = legacy_mod.BasicTokenizer(do_lower_case=options["do_lower_case"],
                                      strip_accents=options.get("strip_accents"))
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    words_of = [basic.tokenize(t) for t in texts]
    vocab = specials + sorted({w for words in words_of for w in words} - set(specials))
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    ours = WordPieceTokenizer.from_pretrained(tmp_path / "vocab.txt", **options)
    got = ours(texts, add_special_tokens=False)["input_ids"]
    if whole_reference:
        ref = legacy_mod.BertTokenizerLegacy(str(tmp_path / "vocab.txt"), **options)
        want = [ref.convert_tokens_to_ids(ref.tokenize(t)) for t in texts]
    else:
        index, unk = {word: i for i, word in enumerate(vocab)}, vocab.index("[UNK]")
        longest = legacy_mod.WordpieceTokenizer(vocab=index, unk_token="[UNK]").max_input_chars_per_word
        want = [[index[w] if len(w) <= longest else unk for w in words] for words in words_of]
    bad = [(t, g) for t, g, w in zip(texts, got, want) if g != w]
    assert bad[:1] == []


@pytest.mark.parametrize("options", VARIANTS, ids=VARIANT_IDS)
def test_code_points_normalise_as_python(tmp_path: Path, options: dict) -> None:
    _check(tmp_path, options, _code_points(step=97), whole_reference=True)


@pytest.mark.slow
@pytest.mark.parametrize("options", VARIANTS, ids=VARIANT_IDS)
def test_every_assigned_code_point_normalises_as_python(tmp_path: Path, options: dict) -> None:
    _check(tmp_path, options, _code_points(step=31, every_assigned=True), whole_reference=False)
