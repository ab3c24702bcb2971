"""Type stubs for mbexport._native, the compiled core (csrc/bindings/).

One section per binding file: tokenizer (csrc/bindings/tokenizer.cpp), batching
(csrc/bindings/batching.cpp). Complete: every name the module defines is typed here
(checked by ``python -m mypy.stubtest mbexport._native``).
"""

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

def status_code_name(code: int) -> str: ...

# ----------------------------------------------------------------------------- tokenizer
def read_vocab(path: str) -> list[str]:
    """vocab.txt -> tokens in id order. VocabError: unreadable, not UTF-8, duplicate entries."""

def parse_vocab(data: bytes, name: str = "<bytes>") -> list[str]:
    """As read_vocab, from bytes (lines end at \\n, \\r\\n or \\r, as Python's text mode reads them)."""

def default_threads() -> int:
    """Worker threads a call uses when threads <= 0 (the CPUs this process may run on); larger
    ``threads`` values are clamped to it, and a thread the OS refuses is done without."""

class WordPieceTokenizer:
    """Native BERT tokenizer (BasicTokenizer + WordPiece), immutable and thread-safe.

    Prefer mbexport.WordPieceTokenizer (HF-compatible); this is its engine.
    """

    def __init__(
        self,
        vocab: list[str],
        *,
        lowercase: bool = True,
        strip_accents: bool | None = None,
        tokenize_chinese_chars: bool = True,
        unk_token: str = "[UNK]",
        added_tokens: list[tuple[str, int]] = ...,
        never_split: list[str] = ...,
        never_split_whole: list[str] = ...,
        max_input_chars_per_word: int = 100,
    ) -> None:
        """added_tokens: (string, id) split out of the raw text first (HF's added tokens);
        never_split: BasicTokenizer's never_split (all special tokens); never_split_whole: the
        config's never_split (looked up whole, not WordPiece'd). VocabError when unk_token is absent."""

    @property
    def vocab_size(self) -> int: ...
    @property
    def unk_id(self) -> int: ...
    def token_to_id(self, token: str) -> int:
        """Vocabulary id, -1 when absent."""

    def encode(self, text: str, offsets: bool = False) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.int32] | None]:
        """Ids of one text without special tokens, and [n, 2] code point offsets (start, end) if asked."""

    def encode_batch(
        self,
        texts: Sequence[str],
        pairs: Sequence[str] | None = None,
        *,
        add_special_tokens: bool = True,
        truncation: str = "do_not_truncate",
        max_length: int = -1,
        stride: int = 0,
        return_overflowing_tokens: bool = False,
        padding: str = "do_not_pad",
        pad_to_multiple_of: int = 0,
        cls_id: int = 0,
        sep_id: int = 0,
        pad_id: int = 0,
        return_offsets: bool = False,
        return_special_tokens_mask: bool = False,
        threads: int = 0,
    ) -> dict[str, npt.NDArray[np.int64]]:
        """HF-layout int64 arrays [rows, width]: input_ids, token_type_ids, attention_mask,
        (special_tokens_mask), (offset_mapping [rows, width, 2]), plus overflow_to_sample_mapping [rows]
        and lengths [rows] (tokens before padding). truncation: longest_first | only_first | only_second |
        do_not_truncate; padding: longest | max_length | do_not_pad; max_length -1: none.
        TypeError names a non-str item; TokenizerInputError names a bad item ("item 3: ...")."""

    def encode_packed(
        self,
        texts: Sequence[str],
        pairs: Sequence[str] | None = None,
        *,
        max_length: int = -1,
        add_special_tokens: bool = True,
        cls_id: int = 0,
        sep_id: int = 0,
        threads: int = 0,
    ) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.int32], npt.NDArray[np.int64], int]:
        """(ids, type_ids, cu_seqlens, max_len): text i is ids[cu_seqlens[i]:cu_seqlens[i+1]],
        [CLS] A [SEP] (B [SEP]), truncated longest_first to max_length (-1: none). No padding."""

