"""TensorFlow BERT checkpoints -> ``Checkpoint`` (the neutral form), without TensorFlow.

A checkpoint is given by its prefix (``.../bert_model.ckpt``, whose ``.index`` exists) or by
the directory holding it; ``bert_config.json`` (or ``config.json``) and ``vocab.txt`` must
sit next to it. The bytes are read by ``tf_bundle``; this module maps variable names:

TF1 (google-research/bert, MultiBERTs)          canonical (spec.py)
  bert/embeddings/{word,position,token_type}_embeddings
                                                embeddings.*_embeddings.weight
  bert/embeddings/LayerNorm/{gamma,beta}        embeddings.LayerNorm.{weight,bias}
  bert/encoder/layer_N/attention/self/{query,key,value}/{kernel,bias}
  bert/encoder/layer_N/{attention/output,intermediate,output}/dense/{kernel,bias}
  bert/encoder/layer_N/{attention/output,output}/LayerNorm/{gamma,beta}
  bert/pooler/dense/{kernel,bias}

TF2 (TF Model Garden BertEncoder, object-based, under ``encoder/`` or ``model/``)
  layer_with_weights-{0,1,2}/embeddings         word, position, token type embeddings
  layer_with_weights-3/{gamma,beta}             embeddings.LayerNorm
  layer_with_weights-(4+N)/_attention_layer/_{query,key,value}_dense/{kernel [H,heads,d], bias [heads,d]}
  layer_with_weights-(4+N)/_attention_layer/_output_dense/{kernel [heads,d,H], bias}
  layer_with_weights-(4+N)/{_attention_layer_norm,_intermediate_dense,_output_dense,_output_layer_norm}/*
  layer_with_weights-(4+L)/{kernel,bias}        pooler.dense
  (the same under the attribute names _embedding_layer, _transformer_layers/N, _pooler_layer ...)

Heads' variables (TF1 ``cls/*``, ``output_*``; TF2 ``masked_lm/*``, the NSP head) are each head's
own (``Head.tf1``/``Head.tf2`` in mbexport/heads/). A head's TF2 variable may map onto an encoder
weight: BertPretrainerV2's NSP pooler is then the pooler, in place of the encoder's untrained one.

Other families' TF names (ELECTRA's ``electra/*``, ``generator/*``) are their family object's
(``ModelFamily.tf_rule``, mbexport/families/), which maps their encoders onto BERT's TF1 names.

Kernels ([in, out]) become PyTorch's [out, in] as transposed views (see ``_transform``).
Optimizer slots (adam_m, adam_v, Adam, ...), global_step, save_counter and the object graph
are skipped; any other name is an error, since silently dropping a weight would make a
wrong model.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePath
from typing import Any

import numpy as np

from mbexport.errors import CheckpointFormatError, ShapeError, SourceNotFoundError
from mbexport.families import OTHER_NETWORK, detect_family
from mbexport.heads import tf_rules
from mbexport.sources.registry import SourceFormat, register
from mbexport.sources.tf_bundle import BundleReader, widen_bfloat16
from mbexport.spec import Checkpoint, read_json, sha256_files

__all__ = ["find_prefix", "inspect_ckpt_table", "is_tf_checkpoint", "list_tensors", "load_tf_checkpoint"]

CONFIG_FILES = ("bert_config.json", "config.json")
STATE_FILE_BYTES = 1 << 16  # of TF's "checkpoint" state file: its first line names the latest checkpoint

# Not weights: optimizer state and bookkeeping, in TF1 and TF2 spellings.
_SKIP = re.compile(
    r"(^|/)(adam_m|adam_v|Adam|Adam_1|Momentum|RMSProp|RMSProp_1|Adagrad|AdamWeightDecay|LAMB|lamb_m|lamb_v|"
    r"ExponentialMovingAverage)$"
    r"|^(global_step|beta1_power|beta2_power|learning_rate|loss_scale|good_steps|current_loss_scale|"
    r"_CHECKPOINTABLE_OBJECT_GRAPH)$"
    r"|^(optimizer|save_counter|global_step|step)/"
    r"|/\.OPTIMIZER_SLOT/"
)
TF2_SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"
_FLOAT_DTYPES = ("float32", "float64", "bfloat16", "float16")
_TF2_ROOTS = ("encoder/", "model/")

# How a TF tensor becomes its canonical array: "copy", "T" (a [in, out] kernel), "qkv"
# (query/key/value kernel [H, H] or [H, heads, d]), "qkv_bias" ([H] or [heads, d]),
# "attn_out" (attention output kernel [H, H] or [heads, d, H]).
_Rule = tuple[str, str]  # (canonical name, transform)

_TF1_HEADS = tf_rules(1)  # every head's variables: google-research/bert names
_TF2_HEADS = tf_rules(2)  # Model Garden object paths below the root
_TF1_LINEAR = {"kernel": ("weight", "T"), "bias": ("bias", "copy")}
_TF1_NORM = {"gamma": ("weight", "copy"), "beta": ("bias", "copy")}


def _tf1_rule(name: str) -> _Rule | None:
    if m := re.fullmatch(r"bert/embeddings/(word|position|token_type)_embeddings", name):
        return f"embeddings.{m[1]}_embeddings.weight", "copy"
    if m := re.fullmatch(r"bert/embeddings/LayerNorm/(gamma|beta)", name):
        leaf, how = _TF1_NORM[m[1]]
        return f"embeddings.LayerNorm.{leaf}", how
    if m := re.fullmatch(r"bert/encoder/layer_(\d+)/(attention/self/(?:query|key|value)|attention/output/dense|"
                         r"intermediate/dense|output/dense)/(kernel|bias)", name):
        leaf, how = _TF1_LINEAR[m[3]]
        return f"encoder.layer.{int(m[1])}.{m[2].replace('/', '.')}.{leaf}", how
    if m := re.fullmatch(r"bert/encoder/layer_(\d+)/(attention/output|output)/LayerNorm/(gamma|beta)", name):
        leaf, how = _TF1_NORM[m[3]]
        return f"encoder.layer.{int(m[1])}.{m[2].replace('/', '.')}.LayerNorm.{leaf}", how
    if m := re.fullmatch(r"bert/pooler/dense/(kernel|bias)", name):
        leaf, how = _TF1_LINEAR[m[1]]
        return f"pooler.dense.{leaf}", how
    return _TF1_HEADS.get(name)


_TF2_BLOCK = {
    "_attention_layer/_query_dense": "attention.self.query",
    "_attention_layer/_key_dense": "attention.self.key",
    "_attention_layer/_value_dense": "attention.self.value",
    "_attention_layer/_output_dense": "attention.output.dense",
    "_attention_output_dense": "attention.output.dense",  # the older Transformer layer
    "_attention_layer_norm": "attention.output.LayerNorm",
    "_intermediate_dense": "intermediate.dense",
    "_output_dense": "output.dense",
    "_output_layer_norm": "output.LayerNorm",
}


def _tf2_block_rule(layer: int, rest: str) -> _Rule | None:
    if not (m := re.fullmatch(r"(.+)/(kernel|bias|gamma|beta)", rest)) or m[1] not in _TF2_BLOCK:
        return None
    module, leaf = _TF2_BLOCK[m[1]], m[2]
    name = f"encoder.layer.{layer}.{module}.{'weight' if leaf in ('kernel', 'gamma') else 'bias'}"
    if leaf in ("gamma", "beta"):
        return name, "copy"
    if module.startswith("attention.self."):
        return name, "qkv" if leaf == "kernel" else "qkv_bias"
    if module == "attention.output.dense":
        return name, "attn_out" if leaf == "kernel" else "copy"
    return name, "T" if leaf == "kernel" else "copy"


def _tf2_key(name: str) -> str | None:
    """An object-based variable's path below its root (``encoder/``, ``model/``), without the suffix."""
    if not name.endswith(TF2_SUFFIX):
        return None
    key = name[: -len(TF2_SUFFIX)]
    for root in _TF2_ROOTS:
        if key.startswith(root):
            return key[len(root):]
    return key


