"""A Hugging Face model directory -> ``Checkpoint`` (the neutral form).

Reads ``config.json`` into a ``BertSpec``, weights from the first of::

    model.safetensors | model.safetensors.index.json (shards) |
    pytorch_model.bin | pytorch_model.bin.index.json (shards)

(``.bin`` through the torch-free restricted unpickler), renames them onto the canonical
scheme, drops buffers that are not weights (``position_ids`` ...) and tied copies
(``cls.predictions.decoder.*`` equal to the word embeddings / prediction bias), and checks
every shape against the config. Floating weights come out as float32 whatever their stored
precision; the exporter decides the output precision. ``vocab.txt`` (or, as transformers 5
saves it, a BERT WordPiece ``tokenizer.json``) is required;
``tokenizer_config.json`` and ``special_tokens_map.json`` travel along when present.
So do a sentence-transformers model's files, with what they mean (``mbexport.semantics``).

Safetensors files are parsed here (8-byte header length, JSON header, raw data) rather
than through the safetensors package, so a truncated or inconsistent file is caught before
any tensor is read and reported with the file's name, and bfloat16 needs no torch.
"""

from __future__ import annotations

import itertools
import math
import re
import struct
from pathlib import Path
from typing import Any

import numpy as np

from mbexport import jsonfiles
from mbexport.errors import CheckpointFormatError
from mbexport.families import ModelFamily, detect_family
from mbexport.semantics import read_semantics, sentence_transformers_files
from mbexport.sources.registry import SourceFormat, register
from mbexport.sources.tokenizer_json import read_tokenizer_json
from mbexport.sources.torch_pickle import load_torch_bin
from mbexport.spec import Checkpoint, read_json, sha256_files

__all__ = ["find_weight_files", "load_hf_dir", "load_safetensors"]

# Weight layouts in order of preference (the first one present is the one read and downloaded):
# (file that marks it, patterns a download of it takes).
WEIGHT_LAYOUTS = (
    ("model.safetensors", ("model.safetensors",)),
    ("model.safetensors.index.json", ("model.safetensors.index.json", "model-*-of-*.safetensors")),
    ("pytorch_model.bin", ("pytorch_model.bin",)),
    ("pytorch_model.bin.index.json", ("pytorch_model.bin.index.json", "pytorch_model-*-of-*.bin")),
)
WEIGHT_FILES = tuple(marker for marker, _ in WEIGHT_LAYOUTS)
TOKENIZER_FILES = ("tokenizer_config.json", "special_tokens_map.json")

# Buffers and bookkeeping that live in state dicts but are not weights.
_NOT_WEIGHTS = re.compile(r"(^|\.)(position_ids|token_type_ids|num_batches_tracked)$")

_SAFETENSORS_DTYPES: dict[str, Any] = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": "bfloat16",
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8,
    "U64": np.uint64, "U32": np.uint32, "U16": np.uint16, "U8": np.uint8, "BOOL": np.bool_,
}  # fmt: skip
# The safetensors format allows a 100 MB JSON header; a BERT's is ~100 bytes per tensor (~40 KB
# for BERT-large), and parsing 100 MB of JSON takes ~1 GB, so headers are held to 16 MiB.
_MAX_HEADER = 16 << 20
_MAX_INDEX_BYTES = 16 << 20  # a shard index lists each tensor once (~80 bytes each), like the header
_MAX_DIMS = 32  # numpy's limit in its 1.x series


def find_weight_files(path: Path) -> list[Path]:
    """The weight files of an HF directory, in load order (one format, all its shards)."""
    for name in WEIGHT_FILES:
        candidate = path / name
        if not candidate.is_file():
            continue
        if not name.endswith(".index.json"):
            return [candidate]
        if candidate.stat().st_size > _MAX_INDEX_BYTES:
            raise CheckpointFormatError(f"{candidate}: {candidate.stat().st_size} bytes, more than any shard index "
                                        f"needs ({_MAX_INDEX_BYTES}); the file is corrupt, re-download it")
        index = read_json(candidate)
        weight_map = index.get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise CheckpointFormatError(f"{candidate}: no weight_map; the shard index is corrupt, re-download it")
        suffix = name[: -len(".index.json")].rsplit(".", 1)[1]
        shards = [path / _shard_name(candidate, shard, suffix) for shard in sorted(set(map(str, weight_map.values())))]
        missing = [s.name for s in shards if not s.is_file()]
        if missing:
            raise CheckpointFormatError(
                f"{candidate} lists shards that are missing: {', '.join(missing[:3])}; download every shard"
            )
        return shards
    others = sorted(p.name for p in path.iterdir() if p.suffix in (".h5", ".msgpack", ".index", ".ot", ".onnx"))
    hint = f" (found {', '.join(others[:4])}, which mbexport does not read)" if others else ""
    raise CheckpointFormatError(
        f"{path}: no weights found{hint}; expected model.safetensors, pytorch_model.bin or their sharded "
        "index (a TF1 checkpoint is given by its prefix, e.g. bert_model.ckpt)"
    )


