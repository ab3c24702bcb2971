"""Convert's parity reference: independent of mbexport's weight reader, run in a reused child process.

A verified convert starts the torch reference in a child process before it reads the checkpoint;
for an HF directory transformers reads the weights itself, so a bug in mbexport's reader makes
parity fail instead of being copied into the reference.
"""

from __future__ import annotations

import numpy as np
import pytest

import mbexport
from mbexport import reference_worker
from mbexport.catalog import Source
from mbexport.errors import ParityError
from mbexport.heads import HEADS
from mbexport.parity import random_batch, start_reference, text_batch, torch_reference
from mbexport.sources import hf_dir, load_checkpoint

pytest.importorskip("torch")


def load(path):
    return load_checkpoint(Source(label=path.name, path=path))


def test_reader_bug_fails_parity(tiny_checkpoint, tmp_path, monkeypatch):
    """One value misread by mbexport's reader (a weight off by 0.05) is caught: the reference reads the file."""
    src = tiny_checkpoint(head="pretraining", fmt="safetensors")
    canonical = hf_dir._canonical_weights

    def misread(raw, label, family):
        weights = canonical(raw, label, family)
        weights["encoder.layer.1.output.dense.weight"] = weights["encoder.layer.1.output.dense.weight"].copy()
        weights["encoder.layer.1.output.dense.weight"][0, 0] += 0.05
        return weights

    monkeypatch.setattr(hf_dir, "_canonical_weights", misread)
    with pytest.raises(ParityError, match="parity failed, no export written: .*last_hidden_state"):
        mbexport.convert(str(src), out=tmp_path / "export", head="base")
    assert not (tmp_path / "export").exists()


@pytest.mark.parametrize(("head", "fmt", "as_head"), [("pretraining", "bin", "pretraining"),
                                                      ("pretraining", "safetensors", "base"),
                                                      ("qa", "safetensors", "qa"),
                                                      ("classification", "bin", "classification")])
def test_reference_from_files_equals_reference_from_arrays(tiny_checkpoint, head, fmt, as_head):
    """transformers reading the directory and mbexport's arrays give the same reference, head by head."""
    src = tiny_checkpoint(head=head, fmt=fmt)
    checkpoint, config = load(src), HEADS[as_head]
    batches = [random_batch(checkpoint.spec), text_batch(checkpoint.vocab_file, checkpoint.spec)]
    from_files = torch_reference(checkpoint, config, batches, model_dir=src)
    from_arrays = torch_reference(checkpoint, config, batches)
    assert set(from_files[0]) == set(config.outputs) & set(from_arrays[0])
    for ours, theirs in zip(from_files, from_arrays):
        for name in theirs:
            np.testing.assert_array_equal(ours[name], theirs[name])


def test_child_reference_equals_in_process_reference(tiny_checkpoint):
    """The child process answers what torch_reference computes here, for jobs sent one after another."""
    checkpoint = load(tiny_checkpoint(head="pretraining", fmt="bin"))
    config = HEADS["pretraining"]
    runs = [start_reference(checkpoint, config, "torch", from_source=source) for source in (True, False)]
    expected = torch_reference(checkpoint, config, runs[0].batches)
    for run in runs:
        assert run.pending is not None
        name, outputs = run.pending.outputs()
        assert name.startswith("torch ")
        for ours, theirs in zip(outputs, expected):
            assert set(ours) == {"prediction_logits", "seq_relationship_logits"}
            for key in ours:
                np.testing.assert_array_equal(ours[key], theirs[key])


def test_dead_reference_process_is_a_parity_error(tiny_checkpoint):
    """A reference process that dies mid-job fails parity with a clear message; the next job gets a new one."""
    checkpoint = load(tiny_checkpoint(head="base", fmt="safetensors"))
    config = HEADS["base"]
    run = start_reference(checkpoint, config, "torch", from_source=True)
    reference_worker.worker()._process.kill()
    with pytest.raises(ParityError, match="torch parity reference failed: its process exited"):
        assert run.pending is not None
        run.pending.outputs()
    again = start_reference(checkpoint, config, "torch", from_source=True)
    assert again.pending is not None and again.pending.outputs()[0].startswith("torch ")
