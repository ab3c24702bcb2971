"""The research workflow offline through the console script: sweep -> embed -> probe -> intervals -> plot,
checked against independent computations (transformers for the embeddings, scikit-learn for the probes)."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
from conftest import run_mbexport
from research_fixture import offline_env, write_dataset, write_research_cache

from mbexport.errors import SweepError
from mbexport.probe import split_masks
from mbexport.sweep import read_rows

pytest.importorskip("torch")


def run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return run_mbexport(*args, env=env, text=True)


@pytest.fixture(scope="module")
def workflow(tmp_path_factory):
    """A verified sweep of MultiBERTs seeds 0-2 x (20k, 200k, final) and EarlyBERTs seeds 0-1 x (step10, step100),
    embedding a labelled dataset, then `mbexport probe` on it."""
    root = tmp_path_factory.mktemp("workflow")
    hf_home = write_research_cache(root)
    data = write_dataset(root / "data.jsonl")
    env = offline_env(hf_home, root)
    runs = root / "runs"
    multiberts = run("sweep", "--seeds", "0-2", "--steps", "20k,200k,final", "--embed", str(data), "--out", str(runs),
                     env=env)
    assert multiberts.returncode == 0, multiberts.stderr
    earlyberts = run("sweep", "--family", "earlyberts", "--seeds", "0-1", "--steps", "step10,step100", "--embed",
                     str(data), "--out", str(runs), "--no-parity", env=env)
    assert earlyberts.returncode == 0, earlyberts.stderr
    probe = run("probe", str(runs), "--split-field", "split", "--compare", "20k,final", "--compare-seeds", "0:1,2",
                "--nboot", "2000", env=env)
    assert probe.returncode == 0, probe.stderr
    report = json.loads((runs / "probe" / "report.json").read_text())
    return {"runs": runs, "data": data, "hf_home": hf_home, "report": report, "stdout": probe.stdout, "env": env}


def test_sweep_rows_are_verified_and_embeddings_match_transformers(workflow):
    import torch
    import transformers

    rows = read_rows(workflow["runs"] / "sweep.jsonl")
    assert len(rows) == 13 and all(r["status"] == "done" for r in rows)
    multiberts = [r for r in rows if r["family"] == "multiberts"]
    assert all(r["parity"]["passed"] and r["parity"]["max_abs"] <= 1e-4 for r in multiberts)
    assert {r["revision"] for r in rows if r["family"] == "earlyberts"} == {"step10", "step100"}
    # Independent reference: transformers' BertModel on the cached snapshot, [CLS] of the last layer.
    row = next(r for r in rows if r["key"] == "multiberts-seed_1-step_200k")
    snapshot = next((workflow["hf_home"] / "hub" / "models--google--multiberts-seed_1-step_200k" / "snapshots").iterdir())
    texts = [json.loads(line)["text"] for line in workflow["data"].read_text().splitlines()]
    tokenizer = transformers.BertTokenizer(str(snapshot / "vocab.txt"), do_lower_case=True)
    model = transformers.BertModel.from_pretrained(snapshot).eval()
    with torch.no_grad():
        batch = tokenizer(texts, padding=True, return_tensors="pt")
        expected = model(**batch).last_hidden_state[:, 0].numpy()
    np.testing.assert_allclose(np.load(workflow["runs"] / row["embeddings"]), expected, atol=1e-4, rtol=0)


def test_probe_accuracies_match_scikit_learn_on_the_same_split(workflow):
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    records = [json.loads(line) for line in workflow["data"].read_text().splitlines()]
    labels = np.array([r["label"] for r in records])
    test = np.array([r["split"] == "test" for r in records])
    report = workflow["report"]
    assert report["test_examples"] == test.sum() and report["train_examples"] == (~test).sum()
    for checkpoint in report["checkpoints"]:
        x = np.load(workflow["runs"] / "embeddings" / f"{checkpoint['key']}.npy")
        scaler = StandardScaler().fit(x[~test])
        probe = LogisticRegression(max_iter=2000).fit(scaler.transform(x[~test]), labels[~test])
        accuracy = float(np.mean(probe.predict(scaler.transform(x[test])) == labels[test]))
        assert checkpoint["accuracy"] == pytest.approx(accuracy, abs=1e-12), checkpoint["key"]


def test_intervals_per_step_and_differences(workflow):
    report = workflow["report"]
    by_key = {c["key"]: c["accuracy"] for c in report["checkpoints"]}
    steps = {(s["family"], s["step"]): s for s in report["steps"]}
    assert list(steps) == [("earlyberts", "step10"), ("earlyberts", "step100"), ("multiberts", "20k"),
                           ("multiberts", "200k"), ("multiberts", "final")]
    for (family, step), s in steps.items():
        keys = [c["key"] for c in report["checkpoints"] if c["family"] == family and c["step"] == step]
        point = np.mean([by_key[k] for k in keys])  # the no-resampling estimate: mean over seeds
        assert s["low"] <= s["mean"] <= s["high"] and s["high"] - s["low"] > 0
        assert s["mean"] == pytest.approx(point, abs=0.02)
    steps_cmp, seeds_cmp = report["comparisons"]
    assert steps_cmp["kind"] == "steps" and steps_cmp["seeds"] == [0, 1, 2] and steps_cmp["paired_seeds"]
    finals = np.mean([by_key[f"multiberts-seed_{s}"] for s in range(3)])
    early = np.mean([by_key[f"multiberts-seed_{s}-step_20k"] for s in range(3)])
    assert steps_cmp["delta"]["mean"] == pytest.approx(finals - early, abs=0.02)
    # The fixture's checkpoints carry more signal at the final step: the paired difference is detected.
    assert steps_cmp["delta"]["low"] > 0 and steps_cmp["delta"]["p"] < 0.05
    assert seeds_cmp["kind"] == "seeds" and seeds_cmp["step"] == "final"
    assert seeds_cmp["baseline"] == [0] and seeds_cmp["intervention"] == [1, 2] and not seeds_cmp["paired_seeds"]
    assert seeds_cmp["delta"]["low"] <= seeds_cmp["delta"]["mean"] <= seeds_cmp["delta"]["high"]
    assert "| multiberts | final | 3 |" in workflow["stdout"]


def test_plot_is_a_png_with_content(workflow):
    import matplotlib.image

    image = matplotlib.image.imread(workflow["runs"] / "probe" / "metric_vs_step.png")
    assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 400
    assert image[..., :3].std() > 0.05  # not a blank canvas


def test_probe_errors_are_one_line(workflow, tmp_path):
    result = run("probe", str(workflow["runs"]), "--split-field", "split", "--compare", "20k,999k",
                 "--out", str(tmp_path / "p"), env=workflow["env"])
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 1 and len(lines) == 1, result.stderr
    assert "no probed checkpoint at step '999k'" in lines[0] and "20k, 200k, final" in lines[0]
    missing = run("probe", str(workflow["runs"]), "--label-field", "stars", "--out", str(tmp_path / "q"),
                  env=workflow["env"])
    lines = [line for line in missing.stderr.splitlines() if line.strip()]
    assert missing.returncode == 1 and len(lines) == 1 and "no 'stars' field" in lines[0], missing.stderr


def test_random_split_is_fixed_by_its_seed():
    train, test = split_masks(200, None, 0.25, seed=3)
    again = split_masks(200, None, 0.25, seed=3)[1]
    assert test.sum() == 50 and not (train & test).any() and (train | test).all()
    assert (test == again).all() and not (test == split_masks(200, None, 0.25, seed=4)[1]).all()
    with pytest.raises(SweepError, match="--test-fraction 1.5"):
        split_masks(200, None, 1.5, seed=0)
    with pytest.raises(SweepError, match="0 test examples"):
        split_masks(3, np.array(["train", "train", "dev"]), 0.3, seed=0)
