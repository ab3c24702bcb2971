"""Multi-Bootstrap speed: mbexport.stats (vectorised) against the plain loop of the paper's algorithm.

25 seeds per side x 10,000 examples, accuracy; 1,000 samples for mbexport, fewer for the
loop (its cost is linear in the sample count), compared per sample.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from mbexport.stats import multibootstrap

_spec = importlib.util.spec_from_file_location(
    "multibootstrap_reference", Path(__file__).parents[1] / "tests" / "multibootstrap_reference.py")
reference = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(reference)

PER_SAMPLE: dict[str, float] = {}


@pytest.fixture(scope="module")
def experiment(quick):
    seeds, examples = (5, 500) if quick else (25, 10_000)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, examples)
    preds = np.stack([np.where(rng.random(examples) < 0.8 + 0.004 * (s % 5), labels, 1 - labels)
                      for s in range(2 * seeds)])
    run_info = {"seed": np.r_[np.arange(seeds), np.arange(seeds)],
                "intervention": np.r_[np.zeros(seeds, bool), np.ones(seeds, bool)]}
    return run_info, preds, labels


def _accuracy(y_true, y_pred):
    return float(np.mean(y_true == y_pred))


@pytest.mark.parametrize("engine", ["plain-loop", "mbexport"])
def test_multibootstrap(benchmark, engine, experiment, quick):
    run_info, preds, labels = experiment
    nboot = (20 if quick else 1000) if engine == "mbexport" else (4 if quick else 20)
    benchmark.group = "multibootstrap"
    if engine == "mbexport":
        run = lambda: multibootstrap(run_info, preds, labels, "accuracy", nboot=nboot, rng=0)  # noqa: E731
    else:
        run = lambda: reference.loop_multibootstrap(run_info, preds, labels, _accuracy, False, True, True,  # noqa: E731
                                                     nboot, np.random.default_rng(0))
    benchmark.pedantic(run, rounds=1 if quick else 3, iterations=1)
    PER_SAMPLE[engine] = benchmark.stats.stats.mean / nboot
    benchmark.extra_info.update({"samples": nboot, "seeds_per_side": len(preds) // 2, "examples": len(labels),
                                 "ms_per_sample": round(1e3 * PER_SAMPLE[engine], 3)})
    if engine == "mbexport" and "plain-loop" in PER_SAMPLE:
        benchmark.extra_info["speedup_per_sample"] = round(PER_SAMPLE["plain-loop"] / PER_SAMPLE[engine], 1)
