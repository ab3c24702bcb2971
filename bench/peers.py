"""Peers run as whole processes from their own venv, for benches that time them beside mbexport.

optimum-onnx pins transformers < 4.58 while mbexport's tests use transformers 5, so the peers
live in a separate venv: ``.ci/run`` creates it and exports ``MBEXPORT_PEERS_PYTHON``; without
that variable the repository's ``.venv-peers`` is used. A missing peers venv skips the bench
(with the command that makes it), which CI's skip guard turns into a failure.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
MAKE = ("python3 -m venv .venv-peers && .venv-peers/bin/pip install -c .ci/constraints.txt "
        "'optimum-onnx[onnxruntime]'")


def peers_python() -> Path:
    """The peers venv's python: $MBEXPORT_PEERS_PYTHON, else the repository's .venv-peers."""
    return Path(os.environ.get("MBEXPORT_PEERS_PYTHON") or ROOT / ".venv-peers" / "bin" / "python")


def peer_tool(name: str) -> Path:
    """A console script of the peers venv (``optimum-cli``); skips when the venv lacks it."""
    tool = peers_python().parent / name
    if not tool.is_file():
        pytest.skip(f"{tool} not found: the peers venv is missing (make it: {MAKE}, or set MBEXPORT_PEERS_PYTHON)")
    return tool


def optimum_export(model_dir: Path, out: Path) -> list[str]:
    """optimum-cli's export of ``model_dir`` to fused fp32 ONNX, validation included (its default)."""
    return [str(peer_tool("optimum-cli")), "export", "onnx", "--model", str(model_dir), "--task",
            "feature-extraction", "--optimize", "O2", str(out)]


def offline_env(**extra: str) -> dict[str, str]:
    """The environment a peer runs in: no hub access, no progress bars."""
    return {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1", **extra}


def run_timed(command: list[str], env: dict[str, str] | None = None) -> float:
    """Run ``command`` as a whole process; its wall seconds (an AssertionError with its stderr if it fails)."""
    start = time.perf_counter()
    result = subprocess.run(command, env=env or offline_env(), capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    assert result.returncode == 0, f"{command[0]} failed ({result.returncode}):\n{result.stderr[-3000:]}"
    return seconds
