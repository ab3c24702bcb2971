#!/usr/bin/env python3
"""Generate csrc/unicode/unicode_tables.cpp from the running interpreter's unicodedata.

The tokenizer must equal the reference (transformers' BertTokenizerLegacy) on the
interpreter it runs under, so every Unicode fact the C++ core uses is read from
Python itself, never from a separately downloaded UCD:

- per code point flags: clean-text control, BERT whitespace, str.isspace(), BERT
  punctuation, CJK ideograph, Mn, cased / case-ignorable (derived by probing
  str.lower()'s Greek final-sigma rule, so they are exactly what Python uses),
  "may change under NFC";
- str.lower() of the code point (full mapping, up to 3 code points);
- NFD of the code point (full canonical decomposition; Hangul is algorithmic in C++);
- canonical combining class;
- primary compositions (a, b) -> c used by NFC (Hangul algorithmic in C++).

Usage: python csrc/unicode/gen_tables.py [--check] ; tests/test_tokenizer_unicode.py
runs the check so the checked-in tables always equal the running interpreter's.
"""

from __future__ import annotations

import argparse
import sys
import unicodedata
from pathlib import Path

OUT = Path(__file__).with_name("unicode_tables.cpp")
MAX_CP = 0x110000
HANGUL_FIRST, HANGUL_LAST = 0xAC00, 0xD7A3

# Flag bits; keep in sync with csrc/unicode/unicode_tables.h.
F_CONTROL = 1 << 0          # dropped by _clean_text (incl. NUL and U+FFFD)
F_WHITESPACE = 1 << 1       # _is_whitespace: replaced by a space
F_ISSPACE = 1 << 2          # str.isspace(): whitespace_tokenize separator
F_PUNCT = 1 << 3            # _is_punctuation
F_CJK = 1 << 4              # _is_chinese_char
F_MN = 1 << 5               # category Mn (removed by strip_accents)
F_CASED = 1 << 6            # Unicode Cased, as str.lower() sees it
F_CASE_IGNORABLE = 1 << 7   # Unicode Case_Ignorable, as str.lower() sees it
F_NFC_MAYBE = 1 << 8        # NFC may change a string containing it (NFC quick check)
F_HAS_LOWER = 1 << 9        # str.lower() differs
F_HAS_NFD = 1 << 10         # NFD differs

