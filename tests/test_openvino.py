"""The reduced-precision CPU path: device='openvino' (OpenVINO's CPU plugin) in fp32, bf16 and calibrated
int8, against onnxruntime's fp32 rows of the real MiniLM on multilingual faker texts; ``mbexport calibrate``
and the int8 model it writes (quantizers where the rule says, float where it does not, sha256-checked);
the CLI round trip; and the errors for every combination that cannot run."""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import get_args

import numpy as np
import pytest
from conftest import run_mbexport
from faker import Faker

import mbexport
from mbexport import Embedder, cli
from mbexport._openvino import cpu_has_bf16
from mbexport.calibration import MAX_TEXT_BYTES, MIN_TEXTS, kept_in_float, read_texts_file
from mbexport.errors import ArgumentError, ExportDirError, InputFileError, MissingExtraError
from mbexport.layout import CALIBRATED_INT8, INT8_MODEL, INT8_WEIGHTS, MODEL, read_manifest
from mbexport.runtime.backends import COMPUTES
from mbexport.runtime.backends.openvino import OpenVinoCpu
from mbexport.serve.server import load_embedders

LOCALES = ["en_US", "de_DE", "fr_FR", "es_ES", "ru_RU", "zh_CN", "ja_JP", "it_IT", "pl_PL", "pt_BR"]
CALIBRATION_TEXTS = 320


