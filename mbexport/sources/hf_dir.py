"""A Hugging Face model directory -> ``Checkpoint`` (the neutral form).

Reads ``config.json`` into a ``BertSpec``, weights from the first of::

    model.safetensors | model.safetensors.index.json (shards) |
    pytorch_model.bin | pytorch_model.bin.index.json (shards)

(``.bin`` through the torch-free restricted unpickler), renames them onto the canonical
scheme, drops buffers that are not weights (``position_ids`` ...) and tied copies
(``cls.predictions.decoder.*`` equal to the word embeddings / prediction bias), and checks
every shape against the config. Floating weights come out as float32 whatever their stored
precision; the exporter decides the output precision. ``vocab.txt`` is required;
``tokenizer_config.json`` and ``special_tokens_map.json`` travel along when present.
So do a sentence-transformers model's files, with what they mean (``mbexport.semantics``).

Safetensors files are parsed here (8-byte header length, JSON header, raw data) rather
than through the safetensors package, so a truncated or inconsistent file is caught before
any tensor is read and reported with the file's name, and bfloat16 needs no torch.
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path
from typing import Any

import numpy as np

from mbexport.errors import CheckpointFormatError
from mbexport.semantics import read_semantics, sentence_transformers_files
from mbexport.sources.torch_pickle import load_torch_bin
from mbexport.spec import BertSpec, Checkpoint, canonical_name, detect_heads, read_json, sha256_files

__all__ = ["find_weight_files", "load_hf_dir", "load_safetensors"]

# In order of preference; the first one present is the one read.
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
TOKENIZER_FILES = ("tokenizer_config.json", "special_tokens_map.json")

# Buffers and bookkeeping that live in state dicts but are not weights.
_NOT_WEIGHTS = re.compile(r"(^|\.)(position_ids|token_type_ids|num_batches_tracked)$")

_SAFETENSORS_DTYPES: dict[str, Any] = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": "bfloat16",
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8,
    "U64": np.uint64, "U32": np.uint32, "U16": np.uint16, "U8": np.uint8, "BOOL": np.bool_,
}  # fmt: skip
_MAX_HEADER = 100 << 20  # the safetensors format caps its JSON header at 100 MB


def find_weight_files(path: Path) -> list[Path]:
    """The weight files of an HF directory, in load order (one format, all its shards)."""
    for name in WEIGHT_FILES:
        candidate = path / name
        if not candidate.is_file():
            continue
        if not name.endswith(".index.json"):
            return [candidate]
        index = read_json(candidate)
        weight_map = index.get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise CheckpointFormatError(f"{candidate}: no weight_map; the shard index is corrupt, re-download it")
        shards = [path / shard for shard in sorted(set(map(str, weight_map.values())))]
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
            header = json.loads(f.read(header_len))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise corrupt(f"header is not JSON: {e}") from None
    if not isinstance(header, dict):
        raise corrupt("header is not a JSON object")
    header.pop("__metadata__", None)
    data_start = 8 + header_len
    data_size = size - data_start

    layout: list[tuple[str, Any, tuple[int, ...], int, int]] = []
    end_max = 0
    for name, info in header.items():
        try:
            dtype_name, shape, (begin, end) = info["dtype"], tuple(int(d) for d in info["shape"]), info["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise corrupt(f"bad header entry for {name!r}") from None
        if dtype_name not in _SAFETENSORS_DTYPES:
            raise CheckpointFormatError(f"{path}: tensor {name!r} has dtype {dtype_name}, which mbexport does not read")
        dtype = _SAFETENSORS_DTYPES[dtype_name]
        itemsize = 2 if dtype == "bfloat16" else np.dtype(dtype).itemsize
        if not (0 <= begin <= end) or end - begin != int(np.prod(shape, dtype=np.int64)) * itemsize:
            raise corrupt(f"tensor {name!r} has offsets {begin}..{end} that do not fit shape {list(shape)}")
        end_max = max(end_max, end)
        layout.append((name, dtype, shape, begin, end))
    if end_max > data_size:
        raise corrupt(f"tensors need {end_max} data bytes but the file holds {data_size}")

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


def _canonical_weights(raw: dict[str, np.ndarray], label: str) -> dict[str, np.ndarray]:
    weights: dict[str, np.ndarray] = {}
    for name, array in raw.items():
        if _NOT_WEIGHTS.search(name):
            continue
        key = canonical_name(name)
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
    decoder = weights.get("cls.predictions.decoder.weight")
    embeddings = weights.get("embeddings.word_embeddings.weight")
    if decoder is not None and embeddings is not None and decoder.shape == embeddings.shape:
        if np.array_equal(decoder, embeddings):
            del weights["cls.predictions.decoder.weight"]
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
    model_type = config.get("model_type")
    if model_type is not None and model_type != "bert":
        raise CheckpointFormatError(f"{config_path}: model_type is {model_type!r}; mbexport converts BERT models only")

    files = find_weight_files(path)
    raw: dict[str, np.ndarray] = {}
    for file in files:
        raw.update(_load_weight_file(file))
    weights = _canonical_weights(raw, label)

    vocab = path / "vocab.txt"
    if not vocab.is_file():
        raise CheckpointFormatError(
            f"{path}: vocab.txt is missing; mbexport needs the WordPiece vocabulary next to the weights "
            "(copy the vocab.txt of the tokenizer this model was trained with)"
        )
    spec = BertSpec.from_config(config, heads=detect_heads(set(weights)))
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
        embedding=read_semantics(path),
    )
    checkpoint.validate()
    return checkpoint