def _shard_name(index: Path, name: str, suffix: str) -> str:
    """A shard named by an index must be a ``.suffix`` file directly in the index's directory.

    Only the name is checked, not where it resolves: an HF cache snapshot's files are symlinks
    into ``../../blobs``, and following them is what the cache means."""
    if "/" in name or "\\" in name or "\0" in name or not name.endswith(f".{suffix}"):
        raise CheckpointFormatError(f"{index}: shard {name[:100]!r} is not a .{suffix} file in the checkpoint "
                                    "directory; an index may only name files beside it, the index is corrupt or "
                                    "hostile")
    return name


def load_safetensors(path: Path) -> dict[str, np.ndarray]:
    """Read a safetensors file into numpy arrays, checking the header against the file first."""
    size = path.stat().st_size

    def corrupt(detail: str) -> CheckpointFormatError:
        return CheckpointFormatError(f"{path}: truncated or corrupt safetensors file ({detail}); re-download it")

    with open(path, "rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise corrupt(f"{size} bytes, shorter than the 8-byte header length")
        (header_len,) = struct.unpack("<Q", prefix)
        if header_len > min(_MAX_HEADER, size - 8):
            raise corrupt(f"header claims {header_len} bytes but the file has {size}")
        try:
            header = jsonfiles.loads(f.read(header_len))
        except ValueError as e:
            raise corrupt(f"header is not JSON: {e}") from None
    if not isinstance(header, dict):
        raise corrupt("header is not a JSON object")
    header.pop("__metadata__", None)
    data_start = 8 + header_len
    data_size = size - data_start

    layout: list[tuple[str, Any, tuple[int, ...], int, int]] = []
    for name, info in header.items():
        try:
            dtype_name, shape, (begin, end) = info["dtype"], tuple(info["shape"]), info["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise corrupt(f"bad header entry for {name!r}") from None
        if not all(type(d) is int and d >= 0 for d in (*shape, begin, end)) or len(shape) > _MAX_DIMS:
            raise corrupt(f"tensor {name!r} has shape {str(shape)[:80]} or offsets {str((begin, end))[:80]} that are "
                          "not small whole numbers")
        if dtype_name not in _SAFETENSORS_DTYPES:
            raise CheckpointFormatError(f"{path}: tensor {name!r} has dtype {dtype_name}, which mbexport does not read")
        dtype = _SAFETENSORS_DTYPES[dtype_name]
        itemsize = 2 if dtype == "bfloat16" else np.dtype(dtype).itemsize
        if not begin <= end <= data_size or end - begin != math.prod(shape) * itemsize:
            raise corrupt(f"tensor {name!r} has offsets {begin}..{end} that do not fit shape {list(shape)} in "
                          f"{data_size} data bytes")
        layout.append((name, dtype, shape, begin, end))
    # Tensors may not overlap (as the format requires), so together they hold at most the file.
    spans = sorted((begin, end, name) for name, _, _, begin, end in layout)
    for (_, end, first), (begin, _, second) in itertools.pairwise(spans):
        if begin < end:
            raise corrupt(f"tensors {first!r} and {second!r} overlap")

    weights: dict[str, np.ndarray] = {}
    if not layout:
        return weights
    data = np.memmap(path, dtype=np.uint8, mode="r", offset=data_start, shape=(data_size,)) if data_size else None
    for name, dtype, shape, begin, end in layout:
        raw = np.asarray(data[begin:end]) if data is not None else np.empty(0, np.uint8)
        if dtype == "bfloat16":
            array = (raw.view("<u2").astype(np.uint32) << 16).view(np.float32).reshape(shape)
        else:
            array = raw.view(np.dtype(dtype).newbyteorder("<")).reshape(shape).astype(dtype, copy=True)
        weights[name] = array
    del data
    return weights


def _load_weight_file(path: Path) -> dict[str, np.ndarray]:
    if path.suffix == ".safetensors":
        return load_safetensors(path)
    return load_torch_bin(path)


def _canonical_weights(raw: dict[str, np.ndarray], label: str, family: ModelFamily) -> dict[str, np.ndarray]:
    weights: dict[str, np.ndarray] = {}
    for name, array in raw.items():
        if _NOT_WEIGHTS.search(name):
            continue
        key = family.canonical_name(name)
        if key in weights:
            raise CheckpointFormatError(f"{label}: weights {name!r} and another name both map to {key!r}")
        if np.issubdtype(array.dtype, np.floating) and array.dtype != np.float32:
            array = array.astype(np.float32)
        weights[key] = array
    # The MLM decoder is tied to the word embeddings and its bias to cls.predictions.bias;
    # drop the tied copies, keep an untied decoder (the exporter then uses it).
    decoder_bias = weights.pop("cls.predictions.decoder.bias", None)
    if decoder_bias is not None and "cls.predictions.bias" not in weights:
        weights["cls.predictions.bias"] = decoder_bias
    family.drop_tied(weights)
    return weights


def load_hf_dir(path: Path, label: str | None = None, revision: str | None = None) -> Checkpoint:
    """Load an HF BERT directory (a snapshot, a save_pretrained output, a local clone)."""
    path = Path(path)
    label = label or str(path)
    if not path.is_dir():
        raise CheckpointFormatError(f"{path} is not a directory: give a directory holding config.json and weights")
    config_path = path / "config.json"
    if not config_path.is_file() and (path / "bert_config.json").is_file():
        config_path = path / "bert_config.json"
    if not config_path.is_file():
        raise CheckpointFormatError(
            f"{path}: config.json is missing; an HF checkpoint directory needs it next to the weights"
        )
    config = read_json(config_path)
    family = detect_family(config, (), str(config_path))
    family.spec_from_config(config, where=str(config_path))  # a bad config is refused before any weight is read
    files = find_weight_files(path)
    raw: dict[str, np.ndarray] = {}
    for file in files:
        raw.update(_load_weight_file(file))
    if "model_type" not in config and "architectures" not in config:  # a bare config: the names decide
        family = detect_family(config, raw, str(config_path))
    weights = _canonical_weights(raw, label, family)

    vocab = path / "vocab.txt"
    if not vocab.is_file() and (path / "tokenizer.json").is_file():
        vocab = path / "tokenizer.json"  # transformers 5 saves no vocab.txt; the writer extracts it
        read_tokenizer_json(vocab)  # refuses a tokenizer that is not BERT WordPiece before any work
    if not vocab.is_file():
        raise CheckpointFormatError(
            f"{path}: vocab.txt is missing (and no tokenizer.json); mbexport needs the WordPiece vocabulary next to "
            "the weights (copy the vocab.txt of the tokenizer this model was trained with)"
        )
    spec = family.spec_from_config(config, heads=family.detect_heads(set(weights), config), where=str(config_path))
    checkpoint = Checkpoint(
        spec=spec,
        weights=weights,
        vocab_file=vocab,
        source=label,
        revision=revision,
        weights_sha256=sha256_files(files),
        tokenizer_files={name: path / name for name in TOKENIZER_FILES if (path / name).is_file()},
        config=config,
        st_files=sentence_transformers_files(path),
        embedding=read_semantics(path, spec.max_position_embeddings),
    )
    checkpoint.validate()
    return checkpoint


def has_weight_files(path: Path) -> bool:
    """An HF directory with one of the weight files this module reads."""
    return path.is_dir() and any((path / name).is_file() for name in WEIGHT_FILES)


def download_patterns(repo_files: list[str]) -> list[str]:
    """The preferred weight layout of a repo with these files, as allow_patterns ([] when it has none)."""
    present = set(repo_files)
    return next((list(patterns) for marker, patterns in WEIGHT_LAYOUTS if marker in present), [])


FORMAT = register(SourceFormat("hf_dir", has_weight_files, load_hf_dir, download_patterns,
                               weight_files=WEIGHT_FILES, explains_directories=True))
