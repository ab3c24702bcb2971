"""The CI skip guard: under CI=true a non-gpu skip fails the run, a gpu skip does not."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
CASES = '''
import pytest

def test_plain_skip():
    pytest.skip("torch did not import")

@pytest.mark.skipif(True, reason="no tokenizer")
def test_skipif():
    pass

@pytest.mark.gpu
def test_gpu_skip():
    pytest.skip("needs CUDA")

def test_passes():
    pass
'''


def run_pytest(tmp_path: Path, ci: str | None, module: str = CASES) -> subprocess.CompletedProcess:
    (tmp_path / "conftest.py").write_text(
        "from skip_guard import pytest_make_collect_report, pytest_runtest_makereport  # noqa: F401\n")
    (tmp_path / "test_cases.py").write_text(module)
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    gpu: needs a GPU\n")
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci is not None:
        env["CI"] = ci
    env["PYTHONPATH"] = str(HERE)
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False)


def test_under_ci_a_non_gpu_skip_fails_and_a_gpu_skip_does_not(tmp_path: Path) -> None:
    result = run_pytest(tmp_path, "true")
    assert result.returncode == 1, result.stdout
    assert "1 failed, 1 passed, 1 skipped, 1 error" in result.stdout
    assert "only gpu-marked tests may skip: Skipped: torch did not import" in result.stdout


def test_under_ci_a_module_skipped_whole_fails(tmp_path: Path) -> None:
    result = run_pytest(tmp_path, "true", 'import pytest\npytest.importorskip("no_such_module_here")\n'
                                          "def test_x():\n    pass\n")
    assert result.returncode != 0, result.stdout
    assert "skipped whole under CI=true" in result.stdout


@pytest.mark.parametrize("ci", [None, "false"])
def test_outside_ci_skips_stay_skips(tmp_path: Path, ci: str | None) -> None:
    result = run_pytest(tmp_path, ci)
    assert result.returncode == 0, result.stdout
    assert "1 passed, 3 skipped" in result.stdout