def faker_texts(n: int, seed: int) -> list[str]:
    """40% one sentence, 35% three, 18% eight, 7% twenty (past MiniLM's 256 tokens): the bench's mix."""
    rng = random.Random(seed)
    fake = Faker(LOCALES)
    fake.seed_instance(seed)
    return [fake.paragraph(nb_sentences=1 if r < 0.40 else 3 if r < 0.75 else 8 if r < 0.93 else 20)
            for r in (rng.random() for _ in range(n))]


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Rows are L2-normalised (MiniLM's export normalises): the per-text cosine is the row dot product."""
    return float((a * b).sum(1).min())


@pytest.fixture(scope="module")
def minilm_export(minilm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mbexport.converter import convert

    return Path(convert(str(minilm_dir), out=tmp_path_factory.mktemp("ov") / "minilm", head="base", parity=False))


@pytest.fixture(scope="module")
def held_out() -> list[str]:
    return faker_texts(300, seed=2)


@pytest.fixture(scope="module")
def fp32_rows(minilm_export: Path, held_out: list[str]) -> np.ndarray:
    """onnxruntime's CPU provider: the reference every other compute is held to."""
    return Embedder(minilm_export).embed(held_out)


@pytest.fixture(scope="module")
def calibration_texts() -> list[str]:
    """Another seed than the held-out texts; one line each."""
    return [t.replace("\n", " ") for t in faker_texts(CALIBRATION_TEXTS, seed=1)]


@pytest.fixture(scope="module")
def cli_calibration(minilm_export: Path, calibration_texts: list[str],
                    tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, subprocess.CompletedProcess]:
    """``mbexport calibrate COPY --texts FILE --limit 320`` on a copy of the export, once per module (~40 s):
    the file has a blank line between texts and 10 texts past the limit. (export, texts file, the run)."""
    out = tmp_path_factory.mktemp("calibrated") / "minilm"
    shutil.copytree(minilm_export, out)
    texts_file = out.parent / "calibration.txt"
    extra = [t.replace("\n", " ") for t in faker_texts(10, seed=3)]
    texts_file.write_text("\n\n".join(calibration_texts + extra) + "\n", encoding="utf-8")
    result = run_mbexport("calibrate", str(out), "--texts", str(texts_file), "--limit", str(CALIBRATION_TEXTS),
                          text=True)
    assert result.returncode == 0, result.stderr
    return out, texts_file, result


@pytest.fixture(scope="module")
def calibrated(cli_calibration: tuple[Path, Path, subprocess.CompletedProcess]) -> Path:
    """The export with its calibrated int8 model."""
    return cli_calibration[0]


def test_compute_choices_are_the_apis() -> None:
    assert get_args(cli.Compute) == COMPUTES == ("fp32", "bf16", "int8")
    assert OpenVinoCpu.computes == COMPUTES and OpenVinoCpu.device == "cpu"


def test_fp32_equals_onnxruntime(minilm_export: Path, held_out: list[str], fp32_rows: np.ndarray) -> None:
    """Same graph, same batches, fp32 both: max |diff| 3e-7 measured here, bound 1e-5."""
    emb = Embedder(minilm_export, device="openvino")
    rows = emb.embed(held_out)
    assert type(emb.backend) is OpenVinoCpu and emb.compute == "fp32"
    assert np.abs(rows - fp32_rows).max() <= 1e-5
    assert emb.stats.truncated > 0 and emb.stats.texts == len(held_out)  # the long texts were cut at 256


def test_windows_of_several_batches_run_them_at_once_in_order(minilm_export: Path, held_out: list[str],
                                                              fp32_rows: np.ndarray) -> None:
    """Several batches of a window run at once on the throughput compilation (one request per stream),
    read back in order: the same rows as onnxruntime; a one-batch window stays on the latency model."""
    emb = Embedder(minilm_export, device="openvino", threads=2, batch_tokens=512)
    one = emb.embed(held_out[:1])
    assert emb.stats.batches == 1 and emb.backend.requests(1) == [emb.backend.request]
    rows = emb.embed(held_out)
    streams = emb.backend.requests(emb.stats.batches)
    assert len(streams) >= 2 and emb.backend.request not in streams  # 2 streams of 1 thread on 2 threads
    assert emb.stats.batches > 3 * len(streams)  # every request ran several batches, each read before reuse
    assert np.abs(rows - fp32_rows).max() <= 1e-5
    np.testing.assert_allclose(one[0], rows[0], atol=1e-5)

def test_bf16_close_to_fp32(minilm_export: Path, held_out: list[str], fp32_rows: np.ndarray) -> None:
    """bf16 where the CPU has it (min cosine 0.9999 measured here, bound 0.999), and really not fp32;
    a CPU without bf16 arithmetic refuses it with the fix."""
    if not cpu_has_bf16():
        with pytest.raises(ArgumentError, match="compute='bf16' needs a CPU with bf16 arithmetic"):
            Embedder(minilm_export, device="openvino", compute="bf16")
        return
    rows = Embedder(minilm_export, device="openvino", compute="bf16").embed(held_out)
    assert min_cosine(rows, fp32_rows) >= 0.999
    assert np.abs(rows - fp32_rows).max() > 1e-4  # bf16's 8-bit mantissa shows: the hint took effect


def test_int8_on_held_out_texts(calibrated: Path, held_out: list[str], fp32_rows: np.ndarray) -> None:
    """Calibrated on 320 texts, run on 300 others: min cosine 0.993 measured here, bound 0.99."""
    emb = Embedder(calibrated, device="openvino", compute="int8")
    assert emb.backend.model_path == calibrated / INT8_MODEL
    rows = emb.embed(held_out)
    assert min_cosine(rows, fp32_rows) >= 0.99
    assert np.abs(rows - fp32_rows).max() > 1e-3  # int8, not the fp32 model


def test_int8_model_quantizes_by_the_rule(calibrated: Path, calibration_texts: list[str]) -> None:
    """Every weight MatMul but the FFN output projections reads an int8 weight and a quantized input; the
    attention products and FFN output projections stay float. The record says what made it."""
    import openvino as ov

    manifest = read_manifest(calibrated)
    intermediate = manifest["model"]["intermediate"]
    layers = manifest["model"]["layers"]
    kept = kept_in_float(ov.Core().read_model(str(calibrated / MODEL)), intermediate)
    assert len(kept) == 3 * layers  # per layer: attention scores, context, FFN output projection

    def source(op, i: int):
        return op.input(i).get_source_output().get_node()

    def weight(op):
        """The constant a MatMul's second input comes from (through dequantizing), or None (attention)."""
        node = source(op, 1)
        while node.get_type_name() in ("Multiply", "Subtract", "Convert"):
            node = source(node, 0)
        return node if node.get_type_name() == "Constant" else None

    kinds = []
    for op in ov.Core().read_model(str(calibrated / INT8_MODEL)).get_ordered_ops():
        if op.get_type_name() != "MatMul":
            continue
        quantized_input = source(op, 0).get_type_name() == "FakeQuantize"
        constant = weight(op)
        if constant is None:
            kinds.append("attention")
            assert not quantized_input, op.get_friendly_name()
            continue
        shape = list(constant.get_output_shape(0))
        inner = shape[-1] if op.get_attributes()["transpose_b"] else shape[-2]
        if constant.get_output_element_type(0) == ov.Type.f32:
            kinds.append("float")
            assert inner == intermediate and not quantized_input, op.get_friendly_name()
        else:
            kinds.append("int8")
            assert constant.get_output_element_type(0) == ov.Type.i8 and inner != intermediate and quantized_input
            # 7-bit weights (the overflow fix): no u8 x s8 saturation on CPUs without VNNI
            assert np.abs(constant.get_data().astype(np.int32)).max() <= 64, op.get_friendly_name()
    # QKV, attention output, FFN input per layer and the pooler in int8; the rule's MatMuls in float
    assert (kinds.count("int8"), kinds.count("attention"), kinds.count("float")) == (3 * layers + 1, 2 * layers, layers)

    record = manifest[CALIBRATED_INT8]
    digest = hashlib.sha256("".join(t + "\n" for t in calibration_texts).encode()).hexdigest()
    assert record["texts"] == CALIBRATION_TEXTS and record["texts_sha256"] == digest
    assert record["from"] == {MODEL: manifest["files"][MODEL]["sha256"]} and record["kept_in_float_ops"] == len(kept)
    assert record["overflow_fix"] == "enable"
    for name in (INT8_MODEL, INT8_WEIGHTS):
        data = (calibrated / name).read_bytes()
        assert record["files"][name] == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    assert record["openvino"] == ov.__version__.split("-")[0] and record["max_length"] == 256


def test_calibrated_export_stays_an_export(calibrated: Path, tmp_path: Path, tiny_checkpoint) -> None:
    """The other manifest readers take the rewritten manifest (info, the fp32 Embedder); convert replaces a
    calibrated export as its own (the int8 files are export files), dropping the record; the rule holds for
    another model size (tiny BERT: hidden 36, intermediate 52)."""
    info = run_mbexport("info", str(calibrated))
    assert info.returncode == 0, info.stderr
    assert Embedder(calibrated).embed(["hello"]).shape == (1, 384)
    from mbexport.converter import convert

    checkpoint = tiny_checkpoint(head="base")
    out = Path(convert(str(checkpoint), out=tmp_path / "tiny", head="base", parity=False))
    mbexport.calibrate(out, faker_texts(MIN_TEXTS, seed=5))
    assert read_manifest(out)[CALIBRATED_INT8]["kept_in_float_ops"] == 3 * 2
    assert Embedder(out, device="openvino", compute="int8").embed(["hello world"]).shape == (1, 36)
    convert(str(checkpoint), out=out, head="base", parity=False)
    assert CALIBRATED_INT8 not in read_manifest(out) and not (out / INT8_MODEL).exists()
    with pytest.raises(ExportDirError, match=f"no calibrated int8 model .* mbexport calibrate {out} --texts FILE"):
        Embedder(out, device="openvino", compute="int8")


def test_tampered_int8_model_is_refused(calibrated: Path, tmp_path: Path) -> None:
    copy = tmp_path / "minilm"
    shutil.copytree(calibrated, copy)
    data = bytearray((copy / INT8_WEIGHTS).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / INT8_WEIGHTS).write_bytes(bytes(data))  # same size: only the sha256 tells
    with pytest.raises(ExportDirError, match=f"{INT8_WEIGHTS} does not match its manifest .* re-run mbexport "
                                             f"calibrate {copy} --texts FILE"):
        Embedder(copy, device="openvino", compute="int8")
    (copy / INT8_WEIGHTS).write_bytes((calibrated / INT8_WEIGHTS).read_bytes())
    manifest = json.loads((copy / "mbexport.json").read_text())
    manifest[CALIBRATED_INT8]["from"][MODEL] = "0" * 64  # as if model.onnx had been rebuilt since
    (copy / "mbexport.json").write_text(json.dumps(manifest))
    with pytest.raises(ExportDirError, match=f"{INT8_MODEL} was calibrated from another {MODEL}; re-run mbexport "
                                             f"calibrate {copy} --texts FILE"):
        Embedder(copy, device="openvino", compute="int8")
    manifest[CALIBRATED_INT8]["files"].pop(INT8_WEIGHTS)
    (copy / "mbexport.json").write_text(json.dumps(manifest))
    with pytest.raises(ExportDirError, match=f"'calibrated_int8' must list {INT8_MODEL} and {INT8_WEIGHTS}"):
        Embedder(copy, device="openvino", compute="int8")


def test_cli_calibrate_then_embed_int8(cli_calibration: tuple[Path, Path, subprocess.CompletedProcess],
                                      tmp_path: Path, held_out: list[str]) -> None:
    """``mbexport calibrate`` (blank lines skipped, --limit) then ``mbexport embed --device openvino --compute
    int8``: the rows the Python API gives for that model (equal: same model, same batches)."""
    export, texts_file, result = cli_calibration
    assert f"{CALIBRATION_TEXTS} texts of {texts_file}" in result.stdout and "INFO:nncf" not in result.stdout
    assert read_manifest(export)[CALIBRATED_INT8]["texts"] == CALIBRATION_TEXTS
    inputs = tmp_path / "in.txt"
    inputs.write_text("\n".join(t.replace("\n", " ") for t in held_out[:40]) + "\n", encoding="utf-8")
    out = tmp_path / "out.npy"
    result = run_mbexport("embed", str(export), str(inputs), "--out", str(out), "--device", "openvino",
                          "--compute", "int8", text=True)
    assert result.returncode == 0, result.stderr
    assert "openvino (int8)" in result.stdout
    want = Embedder(export, device="openvino", compute="int8").embed(inputs.read_text(encoding="utf-8").splitlines())
    np.testing.assert_allclose(np.load(out), want, atol=1e-6)


def test_compute_errors(minilm_export: Path) -> None:
    with pytest.raises(ArgumentError, match=r"compute='bf16' runs on device='openvino' \(pip install "
                                            r"'mbexport\[openvino\]'\), not device='cpu'"):
        Embedder(minilm_export, device="cpu", compute="bf16")
    with pytest.raises(ArgumentError, match="compute='int8' runs on device='openvino'"):
        Embedder(minilm_export, device="auto", compute="int8")
    with pytest.raises(ArgumentError, match=r"compute \(--compute\) must be one of fp32, bf16, int8, got 'fp8'"):
        Embedder(minilm_export, device="openvino", compute="fp8")
    with pytest.raises(ExportDirError, match=f"{minilm_export} has no calibrated int8 model for compute='int8'; "
                                             f"make one with: mbexport calibrate {minilm_export} --texts FILE"):
        Embedder(minilm_export, device="openvino", compute="int8")
    result = run_mbexport("embed", str(minilm_export), "-", "--out", "-", "--compute", "bf16", input=b"hi\n")
    assert result.returncode == 2 and b"error: compute='bf16' runs on device='openvino'" in result.stderr


def test_reduced_compute_needs_an_fp32_export(minilm_dir: Path, tmp_path: Path) -> None:
    from mbexport.converter import convert

    fp16 = Path(convert(str(minilm_dir), out=tmp_path / "fp16", head="base", precision="fp16", parity=False))
    with pytest.raises(ArgumentError, match=f"compute='bf16' runs an fp32 export, and {fp16} is fp16; convert "
                                            "with --precision fp32"):
        Embedder(fp16, device="openvino", compute="bf16")
    with pytest.raises(ArgumentError, match=f"{fp16} is a fp16 export; calibrate an fp32 one"):
        mbexport.calibrate(fp16, faker_texts(MIN_TEXTS, seed=4))


def test_calibration_texts_are_checked(minilm_export: Path, tmp_path: Path) -> None:
    """Too few texts, an empty file, a line that is not UTF-8 or over 64 MiB, a bad --limit: refused before any work."""
    with pytest.raises(ArgumentError, match=f"calibration needs at least {MIN_TEXTS} texts .* got 10"):
        mbexport.calibrate(minilm_export, ["some text"] * 10)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n", encoding="utf-8")
    result = run_mbexport("calibrate", str(minilm_export), "--texts", str(empty))
    assert result.returncode == 2 and f"calibration needs at least {MIN_TEXTS} texts".encode() in result.stderr
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("one\ntwo\ncaf\xe9\n".encode("latin-1"))
    result = run_mbexport("calibrate", str(minilm_export), "--texts", str(latin1))
    assert result.returncode == 1
    assert result.stderr.decode().strip() == f"error: {latin1}:3: not valid UTF-8; calibration texts are UTF-8, one per line"
    huge = tmp_path / "huge.txt"
    with open(huge, "wb") as f:
        f.write(b"first text\n")
        for _ in range((MAX_TEXT_BYTES >> 20) + 1):
            f.write(b"word " * ((1 << 20) // 5 + 1))
    with pytest.raises(InputFileError, match=f"{huge}:2: the line is over 64 MiB"):
        read_texts_file(huge)  # refused after reading 64 MiB of it, never the whole line
    result = run_mbexport("calibrate", str(minilm_export), "--texts", str(empty), "--limit", "8")
    assert result.returncode == 2 and f"limit (--limit) must be an integer >= {MIN_TEXTS}".encode() in result.stderr
    assert CALIBRATED_INT8 not in read_manifest(minilm_export)


def test_serve_builds_its_embedders_with_compute(minilm_export: Path) -> None:
    compute = "bf16" if cpu_has_bf16() else "fp32"
    (embedder,) = load_embedders([minilm_export], ["minilm"], device="openvino", compute=compute).values()
    assert embedder.compute == compute and embedder.backend.compute == compute
    help_text = run_mbexport("serve", "--help", env={"COLUMNS": "200"}).stdout.decode()
    assert "--compute" in help_text and "fp32|bf16|int8" in help_text


@pytest.mark.parametrize(("blocked", "openvino_device"), [
    ("openvino", "MissingExtraError device='openvino' is not usable here: mbexport's OpenVINO path needs openvino "
                 "and nncf (openvino is missing); pip install 'mbexport[openvino]'"),
    ("nncf", "usable"),  # fp32/bf16 on OpenVINO need no nncf; calibrating does
])
def test_missing_extra_is_named(minilm_export: Path, blocked: str, openvino_device: str) -> None:
    """openvino (or nncf) blocked as if uninstalled: the onnxruntime path still works, and the OpenVINO path
    fails with one line naming the extra."""
    script = (f"import sys; sys.modules[{blocked!r}] = None\n"
              "import mbexport\n"
              f"mbexport.Embedder({str(minilm_export)!r})\n"
              "for call in (lambda: mbexport.Embedder(sys.argv[1], device='openvino'),\n"
              "             lambda: mbexport.calibrate(sys.argv[1], ['text'] * 64)):\n"
              "    try:\n        call()\n        print('usable')\n"
              "    except ImportError as e:\n        print(type(e).__name__, e)")
    result = subprocess.run([sys.executable, "-c", script, str(minilm_export)], capture_output=True, text=True,
                            timeout=300, cwd=tempfile.gettempdir(), check=False)
    assert result.returncode == 0, result.stderr
    device_line, calibrate_line = result.stdout.strip().splitlines()[-2:]
    assert device_line == openvino_device
    assert calibrate_line == (f"MissingExtraError mbexport's OpenVINO path needs openvino and nncf ({blocked} is "
                              "missing); pip install 'mbexport[openvino]'")
    assert issubclass(MissingExtraError, ImportError)