CJK_RANGES = [(0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
              (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F)]


def is_punct(cp: int, cat: str) -> bool:
    return 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126 or cat.startswith("P")


def sigma_props(c: str) -> tuple[bool, bool]:
    """(cased, case_ignorable) exactly as CPython's final-sigma rule reads them."""
    t1 = "A" + c + "\u03a3"  # final iff ignorable or cased
    t3 = "A\u03a3" + c       # final iff ignorable or not cased
    t2 = c + "\u03a3"        # final iff not ignorable and cased
    f1 = t1.lower().endswith("\u03c2")
    f3 = t3.lower()[1] == "\u03c2"
    f2 = t2.lower().endswith("\u03c2")
    ignorable = f1 and f3
    cased = f2 if not ignorable else False
    return cased, ignorable


def build() -> str:
    second_elements: set[int] = set()
    compositions: dict[tuple[int, int], int] = {}
    for cp in range(MAX_CP):
        dec = unicodedata.decomposition(chr(cp))
        if not dec or dec.startswith("<"):
            continue
        parts = [int(x, 16) for x in dec.split()]
        if len(parts) == 2 and unicodedata.normalize("NFC", chr(parts[0]) + chr(parts[1])) == chr(cp):
            compositions[(parts[0], parts[1])] = cp
            second_elements.add(parts[1])

    seq_pool: list[int] = []
    seq_index: dict[tuple[int, ...], int] = {}

    def intern(seq: tuple[int, ...]) -> int:
        if not seq:
            return 0
        if seq not in seq_index:
            seq_index[seq] = len(seq_pool)
            seq_pool.extend(seq)
        return seq_index[seq]

    records: list[tuple] = []
    record_index: dict[tuple, int] = {}
    per_cp = []
    for cp in range(MAX_CP):
        c = chr(cp)
        cat = unicodedata.category(c)
        flags = 0
        if cp == 0 or cp == 0xFFFD or (cat.startswith("C") and c not in "\t\n\r"):
            flags |= F_CONTROL
        if c in " \t\n\r" or cat == "Zs":
            flags |= F_WHITESPACE
        if c.isspace():
            flags |= F_ISSPACE
        if is_punct(cp, cat):
            flags |= F_PUNCT
        if any(lo <= cp <= hi for lo, hi in CJK_RANGES):
            flags |= F_CJK
        if cat == "Mn":
            flags |= F_MN
        cased, ignorable = sigma_props(c)
        flags |= (F_CASED if cased else 0) | (F_CASE_IGNORABLE if ignorable else 0)
        lower = tuple(ord(x) for x in c.lower())
        if lower == (cp,):
            lower = ()
        else:
            flags |= F_HAS_LOWER
        nfd = ()
        if not HANGUL_FIRST <= cp <= HANGUL_LAST:
            d = unicodedata.normalize("NFD", c)
            if d != c:
                nfd = tuple(ord(x) for x in d)
                flags |= F_HAS_NFD
        ccc = unicodedata.combining(c)
        # NFC quick check: not NFC_QC=Yes (changes alone, or may compose with a previous
        # char), or a combining mark (may need reordering). Hangul jamo compose algorithmically.
        if unicodedata.normalize("NFC", c) != c or ccc or cp in second_elements or 0x1100 <= cp <= 0x11FF:
            flags |= F_NFC_MAYBE
        rec = (flags, ccc, len(lower), intern(lower), len(nfd), intern(nfd))
        if rec not in record_index:
            record_index[rec] = len(records)
            records.append(rec)
        per_cp.append(record_index[rec])

    blocks: list[tuple[int, ...]] = []
    block_index: dict[tuple[int, ...], int] = {}
    stage1 = []
    for b in range(MAX_CP // 256):
        blk = tuple(per_cp[b * 256:(b + 1) * 256])
        if blk not in block_index:
            block_index[blk] = len(blocks)
            blocks.append(blk)
        stage1.append(block_index[blk])

    def rows(values, per_line=16):
        vals = list(values)
        return "\n".join("    " + ", ".join(str(v) for v in vals[i:i + per_line]) + ","
                         for i in range(0, len(vals), per_line))

    comp_items = sorted(((a << 21) | b, c) for (a, b), c in compositions.items())
    out = [
        "// GENERATED by csrc/unicode/gen_tables.py from Python's unicodedata; do not edit.",
        f"// unicodedata {unicodedata.unidata_version}; regenerate with the interpreter the tests run under.",
        '#include "unicode/unicode_tables.h"',
        "",
        "namespace mbexport::unicode {",
        "",
        f'const char kUnicodeVersion[] = "{unicodedata.unidata_version}";',
        "",
        f"const uint16_t kStage1[{len(stage1)}] = {{",
        rows(stage1),
        "};",
        "",
        f"const uint16_t kStage2[{len(blocks) * 256}] = {{",
        rows(v for blk in blocks for v in blk),
        "};",
        "",
        f"const Record kRecords[{len(records)}] = {{",
        "\n".join(f"    {{{f}, {ccc}, {ll}, {lo}, {nl}, {no}}}," for f, ccc, ll, lo, nl, no in records),
        "};",
        "",
        f"const uint32_t kSeqPool[{max(1, len(seq_pool))}] = {{",
        rows(seq_pool or [0]),
        "};",
        "",
        f"const size_t kNumCompositions = {len(comp_items)};",
        f"const uint64_t kCompositionKeys[{len(comp_items)}] = {{",
        rows((k for k, _ in comp_items), 8),
        "};",
        f"const uint32_t kCompositionValues[{len(comp_items)}] = {{",
        rows(v for _, v in comp_items),
        "};",
        "",
        "}  // namespace mbexport::unicode",
        "",
    ]
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if the checked-in tables differ")
    args = ap.parse_args()
    text = build()
    if args.check:
        same = OUT.exists() and OUT.read_text(encoding="utf-8") == text
        print("unicode tables up to date" if same else f"{OUT} differs from this interpreter's unicodedata")
        return 0 if same else 1
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
