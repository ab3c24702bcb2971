"""The source registry: a new checkpoint format is one module, and the registry alone decides the
probe order of load_checkpoint, the hub download patterns and what local_status counts as cached.

The new format here is a real module written to disk and imported: an HF directory whose weights
are one numpy ``weights.npz`` (it stages them as model.safetensors and reads them with hf_dir).
"""

from __future__ import annotations

import importlib
import json
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from mbexport.catalog import Source, local_status
from mbexport.sources import load_checkpoint, registry
from mbexport.sources.hf_dir import load_hf_dir, load_safetensors
from mbexport.sources.hub import weight_patterns

NPZ_FORMAT = '''
"""A checkpoint format for the test: config.json + vocab.txt + weights.npz."""
import shutil
import tempfile
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

from mbexport.sources.hf_dir import load_hf_dir
from mbexport.sources.registry import SourceFormat, register


def claims(path):
    return path.is_dir() and (path / "weights.npz").is_file()


def load(path, label, revision):
    staged = Path(tempfile.mkdtemp())
    for f in path.iterdir():
        if f.name != "weights.npz":
            shutil.copy(f, staged / f.name)
    with np.load(path / "weights.npz") as arrays:
        save_file({name: arrays[name] for name in arrays.files}, str(staged / "model.safetensors"))
    return load_hf_dir(staged, label, revision)


def download_patterns(files):
    return ["weights.npz"] if "weights.npz" in files else []


FORMAT = register(SourceFormat("npz_dir", claims, load, download_patterns, weight_files=("weights.npz",)))
'''


@pytest.fixture
def npz_format(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[registry.SourceFormat]:
    """The npz format registered for one test (its module imported from tmp_path), then removed."""
    (tmp_path / "modules").mkdir()
    (tmp_path / "modules" / "npz_format.py").write_text(NPZ_FORMAT)
    monkeypatch.syspath_prepend(str(tmp_path / "modules"))
    module = importlib.import_module("npz_format")
    yield module.FORMAT
    registry._registered.pop("npz_dir")
    sys.modules.pop("npz_format")


def _as_npz(src: Path, out: Path) -> Path:
    """``src`` (an HF safetensors directory) with its weights as weights.npz instead."""
    out.mkdir()
    for f in src.iterdir():
        if f.name != "model.safetensors":
            shutil.copy(f, out / f.name)
    np.savez(out / "weights.npz", **load_safetensors(src / "model.safetensors"))
    return out


def test_builtin_formats_in_probe_order() -> None:
    assert [f.name for f in registry.formats()] == ["hf_dir", "tf_checkpoint"]
    assert registry.weight_files() == ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                                       "pytorch_model.bin.index.json")


def test_a_new_format_loads_through_load_checkpoint(npz_format, tiny_checkpoint, tmp_path: Path) -> None:
    src = tiny_checkpoint(head="pretraining", fmt="safetensors")
    npz_dir = _as_npz(src, tmp_path / "npz")
    assert registry.claiming(npz_dir) is npz_format
    loaded = load_checkpoint(Source("npz", path=npz_dir))
    reference = load_hf_dir(src)
    assert loaded.spec == reference.spec and set(loaded.weights) == set(reference.weights)
    for name, array in reference.weights.items():
        np.testing.assert_array_equal(loaded.weights[name], array)


def test_builtin_formats_keep_precedence(npz_format, tiny_checkpoint, tmp_path: Path) -> None:
    """A directory both hf_dir and the new format claim is read by hf_dir, the first in MODULES."""
    src = tiny_checkpoint(head="base", fmt="safetensors")
    both = _as_npz(src, tmp_path / "both")
    shutil.copy(src / "model.safetensors", both / "model.safetensors")
    assert registry.claiming(both).name == "hf_dir"
    assert registry.claiming(tmp_path / "nothing-here") is None  # not a directory: nothing claims it


def test_download_patterns_come_from_the_registry(npz_format) -> None:
    assert weight_patterns(["config.json", "weights.npz", "vocab.txt"]) == ["weights.npz"]
    assert weight_patterns(["weights.npz", "model.safetensors"]) == ["model.safetensors"]  # hf_dir first
    assert weight_patterns(["config.json", "tf_model.h5"]) == []


def test_local_status_counts_the_new_formats_weights(npz_format, tiny_checkpoint, hf_cache, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    npz_dir = _as_npz(tiny_checkpoint(head="base", fmt="safetensors"), tmp_path / "npz")
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(hf_cache("org/npz-model", npz_dir)))
    source = Source("npz model", repo_id="org/npz-model")
    assert local_status(source).cached
    registry._registered.pop("npz_dir")  # unregistered, the same snapshot holds no weights mbexport reads
    try:
        assert not local_status(source).cached
    finally:
        registry.register(npz_format)


def test_sources_do_not_import_the_catalog() -> None:
    """No catalog <-> sources cycle: loading every source format leaves the catalogue unimported."""
    code = textwrap.dedent("""
        import json, sys
        from mbexport.sources import registry
        registry.formats()
        print(json.dumps("mbexport.catalog" in sys.modules))
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            cwd=tempfile.gettempdir(), check=False)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) is False
