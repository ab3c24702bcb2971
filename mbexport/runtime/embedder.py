"""The Embedder: raw text -> one vector per text, in input order, CPU or CUDA.

Pipeline per window of texts (``window`` texts, default 2048)::

    texts --native tokenizer (threads, GIL released)--> packed ids + cumulative lengths
          --native Batcher--> longest-first batches by token budget, padded to a multiple of 8
            (on CUDA, for an export with the padding-free graph: packed batches, no padding at all)
          --a backend (runtime/backends: onnxruntime CPU, CUDA, TensorRT)--> the graph's pooled
            ``sentence_embedding`` rows --> scattered back in input order

While window k runs on onnxruntime, window k+1 is tokenized and planned on a worker
thread (both release the GIL), so tokenizing overlaps inference. ``embed_iter``
holds at most two windows at a time, whatever the length of the input: memory stays
flat for corpora larger than RAM. On CUDA, batches go through the native
``CudaStager`` (pinned host buffers, async copies on the session's stream, two slots)
and IO binding.

The graph's ``sentence_embedding`` is read when it holds the pooling asked for (its manifest record
says which; a normalised output serves only normalised requests). Otherwise -- another pooling, a
per-call ``normalize=False`` on a normalised export, an export made before the output existed -- the
Embedder reads ``last_hidden_state`` / ``pooler_output`` and pools on the host, with the same result.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterable, Iterator, Mapping
from collections.abc import Set as AbstractSet
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from mbexport import _native, jsonfiles
from mbexport.arguments import check_int
from mbexport.errors import ArgumentError, ExportDirError, MbexportError, TokenizerInputError
from mbexport.layout import (
    CALIBRATED_INT8,
    INT8_MODEL,
    MODEL,
    SPECIAL_TOKENS_MAP,
    TOKENIZER_CONFIG,
    PooledOutput,
    packed_model,
    read_manifest,
    resolve_export_dir,
    verify_model_files,
)
from mbexport.layout import SENTENCE_EMBEDDING as POOLED_OUTPUT
from mbexport.runtime.backends import BACKENDS, check_compute, resolve_device
from mbexport.runtime.pooling import POOLINGS, l2_normalize, output_for, pool
from mbexport.semantics import export_semantics
from mbexport.semantics import resolve as resolve_semantics
from mbexport.tokenizer import WordPieceTokenizer

# Batch widths round up to a multiple of this, by the device the backend computes on: 8 gives CUDA's
# tensor cores whole tiles; CPU kernels gain nothing from it and pay for the padding (MiniLM, 2,000
# texts at max_length 256: OpenVINO fp32 8-11% and bf16 5% faster at 1, onnxruntime 3%, int8 the same).
PAD_MULTIPLE = {"cpu": 1, "cuda": _native.DEFAULT_PAD_MULTIPLE}
DEFAULT_WINDOW = 2048  # texts sorted together; also embed_iter's chunk size


@dataclass
class EmbedStats:
    """Counters of everything an Embedder has embedded so far (``Embedder.stats``)."""

    texts: int = 0
    tokens: int = 0  # real tokens fed to the model, after truncation
    padded_tokens: int = 0  # what the model computed, padding included
    truncated: int = 0  # texts longer than max_length
    batches: int = 0
    seconds: float = 0.0  # wall time spent inside embed/embed_iter


@dataclass
class _Window:
    size: int
    batcher: Any  # _native.Batcher


class Embedder:
    """Embeds texts with an mbexport export directory.

    Pooling, normalisation and maximum length default to what the export's source means
    (``manifest["embedding"]``: a sentence-transformers model's own settings, else ``cls``,
    no normalisation, the model's maximum length); explicit arguments win. ``origins`` says
    where each setting came from ("sentence-transformers", "default" or "option").

    ``compute`` is the arithmetic an fp32 export runs in: ``fp32``, or on ``device="openvino"`` ``bf16``
    (the CPU's bf16 units) or ``int8`` (the model ``mbexport calibrate`` wrote beside model.onnx).

    >>> emb = Embedder("exports/minilm")  # mean pooling, normalised, 256 tokens: as the model says
    >>> emb.embed(["hello world", ""]).shape
    (2, 384)
    """

    def __init__(self, export_dir: str | Path, device: str = "cpu", pooling: str | None = None,
                 normalize: bool | None = None, max_length: int | None = None, batch_tokens: int | None = None,
                 threads: int | None = None, window: int = DEFAULT_WINDOW, spin: bool = True,
                 compute: str = "fp32") -> None:
        _check_bool("normalize (--normalize)", normalize)
        self.export_dir = resolve_export_dir(Path(export_dir))
        self.manifest = read_manifest(self.export_dir)
        # None = what the export's source means (its sentence-transformers config, else cls / no norm / model max).
        chosen, self.origins = resolve_semantics(export_semantics(self.manifest), pooling, normalize, max_length)
        pooling, normalize, max_length = chosen.pooling, chosen.normalize, chosen.max_length
        if pooling not in POOLINGS:
            raise ArgumentError(f"pooling (--pooling) must be one of {', '.join(POOLINGS)}, got {pooling!r}")
        outputs = self.manifest["outputs"]
        if output_for(pooling) not in outputs:
            fix = ("use pooling='cls' or 'mean'" if pooling == "pooler" else
                   "convert with --head base")
            raise ExportDirError(f"{self.export_dir} (head {self.manifest['head']!r}) has no "
                                 f"{output_for(pooling)} output for pooling={pooling!r}; {fix}")
        model = self.manifest["model"]
        self.hidden_size = model["hidden"]
        positions = model["max_position_embeddings"]
        if max_length is None:
            max_length = min(positions, _model_max_length(self.export_dir) or positions)
        if self.origins["max_length"] != "option" and not 2 <= max_length <= positions:
            raise ExportDirError(f"{self.export_dir}/mbexport.json: max_length {max_length} (from "
                                 f"{self.origins['max_length']}) is past the model's {positions} positions; "
                                 f"re-run mbexport convert, or pass max_length (--max-length) <= {positions}")
        check_int("max_length (--max-length)", max_length, 2, positions, "the model's position embeddings")
        check_int("window", window, 1)
        if batch_tokens is not None:
            check_int("batch_tokens (--batch-tokens)", batch_tokens, max_length, None, "at least max_length")
        self.max_length = max_length
        self.pooling = pooling
        self.normalize = normalize
        self.window = window
        self.device = resolve_device(device)
        check_compute(compute, self.device)
        if compute != "fp32" and self.manifest["precision"] != "fp32":
            raise ArgumentError(f"compute={compute!r} runs an fp32 export, and {self.export_dir} is "
                                f"{self.manifest['precision']}; convert with --precision fp32 or use compute='fp32'")
        self.compute = compute
        backend = BACKENDS[self.device]
        self.batch_tokens = batch_tokens or _native.DEFAULT_BATCH_TOKENS[backend.device]
        if self.batch_tokens < self.max_length:
            raise ArgumentError(f"batch_tokens (--batch-tokens, default {self.batch_tokens} on {self.device}) must "
                                f"be >= max_length ({self.max_length}); pass a larger batch_tokens")
        verify_model_files(self.export_dir, self.manifest)
        model_file = self._int8_model() if compute == "int8" else None
        self.tokenizer = _load_tokenizer(self.export_dir, model["vocab"])
        pad_id = self.tokenizer.pad_token_id  # padding is masked out: any id inside the embedding table will do
        self.pad_id = pad_id if pad_id < model["vocab"] else 0
        self.pad_multiple = PAD_MULTIPLE[backend.device]
        capacity = max(self.batch_tokens, -(-self.max_length // self.pad_multiple) * self.pad_multiple)
        # The padding-free graph where the backend runs it (CUDA) and the export has it; else padded batches.
        packed = packed_model(self.manifest) if backend.runs_packed else None
        self.packed = packed is not None
        self.backend = backend(self.export_dir / (model_file or packed or MODEL), threads, capacity, spin=spin,
                               compute=compute)
        self.pooled = PooledOutput.from_manifest(self.manifest)  # what the graph's sentence_embedding holds
        self.stats = EmbedStats()

    # -- public API ---------------------------------------------------------------------------

    def embed(self, texts: Iterable[str]) -> np.ndarray:
        """[len(texts), hidden] float32, row i for texts[i]; an empty input gives (0, hidden)."""
        items = _check_texts(texts)
        out = np.empty((len(items), self.hidden_size), dtype=np.float32)
        row = 0
        for chunk in self.embed_iter(items):
            out[row:row + len(chunk)] = chunk
            row += len(chunk)
        return out

    def embed_iter(self, texts: Iterable[str]) -> Iterator[np.ndarray]:
        """Yields [<= window, hidden] float32 chunks in input order, reading ``texts`` lazily.

        At most two windows (the running one and the one being tokenized) are in memory.
        """
        texts = _check_texts(texts, allow_iterator=True)
        source = iter(texts)
        start = 0  # index of the next text in this call's input, for error messages
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="mbexport-tokenize") as worker:
            pending = self._submit(worker, source, start)
            while pending is not None:
                started = time.perf_counter()
                window = pending.result()
                start += window.size
                pending = self._submit(worker, source, start)
                chunk = self._run(window)
                self.stats.seconds += time.perf_counter() - started
                yield chunk

    def tokenize(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Packed int32 ids and int64 cumulative lengths for ``embed_tokenized``; a text longer than
        ``max_length`` comes back one token longer than it (cut there), so callers can refuse it."""
        texts = _check_texts(texts)
        _check_items(texts, 0)
        return _encode(self.tokenizer, texts, self.max_length)

    def over_max_length(self, text: str) -> bool:
        """Whether ``text`` has more than ``max_length`` tokens ([CLS] and [SEP] included), by more than an
        added token with a space could re-join: then nothing appended to it after a space or tab changes its
        vector (a reader can drop the rest of a line)."""
        texts = [text]
        _check_items(texts, 0)
        limit = self.max_length + self._spanning_added
        ids, _ = _encode(self.tokenizer, texts, limit)
        return len(ids) > limit

    @functools.cached_property
    def _spanning_added(self) -> int:
        """Characters of the longest added token holding a space or tab (0 without one): a reader's cut there
        could split a token the full text would match."""
        return max((len(t) for t in self.tokenizer.get_added_vocab() if " " in t or "\t" in t), default=0)

    def embed_tokenized(self, ids: np.ndarray, cu: np.ndarray, normalize: bool | None = None) -> np.ndarray:
        """Rows for texts from ``tokenize`` (over-long ones truncated), in order: lets a server tokenize
        each request as it arrives and run the texts of many requests as one set of token-budget
        batches. ``normalize`` overrides the Embedder's for this call."""
        _check_bool("normalize", normalize)
        started = time.perf_counter()
        out = self._run(self._plan(ids, cu), normalize)
        self.stats.seconds += time.perf_counter() - started
        return out

    def __repr__(self) -> str:
        return (f"Embedder({str(self.export_dir)!r}, device={self.device!r}, compute={self.compute!r}, "
                f"pooling={self.pooling!r}, "
                f"normalize={self.normalize}, max_length={self.max_length}, batch_tokens={self.batch_tokens})")

    # -- pipeline -----------------------------------------------------------------------------

    def _int8_model(self) -> str:
        """The calibrated int8 model's file name, checked against its manifest record and made from this
        export's model.onnx (a re-converted export drops the record with the rest of the directory)."""
        record = self.manifest.get(CALIBRATED_INT8)
        remake = f"mbexport calibrate {self.export_dir} --texts FILE"
        if record is None:
            raise ExportDirError(f"{self.export_dir} has no calibrated int8 model for compute='int8'; "
                                 f"make one with: {remake}")
        verify_model_files(self.export_dir, self.manifest, record["files"], f"re-run {remake}")
        source = record.get("from")
        if not isinstance(source, dict) or source.get(MODEL) != self.manifest["files"][MODEL]["sha256"]:
            raise ExportDirError(f"{self.export_dir / INT8_MODEL} was calibrated from another {MODEL}; "
                                 f"re-run {remake}")
        return INT8_MODEL

    def _submit(self, worker: ThreadPoolExecutor, source: Iterator[str], start: int) -> Future[Any] | None:
        texts = list(islice(source, self.window))
        return worker.submit(self._prepare, texts, start) if texts else None

    def _prepare(self, texts: list[str], start: int) -> _Window:
        _check_items(texts, start)
        ids, cu = _encode(self.tokenizer, texts, self.max_length)
        return self._plan(ids, cu)

    def _plan(self, ids: np.ndarray, cu: np.ndarray) -> _Window:
        batcher = _native.Batcher(ids, cu, max_length=self.max_length, batch_tokens=self.batch_tokens,
                                  pad_multiple=self.pad_multiple, pad_id=self.pad_id, packed=self.packed)
        return _Window(len(cu) - 1, batcher)

    def _run(self, window: _Window, normalize: bool | None = None) -> np.ndarray:
        batcher = window.batcher
        out = np.empty((window.size, self.hidden_size), dtype=np.float32)
        output, host_pooling, host_normalize = self._reading(self.normalize if normalize is None else normalize)
        for indices, rows, mask in self.backend.batches(batcher, output):
            if rows.dtype != np.float32:
                rows = rows.astype(np.float32)
            if host_pooling is not None:
                rows = pool(rows, mask, host_pooling)
            _native.scatter_rows(rows, indices, out)
        if host_normalize:
            l2_normalize(out)
        self.stats.texts += window.size
        self.stats.tokens += batcher.real_tokens
        self.stats.padded_tokens += batcher.padded_tokens
        self.stats.truncated += batcher.truncated
        self.stats.batches += len(batcher)
        return out

    def _reading(self, normalize: bool) -> tuple[str, str | None, bool]:
        """(graph output to read, pooling left to the host or None, whether the host normalises)."""
        pooled = self.pooled
        if pooled is not None and pooled.pooling == self.pooling and (normalize or not pooled.normalize):
            return POOLED_OUTPUT, None, normalize and not pooled.normalize
        return output_for(self.pooling), self.pooling, normalize


def _check_texts(texts: Any, allow_iterator: bool = False) -> Any:
    """``texts`` as a list (or, with ``allow_iterator``, as given); TokenizerInputError for what has no
    texts in an order: a single string, a dict or set, a non-iterable, a 0-d array."""
    if isinstance(texts, (str, bytes)):
        raise TokenizerInputError("Embedder: pass a list of texts, not a single string (wrap it: [text])")
    if (isinstance(texts, (Mapping, AbstractSet)) or not isinstance(texts, Iterable)
            or (isinstance(texts, np.ndarray) and texts.ndim == 0)):
        raise TokenizerInputError(f"Embedder: texts must be a list, tuple, 1-d array or iterator of str, in the "
                                  f"order the rows should come back, not {type(texts).__name__}")
    if allow_iterator:
        return texts
    return texts if isinstance(texts, (list, tuple)) else list(texts)


def _check_items(texts: list[Any], start: int) -> None:
    """TokenizerInputError naming the first item that is not a str (``start``: the index of texts[0])."""
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TokenizerInputError(f"Embedder: text {start + i} is {type(text).__name__}, "
                                      "not str; pass strings (decode bytes first)")


def _check_bool(name: str, value: Any) -> None:
    """ArgumentError unless ``value`` is True, False or None (a truthy "no" would silently mean yes)."""
    if value is not None and not isinstance(value, bool):
        raise ArgumentError(f"{name} must be True, False or None (the export's own setting), got {value!r}")


def _encode(tokenizer: Any, texts: list[str], max_length: int) -> tuple[np.ndarray, np.ndarray]:
    """Packed int32 ids ([CLS] ... [SEP] per text) and int64 cumulative lengths.

    The tokenizer cuts at max_length + 1, which bounds memory for huge texts yet keeps every
    over-long text detectably over the limit: the Batcher then truncates to max_length (same
    tokens as cutting directly) and counts it.
    """
    ids, _types, cu, _longest = tokenizer.encode_batch_arrays(texts, max_length=max_length + 1)
    return ids, cu


def _load_tokenizer(export_dir: Path, model_vocab: int) -> WordPieceTokenizer:
    """The export's tokenizer; refused when its files are malformed or its vocab outgrows the model's
    embedding table (ids past it would read garbage or fail inside onnxruntime)."""
    for name in (TOKENIZER_CONFIG, SPECIAL_TOKENS_MAP):
        _json_object(export_dir / name)
    try:
        tokenizer = WordPieceTokenizer.from_pretrained(export_dir)
    except MbexportError:
        raise
    except (ValueError, TypeError, AttributeError, OSError) as e:
        raise ExportDirError(f"{export_dir}: the tokenizer files (vocab.txt, tokenizer_config.json, "
                             f"special_tokens_map.json) are malformed ({e}); re-run mbexport convert") from None
    if tokenizer.vocab_size > model_vocab:
        raise ExportDirError(f"{export_dir}/vocab.txt has {tokenizer.vocab_size} tokens but the model's embedding "
                             f"table has {model_vocab}; re-run mbexport convert with the checkpoint's own vocab")
    return tokenizer


def _json_object(path: Path) -> dict[str, Any]:
    """A JSON object file of the export ({} when absent); ExportDirError when it is not one."""
    if not path.exists():
        return {}
    return jsonfiles.read_object(path, ExportDirError, "re-run mbexport convert")


def _model_max_length(export_dir: Path) -> int | None:
    value = _json_object(export_dir / TOKENIZER_CONFIG).get("model_max_length")
    return int(value) if isinstance(value, (int, float)) and 2 <= value < 1e9 else None
