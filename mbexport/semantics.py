"""What an export's vectors mean: pooling, normalisation and maximum length, in one place.

A sentence-transformers model says it in its own files::

    modules.json                 the module chain: Transformer (path ""), Pooling, Normalize
    sentence_bert_config.json    max_seq_length (tokens, [CLS] and [SEP] included), do_lower_case
                                 (lowercase the text first: the converter writes it into the export's
                                 tokenizer_config.json, accents kept, as sentence-transformers does)
    1_Pooling/config.json        pooling_mode (or the legacy pooling_mode_*_token booleans)
    config_sentence_transformers.json   prompts, similarity function (carried, not interpreted; a
                                 default prompt, which ``encode`` prepends to every text, is refused)

``sentence_transformers_files`` lists those files (the converter carries them into the export
with the same relative layout, so ``SentenceTransformer(export_dir, backend="onnx")`` loads it);
``read_semantics`` turns them into ``EmbeddingSemantics``. A directory without ``modules.json``
gets the documented defaults (``cls``, no normalisation, the model's maximum length) and says
so in ``origin``. The converter writes the result into the manifest (``"embedding"``); the
Embedder and ``mbexport embed`` read it back with ``export_semantics``.

Chains the Embedder cannot reproduce (max / weightedmean / lasttoken / concatenated pooling,
Dense or other modules after pooling, modules out of the Transformer -> Pooling -> Normalize order,
a default prompt, a max_seq_length that is no integer in [2, the model's positions]) are refused at
convert time: an export never claims a meaning its Embedder would silently get wrong.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mbexport import jsonfiles
from mbexport.errors import CheckpointFormatError

__all__ = ["DEFAULT", "EmbeddingSemantics", "export_semantics", "read_semantics", "resolve",
           "sentence_transformers_files"]

ST_TOP_FILES = ("modules.json", "sentence_bert_config.json", "config_sentence_transformers.json")
# sentence-transformers module class name -> what the Embedder does for it.
_MODULES = ("Transformer", "Pooling", "Normalize")
# pooling_mode values of sentence-transformers' Pooling module that the Embedder implements.
_POOLINGS = ("cls", "mean")
_LEGACY_MODES = {"pooling_mode_cls_token": "cls", "pooling_mode_max_tokens": "max",
                 "pooling_mode_mean_tokens": "mean", "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
                 "pooling_mode_weightedmean_tokens": "weightedmean", "pooling_mode_lasttoken": "lasttoken"}


@dataclass(frozen=True)
class EmbeddingSemantics:
    """How token states become a text's vector; ``max_length`` None = the model's maximum."""

    pooling: str = "cls"
    normalize: bool = False
    max_length: int | None = None
    origin: str = "default"  # "sentence-transformers" (read from the source's files) or "default"
    lowercase: bool = False  # sentence_bert_config's do_lower_case; the export's tokenizer config carries it

    def to_dict(self) -> dict[str, Any]:
        """The manifest's ``"embedding"`` record."""
        return {"pooling": self.pooling, "normalize": self.normalize, "max_length": self.max_length,
                "from": self.origin}


DEFAULT = EmbeddingSemantics()


def sentence_transformers_files(directory: Path) -> dict[str, Path]:
    """The sentence-transformers files of ``directory`` (relative name -> path); empty if it has none."""
    if not (directory / "modules.json").is_file():
        return {}
    files = {name: directory / name for name in ST_TOP_FILES if (directory / name).is_file()}
    for module in _modules(directory):
        sub = str(module.get("path") or "")
        if sub and (directory / sub).is_dir():
            files.update({f"{sub}/{p.name}": p for p in sorted((directory / sub).iterdir()) if p.is_file()})
    return files


def read_semantics(directory: Path, max_positions: int | None = None) -> EmbeddingSemantics:
    """The embedding semantics ``directory``'s sentence-transformers files define (or ``DEFAULT``);
    ``max_positions`` (the model's position embeddings) bounds ``max_seq_length``."""
    if not (directory / "modules.json").is_file():
        return DEFAULT
    pooling, normalize = None, False
    where = directory / "modules.json"
    kinds = []
    for module in _modules(directory):
        kind = str(module.get("type", "")).rsplit(".", 1)[-1]
        if kind not in _MODULES:
            raise CheckpointFormatError(
                f"{where}: module {kind or module!r} is not supported (mbexport reproduces "
                f"{', '.join(_MODULES)}); export the Transformer alone from a copy without modules.json")
        if kind == "Transformer" and module.get("path"):
            raise CheckpointFormatError(f"{where}: the Transformer lives in {module['path']!r}; "
                                        "convert that directory (it holds the weights) instead")
        if kind == "Pooling":
            pooling = _pooling_mode(directory / str(module.get("path", "")) / "config.json")
        normalize = normalize or kind == "Normalize"
        kinds.append(kind)
    if pooling is None:
        raise CheckpointFormatError(f"{where}: no Pooling module, so the model defines no sentence vector; "
                                    "add one or convert a copy without modules.json")
    if kinds not in (["Transformer", "Pooling"], ["Transformer", "Pooling", "Normalize"]):
        raise CheckpointFormatError(f"{where}: modules {' -> '.join(kinds)} are not Transformer -> Pooling "
                                    "(-> Normalize), the only chain mbexport reproduces; fix the module order")
    _check_no_default_prompt(directory / "config_sentence_transformers.json")
    max_length, lowercase = None, False
    if (directory / "sentence_bert_config.json").is_file():
        config = _read(directory / "sentence_bert_config.json")
        config = config if isinstance(config, dict) else {}
        max_length = _max_seq_length(directory / "sentence_bert_config.json", config.get("max_seq_length"),
                                     max_positions)
        lowercase = config.get("do_lower_case") is True
    return EmbeddingSemantics(pooling, normalize, max_length, "sentence-transformers", lowercase)