def _tf2_rule(name: str, num_layers: int) -> _Rule | None:
    key = _tf2_key(name)
    if key is None:
        return None
    if key in _TF2_HEADS:
        return _TF2_HEADS[key]
    embeddings = ("word_embeddings", "position_embeddings", "token_type_embeddings")
    if m := re.fullmatch(r"layer_with_weights-(\d+)/(.+)", key):
        index, rest = int(m[1]), m[2]
        if index <= 2 and rest == "embeddings":
            return f"embeddings.{embeddings[index]}.weight", "copy"
        if index == 3 and rest in ("gamma", "beta"):
            return f"embeddings.LayerNorm.{'weight' if rest == 'gamma' else 'bias'}", "copy"
        if 4 <= index < 4 + num_layers:
            return _tf2_block_rule(index - 4, rest)
        if index == 4 + num_layers and rest in ("kernel", "bias"):
            return f"pooler.dense.{'weight' if rest == 'kernel' else 'bias'}", "T" if rest == "kernel" else "copy"
        return None
    attributes = {"_embedding_layer": 0, "_position_embedding_layer": 1, "_type_embedding_layer": 2}
    if m := re.fullmatch(r"(_embedding_layer|_position_embedding_layer|_type_embedding_layer)/embeddings", key):
        return f"embeddings.{embeddings[attributes[m[1]]]}.weight", "copy"
    if m := re.fullmatch(r"_embedding_norm_layer/(gamma|beta)", key):
        return f"embeddings.LayerNorm.{'weight' if m[1] == 'gamma' else 'bias'}", "copy"
    if m := re.fullmatch(r"_transformer_layers/(\d+)/(.+)", key):
        return _tf2_block_rule(int(m[1]), m[2])
    if m := re.fullmatch(r"_pooler_layer/(kernel|bias)", key):
        return f"pooler.dense.{'weight' if m[1] == 'kernel' else 'bias'}", "T" if m[1] == "kernel" else "copy"
    return None


