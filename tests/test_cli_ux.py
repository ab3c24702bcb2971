"""The CLI a practitioner expects, through the real console script: `list` (whole names, filters,
--json, the export registry), `info`, `embed` progress / line sidecar / `--out -`, `--version`, `-h`,
and a replaced export reported by `convert`."""

from __future__ import annotations

import json
import os
import pty
import shutil
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest
from conftest import MBEXPORT, run_mbexport, write_tiny_checkpoint
from test_cli_convert import converted, multiberts_cache, offline_env  # noqa: F401  (module fixtures reused)

import mbexport
from mbexport.catalog import EARLYBERTS_STEPS, GOOGLE_BERT
from mbexport.runtime import Embedder

pytest.importorskip("torch")


def run(*args: str, env: dict[str, str] | None = None, **kwargs) -> subprocess.CompletedProcess[str]:
    return run_mbexport(*args, env=env, text=True, **kwargs)


def run_on_terminal(*args: str, env: dict[str, str], cwd: Path, stdin: bytes = b"") -> tuple[int, str]:
    """Run the console script with stdout and stderr on a pseudo-terminal (``stdin`` piped in);
    returns (exit code, all output)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([MBEXPORT, *args], stdin=subprocess.PIPE, stdout=slave, stderr=slave, cwd=cwd,
                            env={**os.environ, **env})
    os.close(slave)
    assert proc.stdin is not None
    proc.stdin.write(stdin)
    proc.stdin.close()
    chunks = []
    while True:
        try:
            data = os.read(master, 1 << 16)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    return proc.wait(timeout=600), b"".join(chunks).decode("utf-8", "replace")


def table_rows(stdout: str) -> list[list[str]]:
    return [[cell.strip() for cell in line.split("│")[1:-1]] for line in stdout.splitlines() if line.startswith("│")]


@pytest.fixture(scope="module")
def base_export(tmp_path_factory) -> Path:
    """A tiny base-head export (last_hidden_state), converted without parity: the embed tests' model."""
    root = tmp_path_factory.mktemp("base")
    src = write_tiny_checkpoint(root / "src", head="base", fmt="safetensors")
    result = run("convert", str(src), "--out", str(root / "export"), "--no-parity")
    assert result.returncode == 0, result.stderr
    return root / "export"


# --- --version, -h, metavars ---------------------------------------------------------------------------


def test_version_and_short_help_everywhere() -> None:
    version = run("--version")
    assert version.returncode == 0 and version.stdout == f"mbexport {mbexport.__version__}\n"
    for command in ([], ["convert"], ["list"], ["info"], ["embed"], ["parity"]):
        short, long = run(*command, "-h"), run(*command, "--help")
        assert short.returncode == 0 and short.stdout == long.stdout and "Usage: mbexport" in short.stdout
    assert "{NAME} [STEP]" in run("convert", "-h").stdout
    assert "{EXPORT_DIR} {INPUT}" in run("embed", "-h").stdout
    assert "{EXPORT_DIR}" in run("info", "-h").stdout


# --- list ----------------------------------------------------------------------------------------------


