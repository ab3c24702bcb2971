"""Sweep throughput: N tiny MultiBERTs-named checkpoints converted, verified and used to embed a dataset,
in this process (--jobs 1) against two spawned processes (--jobs 2), as whole `mbexport sweep` runs.

Each round sweeps into a fresh directory (nothing to skip), so every checkpoint is converted, checked
against PyTorch (not in quick mode) and embeds the dataset.

Against a peer: a verified sweep of K checkpoints (no embedding) as one `mbexport sweep` process vs K
`optimum-cli export onnx --optimize O2` processes (bench/peers.py) on the same checkpoints; one sweep
pays torch's imports once, K peer runs pay them K times.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from peers import optimum_export, run_timed

_tests = Path(__file__).parents[1] / "tests"
sys.path.insert(0, str(_tests))  # skip_guard, imported by the tests' conftest


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# research_fixture imports the tests' conftest helpers by the name "conftest", which here is bench's own.
_bench_conftest = sys.modules.get("conftest")
sys.modules["conftest"] = _load("mbexport_tests_conftest", _tests / "conftest.py")
try:
    research_fixture = _load("research_fixture", _tests / "research_fixture.py")
finally:
    if _bench_conftest is not None:
        sys.modules["conftest"] = _bench_conftest

SECONDS: dict[int, float] = {}


@pytest.fixture(scope="module")
def grid_cache(tmp_path_factory, quick):
    pytest.importorskip("torch")
    root = tmp_path_factory.mktemp("sweep-bench")
    seeds = (0, 1) if quick else (0, 1, 2, 3)
    hf_home = research_fixture.write_research_cache(root, seeds, ())
    data = research_fixture.write_dataset(root / "data.jsonl", n=200 if quick else 2000)
    return root, hf_home, data, seeds


@pytest.mark.parametrize("jobs", [1, 2])
def test_sweep(benchmark, grid_cache, jobs, quick):
    root, hf_home, data, seeds = grid_cache
    env = {**os.environ, **research_fixture.offline_env(hf_home, root)}
    mbexport = shutil.which("mbexport", path=str(Path(sys.executable).parent)) or "mbexport"
    out = root / f"runs-{jobs}"
    command = [mbexport, "sweep", "--seeds", f"0-{len(seeds) - 1}", "--steps", "20k,200k,final", "--embed", str(data),
               "--out", str(out), "--jobs", str(jobs), *(["--no-parity"] if quick else [])]

    def run() -> None:
        result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        assert result.returncode == 0, result.stderr

    benchmark.group = "sweep"
    benchmark.pedantic(run, setup=lambda: shutil.rmtree(out, ignore_errors=True), rounds=1 if quick else 2,
                       iterations=1)
    SECONDS[jobs] = benchmark.stats.stats.mean
    checkpoints = 3 * len(seeds)
    benchmark.extra_info.update({"checkpoints": checkpoints, "parity": not quick, "texts": 200 if quick else 2000,
                                 "s_per_checkpoint": round(SECONDS[jobs] / checkpoints, 2)})
    if jobs == 2 and 1 in SECONDS:
        benchmark.extra_info["speedup_vs_jobs_1"] = round(SECONDS[1] / SECONDS[2], 2)


def test_sweep_verified_vs_optimum_cli(benchmark, grid_cache, tmp_path, quick):
    root, hf_home, _, seeds = grid_cache
    seeds, steps = (seeds[:1], ("final",)) if quick else (seeds, ("20k", "200k", "final"))
    sources = [root / "src" / (f"google--multiberts-seed_{seed}" + ("" if step == "final" else f"-step_{step}"))
               for seed in seeds for step in steps]
    peer_seconds = 0.0
    for i, source in enumerate(sources):
        peer_seconds += run_timed(optimum_export(source, tmp_path / f"optimum-{i}"))
    env = {**os.environ, **research_fixture.offline_env(hf_home, root)}
    mbexport = shutil.which("mbexport", path=str(Path(sys.executable).parent)) or "mbexport"
    out = root / "runs-verified"
    command = [mbexport, "sweep", "--seeds", f"0-{len(seeds) - 1}", "--steps", ",".join(steps), "--out", str(out)]
    benchmark.group = "sweep-vs-peer"
    benchmark.pedantic(lambda: run_timed(command, env), setup=lambda: shutil.rmtree(out, ignore_errors=True),
                       rounds=1, iterations=1)
    benchmark.extra_info.update({"checkpoints": len(sources), "parity": True, "optimum_cli_seconds": round(peer_seconds, 2),
                                 "speedup": round(peer_seconds / benchmark.stats.stats.mean, 2)})
