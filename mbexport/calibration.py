"""Calibrated int8 for OpenVINO's CPU plugin: ``mbexport calibrate`` / :func:`calibrate`.

NNCF's post-training quantization runs the export's model.onnx (as OpenVINO reads it: the fused
Attention ops become MatMuls over constant weights, so their projections quantize too) on padded
batches of real texts, tokenized as the Embedder tokenizes them, and places int8 quantizers from
the activation ranges it saw. Two kinds of MatMul stay in float, chosen by structure, so the rule
holds for both flavors and any model size:

- MatMuls whose second input is not a constant: attention scores (Q·Kᵀ) and context (P·V), whose
  operands change per batch;
- the FFN output projections (weight input dimension = the model's intermediate size): their input,
  after GELU, has outliers that one int8 scale per tensor cannot hold (MiniLM, 2,000 held-out texts,
  SmoothQuant below included: min cosine against fp32 0.934 with all six quantized, 0.933-0.968 with
  any one to five of them, 0.9925 with none).

SmoothQuant runs with alpha 0.5 on the MatMuls it quantizes (NNCF's transformer default is 0.95): it
moves half of each activation channel's range into the weights, so the outlier channels feeding
the attention and FFN-input projections fit the per-tensor int8 scale. On MiniLM, 2,000 held-out
texts, calibrated on 320 others: min cosine against fp32 0.9875 at NNCF's default, 0.992-0.993
at 0.5 (two text sets), at the same speed.

Weights are quantized to 7 bits (NNCF's overflow fix on every layer, where its default fixes only
the first): x86 CPUs without VNNI multiply u8 x s8 with ``vpmaddubsw``, whose 16-bit pair sums
saturate with 8-bit weights. On an AVX2-only EPYC the 8-bit model gave min cosine 0.902 against
fp32 on held-out texts, the 7-bit one 0.993 (mean 0.998) at the same speed; an IR then means the
same on every x86 CPU it is copied to.

The result is an OpenVINO IR (``layout.INT8_MODEL`` + ``layout.INT8_WEIGHTS``) written beside
model.onnx, and a manifest record (``layout.CALIBRATED_INT8``) with both files' sha256, the model.onnx
it came from, how many texts calibrated it (and their digest), the rule, and the tool versions. The
Embedder with ``compute="int8"`` opens it after checking all of that.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from importlib.metadata import version
from itertools import islice
from pathlib import Path
from typing import Any

from mbexport import _openvino
from mbexport.arguments import check_int
from mbexport.errors import ArgumentError, InputFileError, TokenizerInputError
from mbexport.layout import CALIBRATED_INT8, INT8_MODEL, INT8_WEIGHTS, MANIFEST, MODEL
from mbexport.runtime.embedder import Embedder

MIN_TEXTS = 64  # 8 batches: fewer texts give activation ranges that the next texts routinely exceed
DEFAULT_LIMIT = 320  # what the figures in docs/EMBEDDER.md were calibrated on (~10 s for MiniLM on 2 cores)
BATCH = 8  # texts per calibration batch, padded to the longest
MAX_TEXT_BYTES = 1 << 26  # a --texts line past this (64 MiB) is refused before it is held
SMOOTH_QUANT_ALPHA = 0.5  # share of activation range moved into the weights (see the module doc)
OVERFLOW_FIX = "enable"  # 7-bit weights on every layer: no u8 x s8 saturation on CPUs without VNNI (module doc)
KEPT_IN_FLOAT = ("MatMuls whose second input is not a constant (attention scores and context) and the FFN "
                 "output projections (weight input dimension = the model's intermediate size)")


def calibrate(export_dir: str | Path, texts: Iterable[str], limit: int | None = DEFAULT_LIMIT) -> Path:
    """Write the calibrated int8 model of an fp32 export, from the first ``limit`` of ``texts`` (None: all);
    returns its path. ``compute="int8"`` on ``device="openvino"`` then runs it."""
    if limit is not None:
        check_int("limit (--limit)", limit, MIN_TEXTS, why="or None for every text")
    if isinstance(texts, (str, bytes)):
        raise TokenizerInputError("calibrate: pass a list of texts, not a single string")
    chosen = list(islice(texts, limit))
    for i, text in enumerate(chosen):
        if not isinstance(text, str):
            raise TokenizerInputError(f"calibrate: text {i} is {type(text).__name__}, not str; pass strings")
    if len(chosen) < MIN_TEXTS:
        raise ArgumentError(f"calibration needs at least {MIN_TEXTS} texts like the ones you will embed, got "
                            f"{len(chosen)}; pass more (--texts FILE: one text per line)")
    _openvino.openvino()  # before any work: MissingExtraError naming the extra
    nncf = _openvino.nncf()
    embedder = Embedder(export_dir, device="openvino")  # checks the export; its tokenizing
    if embedder.manifest["precision"] != "fp32":
        raise ArgumentError(f"{embedder.export_dir} is a {embedder.manifest['precision']} export; calibrate an "
                            "fp32 one (mbexport convert --precision fp32)")
    model = _openvino.core().read_model(str(embedder.export_dir / MODEL))
    kept = kept_in_float(model, embedder.manifest["model"]["intermediate"])
    inputs = {port.get_any_name() for port in model.inputs}
    batches = [{k: v for k, v in embedder.tokenizer(chosen[i:i + BATCH], padding=True, truncation=True,
                                                    max_length=embedder.max_length, return_tensors="np").items()
                if k in inputs} for i in range(0, len(chosen), BATCH)]
    with _nncf_warnings_only():
        smooth_quant = nncf.AdvancedSmoothQuantParameters(matmul=SMOOTH_QUANT_ALPHA)
        quantized = nncf.quantize(model, nncf.Dataset(batches), model_type=nncf.ModelType.TRANSFORMER,
                                  subset_size=len(batches), ignored_scope=nncf.IgnoredScope(names=kept),
                                  advanced_parameters=nncf.AdvancedQuantizationParameters(
                                      smooth_quant_alphas=smooth_quant, overflow_fix=nncf.OverflowFix(OVERFLOW_FIX)))
    record = {"model": INT8_MODEL, "texts": len(chosen), "texts_sha256": _texts_digest(chosen),
              "max_length": embedder.max_length, "batch": BATCH, "kept_in_float": KEPT_IN_FLOAT,
              "kept_in_float_ops": len(kept),
              "smooth_quant_alpha": SMOOTH_QUANT_ALPHA, "overflow_fix": OVERFLOW_FIX,
              "from": {MODEL: embedder.manifest["files"][MODEL]["sha256"]},
              "openvino": version("openvino"), "nncf": version("nncf")}
    _write(embedder.export_dir, embedder.manifest, quantized, record)
    return embedder.export_dir / INT8_MODEL


def kept_in_float(model: Any, intermediate: int) -> list[str]:
    """Names of the MatMuls of an OpenVINO model that calibration leaves in float (see the module doc)."""
    kept = []
    for op in model.get_ordered_ops():
        if op.get_type_name() != "MatMul":
            continue
        weight = op.input(1).get_source_output().get_node()
        if weight.get_type_name() != "Constant":
            kept.append(op.get_friendly_name())
            continue
        shape = list(weight.get_output_shape(0))
        if len(shape) >= 2 and shape[-1 if op.get_attributes()["transpose_b"] else -2] == intermediate:
            kept.append(op.get_friendly_name())
    return kept


def read_texts_file(path: str | Path, limit: int | None = DEFAULT_LIMIT) -> list[str]:
    """The first ``limit`` non-blank lines of a UTF-8 file, one text per line (``mbexport calibrate --texts``)."""
    texts: list[str] = []
    try:
        with open(path, "rb") as f:
            for number, raw in enumerate(iter(lambda: f.readline(MAX_TEXT_BYTES + 1), b""), start=1):
                if len(raw) > MAX_TEXT_BYTES and not raw.endswith(b"\n"):
                    raise InputFileError(f"{path}:{number}: the line is over {MAX_TEXT_BYTES >> 20} MiB; calibration "
                                         "texts are like the ones you will embed, one per line")
                try:
                    text = raw.decode("utf-8").rstrip("\r\n")
                except UnicodeDecodeError:
                    raise InputFileError(f"{path}:{number}: not valid UTF-8; calibration texts are UTF-8, "
                                         "one per line") from None
                if text.strip():
                    texts.append(text)
                if limit is not None and len(texts) >= limit:
                    break
    except OSError as e:
        raise InputFileError(f"{path}: cannot read the calibration texts ({e.strerror}); check the path") from None
    return texts


@contextmanager
def _nncf_warnings_only() -> Iterator[None]:
    """NNCF logs every quantizer it places (and skips) to stdout at INFO: keep its warnings only, meanwhile."""
    logger = logging.getLogger("nncf")
    items: list[logging.Logger | logging.Handler] = [logger, *logger.handlers]
    levels = [(item, item.level) for item in items]
    for item, _ in levels:
        item.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for item, level in levels:
            item.setLevel(level)


def _texts_digest(texts: list[str]) -> str:
    """sha256 over the texts, each UTF-8 and ended by a newline: says which texts calibrated the model."""
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode("utf-8", "surrogatepass") + b"\n")
    return digest.hexdigest()


def _write(export_dir: Path, manifest: dict[str, Any], quantized: Any, record: dict[str, Any]) -> None:
    """IR and manifest into the export, each by rename (weights, graph, then the manifest naming both), under
    convert's lock; until the manifest lands, the Embedder refuses the files for not matching it."""
    from mbexport.export.writer import export_lock, write_json
    from mbexport.spec import sha256_files

    staging = export_dir.parent / f".{export_dir.name}.calibrate-{os.getpid()}-{secrets.token_hex(4)}"
    with export_lock(export_dir):
        staging.mkdir()
        try:
            # compress_to_fp16=False: the layers kept in float keep their fp32 weights
            _openvino.openvino().save_model(quantized, str(staging / INT8_MODEL), compress_to_fp16=False)
            files = {name: {"bytes": (staging / name).stat().st_size, "sha256": sha256_files([staging / name])}
                     for name in (INT8_MODEL, INT8_WEIGHTS)}
            updated = {**manifest, CALIBRATED_INT8: {**record, "files": files}}  # the read one, unchanged
            write_json(staging / MANIFEST, updated)
            for name in (INT8_WEIGHTS, INT8_MODEL, MANIFEST):
                os.replace(staging / name, export_dir / name)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
