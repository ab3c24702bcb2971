"""The onnxruntime install scheme: onnxruntime and onnxruntime-gpu install the same module, so each
comes from its own extra (cpu / gpu) and the base package needs neither; pip's own resolver, run on this
checkout, must pick exactly the build each set-up command means. Without either, importing mbexport
says which extra to install."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BUILDS = {"onnxruntime", "onnxruntime-gpu"}


def resolve(tmp_path: Path, target: str, *constraints: str) -> set[str]:
    """The distributions ``pip install TARGET`` would install into an empty environment."""
    tmp_path.mkdir(exist_ok=True)
    report = tmp_path / "report.json"
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--dry-run", "--ignore-installed", "--no-build-isolation",
         "--report", str(report), *constraints, target],
        capture_output=True, text=True, timeout=900, check=False, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    return {item["metadata"]["name"].lower() for item in json.loads(report.read_text())["install"]}


# What each set-up command installs, and the onnxruntime build it must get: the base and every extra that
# chooses a build. .ci/run's .[torch,test,bench] is the environment these tests run in (below).
INSTALLS = {
    ".": set(),
    ".[cpu]": {"onnxruntime"},
    ".[gpu]": {"onnxruntime-gpu"},
    ".[gpu,serve]": {"onnxruntime-gpu"},
}


@pytest.mark.slow
def test_each_install_resolves_to_one_onnxruntime_build(tmp_path):
    """pip resolves the four installs at once (each waits on the index as much as on the CPU)."""
    constraints = ("-c", str(ROOT / ".ci" / "constraints.txt"))
    with ThreadPoolExecutor(len(INSTALLS)) as pool:
        jobs = {target: pool.submit(resolve, tmp_path / f"install-{i}", target, *constraints)
                for i, target in enumerate(INSTALLS)}
    names = {target: job.result() for target, job in jobs.items()}
    assert {target: found & BUILDS for target, found in names.items()} == INSTALLS
    assert all("mbexport" in found for found in names.values())


def test_the_test_install_has_the_cpu_build_and_imports_it():
    """These tests run in what .ci/run (the README's test command) installs, ``.[torch,test,bench]``: its
    test and bench extras bring CPU onnxruntime themselves, so pip installed that build alone, and the
    ``onnxruntime`` module imported is the one that distribution's files hold."""
    import importlib.metadata as metadata

    import onnxruntime

    installed = {dist.metadata["Name"].lower() for dist in metadata.distributions()} & BUILDS
    assert installed == {"onnxruntime"}, f"run the tests in .ci/run's environment, not one with {installed}"
    files = metadata.distribution("onnxruntime").files or []
    module = Path(onnxruntime.__file__).resolve()
    assert any(Path(str(f.locate())).resolve() == module for f in files)
    assert "CUDAExecutionProvider" not in onnxruntime.get_available_providers()


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
