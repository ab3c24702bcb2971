"""`mbexport convert` end to end through the real console script: HF cache, offline, errors, kills."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import signal
import stat
import subprocess
import time
from pathlib import Path

import onnx
import pytest
from conftest import MBEXPORT, TINY_CONFIG, assert_one_line_error, run_mbexport, write_hf_cache, write_tiny_checkpoint

pytest.importorskip("torch")

def run(*args: str, env: dict[str, str] | None = None, **kwargs) -> subprocess.CompletedProcess[str]:
    return run_mbexport(*args, env=env, text=True, **kwargs)


def offline_env(hf_home: Path, tmp_path: Path) -> dict[str, str]:
    return {"HF_HOME": str(hf_home), "HF_HUB_CACHE": str(hf_home / "hub"), "HF_HUB_OFFLINE": "1",
            "MBEXPORT_HOME": str(tmp_path / "mbhome"), "HF_HUB_DISABLE_PROGRESS_BARS": "1"}


def tree_digest(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir())}


@pytest.fixture(scope="module")
def multiberts_cache(tmp_path_factory):
    """google/multiberts-seed_1-step_200k (pytorch_model.bin, pretraining heads) in a real HF cache layout."""
    root = tmp_path_factory.mktemp("multiberts")
    src = write_tiny_checkpoint(root / "src", head="pretraining", fmt="bin")
    return write_hf_cache(root / "hf_home", "google/multiberts-seed_1-step_200k", src)


@pytest.fixture(scope="module")
def converted(multiberts_cache, tmp_path_factory):
    """`mbexport convert seed_1 step_200k` run once, offline, through the console script."""
    out = tmp_path_factory.mktemp("converted") / "export"
    result = run("convert", "seed_1", "step_200k", "--out", str(out), env=offline_env(multiberts_cache, out.parent))
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture
def existing_export(converted, tmp_path):
    """A private copy of that export for a test to try to damage."""
    return shutil.copytree(converted, tmp_path / "export")


def test_offline_multiberts_convert_writes_verified_fused_export(converted):
    existing_export = converted
    files = {p.name for p in existing_export.iterdir()}
    assert files == {"model.onnx", "config.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json",
                     "mbexport.json"}
    model = onnx.load(existing_export / "model.onnx")
    ops = [node.op_type for node in model.graph.node]
    layers = json.loads((existing_export / "config.json").read_text())["num_hidden_layers"]
    assert ops.count("Attention") == layers
    assert ops.count("EmbedLayerNormalization") == 1
    assert ops.count("SkipLayerNormalization") == 2 * layers
    manifest = json.loads((existing_export / "mbexport.json").read_text())
    assert manifest["source"]["repo_id"] == "google/multiberts-seed_1-step_200k"
    assert manifest["head"] == "pretraining" and manifest["flavor"] == "fused" and manifest["precision"] == "fp32"
    assert manifest["parity"]["passed"] and manifest["parity"]["reference"].startswith("torch")
    assert all(o["max_abs"] <= o["tolerance"] for o in manifest["parity"]["outputs"].values())
    assert len(manifest["weights_sha256"]) == 64


def test_earlyberts_revision_converts(tiny_checkpoint, hf_cache, tmp_path):
    hf_home = hf_cache("personads/earlyberts-seed1", tiny_checkpoint(head="pretraining", seed=7), revision="step7000")
    out = tmp_path / "early"
    result = run("convert", "earlyberts-seed1", "step7000", "--out", str(out), "--head", "base",
                 env=offline_env(hf_home, tmp_path), preexec_fn=lambda: os.umask(0o027))
    assert result.returncode == 0, result.stderr
    manifest = json.loads((out / "mbexport.json").read_text())
    assert manifest["source"]["revision"] == "step7000" and manifest["head"] == "base"
    # The export directory is an ordinary one: its mode follows the caller's umask, not mkdtemp's 0700.
    assert stat.S_IMODE(out.stat().st_mode) == 0o750


def test_info_and_parity_commands(existing_export, multiberts_cache, tmp_path):
    env = offline_env(multiberts_cache, tmp_path)
    info = run("info", str(existing_export), "--json", env=env)
    assert info.returncode == 0 and '"head": "pretraining"' in info.stdout
    parity = run("parity", str(existing_export), env=env)
    assert parity.returncode == 0, parity.stderr
    assert "prediction_logits" in parity.stdout


def assert_clean_failure(result: subprocess.CompletedProcess[str], pattern: str) -> None:
    line = assert_one_line_error(result)
    assert pattern.lower() in line.lower(), line


@pytest.mark.parametrize(("args", "pattern"), [
    (["seed_99"], "seeds are 0"),
    (["seed_7", "step_200k"], "intermediate"),
    (["seed_1", "step_205k"], "step"),
    (["multiberts-seed_x"], ""),
    (["earlyberts-seed1", "step7"], "step"),
])
def test_catalog_errors_leave_export_untouched(existing_export, multiberts_cache, tmp_path, args, pattern):
    before = tree_digest(existing_export)
    result = run("convert", *args, "--out", str(existing_export), env=offline_env(multiberts_cache, tmp_path))
    assert_clean_failure(result, pattern)
    assert tree_digest(existing_export) == before


def test_offline_without_cache_names_repo_and_from(existing_export, tmp_path):
    before = tree_digest(existing_export)
    empty = tmp_path / "empty-hf"
    empty.mkdir()
    result = run("convert", "seed_2", "step_40k", "--out", str(existing_export), env=offline_env(empty, tmp_path))
    assert_clean_failure(result, "google/multiberts-seed_2-step_40k")
    assert "--from" in result.stderr
    assert tree_digest(existing_export) == before


def broken_copies(src: Path, tmp_path: Path) -> dict[str, Path]:
    """Checkpoint directories each broken in one way."""
    cases: dict[str, Path] = {}

    def copy(name: str) -> Path:
        cases[name] = shutil.copytree(src, tmp_path / f"broken-{name}")
        return cases[name]

    (copy("no-config") / "config.json").unlink()
    (copy("no-weights") / "model.safetensors").unlink()
    weights = copy("truncated") / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    config_path = copy("shape") / "config.json"
    config = json.loads(config_path.read_text())
    config["intermediate_size"] += 4
    config_path.write_text(json.dumps(config))
    return cases


@pytest.mark.parametrize(("case", "pattern"), [
    ("no-config", "config.json"), ("no-weights", "weights"), ("truncated", "model.safetensors"), ("shape", "shape"),
])
def test_broken_checkpoints_fail_cleanly(existing_export, tiny_checkpoint, tmp_path, case, pattern):
    broken = broken_copies(tiny_checkpoint(head="base", fmt="safetensors"), tmp_path)[case]
    before = tree_digest(existing_export)
    result = run("convert", str(broken), "--out", str(existing_export))
    assert_clean_failure(result, pattern)
    assert tree_digest(existing_export) == before


def test_malicious_pickle_is_refused_and_never_runs(existing_export, tiny_checkpoint, tmp_path):
    import torch

    src = tiny_checkpoint(head="base", fmt="bin")
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    state = torch.load(src / "pytorch_model.bin", weights_only=True)
    state["payload"] = Exploit()
    torch.save(state, src / "pytorch_model.bin")
    before = tree_digest(existing_export)
    result = run("convert", str(src), "--out", str(existing_export))
    assert_clean_failure(result, "pickle")
    assert not marker.exists()
    assert tree_digest(existing_export) == before


def test_refuses_to_replace_a_foreign_directory(tiny_checkpoint, tmp_path):
    mine = tmp_path / "my-notes"
    mine.mkdir()
    (mine / "thesis.tex").write_text("precious")
    result = run("convert", str(tiny_checkpoint(head="base")), "--out", str(mine), "--no-parity")
    assert_clean_failure(result, "not an mbexport export")
    assert (mine / "thesis.tex").read_text() == "precious"


def test_second_convert_into_locked_dir_is_refused(existing_export, tiny_checkpoint):
    lock = existing_export.parent / f".{existing_export.name}.lock"
    with open(lock, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        result = run("convert", str(tiny_checkpoint(head="base")), "--out", str(existing_export))
    assert_clean_failure(result, "another mbexport convert")


def test_kill_9_during_convert_leaves_previous_export(existing_export, tiny_checkpoint, tmp_path):
    """SIGKILL while the new export is being staged: the old one stays whole and loadable."""
    bigger = tiny_checkpoint(head="base", fmt="safetensors",
                             config={**TINY_CONFIG, "hidden_size": 384, "num_attention_heads": 6,
                                     "intermediate_size": 1536, "num_hidden_layers": 6})
    before = tree_digest(existing_export)
    proc = subprocess.Popen([MBEXPORT, "convert", str(bigger), "--out", str(existing_export)], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def staged_models() -> list[Path]:
        return [p for p in existing_export.parent.glob(f".{existing_export.name}.tmp-*/model.onnx")
                if p.stat().st_size > 0]

    deadline = time.monotonic() + 120
    while not staged_models() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the convert ended before it could be killed mid-write"
    # Proof that the kill landed mid-convert: the half-built export is still in its staging dir, uncommitted.
    assert staged_models(), "no staged model.onnx: the kill did not land while the new export was being written"
    assert tree_digest(existing_export) == before
    onnx.checker.check_model(str(existing_export / "model.onnx"))
    # The next convert cleans the stale staging dir up and replaces the export.
    result = run("convert", str(bigger), "--out", str(existing_export), "--no-parity")
    assert result.returncode == 0, result.stderr
    assert not list(existing_export.parent.glob(f".{existing_export.name}.tmp-*"))
    assert json.loads((existing_export / "mbexport.json").read_text())["model"]["hidden"] == 384


def test_list_shows_catalogue_with_cache_and_export_status(multiberts_cache, converted, tmp_path):
    env = offline_env(multiberts_cache, tmp_path)
    home_export = tmp_path / "mbhome" / "exports" / "multiberts-seed_1-step_200k" / "pretraining-fused-fp32"
    shutil.copytree(converted, home_export)
    result = run("list", "--family", "multiberts", env=env)
    assert result.returncode == 0, result.stderr
    rows = [[cell.strip() for cell in line.split("│")[1:-1]] for line in result.stdout.splitlines()
            if "google/multiberts-seed_" in line]
    families = [row[0] for row in rows]
    assert families.count("MultiBERTs") == 25 and families.count("MultiBERTs intermediate") == 5 * 28
    local = [row for row in rows if "yes" in row]
    assert local == [["MultiBERTs intermediate", "seed_1 step_200k", "google/multiberts-seed_1-step_200k", "main",
                      "yes", "yes"]]
