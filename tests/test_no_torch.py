"""Converting needs no torch: with torch unimportable, convert works and parity uses the numpy reference."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import textwrap

BLOCK_TORCH = "import sys; sys.modules['torch'] = None; sys.modules['transformers'] = None\n"


def run_without_torch(code: str) -> subprocess.CompletedProcess[str]:
    # From a neutral cwd: `python -c` puts the cwd first on sys.path, and the source tree has no _native.
    return subprocess.run([sys.executable, "-c", BLOCK_TORCH + textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=300, cwd=tempfile.gettempdir())


def test_convert_without_torch_uses_numpy_reference(tiny_checkpoint, tmp_path):
    src = tiny_checkpoint(head="pretraining", fmt="bin")
    out = tmp_path / "export"
    result = run_without_torch(f"""
        import mbexport
        mbexport.convert({str(src)!r}, out={str(out)!r})
        assert "torch" not in [m for m, v in sys.modules.items() if v is not None]
    """)
    assert result.returncode == 0, result.stderr
    parity = json.loads((out / "mbexport.json").read_text())["parity"]
    assert parity["reference"].startswith("numpy float64") and parity["passed"]
    assert set(parity["outputs"]) == {"prediction_logits", "seq_relationship_logits"}


def test_torch_reference_asked_without_torch_is_clear(tiny_checkpoint, tmp_path):
    src = tiny_checkpoint(head="base", fmt="safetensors")
    result = run_without_torch(f"""
        import mbexport
        from mbexport.errors import ParityError
        try:
            mbexport.convert({str(src)!r}, out={str(tmp_path / 'x')!r}, reference="torch")
        except ParityError as e:
            print("ParityError:", e)
    """)
    assert "ParityError:" in result.stdout and "pip install" in result.stdout, result.stderr
    assert not (tmp_path / "x").exists()
