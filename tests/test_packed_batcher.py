"""The native Batcher's packed mode (``Batcher(..., packed=True).packed(b)``): the arrays the packed graph
takes, checked against the padded arrays of the same texts -- from the same plan's padded view and from
the tokenizer's own HF-style padded encoding -- reconstructed here in numpy, independently of the C++
code; token_offset in onnxruntime's layout; edge cases and refused sizes."""

from __future__ import annotations

import numpy as np
import pytest

from mbexport import _native
from mbexport.errors import MbexportError, TokenizerInputError
from mbexport.tokenizer import WordPieceTokenizer

TEXTS = ["All human beings are born free and equal in dignity and rights.", "", "ok",
         "Alle Menschen sind frei und gleich an Würde und Rechten geboren.", "人人生而自由，在尊严和权利上一律平等。",
         "The quick brown fox jumps over the lazy dog. " * 12, "tokenization of unbelievably long words",
         "Όλοι οι άνθρωποι γεννιούνται ελεύθεροι", "a b c d e f g h i j k l m n o p"] * 3


@pytest.fixture(scope="module")
def tokenizer(minilm_dir) -> WordPieceTokenizer:
    return WordPieceTokenizer.from_pretrained(minilm_dir)


def expected_packed(input_ids: np.ndarray, mask: np.ndarray, types: np.ndarray) -> dict[str, np.ndarray]:
    """What the packed view of a padded batch must be, from the padded arrays alone."""
    real = mask.astype(bool)
    lengths = real.sum(1)
    flat = real.ravel()
    return {
        "input_ids": input_ids[real], "token_type_ids": types[real],
        "position_ids": np.concatenate([np.arange(n) for n in lengths]),
        # packed token k's padded position first (row-major order of the real slots), then the padding slots
        "token_offset": np.concatenate([np.flatnonzero(flat), np.flatnonzero(~flat)]).reshape(mask.shape),
        "cu_seqlens": np.concatenate([[0], np.cumsum(lengths)]),
    }


@pytest.mark.parametrize(("max_length", "batch_tokens", "pad_multiple"), [(64, 300, 8), (128, 100_000, 1),
                                                                       (16, 16, 8)])
def test_packed_arrays_equal_the_padded_ones(tokenizer, max_length, batch_tokens, pad_multiple):
    ids, types, cu, _ = tokenizer.encode_batch_arrays(TEXTS, max_length=max_length + 1,
                                                      text_pairs=["pair"] * len(TEXTS))
    assert types.any()
    make = lambda: _native.Batcher(ids, cu, max_length=max_length, batch_tokens=batch_tokens,  # noqa: E731
                                   pad_multiple=pad_multiple, packed=True, type_ids=types, pad_id=0)
    packed, padded = make(), make()
    assert packed.padded_tokens == packed.real_tokens  # packed: no padding counted
    hf = tokenizer(TEXTS, ["pair"] * len(TEXTS), padding=True, truncation=True, max_length=max_length,
                   return_tensors="np")
    seen: list[int] = []
    for b in range(len(packed)):
        indices, input_ids, token_type_ids, position_ids, token_offset, cu_seqlens = packed.packed(b)
        p_indices, p_ids, mask, p_types = padded.padded(b)
        assert indices.dtype == np.int64 and cu_seqlens.dtype == np.int32
        assert {a.dtype for a in (input_ids, token_type_ids, position_ids, token_offset)} == {np.dtype(np.int32)}
        assert indices.tolist() == p_indices.tolist()
        assert token_offset.shape == mask.shape and token_offset.shape[1] % pad_multiple == 0
        want = expected_packed(p_ids, mask, p_types)
        got = {"input_ids": input_ids, "token_type_ids": token_type_ids, "position_ids": position_ids,
               "token_offset": token_offset, "cu_seqlens": cu_seqlens}
        for name, array in want.items():
            np.testing.assert_array_equal(got[name], array, err_msg=name)
        assert cu_seqlens[-1] <= batch_tokens or len(indices) == 1
        # and row by row, the HF-style padded encoding of the same texts (where neither truncates: the
        # Batcher keeps the head and the last [SEP], HF's longest_first cuts the longer text of a pair)
        for r, i in enumerate(indices):
            row = slice(cu_seqlens[r], cu_seqlens[r + 1])
            n = int(hf["attention_mask"][i].sum())
            if cu[i + 1] - cu[i] > max_length:
                continue
            assert input_ids[row].tolist() == hf["input_ids"][i, :n].tolist()
            assert token_type_ids[row].tolist() == hf["token_type_ids"][i, :n].tolist()
        seen += indices.tolist()
    assert sorted(seen) == list(range(len(TEXTS)))


def test_packed_edge_cases():
    # empty window: no batches, and asking for one is an IndexError
    empty = _native.Batcher(np.zeros(0, np.int32), np.zeros(1, np.int64), packed=True)
    assert len(empty) == 0 and empty.real_tokens == 0
    with pytest.raises(IndexError):
        empty.packed(0)
    # one-token sequences
    ones = _native.Batcher(np.array([7, 8, 9], np.int32), np.array([0, 1, 2, 3]), packed=True, pad_multiple=1)
    indices, ids, _, positions, offset, cu = ones.packed(0)
    assert ids.tolist() == [7, 8, 9] and positions.tolist() == [0, 0, 0] and cu.tolist() == [0, 1, 2, 3]
    assert offset.tolist() == [[0], [1], [2]]
    # max-length sequences: truncated to max_length keeping the last token; width = max_length
    seq = np.arange(100, 140, dtype=np.int32)
    full = _native.Batcher(np.concatenate([seq, seq[:16]]), np.array([0, 40, 56]), max_length=16, packed=True)
    indices, ids, _, positions, offset, cu = full.packed(0)
    assert indices.tolist() == [0, 1] and full.truncated == 1 and cu.tolist() == [0, 16, 32]
    assert offset.shape == (2, 16)
    assert ids[:16].tolist() == [*range(100, 115), 139] and ids[16:].tolist() == list(range(100, 116))
    assert positions.tolist() == list(range(16)) * 2
    assert offset.ravel().tolist() == list(range(32))  # no padding at all


def test_packed_view_past_int32_is_refused():
    """rows x padded width past 2**31 - 1 cannot be addressed by int32 token_offset: refused before
    anything is allocated, with an mbexport error naming the fix."""
    ids = np.array([2, 5, 3, 2, 6, 7, 3, 2, 8, 3], np.int32)
    b = _native.Batcher(ids, np.array([0, 3, 7, 10]), pad_multiple=2**30, batch_tokens=2**62, packed=True)
    with pytest.raises(TokenizerInputError, match=r"3 rows x 1073741824 padded tokens is over 2147483647.*lower"):
        b.packed(0)
    assert issubclass(TokenizerInputError, MbexportError)
    with pytest.raises(IndexError):
        b.packed(1)