def _bert_rule(name: str, num_layers: int) -> _Rule | None:
    """BERT's TF1 or TF2 name for ``name``: the scheme other families' TF names map onto."""
    return _tf1_rule(name) or _tf2_rule(name, num_layers)


def _replaces(first: str, second: str) -> str | None:
    """Of two TF names mapped to one canonical weight, the one to read: a head's TF2 variable over
    the encoder's (the NSP pooler, see the module docstring); None when that does not decide."""
    first_is_head, second_is_head = _tf2_key(first) in _TF2_HEADS, _tf2_key(second) in _TF2_HEADS
    if first_is_head == second_is_head:
        return None
    return first if first_is_head else second


def _stored_shapes(how: str, target: tuple[int, ...], heads: int) -> list[tuple[int, ...]]:
    """The TF shapes that produce a canonical ``target`` shape through transform ``how``."""
    if how == "T":
        return [target[::-1]]
    if how == "qkv":  # target [out=H, in=H]
        return [target[::-1], (target[1], heads, target[0] // heads)]
    if how == "qkv_bias":
        return [target, (heads, target[0] // heads)]
    if how == "attn_out":
        return [target[::-1], (heads, target[1] // heads, target[0])]
    return [target]


def _transform(array: np.ndarray, how: str, target: tuple[int, ...]) -> np.ndarray:
    """One copy from the mapped bytes to a float32 array of the canonical shape.

    Kernels are copied as stored ([in, out], a plain memcpy) and returned as the transposed
    view: shape [out, in] as the canonical scheme says, Fortran-ordered. The exporter stores
    ``weight.T`` again, which is then contiguous, so no transpose is ever materialised.
    """
    if how in ("T", "qkv", "attn_out"):
        return np.array(array.reshape(target[1], target[0]), dtype=np.float32, order="C").T
    return np.array(array.reshape(target), dtype=np.float32, order="C")


def find_prefix(path: Path | str) -> Path:
    """The checkpoint prefix ``path`` names: a prefix, its ``.index`` file, or a directory holding one."""
    path = Path(path)
    if path.name.endswith(".index") and path.is_file():
        return path.with_name(path.name[: -len(".index")])
    if Path(f"{path}.index").is_file():
        return path
    if not path.is_dir():
        raise SourceNotFoundError(f"{path}: neither a TF checkpoint prefix (no {path.name}.index) nor a directory")
    if (path / "bert_model.ckpt.index").is_file():
        return path / "bert_model.ckpt"
    state = path / "checkpoint"  # TF's checkpoint state file names the latest checkpoint
    if state.is_file():
        with open(state, "rb") as f:  # a few lines; its first 64 kB are all that is read
            text = f.read(STATE_FILE_BYTES).decode("utf-8", errors="replace")
        m = re.search(r'^model_checkpoint_path:\s*"(.+)"\s*$', text, re.M)
        if m:  # only its name: the path it was saved under may be another machine's, or outside this directory
            latest = path / PurePath(m[1].replace("\\", "/")).name
            if latest != path and Path(f"{latest}.index").is_file():
                return latest
    indexes = sorted(path.glob("*.index"))
    if len(indexes) == 1:
        return indexes[0].with_name(indexes[0].name[: -len(".index")])
    if not indexes:
        raise SourceNotFoundError(f"{path}: no TF checkpoint (*.index) in this directory")
    names = ", ".join(p.name[: -len(".index")] for p in indexes[:4])
    raise CheckpointFormatError(f"{path} holds several checkpoints ({names}); give the prefix of the one to read, "
                                f"e.g. {path / indexes[-1].name[: -len('.index')]}")


def is_tf_checkpoint(path: Path) -> bool:
    """True for a TF checkpoint prefix (its ``.index`` exists), its ``.index`` file, or a directory holding one."""
    path = Path(path)
    if Path(f"{path}.index").is_file() or (path.name.endswith(".index") and path.is_file()):
        return True
    return path.is_dir() and any(path.glob("*.index"))


def list_tensors(path: Path | str) -> list[tuple[str, str, tuple[int, ...]]]:
    """(name, dtype, shape) of every tensor in the checkpoint, sorted by name (like TF's list_variables)."""
    with BundleReader(find_prefix(path)) as reader:
        return [(e.name, e.dtype_name, e.shape) for e in reader.entries.values()]


def inspect_ckpt_table(path: Path | str) -> list[tuple[str, str, str]]:
    """Rows for ``mbexport inspect-ckpt PATH``: name, dtype, shape (``[30522, 768]``)."""
    return [(name, dtype, "[" + ", ".join(map(str, shape)) + "]") for name, dtype, shape in list_tensors(path)]


def _read_config(directory: Path, prefix: Path) -> tuple[Path, dict[str, Any]]:
    for name in CONFIG_FILES:
        if (directory / name).is_file():
            return directory / name, read_json(directory / name)
    raise CheckpointFormatError(f"{directory / CONFIG_FILES[0]} is missing: a TF BERT checkpoint needs its "
                                f"bert_config.json next to {prefix.name}.index (copy the one it was released with)")


def load_tf_checkpoint(path: Path, label: str | None = None) -> Checkpoint:
    """Read a TF1 (or TF2 Model Garden) BERT checkpoint with its bert_config.json and vocab.txt."""
    prefix = find_prefix(path)
    directory = prefix.parent
    label = label or str(path)
    config_path, config = _read_config(directory, prefix)
    vocab = directory / "vocab.txt"
    if not vocab.is_file():
        raise CheckpointFormatError(f"{vocab} is missing: mbexport needs the WordPiece vocabulary next to "
                                    f"{prefix.name}.index (copy the vocab.txt the model was released with)")
    with BundleReader(prefix) as reader:
        family = detect_family(config, reader.entries, str(config_path))
        num_layers = family.spec_from_config(config, where=str(config_path)).num_layers  # a bad config fails first
        reader.check_shards()
        plan: dict[str, tuple[str, str]] = {}  # canonical -> (TF name, transform)
        for entry in reader:
            if _SKIP.search(entry.name):
                continue
            rule = family.tf_rule(entry.name, config, num_layers, _bert_rule)
            if rule == OTHER_NETWORK:
                continue
            if rule is None:
                raise CheckpointFormatError(
                    f"{reader.index_path}: tensor {entry.name!r} ({entry.dtype_name} {list(entry.shape)}) is not part "
                    f"of a {family.display} layout mbexport reads (TF1 bert/* and cls/*, TF2 Model Garden encoder "
                    f"and heads, ELECTRA's electra/* and generator/*); check this is a {family.display} checkpoint")
            canonical, how = rule
            if canonical in plan:
                kept = _replaces(plan[canonical][0], entry.name)
                if kept is None:
                    raise CheckpointFormatError(f"{reader.index_path}: tensors {plan[canonical][0]!r} and "
                                                f"{entry.name!r} both map to {canonical!r}")
                if kept == plan[canonical][0]:
                    continue
            plan[canonical] = (entry.name, how)
        if not plan:
            raise CheckpointFormatError(f"{reader.index_path}: no {family.display} weights in this checkpoint (only "
                                        f"{len(reader.entries)} optimizer or bookkeeping tensors)")

        if "classifier.weight" in plan and "num_labels" not in config and "id2label" not in config:
            config = {**config, "num_labels": reader.entries[plan["classifier.weight"][0]].shape[0]}
        spec = family.spec_from_config(config, heads=family.detect_heads(set(plan), config), where=str(config_path))
        shapes = spec.known_shapes()

        weights: dict[str, np.ndarray] = {}
        for canonical, (tf_name, how) in plan.items():
            entry = reader.entries[tf_name]
            target = shapes.get(canonical)
            if target is None:
                raise CheckpointFormatError(f"{reader.index_path}: tensor {tf_name!r} maps to {canonical!r}, "
                                            f"which {config_path.name} does not describe (more layers than "
                                            f"num_hidden_layers={spec.num_layers}?)")
            allowed = _stored_shapes(how, target, spec.num_heads)
            if entry.shape not in allowed:
                raise ShapeError(
                    f"{reader.index_path}: tensor {tf_name!r} has shape {list(entry.shape)} but "
                    f"{config_path.name} implies {list(allowed[0])}; the config and the checkpoint come from "
                    "different models")
            if entry.dtype_name not in _FLOAT_DTYPES:
                raise CheckpointFormatError(f"{reader.index_path}: tensor {tf_name!r} has dtype {entry.dtype_name}; "
                                            "a BERT weight must be float32, float16, bfloat16 or float64")
            array = reader.view(tf_name)
            if entry.dtype_name == "bfloat16":  # stored as its uint16 bits
                array = widen_bfloat16(array)
            weights[canonical] = _transform(array, how, target)
            del array
        files = [reader.index_path, *reader.shard_paths()]

    checkpoint = Checkpoint(
        spec=spec,
        weights=weights,
        vocab_file=vocab,
        source=label,
        weights_sha256=sha256_files(files),
        config=config,
    )
    checkpoint.validate()
    return checkpoint


def download_patterns(repo_files: list[str]) -> list[str]:
    """The first top-level TF checkpoint of a repo with these files and its config ([] when it has none)."""
    indexes = [f for f in repo_files if f.endswith(".ckpt.index") and "/" not in f]
    return [f"{indexes[0].removesuffix('.index')}.*", CONFIG_FILES[0]] if indexes else []


def _load(path: Path, label: str, revision: str | None) -> Checkpoint:
    checkpoint = load_tf_checkpoint(path, label)
    checkpoint.revision = checkpoint.revision or revision
    return checkpoint


FORMAT = register(SourceFormat("tf_checkpoint", is_tf_checkpoint, _load, download_patterns))
