"""tokenizer.json (HF ``tokenizers``) -> the WordPiece vocabulary, normaliser options and specials.

transformers 5 ``save_pretrained`` writes a BERT tokenizer as tokenizer.json (+ tokenizer_config.json)
without vocab.txt. Only what mbexport's tokenizer reproduces exactly is accepted: a ``WordPiece``
model (``##`` continuations, 100-character words), a ``BertNormalizer`` with ``clean_text`` and a
``BertPreTokenizer``. Anything else (BPE, Unigram, a normaliser sequence, another pre-tokenizer)
is refused with a ``VocabError`` naming the field, rather than tokenized differently.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mbexport import _native, jsonfiles
from mbexport.errors import VocabError

__all__ = ["TokenizerJson", "read_tokenizer_json"]

# What google-research/bert and HF's BertTokenizer use; the native tokenizer's word limit.
_MAX_INPUT_CHARS_PER_WORD = 100


@dataclass(frozen=True)
class TokenizerJson:
    """The BERT WordPiece tokenizer a tokenizer.json describes, in vocab.txt / tokenizer_config.json terms."""

    vocab: list[str]  # token of id i at index i
    do_lower_case: bool
    strip_accents: bool | None  # None: follow do_lower_case, as BERT does
    tokenize_chinese_chars: bool
    specials: dict[str, str]  # unk_token, cls_token, sep_token, and pad_token/mask_token when known
    added_tokens: dict[int, str] = field(default_factory=dict)  # ids beyond the WordPiece vocab

    def tokenizer_config(self) -> dict[str, Any]:
        """The tokenizer_config.json keys that make HF's BertTokenizer (and ours) behave as this file does."""
        config: dict[str, Any] = {"do_lower_case": self.do_lower_case, "strip_accents": self.strip_accents,
                                  "tokenize_chinese_chars": self.tokenize_chinese_chars, **self.specials}
        if self.added_tokens:
            config["added_tokens_decoder"] = {
                str(i): {"content": t, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False,
                         "special": True} for i, t in sorted(self.added_tokens.items())}
        return config

    def vocab_text(self) -> str:
        return "".join(token + "\n" for token in self.vocab)


def read_tokenizer_json(path: Path) -> TokenizerJson:
    """Read ``path``; VocabError (one line, naming the field) unless it is a BERT WordPiece tokenizer."""
    data = jsonfiles.read_object(path, VocabError, "re-download or fix it")

    def refuse(what: str, value: Any) -> VocabError:
        return VocabError(f"{path}: {what} is {value!r}, but mbexport reads only BERT WordPiece tokenizers "
                          "(WordPiece model, BertNormalizer, BertPreTokenizer); "
                          "put the model's BERT vocab.txt next to it")

    model = _section(data, "model")
    if model.get("type") != "WordPiece":
        raise refuse("model.type", model.get("type"))
    if model.get("continuing_subword_prefix", "##") != "##":
        raise refuse("model.continuing_subword_prefix", model.get("continuing_subword_prefix"))
    if model.get("max_input_chars_per_word", _MAX_INPUT_CHARS_PER_WORD) != _MAX_INPUT_CHARS_PER_WORD:
        raise refuse("model.max_input_chars_per_word", model.get("max_input_chars_per_word"))
    normalizer = _section(data, "normalizer")
    if normalizer.get("type") != "BertNormalizer" or normalizer.get("clean_text", True) is not True:
        raise refuse("normalizer", normalizer.get("type") if normalizer.get("type") != "BertNormalizer"
                     else "BertNormalizer with clean_text=false")
    pre = _section(data, "pre_tokenizer")
    if pre.get("type") != "BertPreTokenizer":
        raise refuse("pre_tokenizer.type", pre.get("type"))

    vocab = _vocab_list(path, model.get("vocab"))
    added = _added_tokens(path, data.get("added_tokens"), len(vocab))
    unk = model.get("unk_token", "[UNK]")
    if unk not in vocab and unk not in added.values():
        raise VocabError(f"{path}: unk_token {unk!r} is not in the vocabulary; the file is inconsistent")
    specials = {"unk_token": unk, **_post_processor_specials(data.get("post_processor"))}
    padding = data.get("padding")
    pad = padding.get("pad_token") if isinstance(padding, dict) else None
    known = set(vocab) | set(added.values())
    for name, default in (("pad_token", pad or "[PAD]"), ("mask_token", "[MASK]"),
                          ("cls_token", "[CLS]"), ("sep_token", "[SEP]")):
        if name not in specials and default in known:
            specials[name] = default
    return TokenizerJson(
        vocab=vocab,
        do_lower_case=bool(normalizer.get("lowercase", True)),
        strip_accents=normalizer.get("strip_accents"),
        tokenize_chinese_chars=bool(normalizer.get("handle_chinese_chars", True)),
        specials=specials,
        added_tokens=added,
    )


def _section(data: dict[str, Any], key: str) -> dict[str, Any]:
    value = data.get(key)
    return value if isinstance(value, dict) else {"type": None}


def _vocab_list(path: Path, vocab: Any) -> list[str]:
    """model.vocab ({token: id}) as a list indexed by id; ids must be 0..n-1, tokens one line each."""
    if not isinstance(vocab, dict) or not vocab:
        raise VocabError(f"{path}: model.vocab is missing or empty; the file is not a WordPiece tokenizer.json")
    tokens: list[str | None] = [None] * len(vocab)
    for token, i in vocab.items():
        if not isinstance(i, int) or not 0 <= i < len(vocab) or tokens[i] is not None:
            raise VocabError(f"{path}: model.vocab id {i!r} of {token!r} is out of range or repeated; "
                             "ids must be 0..n-1, each once")
        if "\n" in token or "\r" in token:
            raise VocabError(f"{path}: model.vocab token {token!r} holds a line break and cannot go into vocab.txt")
        tokens[i] = token
    result = [t for t in tokens if t is not None]
    # The native parser applies vocab.txt's own checks (duplicates after stripping, UTF-8).
    return list(_native.parse_vocab("".join(t + "\n" for t in result).encode("utf-8"), str(path)))


def _added_tokens(path: Path, entries: Any, vocab_size: int) -> dict[int, str]:
    """Added tokens whose ids lie beyond the WordPiece vocab (the rest are vocab entries already)."""
    added: dict[int, str] = {}
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), int) or not isinstance(
                entry.get("content"), str):
            raise VocabError(f"{path}: added_tokens entry {entry!r} lacks an int id or str content")
        if entry["id"] >= vocab_size:
            added[entry["id"]] = entry["content"]
    return added


def _post_processor_specials(post: Any) -> dict[str, str]:
    """cls_token and sep_token from a BertProcessing or TemplateProcessing post-processor."""
    if not isinstance(post, dict):
        return {}
    if post.get("type") == "BertProcessing":
        return {name + "_token": post[name][0] for name in ("cls", "sep")
                if isinstance(post.get(name), list) and post[name] and isinstance(post[name][0], str)}
    if post.get("type") == "TemplateProcessing" and isinstance(post.get("single"), list):
        marks = [p["SpecialToken"]["id"] for p in post["single"]
                 if isinstance(p, dict) and isinstance(p.get("SpecialToken"), dict)]
        if len(marks) == 2 and all(isinstance(m, str) for m in marks):
            return {"cls_token": marks[0], "sep_token": marks[1]}
    return {}
