"""`mbexport sweep` through the real console script on an offline cache of tiny MultiBERTs / EarlyBERTs:
grid resolution and its errors, kill -9 and resume, failures, kept exports and reuse, processes vs Ray."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import MBEXPORT, assert_one_line_error, run_mbexport
from research_fixture import offline_env, write_dataset, write_research_cache

from mbexport.errors import CatalogError, SweepError
from mbexport.sweep import grid, read_rows

pytest.importorskip("torch")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """(hf_home, dataset): MultiBERTs seeds 0-1 at 20k, 200k and final; EarlyBERTs seed 0 at step10, step100."""
    root = tmp_path_factory.mktemp("research")
    return write_research_cache(root, (0, 1), (0,)), write_dataset(root / "data.jsonl")


def sweep(out: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return run_mbexport("sweep", "--out", str(out), *args, env=env, text=True)


def rows(out: Path) -> dict[str, dict]:
    return {row["key"]: row for row in read_rows(out / "sweep.jsonl")}


@pytest.mark.parametrize("line", [b"{oops", b"[1, 2]", b'"a row"', b"[" * 100_000])
def test_a_manifest_line_that_is_not_an_object_is_named(tmp_path: Path, line: bytes) -> None:
    """A hand-edited sweep.jsonl: the line is named (nesting past the parser's depth included), never a crash."""
    manifest = tmp_path / "sweep.jsonl"
    manifest.write_bytes(b'{"key": "a", "status": "done"}\n' + line + b"\n")
    with pytest.raises(SweepError, match="sweep.jsonl:2 is not a JSON object"):
        read_rows(manifest)


def test_grid_resolves_through_the_catalogue():
    points = grid("multiberts", "0-4", "20k,100k,2000k")
    assert [p.key for p in points[:3]] == ["multiberts-seed_0-step_20k", "multiberts-seed_0-step_100k",
                                          "multiberts-seed_0-step_2000k"]
    assert len(points) == 15 and {p.seed for p in points} == set(range(5))
    assert [p.source.repo_id for p in points[-1:]] == ["google/multiberts-seed_4-step_2000k"]
    assert [p.steps for p in points[:3]] == [20_000, 100_000, 2_000_000]
    # Other spellings of the same steps resolve to the same checkpoints; duplicates collapse.
    assert grid("multiberts", "1", "step_20000,20k,step_100k") == grid("multiberts", "1,1", "20k,100k")
    assert len(grid("multiberts", "0-1", "all")) == 2 * 28
    finals = grid("multiberts", "all", "final")
    assert len(finals) == 25 and all(p.final and p.step == "final" for p in finals)
    assert finals[24].source.repo_id == "google/multiberts-seed_24"
    early = grid("earlyberts", "1-2", "step7000,10")
    assert [(p.source.repo_id, p.source.revision) for p in early] == [
        ("personads/earlyberts-seed1", "step7000"), ("personads/earlyberts-seed1", "step10"),
        ("personads/earlyberts-seed2", "step7000"), ("personads/earlyberts-seed2", "step10")]
    assert len(grid("earlyberts", "0", "all")) == 31 and grid("earlyberts", "0", "all")[-1].final


@pytest.mark.parametrize(("args", "patterns"), [
    (["--seeds", "3-6", "--steps", "20k"], ["--seeds 3-6", "seed 5 has only its final checkpoint", "0–4"]),
    (["--family", "earlyberts", "--seeds", "1", "--steps", "final"], ["no final checkpoint", "step40000"]),
])
def test_unknown_grid_combinations_are_one_line_errors(tmp_path, args, patterns):
    result = sweep(tmp_path / "runs", *args, env={})
    assert_one_line_error(result, *patterns)
    assert result.returncode == 2
    assert not (tmp_path / "runs").exists()


def test_grid_errors_in_python_name_the_options():
    with pytest.raises(CatalogError, match=r"--seeds 'x': cannot read 'x'"):
        grid("multiberts", "x", "20k")
    with pytest.raises(CatalogError, match="--family 'albert'"):
        grid("albert", "0", "20k")
    with pytest.raises(CatalogError, match="--steps 205k: MultiBERTs seed 0 has no checkpoint at step 205k.*20k, 40k"):
        grid("multiberts", "0", "205k")
    with pytest.raises(CatalogError, match="there is no EarlyBERTs seed 7"):
        grid("earlyberts", "7", "step10")


def test_kill_9_mid_sweep_then_rerun_redoes_nothing_finished(cache, tmp_path):
    """SIGKILL once a row is done and the next checkpoint is being written; the rerun skips the done rows
    (their files keep inode and mtime) and completes the rest."""
    hf_home, data = cache
    out = tmp_path / "runs"
    args = ["--seeds", "0-1", "--steps", "20k,final", "--embed", str(data), "--no-parity"]
    env = offline_env(hf_home, tmp_path)
    proc = subprocess.Popen([MBEXPORT, "sweep", "--out", str(out), *args], env={**os.environ, **env},
                            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def in_progress() -> list[Path]:
        """Files of a checkpoint that has no row yet: its export lock/staging dir or partial embeddings."""
        done = rows(out)
        return [p for p in [*(out / "exports").glob(".*"), *(out / "embeddings").glob(".*.partial")]
                if not any(p.name.startswith(f".{key}.") for key in done)] if done else []

    deadline = time.monotonic() + 300
    while not in_progress() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the sweep ended before it could be killed"
    finished = rows(out)
    assert finished and all(row["status"] == "done" for row in finished.values())
    assert in_progress(), "the kill did not land while another checkpoint was in progress"
    assert len(finished) < 4

    files = [out / row[k] for row in finished.values() for k in ("export", "embeddings")]
    files = [f / "model.onnx" if f.is_dir() else f for f in files]
    before = {f: (f.stat().st_ino, f.stat().st_mtime_ns) for f in files}

    result = sweep(out, *args, env=env)
    assert result.returncode == 0, result.stderr
    assert f"{len(finished)} already done (skipped), {4 - len(finished)} to run" in result.stderr
    after = rows(out)
    assert len(after) == 4 and all(row["status"] == "done" for row in after.values())
    assert {k: after[k] for k in finished} == finished  # the done rows were not rewritten
    assert {f: (f.stat().st_ino, f.stat().st_mtime_ns) for f in files} == before
    leftovers = [*out.glob("**/.*.partial"), *(out / "exports").glob(".*.tmp-*")]
    assert not leftovers
    for row in after.values():
        assert np.load(out / row["embeddings"]).shape == (240, 36)


def test_failing_checkpoint_is_recorded_and_the_sweep_goes_on(cache, tmp_path):
    hf_home, _ = cache
    out = tmp_path / "runs"
    env = offline_env(hf_home, tmp_path)
    # Seed 3 is not cached. Two processes: rows arrive in any order, the manifest keeps the grid's.
    result = sweep(out, "--seeds", "0,3,1", "--steps", "final", "--no-parity", "--jobs", "2", env=env)
    assert result.returncode == 1
    by_key = rows(out)
    assert list(by_key) == ["multiberts-seed_0", "multiberts-seed_3", "multiberts-seed_1"]
    assert [row["status"] for row in by_key.values()] == ["done", "failed", "done"]
    error = by_key["multiberts-seed_3"]["error"]
    assert "google/multiberts-seed_3" in error and "\n" not in error
    assert "failed: " in result.stdout

    fail_fast = sweep(tmp_path / "ff", "--seeds", "3,0", "--steps", "final", "--no-parity", "--fail-fast", env=env)
    assert fail_fast.returncode == 1
    assert [row["status"] for row in read_rows(tmp_path / "ff" / "sweep.jsonl")] == ["failed"]


def test_keep_exports_final_and_reuse_of_exports(cache, tmp_path):
    """A first sweep keeps its exports; embedding later reuses them (same files), then keeps only finals."""
    hf_home, data = cache
    out = tmp_path / "runs"
    env = offline_env(hf_home, tmp_path)
    first = sweep(out, "--seeds", "0", "--steps", "20k,final", "--no-parity", env=env)
    assert first.returncode == 0, first.stderr
    exports = {k: out / row["export"] / "model.onnx" for k, row in rows(out).items()}
    inodes = {k: p.stat().st_ino for k, p in exports.items()}
    assert all(row["parity"] == {"skipped": True} for row in rows(out).values())

    second = sweep(out, "--seeds", "0", "--steps", "20k,final", "--embed", str(data), "--keep-exports", "final",
                   "--no-parity", env=env)
    assert second.returncode == 0, second.stderr
    assert second.stderr.count("(reused export)") == 2
    after = rows(out)
    assert all(row["export_reused"] and row["embeddings"] for row in after.values())
    assert after["multiberts-seed_0-step_20k"]["export"] is None and not exports["multiberts-seed_0-step_20k"].exists()
    assert exports["multiberts-seed_0"].stat().st_ino == inodes["multiberts-seed_0"]  # reused, not rewritten
    assert after["multiberts-seed_0"]["weights_sha256"] == rows(out)["multiberts-seed_0"]["weights_sha256"]

    no_embed = sweep(out, "--seeds", "0", "--steps", "final", "--keep-exports", "none", env=env)
    assert_one_line_error(no_embed, "--keep-exports none", "--embed")


def test_processes_and_ray_write_the_same_manifest(cache, tmp_path):
    """In-process and --backend ray on a local Ray (2 CPUs): same rows, parity run for real."""
    hf_home, data = cache
    env = offline_env(hf_home, tmp_path)
    common = ["--family", "earlyberts", "--seeds", "0", "--steps", "step10,step100", "--embed", str(data)]
    local = sweep(tmp_path / "local", *common, env=env)
    assert local.returncode == 0, local.stderr
    ray = sweep(tmp_path / "ray", *common, "--backend", "ray", "--jobs", "2", env={**env, "RAY_ADDRESS": ""})
    assert ray.returncode == 0, ray.stderr
    a, b = rows(tmp_path / "local"), rows(tmp_path / "ray")
    assert list(a) == list(b) == ["earlyberts-seed0-step10", "earlyberts-seed0-step100"]
    for key in a:
        assert a[key]["status"] == b[key]["status"] == "done"
        assert a[key]["weights_sha256"] == b[key]["weights_sha256"]
        assert a[key]["parity"]["passed"] and a[key]["parity"]["reference"].startswith("torch")
        assert b[key]["parity"]["passed"] and b[key]["parity"]["reference"] == a[key]["parity"]["reference"]
        assert b[key]["parity"]["max_abs"] == pytest.approx(a[key]["parity"]["max_abs"], rel=0.2, abs=1e-7)
        same = set(a[key]) - {"seconds", "finished", "parity"}
        assert {k: a[key][k] for k in same} == {k: b[key][k] for k in same}
        np.testing.assert_allclose(np.load(tmp_path / "ray" / b[key]["embeddings"]),
                                   np.load(tmp_path / "local" / a[key]["embeddings"]), rtol=1e-5, atol=1e-6)
