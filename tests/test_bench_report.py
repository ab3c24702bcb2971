"""bench.report regenerates docs/BENCHMARKS.md and its plots from a pytest-benchmark JSON alone."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("pytest_benchmark")
image = pytest.importorskip("matplotlib.image")

REPO = Path(__file__).resolve().parents[1]

TINY_SUITE = """
import pytest

@pytest.mark.parametrize("batch", [1, 4])
def test_grid(benchmark, batch):
    benchmark.group = "grid"
    benchmark.extra_info.update({"engine": "sum", "batch": batch, "sequence": 8})
    benchmark(sum, range(batch * 1000))

def test_parity_like(benchmark):
    benchmark.group = "parity"
    benchmark.extra_info["abs_diff_histogram"] = {"output": "x", "decades": [-2, -1, 0], "counts": [5, 3, 1, 0]}
    benchmark.extra_info["x_cosine"] = 0.9999
    benchmark(str, 1)
"""


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    # A pytest child is its own session: under pytest-xdist it must not inherit the worker's identity
    # (PYTEST_XDIST_WORKER makes pytest-benchmark leave the JSON to a controller that is not there).
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTEST_")}
    result = subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_report_from_real_benchmark_json(tmp_path: Path) -> None:
    (tmp_path / "test_tiny.py").write_text(textwrap.dedent(TINY_SUITE))
    bench_json = tmp_path / "bench.json"
    run("-m", "pytest", "test_tiny.py", "-q", "-p", "no:cacheprovider", f"--benchmark-json={bench_json}",
        "--benchmark-max-time=0.01", cwd=tmp_path)

    out, plots = tmp_path / "docs" / "BENCHMARKS.md", tmp_path / "docs" / "bench"
    report = ["-m", "bench.report", str(bench_json), "--out", str(out), "--plots", str(plots), "--command", "CMD"]
    run(*report, cwd=REPO)
    text = out.read_text()
    assert "- command: `CMD`" in text and "## grid" in text and "## parity" in text
    assert "| test_grid[4] |" in text and "| 0.9999000 |" in text
    assert "abs_diff_histogram" not in text  # plotted, not tabulated
    pngs = sorted(p.name for p in plots.iterdir())
    assert pngs == ["grid-scaling.png", "grid.png", "parity-histogram.png", "parity.png"]
    for name in pngs:
        assert f"](bench/{name})" in text
        pixels = image.imread(plots / name)
        assert pixels.ndim == 3 and pixels.shape[0] > 100 and pixels.std() > 0  # a real, non-blank picture

    first = text
    run(*report, cwd=REPO)
    assert out.read_text() == first  # from the JSON alone: the same report again
