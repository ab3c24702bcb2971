"""The onnxruntime install scheme: onnxruntime and onnxruntime-gpu install the same module, so each
comes from its own extra (cpu / gpu) and the base package needs neither; pip's own resolver, run on this
checkout, must pick exactly the build each set-up command means. Without either, importing mbexport
says which extra to install."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BUILDS = {"onnxruntime", "onnxruntime-gpu"}


def resolve(tmp_path: Path, target: str, *constraints: str) -> set[str]:
    """The distributions ``pip install TARGET`` would install into an empty environment."""
    report = tmp_path / "report.json"
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--dry-run", "--ignore-installed", "--no-build-isolation",
         "--report", str(report), *constraints, target],
        capture_output=True, text=True, timeout=900, check=False, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    return {item["metadata"]["name"].lower() for item in json.loads(report.read_text())["install"]}


@pytest.mark.slow
@pytest.mark.parametrize(("extras", "chosen"), [
    ("", set()),
    ("[cpu]", {"onnxruntime"}),
    ("[gpu]", {"onnxruntime-gpu"}),
    ("[gpu,serve]", {"onnxruntime-gpu"}),
])
def test_each_extra_resolves_to_one_onnxruntime_build(tmp_path, extras, chosen):
    names = resolve(tmp_path, f".{extras}")
    assert "mbexport" in names and names & BUILDS == chosen


@pytest.mark.slow
def test_ci_and_readme_extras_get_the_cpu_build(tmp_path):
    """.ci/run installs .[torch,test,bench]; the test and bench extras bring CPU onnxruntime themselves."""
    names = resolve(tmp_path, ".[torch,test,bench]", "-c", str(ROOT / ".ci" / "constraints.txt"))
    assert names & BUILDS == {"onnxruntime"} and {"torch", "sentence-transformers"} <= names


def test_no_onnxruntime_names_the_extras():
    """onnxruntime blocked as if uninstalled: the tokenizer still works (``import mbexport`` is lazy), and
    the runtime fails on first use with one line naming both extras."""
    script = ("import sys; sys.modules['onnxruntime'] = None\n"
              "from mbexport import WordPieceTokenizer\n"
              "try:\n    from mbexport import Embedder\n"
              "except ImportError as e:\n    print(type(e).__name__, e)")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                            cwd=tempfile.gettempdir(), check=False)  # not the source folder
    assert result.stdout == ("MissingExtraError mbexport needs onnxruntime (onnxruntime is missing); pip install "
                             "'mbexport[cpu]', or 'mbexport[gpu]' for CUDA (never both)\n"), result.stderr