def export_semantics(manifest: dict[str, Any]) -> EmbeddingSemantics:
    """The semantics an export's manifest records (exports made before it was recorded: ``DEFAULT``)."""
    record = manifest.get("embedding")
    if not isinstance(record, dict):
        return DEFAULT
    max_length = record.get("max_length")
    return EmbeddingSemantics(str(record.get("pooling", "cls")), bool(record.get("normalize", False)),
                              int(max_length) if isinstance(max_length, int) else None,
                              str(record.get("from", "default")))


def resolve(semantics: EmbeddingSemantics, pooling: str | None, normalize: bool | None,
            max_length: int | None) -> tuple[EmbeddingSemantics, dict[str, str]]:
    """Explicit settings over ``semantics``; also where each setting came from ("option" or its origin)."""
    chosen = EmbeddingSemantics(
        semantics.pooling if pooling is None else pooling,
        semantics.normalize if normalize is None else normalize,
        semantics.max_length if max_length is None else max_length,
        semantics.origin,
    )
    origin = semantics.origin if semantics.max_length is not None else "default"
    origins = {"pooling": semantics.origin if pooling is None else "option",
               "normalize": semantics.origin if normalize is None else "option",
               "max_length": origin if max_length is None else "option"}
    return chosen, origins


def _read(path: Path) -> Any:
    try:
        return jsonfiles.read(path)
    except OSError as e:
        raise CheckpointFormatError(f"{path} cannot be read ({e.strerror}); sentence-transformers needs it") from None
    except ValueError as e:
        raise CheckpointFormatError(f"{path} is not valid JSON ({e}); re-download or fix the file") from None


def _modules(directory: Path) -> list[dict[str, Any]]:
    modules = _read(directory / "modules.json")
    if not isinstance(modules, list) or not all(isinstance(m, dict) for m in modules):
        raise CheckpointFormatError(f"{directory / 'modules.json'}: expected a list of modules; re-download it")
    for module in modules:
        sub = Path(str(module.get("path") or ""))
        if sub.is_absolute() or ".." in sub.parts:
            raise CheckpointFormatError(f"{directory / 'modules.json'}: module path {str(sub)!r} leaves the "
                                        "model directory; module paths must be relative folders inside it")
    return modules


def _max_seq_length(path: Path, value: Any, max_positions: int | None) -> int | None:
    """``max_seq_length`` as sentence-transformers truncates with it (None: the model's maximum);
    CheckpointFormatError for a value it cannot mean (not an integer, < 2, past the model's positions)."""
    if value is None:
        return None
    high = max_positions if max_positions is not None else value
    if not isinstance(value, int) or isinstance(value, bool) or not 2 <= value <= high:
        bound = f"in [2, {max_positions}] (the model's position embeddings)" if max_positions else ">= 2"
        raise CheckpointFormatError(f"{path}: max_seq_length {value!r} is not an integer {bound}; "
                                    "set it to the tokens a text may have, or remove it for the model's maximum")
    return value


def _check_no_default_prompt(path: Path) -> None:
    """sentence-transformers prepends ``prompts[default_prompt_name]`` to every text it encodes; the
    Embedder does not, so such a model is refused rather than exported with another meaning."""
    config = _read(path) if path.is_file() else {}
    name = config.get("default_prompt_name") if isinstance(config, dict) else None
    prompts = config.get("prompts") if isinstance(config, dict) else None
    prompt = prompts.get(name) if name is not None and isinstance(prompts, dict) else None
    if prompt:
        raise CheckpointFormatError(f"{path}: default_prompt_name {name!r} makes sentence-transformers prepend "
                                    f"{prompt!r} to every text, which mbexport does not do; set it to null in a "
                                    "copy and put the prompt into your texts yourself")


def _pooling_mode(config_path: Path) -> str:
    """sentence-transformers' Pooling mode: ``pooling_mode`` or the legacy booleans (none set = mean)."""
    config = _read(config_path)
    if not isinstance(config, dict):
        raise CheckpointFormatError(f"{config_path}: expected a JSON object; re-download it")
    mode = config.get("pooling_mode")
    if mode is None:
        modes = [m for key, m in _LEGACY_MODES.items() if config.get(key)]
        mode = modes if len(modes) != 1 else modes[0]
        mode = mode or "mean"
    if isinstance(mode, list) and len(mode) == 1:
        mode = mode[0]
    if mode not in _POOLINGS:
        raise CheckpointFormatError(
            f"{config_path}: pooling mode {mode!r} is not supported by the mbexport Embedder "
            f"({' or '.join(_POOLINGS)}); convert a model that pools with one of them")
    return str(mode)
