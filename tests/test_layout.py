"""The export directory's contract (mbexport.layout) and the light ``import mbexport``.

The manifest of a real tiny export is damaged one field at a time; each damage must be refused
by ``read_manifest`` with one line naming the file, the field and the fix. The lazy-import tests
run a fresh interpreter, since this process has long imported onnx.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

import pytest
from conftest import write_tiny_checkpoint

from mbexport import layout
from mbexport.errors import ExportDirError


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mbexport.converter import convert

    ckpt = tmp_path_factory.mktemp("ckpt")
    write_tiny_checkpoint(ckpt, head="base", fmt="safetensors")
    return convert(str(ckpt), out=tmp_path_factory.mktemp("exp") / "tiny", head="base", parity=False)


@pytest.fixture
def export(tiny_export: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_export, tmp_path / "export"))


def _rewrite(export: Path, change: Any) -> None:
    path = export / layout.MANIFEST
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


def test_a_written_export_holds_exactly_the_layouts_files(tiny_export: Path) -> None:
    names = {p.name for p in tiny_export.iterdir()}
    assert set(layout.REQUIRED_FILES) <= names <= layout.EXPORT_FILES
    manifest = layout.read_manifest(tiny_export)
    assert manifest["format_version"] == layout.FORMAT_VERSION
    assert set(manifest["files"]) == {layout.MODEL}
    layout.verify_model_files(tiny_export, manifest)


@pytest.mark.parametrize(("change", "needle"), [
    (lambda m: m.update(format_version=2), "manifest format 2, this mbexport reads 1"),
    (lambda m: m.pop("head"), "'head' must be a str, got nothing"),
    (lambda m: m.update(outputs=[1]), "'outputs' must list output names"),
    (lambda m: m["model"].update(layers=True), "model.layers must be a positive integer, got True"),
    (lambda m: m["model"].update(vocab=0), "model.vocab must be a positive integer, got 0"),
    (lambda m: m["source"].pop("label"), "source.label must be a string"),
    (lambda m: m["files"].pop(layout.MODEL), "'files' does not list model.onnx"),
    (lambda m: m["files"].update({"../evil": m["files"][layout.MODEL]}), "lists '../evil', which is not a file"),
    (lambda m: m["files"][layout.MODEL].update(sha256="ab"), "files['model.onnx'] must be"),
])
def test_malformed_manifest_is_one_line_naming_the_field(export: Path, change: Any, needle: str) -> None:
    _rewrite(export, change)
    with pytest.raises(ExportDirError) as error:
        layout.read_manifest(export)
    message = str(error.value)
    assert needle in message and "\n" not in message and "mbexport convert" in message


@pytest.mark.parametrize("missing", [layout.MODEL, layout.CONFIG, layout.VOCAB, layout.TOKENIZER_CONFIG,
                                     layout.MANIFEST])
def test_each_required_file_is_required(export: Path, missing: str) -> None:
    (export / missing).unlink()
    with pytest.raises(ExportDirError, match=f"is missing {missing}; re-run mbexport convert"):
        layout.read_manifest(export)


def test_not_a_directory_and_unreadable_json(tmp_path: Path, export: Path) -> None:
    with pytest.raises(ExportDirError, match="is not a directory"):
        layout.read_manifest(tmp_path / "nowhere")
    (export / layout.MANIFEST).write_bytes(b"\xff\xfe")
    with pytest.raises(ExportDirError, match="mbexport.json is not valid JSON"):
        layout.read_manifest(export)


def test_a_changed_model_file_fails_verification(export: Path) -> None:
    manifest = layout.read_manifest(export)
    with open(export / layout.MODEL, "r+b") as f:  # same size, one byte flipped
        first = f.read(1)
        f.seek(0)
        f.write(bytes([first[0] ^ 1]))
    with pytest.raises(ExportDirError, match="does not match its manifest"):
        layout.verify_model_files(export, manifest)


def test_is_export_and_the_swap_gap(export: Path, tmp_path: Path) -> None:
    """Between the two renames of a swap, readers find the export moved aside."""
    assert layout.is_export(export) and not layout.is_export(tmp_path)
    aside = export.parent / f".{export.name}.old-1-5"
    export.rename(aside)
    assert layout.resolve_export_dir(export) == aside
    assert layout.read_manifest(export)["format_version"] == layout.FORMAT_VERSION


def _fresh(code: str) -> dict[str, Any]:
    """Run ``code`` in a fresh interpreter (neutral cwd) and return the JSON it prints last."""
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                            timeout=120, cwd=tempfile.gettempdir(), check=False)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


HEAVY = ("onnx", "onnxruntime", "torch", "mbexport.converter", "mbexport.export.writer", "mbexport.runtime",
         "mbexport.sources.hf_dir", "huggingface_hub")


@pytest.mark.parametrize("statement", ["from mbexport import WordPieceTokenizer", "import mbexport.tokenizer",
                                       "import mbexport", "import mbexport.layout"])
def test_tokenizer_users_do_not_import_onnx(statement: str, minilm_dir: Path) -> None:
    loaded = _fresh(f"""
        import json, sys
        {statement}
        from mbexport import WordPieceTokenizer
        ids = WordPieceTokenizer.from_pretrained({str(minilm_dir)!r})("hello world")["input_ids"]
        print(json.dumps({{"ids": ids, "heavy": [m for m in {HEAVY!r} if m in sys.modules]}}))
    """)
    assert loaded["heavy"] == []
    assert loaded["ids"][0] == 101 and loaded["ids"][-1] == 102  # [CLS] ... [SEP] of the real MiniLM vocab


def test_lazy_attributes_resolve_to_the_real_objects() -> None:
    got = _fresh("""
        import json, mbexport
        from mbexport.converter import convert
        from mbexport.runtime.embedder import Embedder
        from importlib.metadata import version
        print(json.dumps({"convert": mbexport.convert is convert, "embedder": mbexport.Embedder is Embedder,
                          "native": mbexport._native.__name__, "version": mbexport.__version__ == version("mbexport"),
                          "all": sorted(set(mbexport.__all__) - set(dir(mbexport)))}))
    """)
    assert got == {"convert": True, "embedder": True, "native": "mbexport._native", "version": True, "all": []}
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        import mbexport

        _ = mbexport.nope  # type: ignore[attr-defined]
