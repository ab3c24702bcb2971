"""The console script under hostile use (issue 9): choices, --debug, internal errors, signals."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from typing import get_args

from conftest import run_mbexport

from mbexport import cli
from mbexport.export.build import FLAVORS, PRECISIONS
from mbexport.families import head_names
from mbexport.runtime.backends import DEVICES
from mbexport.runtime.pooling import POOLINGS
from mbexport.sweep import FAMILIES, KEEP_EXPORTS


def test_option_choices_are_the_apis() -> None:
    assert get_args(cli.Pooling) == POOLINGS
    assert get_args(cli.Device) == DEVICES
    assert get_args(cli.Flavor) == FLAVORS
    assert get_args(cli.Precision) == tuple(PRECISIONS)
    assert get_args(cli.Head) == (*head_names(), "auto")
    assert get_args(cli.Family) == FAMILIES
    assert get_args(cli.KeepExports) == KEEP_EXPORTS


def test_help_lists_the_choices() -> None:
    embed = run_mbexport("embed", "--help", text=True, env={"COLUMNS": "200"})
    assert embed.returncode == 0 and "cls|mean|pooler" in embed.stdout and "cpu|cuda|openvino|tensorrt|auto" in embed.stdout
    convert = run_mbexport("convert", "--help", text=True, env={"COLUMNS": "200"})
    assert "fp32|fp16|int8" in convert.stdout and "fused|portable" in convert.stdout
    sweep = run_mbexport("sweep", "--help", text=True, env={"COLUMNS": "200"})
    assert "multiberts|earlyberts" in sweep.stdout and "none|final|all" in sweep.stdout and "local|ray" in sweep.stdout
    serve = run_mbexport("serve", "--help", text=True, env={"COLUMNS": "200"})
    assert "cpu|cuda|openvino|tensorrt|auto" in serve.stdout and "cls|mean|pooler" in serve.stdout
    bad = run_mbexport("sweep", "--family", "bert", "--out", "x", text=True)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


def test_traceback_only_with_debug(tmp_path) -> None:
    missing = str(tmp_path / "nope")
    plain = run_mbexport("info", missing, text=True)
    assert plain.returncode == 1 and "Traceback" not in plain.stderr
    assert plain.stderr.strip().splitlines() == [f"error: {missing} is not a directory; pass an export directory "
                                                 "written by mbexport convert"]
    for args, env in ((("--debug", "info", missing), None), (("info", missing), {"MBEXPORT_DEBUG": "1"})):
        debug = run_mbexport(*args, env=env, text=True)
        assert debug.returncode == 1 and "Traceback" in debug.stderr and "ExportDirError" in debug.stderr
        assert debug.stderr.strip().splitlines()[-1].startswith("error: ")


def run_patched(patch: str, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI's main() in a fresh interpreter after ``patch`` (python source) ran."""
    code = f"import sys; import mbexport.cli as cli; {patch}; sys.argv[0] = 'mbexport'; cli.main()"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120,
                          cwd=tempfile.gettempdir(), check=False)


def test_unexpected_exceptions_are_one_internal_error_line(tmp_path) -> None:
    """A bug (here a ZeroDivisionError injected into info) is one line, not a traceback; exit 1."""
    result = run_patched("import mbexport.layout as m; m.read_manifest = lambda path: 1 / 0",
                         "info", str(tmp_path))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        "error: internal error: ZeroDivisionError: division by zero (re-run with --debug for the traceback)"]


def test_keyboard_interrupt_is_one_line_exit_130(tmp_path) -> None:
    result = run_patched("import signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
                         "import os; import mbexport.layout as m; "
                         "m.read_manifest = lambda path: os.kill(os.getpid(), signal.SIGINT)", "info", str(tmp_path))
    assert result.returncode == 130 and "Traceback" not in result.stderr
    assert [line for line in result.stderr.splitlines() if line.strip()] == ["error: interrupted"]


def test_unknown_command_is_a_usage_error() -> None:
    result = run_mbexport("embedd", text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: No such command 'embedd'.") and "mbexport --help" in lines[0]