def test_list_piped_at_80_columns_keeps_every_name_whole(tmp_path) -> None:
    result = run("list", "--family", "google", env={"COLUMNS": "80", "HF_HOME": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert "…" not in result.stdout
    rows = table_rows(result.stdout)
    assert [(row[1], row[2]) for row in rows] == list(GOOGLE_BERT.items())


def test_list_on_80_column_terminal_folds_names_instead_of_cutting(tmp_path) -> None:
    code, output = run_on_terminal("list", "--family", "google", env={"COLUMNS": "80", "HF_HOME": str(tmp_path)},
                                   cwd=tmp_path)
    assert code == 0, output
    assert "…" not in output
    lines = [line for line in output.splitlines() if line.startswith("│")]
    assert max(len(line) for line in lines) <= 80
    names, repos = [], []
    for cells in table_rows("\n".join(lines)):  # a row, then its continuation lines (family cell empty)
        if cells[0] == "Google BERT":
            names.append(cells[1])
            repos.append(cells[2])
        else:
            names[-1] += cells[1]
            repos[-1] += cells[2]
    assert list(zip(names, repos)) == list(GOOGLE_BERT.items())


def list_json(*args: str, env: dict[str, str]) -> list[dict]:
    result = run("list", "--json", *args, env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_list_filters_and_json(tmp_path) -> None:
    env = {"HF_HOME": str(tmp_path / "empty"), "MBEXPORT_HOME": str(tmp_path / "home")}
    one = list_json("--family", "multiberts", "--seed", "1", "--step", "step_200k", env=env)
    assert one == [{"family": "MultiBERTs intermediate", "name": "seed_1 step_200k",
                    "repo_id": "google/multiberts-seed_1-step_200k", "revision": None, "seed": 1, "step": 200000,
                    "cached": False, "exports": []}]
    finals = list_json("--step", "final", env=env)
    assert [e["name"] for e in finals] == [f"seed_{s}" for s in range(25)]
    # 20k steps exist in both families: MultiBERTs step_20k and EarlyBERTs step20000.
    assert {e["name"] for e in list_json("--seed", "3", "--step", "20k", env=env)} == {
        "seed_3 step_20k", "earlyberts-seed3 step20000"}
    assert {e["name"] for e in list_json("--family", "early", "--seed", "0", env=env)} == {
        f"earlyberts-seed0 step{n}" for n in EARLYBERTS_STEPS}
    assert list_json("--cached", env=env) == [] and list_json("--exported", env=env) == []
    bad = run("list", "--step", "soon", env=env)
    assert bad.returncode != 0 and "Traceback" not in bad.stderr and "--step" in bad.stderr


def test_list_knows_exports_written_anywhere(converted, multiberts_cache, tmp_path) -> None:  # noqa: F811
    """The `converted` fixture wrote its export with --out outside $MBEXPORT_HOME/exports; convert recorded it."""
    env = offline_env(multiberts_cache, converted.parent)
    entries = list_json("--exported", env=env)
    assert [(e["name"], e["cached"], e["exports"]) for e in entries] == [
        ("seed_1 step_200k", True, [str(converted.resolve())])]
    assert [e["name"] for e in list_json("--cached", "--family", "multiberts", env=env)] == ["seed_1 step_200k"]
    table = run("list", "--exported", env=env)
    assert [row[1] for row in table_rows(table.stdout) if row[-1] == "yes"] == ["seed_1 step_200k"]


def test_registry_survives_concurrent_converts_deletion_and_corruption(multiberts_cache, tmp_path) -> None:  # noqa: F811
    env = offline_env(multiberts_cache, tmp_path)  # MBEXPORT_HOME = tmp_path / "mbhome"
    outs = [tmp_path / f"out{i}" for i in range(3)]
    procs = [subprocess.Popen([MBEXPORT, "convert", "seed_1", "step_200k", "--out", str(out), "--no-parity"],
                              env={**os.environ, **env}, cwd=tmp_path, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for out in outs]
    for proc in procs:
        _, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 0, stderr
    registry = tmp_path / "mbhome" / "exports.json"
    assert sorted(json.loads(registry.read_text())["exports"]) == [str(out.resolve()) for out in outs]
    assert list_json("--exported", env=env)[0]["exports"] == [str(out.resolve()) for out in outs]

    shutil.rmtree(outs[1])  # deleted since: no longer listed
    assert list_json("--exported", env=env)[0]["exports"] == [str(outs[0].resolve()), str(outs[2].resolve())]

    registry.write_text('{"exports": {"/nowhere": ')  # corrupt: reads as empty, the next convert rewrites it
    assert list_json("--exported", env=env) == []
    assert run("convert", "seed_1", "step_200k", "--out", str(outs[0]), "--no-parity", env=env).returncode == 0
    assert list_json("--exported", env=env)[0]["exports"] == [str(outs[0].resolve())]


# --- convert reports a replaced export -------------------------------------------------------------------


def test_convert_reports_a_replaced_export(tmp_path) -> None:
    src = write_tiny_checkpoint(tmp_path / "src", head="base", fmt="safetensors")
    out = tmp_path / "export"
    first = run("convert", str(src), "--out", str(out), "--no-parity")
    assert first.returncode == 0, first.stderr
    assert "replaced" not in first.stdout
    second = run("convert", str(src), "--out", str(out), "--no-parity")
    assert second.returncode == 0, second.stderr
    assert "(replaced an existing export there)" in second.stdout


# --- info ----------------------------------------------------------------------------------------------


def test_info_summarises_manifest_with_parity_gates(converted, tmp_path) -> None:  # noqa: F811
    manifest = json.loads((converted / "mbexport.json").read_text())
    result = run("info", str(converted))
    assert result.returncode == 0, result.stderr
    rows = {row[0]: row[1] for row in table_rows(result.stdout) if len(row) == 2}
    assert rows["source"] == "MultiBERTs seed_1 step_200k (google/multiberts-seed_1-step_200k)"
    assert rows["weights sha256"] == manifest["weights_sha256"]
    assert rows["head / flavor / precision"] == "pretraining / fused / fp32"
    assert f"Attention {manifest['op_counts']['Attention']}" in rows["op counts"]
    assert rows["model"].startswith(f"{manifest['model']['layers']} layers, hidden {manifest['model']['hidden']}")
    parity = {row[0]: row[1:] for row in table_rows(result.stdout) if len(row) == 8}
    assert set(parity) == set(manifest["parity"]["outputs"])
    for name, figures in manifest["parity"]["outputs"].items():
        assert parity[name][:4] == [f"{figures['max_abs']:.2e}", f"<= {figures['tolerance']:.1e}",
                                    f"{figures['mean_cosine']:.7f}", f">= {figures['min_mean_cosine']}"]
        assert parity[name][-1] == "yes"
    as_json = run("info", str(converted), "--json")
    assert as_json.returncode == 0 and json.loads(as_json.stdout) == manifest

    # A figure beyond its gate is judged NO against that gate.
    damaged = shutil.copytree(converted, tmp_path / "damaged")
    name = next(iter(manifest["parity"]["outputs"]))
    manifest["parity"]["outputs"][name]["max_abs"] = 2 * manifest["parity"]["outputs"][name]["tolerance"]
    (damaged / "mbexport.json").write_text(json.dumps(manifest))
    judged = {row[0]: row[-1] for row in table_rows(run("info", str(damaged)).stdout) if len(row) == 8}
    assert judged[name] == "NO" and all(v == "yes" for k, v in judged.items() if k != name)


# --- embed ---------------------------------------------------------------------------------------------


def write_lines(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def test_skip_bad_lines_writes_a_line_sidecar(base_export, tmp_path) -> None:
    lines = [b"hello world", b"the model", b"\xff\xfe not utf-8", b"fast text", b"", b"bad \xc3", b"seed step"]
    good = [n for n, line in enumerate(lines, start=1) if n not in (3, 6)]
    source = write_lines(tmp_path / "in.txt", lines)
    out = tmp_path / "vectors.npy"
    result = run("embed", str(base_export), str(source), "--out", str(out), "--skip-bad-lines")
    assert result.returncode == 0, result.stderr
    rows = np.load(out)
    line_numbers = np.load(tmp_path / "vectors.lines.npy")
    assert line_numbers.dtype == np.int64 and line_numbers.tolist() == good == [1, 2, 4, 5, 7]
    expected = Embedder(base_export).embed([lines[n - 1].decode() for n in good])
    np.testing.assert_allclose(rows, expected, atol=1e-5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt", "vectors.lines.npy", "vectors.npy"]

    # Rewritten without --skip-bad-lines (rows are lines again): the stale sidecar goes.
    clean = write_lines(tmp_path / "clean.txt", [lines[n - 1] for n in good])
    assert run("embed", str(base_export), str(clean), "--out", str(out)).returncode == 0
    assert not (tmp_path / "vectors.lines.npy").exists()


def test_out_that_is_the_input_is_refused_and_the_input_kept(base_export, tmp_path) -> None:
    """--out naming the input (same path, a symlink or hard link to it, or the file on stdin) would replace
    the texts being read with their vectors: one error line, exit 1, the input byte for byte intact."""
    source = tmp_path / "in.jsonl"
    data = b'{"text": "hello world"}\n{"text": "the model"}\n'
    source.write_bytes(data)
    (tmp_path / "link.jsonl").symlink_to(source)
    os.link(source, tmp_path / "hard.jsonl")
    for out in ("in.jsonl", "link.jsonl", "hard.jsonl"):
        result = run("embed", str(base_export), str(source), "--out", str(tmp_path / out))
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 1 and len(lines) == 1 and "is the input" in lines[0], result.stderr
    with open(source, "rb") as stdin:
        result = run("embed", str(base_export), "-", "--field", "text", "--out", str(source), stdin=stdin)
    assert result.returncode == 1 and "is the input <stdin>" in result.stderr, result.stderr
    assert source.read_bytes() == data and (tmp_path / "link.jsonl").is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hard.jsonl", "in.jsonl", "link.jsonl"]


def test_out_symlink_is_written_through_and_bad_out_names_the_fix(base_export, tmp_path) -> None:
    source = write_lines(tmp_path / "in.txt", [b"hello world", b"the model"])
    (tmp_path / "vectors").mkdir()
    link = tmp_path / "latest.npy"
    link.symlink_to(tmp_path / "vectors" / "run1.npy")
    assert run("embed", str(base_export), str(source), "--out", str(link)).returncode == 0
    assert link.is_symlink() and np.load(link).shape == (2, 36)  # the link stays, its target holds the rows
    np.testing.assert_allclose(np.load(tmp_path / "vectors" / "run1.npy"),
                               Embedder(base_export).embed(["hello world", "the model"]), atol=1e-5)
    for out, why in (("v.csv", "--out must end in .npy or .jsonl"), ("missing/v.npy", "does not exist; create it"),
                     ("vectors", "is a directory")):
        result = run("embed", str(base_export), str(source), "--out", str(tmp_path / out))
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 1 and len(lines) == 1 and why in lines[0], result.stderr


@pytest.mark.parametrize("interrupted_open", [1, 2])
def test_signal_while_the_output_is_being_created_leaves_nothing(tmp_path, monkeypatch, interrupted_open) -> None:
    """SIGTERM/Ctrl-C can land between a temporary output being created and the with block being entered
    (no __exit__ then): here the KeyboardInterrupt is raised as the 1st (output) or 2nd (line sidecar) file
    is opened. Nothing may stay behind; the previous output is untouched."""
    from mbexport.runtime import files

    (tmp_path / "v.npy").write_bytes(b"previous")
    opened = []

    def fdopen(fd: int, mode: str):
        opened.append(fd)
        if len(opened) == interrupted_open:
            raise KeyboardInterrupt
        return real_fdopen(fd, mode)

    real_fdopen = os.fdopen
    monkeypatch.setattr(files.os, "fdopen", fdopen)
    with pytest.raises(KeyboardInterrupt), files.AtomicOutput(tmp_path / "v.npy", 4, line_sidecar=True):
        pass
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.npy"] and (tmp_path / "v.npy").read_bytes() == b"previous"


def test_out_dash_streams_jsonl_to_stdout(base_export, tmp_path) -> None:
    texts = [f"the model {i} is fast" for i in range(50)]
    source = write_lines(tmp_path / "in.txt", [t.encode() for t in texts])
    assert run("embed", str(base_export), str(source), "--out", str(tmp_path / "v.npy")).returncode == 0
    streamed = run("embed", str(base_export), str(source), "--out", "-")
    assert streamed.returncode == 0, streamed.stderr
    records = [json.loads(line) for line in streamed.stdout.splitlines()]
    assert [r["id"] for r in records] == list(range(1, 51))
    np.testing.assert_allclose(np.array([r["embedding"] for r in records], dtype=np.float32),
                               np.load(tmp_path / "v.npy"), rtol=0, atol=0)
    assert "mbexport embed" in streamed.stderr and "<stdout>" in streamed.stderr


def test_out_dash_into_a_closed_pipe_stops_quietly(base_export, tmp_path) -> None:
    """`embed --out - | head -1`: the reader leaves early; the embed stops quietly (click's EPIPE handling:
    exit 1, nothing on stderr), no traceback."""
    source = write_lines(tmp_path / "in.txt", [b"text %d" % i for i in range(5000)])
    with subprocess.Popen([MBEXPORT, "embed", str(base_export), str(source), "--out", "-"], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, cwd=tmp_path) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        assert json.loads(proc.stdout.readline())["id"] == 1
        proc.stdout.close()
        stderr = proc.stderr.read().decode()
        assert proc.wait(timeout=300) == 1, stderr
    assert "Traceback" not in stderr and "error" not in stderr.lower(), stderr


def test_out_dash_emits_rows_before_input_ends(base_export) -> None:
    """Rows come out while stdin is still open: two windows in, the first window's rows are out."""
    window = 2048
    with subprocess.Popen([MBEXPORT, "embed", str(base_export), "-", "--out", "-"], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL) as proc:
        assert proc.stdin is not None and proc.stdout is not None
        stdout = proc.stdout
        proc.stdin.write(b"".join(b"text %d\n" % i for i in range(2 * window + 1)))
        proc.stdin.flush()
        got: list[bytes] = []
        reader = threading.Thread(target=lambda: got.extend(stdout.readline() for _ in range(window)))
        reader.start()
        reader.join(timeout=300)
        assert not reader.is_alive() and json.loads(got[-1])["id"] == window  # stdin still open here
        proc.stdin.close()
        rest = stdout.read().splitlines()
        assert proc.wait(timeout=300) == 0
    assert [json.loads(line)["id"] for line in got + rest] == list(range(1, 2 * window + 2))


def test_progress_has_total_and_eta_for_files_only(base_export, tmp_path) -> None:
    source = write_lines(tmp_path / "in.txt", [b"hello world %d" % i for i in range(300)] + [b"last, no newline"])
    source.write_bytes(source.read_bytes()[:-1])
    code, output = run_on_terminal("embed", str(base_export), str(source), "--out", str(tmp_path / "v.npy"),
                                   env={"COLUMNS": "100"}, cwd=tmp_path)
    assert code == 0, output
    assert "301/301 lines" in output and "ETA" in output
    code, output = run_on_terminal("embed", str(base_export), "-", "--out", str(tmp_path / "s.npy"),
                                   env={"COLUMNS": "100"}, cwd=tmp_path, stdin=source.read_bytes())
    assert code == 0, output
    assert " 301 lines" in output and "/301" not in output  # stdin: a count, no total
    piped = run("embed", str(base_export), str(source), "--out", str(tmp_path / "w.npy"))
    assert piped.returncode == 0 and "Embedding" not in piped.stderr  # no progress off a terminal
