"""The Python face of the native WordPiece tokenizer (``mbexport._native``).

``WordPieceTokenizer`` tokenizes exactly as the reference, transformers'
``BertTokenizerLegacy`` (Google's BasicTokenizer + WordPiece, the code BERT and
MultiBERTs were trained with), and takes and returns what HF's ``BertTokenizer``
does: ``tok(texts, pairs, padding=True, truncation=True, max_length=128,
return_tensors="np")`` is a drop-in. All work (normalising, WordPiece, truncation,
overflow windows, padding, offsets) happens in C++ with the GIL released, on
several threads for batches. ``encode_batch_arrays`` is the runtime's fast path:
packed int32 ids plus cumulative lengths, no padding.

Known differences from HF's Rust tokenizer (we follow the reference) are listed in
docs/TOKENIZER.md.
"""

from __future__ import annotations

import bisect
import json
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, cast, overload

import numpy as np

from mbexport import _native, jsonfiles
from mbexport.errors import TokenizerInputError, VocabError
from mbexport.layout import SPECIAL_TOKENS_MAP, TOKENIZER_CONFIG, VOCAB
from mbexport.sources.tokenizer_json import read_tokenizer_json

__all__ = ["BatchEncoding", "WordPieceTokenizer"]

# transformers' VERY_LARGE_INTEGER: "no limit" for model_max_length.
_NO_LIMIT = int(1e30)
_SPECIAL_NAMES = ("unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
_TRUNCATION = {True: "longest_first", "longest_first": "longest_first", "only_first": "only_first",
               "only_second": "only_second", False: "do_not_truncate", "do_not_truncate": "do_not_truncate"}
_PADDING = {True: "longest", "longest": "longest", "max_length": "max_length", False: "do_not_pad",
            "do_not_pad": "do_not_pad"}
# The WordPiece decoder's cleanup (tokenizers' decoders::wordpiece::cleanup), applied per token.
_CLEANUP = ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"), (" 'm", "'m"),
            (" do not", " don't"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"))


# A row's unpadded (word ids, sequence ids); None marks the [CLS]/[SEP] the tokenizer added.
RowInfo = tuple[list[int | None], list[int | None]]


class BatchEncoding(dict[str, Any]):
    """The result of calling the tokenizer: a dict with attribute access, as HF's BatchEncoding.

    ``word_ids``/``sequence_ids`` are computed on demand (re-encoding that row's input), so calls
    that never ask for them pay nothing.
    """

    _row_info: Callable[[int], RowInfo] | None = None
    _padding_side = "right"

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __getstate__(self) -> dict[str, Any]:
        return {}  # the row-info closure holds the native tokenizer, which does not pickle

    @property
    def data(self) -> dict[str, Any]:
        return dict(self)

    def word_ids(self, batch_index: int = 0) -> list[int | None]:
        """Index of the word each token comes from (None for added specials and padding), as HF's fast tokenizer."""
        return self._padded(0, batch_index)

    def sequence_ids(self, batch_index: int = 0) -> list[int | None]:
        """0 for tokens of the text, 1 for the pair, None for added specials and padding, as HF's."""
        return self._padded(1, batch_index)

    def _padded(self, which: int, batch_index: int) -> list[int | None]:
        if self._row_info is None:
            raise TokenizerInputError("this encoding has no word information (it was copied or unpickled); "
                                      "call the tokenizer again")
        ids = self["input_ids"]
        flat = len(ids) == 0 or np.ndim(ids[0]) == 0
        if flat and batch_index != 0:
            raise IndexError(f"batch_index {batch_index} out of range for an unbatched encoding")
        width = len(ids) if flat else len(ids[batch_index])
        values = self._row_info(batch_index)[which]
        pad: list[int | None] = [None] * (width - len(values))
        return pad + values if self._padding_side == "left" else values + pad


def _token_str(value: Any) -> str | None:
    """A special token from a config: a str, or an AddedToken dict with "content"."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    raise VocabError(f"special token {value!r} in tokenizer_config.json is neither a str nor {{'content': str}}")


class WordPieceTokenizer:
    """BERT WordPiece tokenizer: reference-exact ids, HF call signature, native speed.

    Immutable after construction and safe to share between threads.
    """

    def __init__(
        self,
        vocab_file: str | os.PathLike[str] | list[str],
        *,
        do_lower_case: bool = True,
        strip_accents: bool | None = None,
        tokenize_chinese_chars: bool = True,
        never_split: Iterable[str] | None = None,
        unk_token: str = "[UNK]",
        sep_token: str = "[SEP]",
        pad_token: str = "[PAD]",
        cls_token: str = "[CLS]",
        mask_token: str = "[MASK]",
        additional_special_tokens: Iterable[str] = (),
        added_tokens: dict[int, str] | None = None,
        model_max_length: int = _NO_LIMIT,
        clean_up_tokenization_spaces: bool = False,
        do_basic_tokenize: bool = True,
        padding_side: str = "right",
        threads: int = 0,
    ) -> None:
        if not do_basic_tokenize:
            raise TokenizerInputError("do_basic_tokenize=False is not supported; BERT checkpoints use True")
        if isinstance(vocab_file, list):  # the tokens themselves (e.g. read from tokenizer.json)
            self._vocab: list[str] = _native.parse_vocab("".join(t + "\n" for t in vocab_file).encode(), "vocab")
            vocab_file = ""
        else:
            self._vocab = _native.read_vocab(os.fspath(vocab_file))
        self._ids = {tok: i for i, tok in enumerate(self._vocab)}
        self.do_lower_case = bool(do_lower_case)
        self.strip_accents = strip_accents
        self.tokenize_chinese_chars = bool(tokenize_chinese_chars)
        self.model_max_length = int(model_max_length)
        self.clean_up_tokenization_spaces = bool(clean_up_tokenization_spaces)
        self.threads = int(threads)
        self.padding_side = _check_padding_side(padding_side)
        self.vocab_file = os.fspath(vocab_file)
        self.unk_token = unk_token
        self.sep_token = sep_token
        self.pad_token = pad_token
        self.cls_token = cls_token
        self.mask_token = mask_token
        names = self._named_special_tokens()
        self.additional_special_tokens = [t for t in additional_special_tokens if t]
        # Added tokens (HF's added_tokens_encoder): split out of the raw text, with their ids.
        self._added: dict[str, int] = {}
        for i, tok in sorted((added_tokens or {}).items()):
            self._added[tok] = int(i)
        for tok in [*names.values(), *self.additional_special_tokens]:
            if tok and tok not in self._added:
                self._added[tok] = self._ids.get(tok, max([len(self._vocab) - 1, *self._added.values()]) + 1)
        self._added_decoder = {i: t for t, i in self._added.items()}
        specials = [*names.values(), *self.additional_special_tokens]
        self.all_special_tokens = list(dict.fromkeys(t for t in specials if t))
        self.all_special_ids = [self.convert_tokens_to_ids(t) for t in self.all_special_tokens]
        self.never_split = list(never_split or ())
        self._native = _native.WordPieceTokenizer(
            self._vocab,
            lowercase=self.do_lower_case,
            strip_accents=strip_accents,
            tokenize_chinese_chars=self.tokenize_chinese_chars,
            unk_token=unk_token,
            added_tokens=list(self._added.items()),
            never_split=self.all_special_tokens,
            never_split_whole=self.never_split,
        )

    # ----------------------------------------------------------------- loading
    @classmethod
    def from_pretrained(cls, path: str | os.PathLike[str], **overrides: Any) -> WordPieceTokenizer:
        """Load from a BERT/export directory (vocab.txt + tokenizer_config.json, special_tokens_map.json)
        or from a vocab file; keyword arguments override the configuration."""
        path = Path(path)
        tokenizer_json = None
        if path.is_dir():
            vocab_file = path / VOCAB
            if not vocab_file.is_file() and (path / "tokenizer.json").is_file():
                tokenizer_json = read_tokenizer_json(path / "tokenizer.json")
            elif not vocab_file.is_file():
                raise VocabError(f"{path} has no vocab.txt or tokenizer.json; pass a BERT model/export directory "
                                 "or the vocab file")
            config: dict[str, Any] = {}
            for name in (SPECIAL_TOKENS_MAP, TOKENIZER_CONFIG):
                f = path / name
                if f.is_file():
                    config.update(jsonfiles.read_object(f, VocabError, "fix or delete it"))
        elif path.is_file():
            vocab_file, config = path, {}
            if path.suffix == ".json":
                tokenizer_json = read_tokenizer_json(path)
        else:
            raise VocabError(f"vocab file {path} cannot be read; pass a BERT directory with vocab.txt "
                             "or the vocab file")
        kwargs: dict[str, Any] = {}
        for key in ("do_lower_case", "strip_accents", "tokenize_chinese_chars", "never_split",
                    "clean_up_tokenization_spaces", "do_basic_tokenize"):
            if config.get(key) is not None:
                kwargs[key] = config[key]
        if isinstance(config.get("model_max_length"), int):
            kwargs["model_max_length"] = config["model_max_length"]
        for key in _SPECIAL_NAMES:
            if config.get(key) is not None:
                kwargs[key] = _token_str(config[key])
        extra = config.get("additional_special_tokens") or config.get("extra_special_tokens") or []
        if isinstance(extra, list):
            kwargs["additional_special_tokens"] = [_token_str(t) for t in extra]
        decoder = config.get("added_tokens_decoder") or {}
        kwargs["added_tokens"] = {int(i): _token_str(v) for i, v in decoder.items()}
        if isinstance(config.get("padding_side"), str):
            kwargs["padding_side"] = config["padding_side"]
        if tokenizer_json is not None:  # what the fast tokenizer runs wins over the config's options
            kwargs.update(do_lower_case=tokenizer_json.do_lower_case, strip_accents=tokenizer_json.strip_accents,
                          tokenize_chinese_chars=tokenizer_json.tokenize_chinese_chars)
            for key, token in tokenizer_json.specials.items():
                kwargs.setdefault(key, token)
            kwargs["added_tokens"] = {**tokenizer_json.added_tokens, **kwargs["added_tokens"]}
        kwargs.update(overrides)
        return cls(vocab_file if tokenizer_json is None else tokenizer_json.vocab, **kwargs)

    def save_pretrained(self, save_directory: str | os.PathLike[str]) -> tuple[str, ...]:
        """Write vocab.txt, tokenizer_config.json and special_tokens_map.json: ``from_pretrained`` and HF
        ``AutoTokenizer.from_pretrained`` load the directory with this tokenizer's behaviour."""
        directory = Path(save_directory)
        if directory.exists() and not directory.is_dir():
            raise VocabError(f"{directory} is a file; save_pretrained needs a directory path")
        directory.mkdir(parents=True, exist_ok=True)
        specials: dict[str, Any] = {name: tok for name, tok in self._named_special_tokens().items() if tok}
        if self.additional_special_tokens:
            specials["additional_special_tokens"] = list(self.additional_special_tokens)
        special_set = set(self.all_special_tokens)
        config = {
            "tokenizer_class": "BertTokenizer", "do_lower_case": self.do_lower_case,
            "strip_accents": self.strip_accents, "tokenize_chinese_chars": self.tokenize_chinese_chars,
            "model_max_length": self.model_max_length, "padding_side": self.padding_side,
            "clean_up_tokenization_spaces": self.clean_up_tokenization_spaces, **specials,
            "added_tokens_decoder": {str(i): {"content": t, "lstrip": False, "normalized": False, "rstrip": False,
                                              "single_word": False, "special": t in special_set}
                                     for t, i in sorted(self._added.items(), key=lambda item: item[1])},
        }
        if self.never_split:
            config["never_split"] = list(self.never_split)
        files = {VOCAB: "".join(t + "\n" for t in self._vocab),
                 TOKENIZER_CONFIG: json.dumps(config, indent=2, ensure_ascii=False) + "\n",
                 SPECIAL_TOKENS_MAP: json.dumps(specials, indent=2, ensure_ascii=False) + "\n"}
        for name, text in files.items():
            (directory / name).write_text(text, encoding="utf-8")
        return tuple(str(directory / name) for name in files)

    def _named_special_tokens(self) -> dict[str, str]:
        """The five named special tokens by their HF attribute name (``unk_token`` ...), in _SPECIAL_NAMES order."""
        return {"unk_token": self.unk_token, "sep_token": self.sep_token, "pad_token": self.pad_token,
                "cls_token": self.cls_token, "mask_token": self.mask_token}

    # ------------------------------------------------------------ vocabulary
    @property
    def vocab_size(self) -> int:
        return len(self._vocab)

    def __len__(self) -> int:
        return len(set(self._ids) | set(self._added))

    def get_vocab(self) -> dict[str, int]:
        return {**self._ids, **self._added}

    def get_added_vocab(self) -> dict[str, int]:
        """The added tokens (split out of the raw text before anything else) and their ids, as HF's."""
        return dict(self._added)

    @property
    def unk_token_id(self) -> int:
        return self._token_id(self.unk_token)

    @property
    def sep_token_id(self) -> int:
        return self._token_id(self.sep_token)

    @property
    def pad_token_id(self) -> int:
        return self._token_id(self.pad_token)

    @property
    def cls_token_id(self) -> int:
        return self._token_id(self.cls_token)

    @property
    def mask_token_id(self) -> int:
        return self._token_id(self.mask_token)

    @overload
    def convert_tokens_to_ids(self, tokens: str) -> int: ...  # type: ignore[overload-overlap]
    @overload
    def convert_tokens_to_ids(self, tokens: Sequence[str]) -> list[int]: ...

    def convert_tokens_to_ids(self, tokens: str | Sequence[str]) -> int | list[int]:
        if isinstance(tokens, str):
            return self._token_id(tokens)
        return [self._token_id(t) for t in tokens]

    def _token_id(self, token: str) -> int:
        if token in self._added:
            return self._added[token]
        return self._ids.get(token, self._native.unk_id)

    def convert_ids_to_tokens(self, ids: int | Iterable[int], skip_special_tokens: bool = False) -> str | list[str]:
        if isinstance(ids, (int, np.integer)):
            return self._id_to_token(int(ids))
        special = set(self.all_special_ids) if skip_special_tokens else set()
        return [self._id_to_token(int(i)) for i in ids if int(i) not in special]

    def _id_to_token(self, i: int) -> str:
        if i in self._added_decoder:
            return self._added_decoder[i]
        if 0 <= i < len(self._vocab):
            return self._vocab[i]
        return self.unk_token

    # ------------------------------------------------------------ tokenizing
    def tokenize(self, text: str) -> list[str]:
        """Word pieces of ``text`` (no special tokens added), as the reference's ``tokenize``."""
        ids, _ = self._native.encode(self._check_str(text, "text"))
        return [self._id_to_token(int(i)) for i in ids]

    def encode(self, text: str, text_pair: str | None = None, add_special_tokens: bool = True,
               **kwargs: Any) -> list[int] | np.ndarray:
        """Ids of one text (or pair), with [CLS]/[SEP] unless add_special_tokens=False."""
        return self(text, text_pair, add_special_tokens=add_special_tokens, **kwargs)["input_ids"]

    def decode(self, token_ids: int | Iterable[int], skip_special_tokens: bool = False,
               clean_up_tokenization_spaces: bool | None = None) -> str:
        """Text of ``token_ids`` as HF's BertTokenizer decodes it (WordPiece decoder: "##" joins, spaces elsewhere)."""
        if isinstance(token_ids, np.ndarray):
            token_ids = token_ids.reshape(-1).tolist()
        elif isinstance(token_ids, (int, np.integer)):
            token_ids = [int(token_ids)]
        tokens = self.convert_ids_to_tokens(token_ids, skip_special_tokens=skip_special_tokens)
        parts = []
        for i, tok in enumerate(tokens):
            if i and tok.startswith("##"):
                tok = tok[2:]
            elif i:
                tok = " " + tok
            for a, b in _CLEANUP:
                tok = tok.replace(a, b)
            parts.append(tok)
        text = "".join(parts)
        if self.clean_up_tokenization_spaces if clean_up_tokenization_spaces is None else clean_up_tokenization_spaces:
            for a, b in _CLEANUP:
                text = text.replace(a, b)
        return text

    def batch_decode(self, sequences: Iterable[Iterable[int]], **kwargs: Any) -> list[str]:
        return [self.decode(s, **kwargs) for s in sequences]

    # ------------------------------------------------------------------ call
    def __call__(
        self,
        text: str | Sequence[str],
        text_pair: str | Sequence[str] | None = None,
        add_special_tokens: bool = True,
        padding: bool | str = False,
        truncation: bool | str | None = None,
        max_length: int | None = None,
        stride: int = 0,
        is_split_into_words: bool = False,
        pad_to_multiple_of: int | None = None,
        padding_side: str | None = None,
        return_tensors: str | None = None,
        return_token_type_ids: bool | None = None,
        return_attention_mask: bool | None = None,
        return_overflowing_tokens: bool = False,
        return_special_tokens_mask: bool = False,
        return_offsets_mapping: bool = False,
        return_length: bool = False,
        verbose: bool = True,
        threads: int | None = None,
    ) -> BatchEncoding:
        """Encode a text, a pair, or a batch of either, as HF's BertTokenizer does (same keys and values).

        ``return_tensors`` is ``"np"`` (int64 arrays), ``"pt"`` (torch tensors) or None (Python lists).
        ``threads`` overrides the tokenizer's worker count for this call (0: all cores).
        """
        side = self.padding_side if padding_side is None else _check_padding_side(padding_side)
        if return_tensors not in (None, "np", "pt"):
            raise TokenizerInputError(f"return_tensors={return_tensors!r} is not supported; use 'np', 'pt' or None")
        batched, texts, pairs, starts = self._inputs(text, text_pair, is_split_into_words)
        trunc, pad, max_length = self._strategies(padding, truncation, max_length, pad_to_multiple_of)
        window: dict[str, Any] = {"add_special_tokens": add_special_tokens, "truncation": trunc,
                                  "max_length": -1 if max_length is None else int(max_length),
                                  "stride": int(stride), "return_overflowing_tokens": bool(return_overflowing_tokens)}
        out = self._native.encode_batch(
            texts, pairs, **window, padding=pad, pad_to_multiple_of=int(pad_to_multiple_of or 0),
            cls_id=self.cls_token_id, sep_id=self.sep_token_id, pad_id=self.pad_token_id,
            return_offsets=bool(return_offsets_mapping), return_special_tokens_mask=bool(return_special_tokens_mask),
            threads=self.threads if threads is None else int(threads))
        lengths = out.pop("lengths")
        mapping = out.pop("overflow_to_sample_mapping")
        if starts is not None and return_offsets_mapping:
            _offsets_within_words(out, mapping, starts)
        row_len = _row_lengths(pad, lengths, out["input_ids"].shape[1], max_length, pad_to_multiple_of)
        if side == "left":
            _pad_left(out, lengths, row_len)
        result = BatchEncoding()
        result._row_info = lambda r: self._row_info(texts, pairs, starts, window, mapping, r)
        result._padding_side = side
        keys = _keys(return_token_type_ids, return_attention_mask, return_special_tokens_mask, return_offsets_mapping)
        extras = {"length": row_len.astype(np.int64)} if return_length else {}
        if return_overflowing_tokens:
            extras["overflow_to_sample_mapping"] = mapping
        if return_tensors is not None:
            return _as_tensors(_fill_arrays(result, out, keys, row_len, extras, return_tensors), return_tensors)
        _fill_lists(result, out, keys, row_len, extras)
        if not batched and not return_overflowing_tokens:
            for k in list(result):
                result[k] = result[k][0]
        return result

    def encode_batch_arrays(
        self, texts: Sequence[str], max_length: int | None = 512, text_pairs: Sequence[str] | None = None,
        add_special_tokens: bool = True, threads: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        """The runtime's fast path: ``(ids, type_ids, cu_seqlens, max_len)``.

        ``ids``/``type_ids`` are packed int32 (no padding): text i is ``ids[cu_seqlens[i]:cu_seqlens[i+1]]``,
        ``[CLS] A [SEP] (B [SEP])``, truncated longest_first to ``max_length`` (None: no limit);
        ``cu_seqlens`` is int64 of length ``len(texts) + 1``; ``max_len`` the longest text's length.
        """
        texts = self._check_list(texts, "texts")
        pairs = None if text_pairs is None else self._check_list(text_pairs, "text_pairs")
        return self._native.encode_packed(
            texts, pairs, max_length=-1 if max_length is None else int(max_length),
            add_special_tokens=add_special_tokens, cls_id=self.cls_token_id, sep_id=self.sep_token_id,
            threads=self.threads if threads is None else int(threads))

    # --------------------------------------------------------------- helpers
    def _strategies(self, padding: bool | str, truncation: bool | str | None, max_length: int | None,
                    pad_to_multiple_of: int | None) -> tuple[str, str, int | None]:
        """HF's _get_padding_truncation_strategies, for the options we support."""
        if padding not in _PADDING:
            raise TokenizerInputError(f"padding must be True, False, 'longest', 'max_length' or 'do_not_pad', "
                                      f"got {padding!r}")
        pad = _PADDING[padding]
        if truncation is None:
            trunc = "longest_first" if (max_length is not None and padding is False) else "do_not_truncate"
        elif truncation in _TRUNCATION:
            trunc = _TRUNCATION[truncation]
        else:
            raise TokenizerInputError(f"truncation must be True, False, 'longest_first', 'only_first', "
                                      f"'only_second' or 'do_not_truncate', got {truncation!r}")
        if max_length is None:
            if pad == "max_length":
                if self.model_max_length < _NO_LIMIT:
                    max_length = self.model_max_length
                else:
                    pad = "do_not_pad"
            if trunc != "do_not_truncate" and max_length is None and self.model_max_length < _NO_LIMIT:
                max_length = self.model_max_length
        if max_length is not None and max_length < 0:
            raise TokenizerInputError(f"max_length must be >= 0, got {max_length}")
        if (trunc != "do_not_truncate" and pad != "do_not_pad" and pad_to_multiple_of and max_length is not None
                and max_length % pad_to_multiple_of):
            raise TokenizerInputError(
                f"Truncation and padding are both activated but truncation length ({max_length}) is not a "
                f"multiple of pad_to_multiple_of ({pad_to_multiple_of}).")
        return trunc, pad, max_length

    @staticmethod
    def _check_str(value: Any, what: str) -> str:
        if not isinstance(value, str):
            raise TypeError(f"{what} must be str, got {type(value).__name__}")
        return value

    @staticmethod
    def _check_list(value: Any, what: str) -> Sequence[str]:
        if isinstance(value, str) or not isinstance(value, Sequence):
            raise TypeError(f"{what} must be a str or a list of str, got {type(value).__name__}")
        return value if isinstance(value, (list, tuple)) else list(value)  # items are checked natively

    def _inputs(self, text: Any, text_pair: Any, split: bool) -> tuple[bool, Sequence[str], Sequence[str] | None,
                                                                      list[tuple[list[int], list[int]]] | None]:
        """(batched, texts, pairs, word starts): pre-split words are joined by spaces (which the normaliser
        splits on and nothing crosses), each word's start kept for word ids and word-relative offsets.
        Unequal text and pair counts are refused by the native encoder."""
        if split:
            batched = isinstance(text, (list, tuple)) and bool(text) and isinstance(text[0], (list, tuple))
            joined = [_join_words(w, "text") for w in (text if batched else [text])]
            if text_pair is None:
                return batched, [t for t, _ in joined], None, [(s, []) for _, s in joined]
            joined_pairs = [_join_words(w, "text_pair") for w in (text_pair if batched else [text_pair])]
            starts = [(a, b) for (_, a), (_, b) in zip(joined, joined_pairs)]
            return batched, [t for t, _ in joined], [t for t, _ in joined_pairs], starts
        if not isinstance(text, str):
            pairs = None if text_pair is None else self._check_list(text_pair, "text_pair")
            return True, self._check_list(text, "text"), pairs, None
        return False, [text], None if text_pair is None else [self._check_str(text_pair, "text_pair")], None

    def _row_info(self, texts: Sequence[str], pairs: Sequence[str] | None,
                  starts: list[tuple[list[int], list[int]]] | None, window: dict[str, Any],
                  mapping: np.ndarray, row: int) -> RowInfo:
        """Word and sequence ids of one output row: its input re-encoded alone (unpadded, same windows)."""
        sample = int(mapping[row])
        k = row - int(np.argmax(mapping == sample))
        one = self._native.encode_batch(
            [texts[sample]], None if pairs is None else [pairs[sample]], **window, padding="do_not_pad",
            pad_to_multiple_of=0, cls_id=self.cls_token_id, sep_id=self.sep_token_id, pad_id=self.pad_token_id,
            return_offsets=True, return_special_tokens_mask=True, threads=1)
        n = int(one["lengths"][k])
        seq = one["token_type_ids"][k, :n].tolist()
        begin = one["offset_mapping"][k, :n, 0].tolist()
        special = one["special_tokens_mask"][k, :n].tolist()
        if starts is not None:
            word_starts = starts[sample]
        else:
            word_starts = (self._word_starts(texts[sample]), [] if pairs is None else self._word_starts(pairs[sample]))
        words = [None if sp else bisect.bisect_right(word_starts[q], b) - 1 for q, b, sp in zip(seq, begin, special)]
        return words, [None if sp else q for q, sp in zip(seq, special)]

    def _word_starts(self, text: str) -> list[int]:
        """Where each pre-tokenized word of ``text`` starts: at every token that is not a ``##`` continuation."""
        ids, offsets = self._native.encode(text, offsets=True)
        vocab = self._vocab
        return [int(o) for i, o in zip(ids.tolist(), cast(np.ndarray, offsets)[:, 0].tolist())
                if not (i < len(vocab) and vocab[i].startswith("##") and i not in self._added_decoder)]

    def __repr__(self) -> str:
        return (f"WordPieceTokenizer(vocab_size={self.vocab_size}, do_lower_case={self.do_lower_case}, "
                f"strip_accents={self.strip_accents}, model_max_length={self.model_max_length})")


def _check_padding_side(side: str) -> str:
    if side not in ("left", "right"):
        raise TokenizerInputError(f"padding_side must be 'left' or 'right', got {side!r}")
    return side


def _join_words(words: Any, what: str) -> tuple[str, list[int]]:
    """Pre-split words as one space-joined text, and where each word starts in it."""
    if isinstance(words, str) or not isinstance(words, (list, tuple)):
        raise TypeError(f"{what} must be a list of words (str) with is_split_into_words=True, "
                        f"got {type(words).__name__}")
    starts, pos = [], 0
    for word in words:
        if not isinstance(word, str):
            raise TypeError(f"{what} words must be str, got {type(word).__name__}")
        starts.append(pos)
        pos += len(word) + 1
    return " ".join(words), starts


def _offsets_within_words(out: dict[str, np.ndarray], mapping: np.ndarray,
                          starts: list[tuple[list[int], list[int]]]) -> None:
    """Make offsets relative to the given word, as HF does for is_split_into_words=True."""
    offsets, seq = out["offset_mapping"], out["token_type_ids"]
    for r, sample in enumerate(mapping.tolist()):
        real = offsets[r, :, 1] > offsets[r, :, 0]
        for q in (0, 1):
            sel = real & (seq[r] == q)
            word_starts = np.asarray(starts[sample][q], dtype=offsets.dtype)
            if sel.any():
                shift = word_starts[np.searchsorted(word_starts, offsets[r, sel, 0], side="right") - 1]
                offsets[r, sel] -= shift[:, None]


def _keys(token_type_ids: bool | None, attention_mask: bool | None, special_tokens_mask: bool,
          offsets_mapping: bool) -> list[str]:
    """The per-token outputs a call returns, in HF's order (type ids and mask unless turned off)."""
    wanted = {"input_ids": True, "token_type_ids": token_type_ids is not False,
              "attention_mask": attention_mask is not False, "special_tokens_mask": special_tokens_mask,
              "offset_mapping": offsets_mapping}
    return [key for key, on in wanted.items() if on]


def _row_lengths(pad: str, lengths: np.ndarray, width: int, max_length: int | None,
                 pad_to_multiple_of: int | None) -> np.ndarray:
    """Row lengths as HF's padding leaves them: padded rows reach the target, longer rows stay."""
    if pad == "do_not_pad":
        return lengths
    if pad == "max_length":
        target = int(max_length) if max_length is not None else int(lengths.max(initial=0))
        if pad_to_multiple_of and target % pad_to_multiple_of:
            target += pad_to_multiple_of - target % pad_to_multiple_of
        return np.maximum(lengths, target)
    return np.full_like(lengths, width)


def _fill_arrays(result: BatchEncoding, out: dict[str, np.ndarray], keys: list[str], row_len: np.ndarray,
                 extras: dict[str, np.ndarray], kind: str) -> BatchEncoding:
    """``result`` as 2-D arrays, which needs rows of one length."""
    if len(row_len) and (row_len != row_len[0]).any():
        raise TokenizerInputError("rows have different lengths; pass padding=True (or 'max_length') and/or "
                                  f"truncation=True to get arrays with return_tensors={kind!r}")
    width = int(row_len[0]) if len(row_len) else 0
    for key in keys:
        result[key] = out[key][:, :width]
    result.update(extras)
    return result


def _fill_lists(result: BatchEncoding, out: dict[str, np.ndarray], keys: list[str], row_len: np.ndarray,
                extras: dict[str, np.ndarray]) -> None:
    """``result`` as Python lists, each row cut to its own length (offsets as tuples, as HF)."""
    lens = row_len.tolist()
    for key in keys:
        rows = [out[key][r, :n].tolist() for r, n in enumerate(lens)]
        result[key] = [list(map(tuple, row)) for row in rows] if key == "offset_mapping" else rows
    for key, value in extras.items():
        result[key] = value.tolist()


def _pad_left(out: dict[str, np.ndarray], lengths: np.ndarray, row_len: np.ndarray) -> None:
    """Move each row's padding (the native pads on the right) in front of its tokens, within its row length."""
    width = out["input_ids"].shape[1]
    cols = np.arange(width)[None, :]
    shift = (row_len - lengths)[:, None]
    # Column j of a row takes token j - shift; the first shift columns take padding (any column >= length).
    src = np.where(cols >= shift, cols - shift, lengths[:, None] + cols)
    src = np.where(cols < row_len[:, None], src, cols)
    rows = np.arange(len(lengths))[:, None]
    for key, arr in out.items():
        if isinstance(arr, np.ndarray) and arr.ndim >= 2 and arr.shape[:2] == (len(lengths), width):
            out[key] = arr[rows, src]


def _as_tensors(result: BatchEncoding, kind: str) -> BatchEncoding:
    """numpy results as torch tensors for return_tensors='pt' (torch shares the arrays' memory)."""
    if kind == "np":
        return result
    try:
        import torch
    except ImportError:
        raise TokenizerInputError("return_tensors='pt' needs torch, which is not installed: pip install torch, "
                                  "or use return_tensors='np'") from None
    for key, value in result.items():
        result[key] = torch.from_numpy(np.ascontiguousarray(value))
    return result