# ----------------------------------------------------------------------------- batching
DEFAULT_BATCH_TOKENS: dict[str, int]  # padded tokens per batch by default: {"cpu": ..., "cuda": ...}
DEFAULT_PAD_MULTIPLE: int

class Batcher:
    """Plans one window of tokenized sequences (packed ids + cumulative lengths) into batches:
    longest first within each ``window`` sequences, rows x padded length <= batch_tokens (real
    tokens when packed), padded to a multiple of ``pad_multiple``; truncation keeps [SEP]."""

    def __init__(self, ids: npt.ArrayLike, cu: npt.ArrayLike, *, max_length: int = 0, batch_tokens: int = 16384,
                 pad_multiple: int = 8, packed: bool = False, window: int = 0, max_rows: int = 0, pad_id: int = 0,
                 type_ids: npt.ArrayLike | None = None) -> None: ...
    def __len__(self) -> int: ...
    @property
    def truncated(self) -> int: ...
    @property
    def real_tokens(self) -> int: ...
    @property
    def padded_tokens(self) -> int: ...
    @property
    def order(self) -> npt.NDArray[np.int64]: ...
    @property
    def offsets(self) -> npt.NDArray[np.int64]: ...
    @property
    def pad_multiple(self) -> int: ...
    def padded(self, batch: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64],
                                          npt.NDArray[np.int64]]:
        """(indices, input_ids, attention_mask, token_type_ids), the last three [rows, padded]."""
    def packed(self, batch: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int32], npt.NDArray[np.int32],
                                          npt.NDArray[np.int32], npt.NDArray[np.int32], npt.NDArray[np.int32]]:
        """(indices, input_ids, token_type_ids, position_ids, token_offset, cu_seqlens), no padding, for
        onnxruntime's PackedAttention: ids/types/positions [tokens]; token_offset [rows, padded] holds the
        padded position of each packed token, then of each padding slot; cu_seqlens [rows + 1].
        TokenizerInputError when rows x padded exceeds 2**31 - 1 or memory."""
    def stage(self, batch: int, stager: CudaStager) -> tuple[npt.NDArray[np.int64], int, npt.NDArray[np.int32]]:
        """(indices, slot, lengths) after an async pinned host -> device copy."""

class HostBuffer:
    """Page-locked (pinned=True, needs CUDA) or 64-byte aligned host memory; buffer protocol (uint8)."""

    def __init__(self, nbytes: int, pinned: bool = False, library_paths: list[str] = ...) -> None: ...
    @property
    def nbytes(self) -> int: ...
    @property
    def pinned(self) -> bool: ...
    @property
    def ptr(self) -> int: ...

class CudaStager:
    """Double-buffered pinned -> device staging on one CUDA stream. CudaUnavailableError without CUDA;
    capacity_tokens in [1, 2**31] and slots in [1, 16] are checked first (TokenizerInputError), a slot
    argument outside [0, slots) is an IndexError."""

    def __init__(self, capacity_tokens: int, slots: int = 2, library_paths: list[str] = ...) -> None: ...
    @property
    def stream_ptr(self) -> int: ...
    @property
    def slots(self) -> int: ...
    @property
    def capacity_tokens(self) -> int: ...
    def device_ptrs(self, slot: int) -> tuple[int, int, int]: ...
    def shape(self, slot: int) -> tuple[int, int]: ...
    def synchronize(self) -> None: ...
    def dlpack(self, slot: int, which: str = "input_ids") -> Any:
        """A DLPack capsule of a staged int64 [rows, padded] device array."""

def cuda_runtime_info(library_paths: list[str] = ...) -> dict[str, Any]:
    """Loads libcudart by dlopen (once per process): path, runtime/driver version, device count."""

def scatter_rows(rows: npt.ArrayLike, indices: npt.ArrayLike, out: npt.NDArray[np.float32], base: int = 0) -> None:
    """out[indices[r] - base] = rows[r]. out: C-contiguous writeable float32, never converted (TypeError
    otherwise); every index is checked before any row is written (TokenizerInputError)."""
