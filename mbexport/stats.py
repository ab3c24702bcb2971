"""The Multi-Bootstrap of the MultiBERTs paper: confidence intervals over seeds *and* examples.

A finding about "BERT" measured on one checkpoint may be a finding about one random seed.
The Multi-Bootstrap (Sellam et al., "The MultiBERTs: BERT Reproductions for Robustness
Analysis", and its library ``language/multiberts/multibootstrap.py``) resamples both the
pretraining seeds and the evaluation examples, so an interval covers both sources of
variance. This module keeps that library's arguments and meaning, so its users can switch:

- ``run_info`` has a ``seed`` and a boolean ``intervention`` per run (row of ``preds``);
  runs with the same seed on the same side are averaged first (a macro-average: every seed
  weighs the same whatever its number of runs);
- each bootstrap sample draws seeds with replacement (``sample_seeds``; the same draw on both
  sides when ``paired_seeds``, over the seeds both sides share) and one set of examples with
  replacement shared by both sides (``sample_examples``), then scores each side;
- ``multibootstrap`` returns ``[nboot, 2]`` (baseline, intervention) scores, ``report_ci``
  the means, percentile intervals and the p-value of the difference.

Speed: a bootstrap draw of ``n`` items with replacement is the same law as multinomial
counts over them, so for a metric that is a mean of per-example scores (``"accuracy"``,
``"error"``, ``"mse"``, ``"mae"`` or any :func:`pointwise` function) every sample's every run
score comes out of one matrix product: 1,000 samples over 50 runs x 10,000 examples take a
fraction of a second. Any other ``score_fn(y_true, y_pred) -> float`` (F1, correlations)
is called per sample and per run, as in the library.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Pointwise", "multibootstrap", "pointwise", "report_ci"]

ScoreFn = Callable[[np.ndarray, np.ndarray], float]


@dataclass(frozen=True)
class Pointwise:
    """A metric that is the mean of a per-example score: ``fn(y_true, y_pred) -> [n] scores``."""

    fn: Callable[[np.ndarray, np.ndarray], np.ndarray]
    name: str = "pointwise"

    def __call__(self, y_true: np.ndarray, y_pred: np.ndarray) -> float:
        return float(np.mean(self.fn(y_true, y_pred)))


def pointwise(fn: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> Pointwise:
    """Mark ``fn`` (per-example scores) as a mean-decomposable metric, which takes the fast path."""
    return Pointwise(fn, getattr(fn, "__name__", "pointwise"))


METRICS: dict[str, Pointwise] = {
    "accuracy": Pointwise(lambda t, p: (t == p).astype(np.float64), "accuracy"),
    "error": Pointwise(lambda t, p: (t != p).astype(np.float64), "error"),
    "mse": Pointwise(lambda t, p: np.square(np.asarray(p, np.float64) - t), "mse"),
    "mae": Pointwise(lambda t, p: np.abs(np.asarray(p, np.float64) - t), "mae"),
}

# Bootstrap samples whose example counts are held at once: bounds memory at 256 x num_examples x 8 bytes.
SAMPLES_PER_CHUNK = 256

RunInfo = Mapping[str, Any] | Any  # a dict of columns or a pandas DataFrame
RngLike = None | int | np.random.Generator | np.random.RandomState


def multibootstrap(run_info: RunInfo, preds: Any, labels: Any, score_fn: str | ScoreFn, *,
                   paired_seeds: bool = False, sample_seeds: bool = True, sample_examples: bool = True,
                   nboot: int = 500, rng: RngLike = None) -> np.ndarray:
    """``[nboot, 2]`` float64 bootstrap samples of (baseline, intervention) scores.

    ``preds`` is ``[num_runs, num_examples]`` aligned with the rows of ``run_info``; ``labels``
    is ``[num_examples]``; ``score_fn`` a metric name (``accuracy``, ``error``, ``mse``, ``mae``),
    a :func:`pointwise` function, or any ``(y_true, y_pred) -> float``.
    """
    seeds, intervention = _run_columns(run_info)
    preds, labels = np.asarray(preds), np.asarray(labels)
    if preds.ndim != 2 or preds.shape[0] != len(seeds) or preds.shape[1] != len(labels):
        raise ValueError(f"preds must be [num_runs={len(seeds)}, num_examples={len(labels)}], got {preds.shape}")
    if len(labels) == 0:
        raise ValueError("labels is empty: there are no examples to score")
    if nboot < 1:
        raise ValueError(f"nboot must be >= 1, got {nboot}")
    generator = _generator(rng)
    base, expt = _seed_groups(seeds, ~intervention), _seed_groups(seeds, intervention)
    if not base or not expt:
        raise ValueError("run_info needs runs on both sides: intervention False (baseline) and True")
    if paired_seeds:
        common = sorted(set(base) & set(expt), key=_sort_key)
        if not common:
            raise ValueError("paired_seeds=True but the baseline and intervention share no seed")
        base_seeds = expt_seeds = common
    else:
        base_seeds, expt_seeds = sorted(base, key=_sort_key), sorted(expt, key=_sort_key)

    score = _metric(score_fn)
    if sample_examples:
        run_scores = np.concatenate([_run_scores(preds, labels, score, _example_counts(len(labels), size, generator))
                                     for size in _chunks(nboot, SAMPLES_PER_CHUNK)])
    else:
        run_scores = np.broadcast_to(_run_scores(preds, labels, score, None), (nboot, len(preds)))

    base_weights = _seed_weights(base_seeds, nboot, sample_seeds, generator)
    expt_weights = base_weights if paired_seeds else _seed_weights(expt_seeds, nboot, sample_seeds, generator)
    return np.stack([_side_scores(run_scores, base, base_seeds, base_weights),
                     _side_scores(run_scores, expt, expt_seeds, expt_weights)], axis=1)


def report_ci(samples: Any, c: float = 0.95, abs_threshold: float | None = None,
              rel_threshold: float | None = None, expect_negative_effect: bool = False) -> dict[str, dict[str, float]]:
    """Means and ``c`` percentile intervals of each side and of their difference, with a p-value.

    ``p`` is the fraction of samples where the difference has the wrong sign (``<= 0``, or
    ``>= 0`` with ``expect_negative_effect``), floored at ``1 / nboot``. With ``abs_threshold``
    or ``rel_threshold``, ``delta`` also holds the probability of an effect at least that large.
    """
    samples = np.asarray(samples, dtype=np.float64)
    if samples.ndim != 2 or samples.shape[1] != 2 or len(samples) == 0:
        raise ValueError(f"samples must be [nboot, 2] as multibootstrap returns, got shape {samples.shape}")
    if not 0 < c < 1:
        raise ValueError(f"c must be in (0, 1), got {c}")
    quantiles = [(1 - c) / 2, 1 - (1 - c) / 2]
    base, expt = samples[:, 0], samples[:, 1]
    deltas = expt - base
    report = {name: _interval(values, quantiles) for name, values in (("base", base), ("expt", expt))}
    report["delta"] = _interval(deltas, quantiles)
    wrong_sign = deltas >= 0 if expect_negative_effect else deltas <= 0
    report["delta"]["p"] = max(float(np.mean(wrong_sign)), 1.0 / len(samples))
    sign = -1.0 if expect_negative_effect else 1.0
    if rel_threshold:
        with np.errstate(divide="ignore", invalid="ignore"):
            report["delta"]["p_rel_threshold"] = float(np.mean(sign * deltas / base >= rel_threshold))
    if abs_threshold is not None:
        report["delta"]["p_abs_threshold"] = float(np.mean(sign * deltas >= abs_threshold))
    return report


# -- internals -------------------------------------------------------------------------------


def _run_columns(run_info: RunInfo) -> tuple[np.ndarray, np.ndarray]:
    try:
        seeds = np.asarray(run_info["seed"])
        intervention = np.asarray(run_info["intervention"])
    except (KeyError, TypeError, IndexError):
        raise ValueError("run_info must have a 'seed' and an 'intervention' column "
                         "(a dict of arrays or a pandas DataFrame)") from None
    if seeds.ndim != 1 or intervention.shape != seeds.shape:
        raise ValueError(f"run_info columns must be 1-D and of equal length, got {seeds.shape} and "
                         f"{intervention.shape}")
    if intervention.dtype != np.bool_:
        raise ValueError(f"run_info['intervention'] must be boolean, got {intervention.dtype}")
    return seeds, intervention


def _generator(rng: RngLike) -> np.random.Generator | np.random.RandomState:
    if rng is None or isinstance(rng, (int, np.integer)):
        return np.random.default_rng(rng)
    if isinstance(rng, (np.random.Generator, np.random.RandomState)):
        return rng
    raise ValueError(f"rng must be None, an int seed, a numpy Generator or RandomState, got {type(rng).__name__}")


def _sort_key(seed: Any) -> tuple[str, Any]:
    return (type(seed).__name__, seed)


def _seed_groups(seeds: np.ndarray, side: np.ndarray) -> dict[Any, np.ndarray]:
    """seed -> row indices of that seed's runs on one side."""
    rows = np.flatnonzero(side)
    groups: dict[Any, list[int]] = {}
    for row in rows:
        groups.setdefault(seeds[row].item() if hasattr(seeds[row], "item") else seeds[row], []).append(int(row))
    return {seed: np.asarray(members) for seed, members in groups.items()}


def _metric(score_fn: str | ScoreFn) -> ScoreFn:
    if not isinstance(score_fn, str):
        return score_fn
    if score_fn not in METRICS:
        raise ValueError(f"score_fn {score_fn!r} is not a built-in metric ({', '.join(METRICS)}); pass a callable")
    return METRICS[score_fn]


def _chunks(total: int, size: int) -> list[int]:
    return [min(size, total - start) for start in range(0, total, size)]


def _example_counts(num_examples: int, samples: int,
                    generator: np.random.Generator | np.random.RandomState) -> np.ndarray:
    """[samples, num_examples]: how often each example is drawn (n draws with replacement)."""
    return generator.multinomial(num_examples, np.full(num_examples, 1 / num_examples), size=samples)


def _run_scores(preds: np.ndarray, labels: np.ndarray, score_fn: ScoreFn, example_counts: np.ndarray | None
                ) -> np.ndarray:
    """[samples, num_runs] scores of every run on each sample's examples ([num_runs] without sampling)."""
    if isinstance(score_fn, Pointwise):
        per_example = np.stack([np.asarray(score_fn.fn(labels, row), dtype=np.float64) for row in preds])
        if per_example.shape != preds.shape:
            raise ValueError(f"a pointwise score_fn must return one score per example, got {per_example.shape[1:]}")
        if example_counts is None:
            return per_example.mean(axis=1)
        return (example_counts @ per_example.T) / len(labels)
    if example_counts is None:
        return np.array([float(score_fn(labels, row)) for row in preds])
    scores = np.empty((len(example_counts), len(preds)))
    for b, counts in enumerate(example_counts):
        chosen = np.repeat(np.arange(len(labels)), counts)
        scores[b] = [float(score_fn(labels[chosen], row[chosen])) for row in preds]
    return scores


def _seed_weights(seeds: Sequence[Any], nboot: int, sample_seeds: bool,
                  generator: np.random.Generator | np.random.RandomState) -> np.ndarray:
    """[nboot, len(seeds)]: how often each seed is drawn in each sample (all ones without sampling)."""
    if not sample_seeds:
        return np.ones((nboot, len(seeds)))
    return generator.multinomial(len(seeds), np.full(len(seeds), 1 / len(seeds)), size=nboot).astype(np.float64)


def _side_scores(run_scores: np.ndarray, groups: Mapping[Any, np.ndarray], seeds: Sequence[Any],
                 weights: np.ndarray) -> np.ndarray:
    """[nboot]: the mean over drawn seeds of each seed's mean over its runs."""
    per_seed = np.stack([run_scores[:, groups[seed]].mean(axis=1) for seed in seeds], axis=1)  # [nboot, seeds]
    return (per_seed * weights).sum(axis=1) / len(seeds)


def _interval(values: np.ndarray, quantiles: list[float]) -> dict[str, float]:
    low, high = np.quantile(values, quantiles)
    return {"mean": float(np.mean(values)), "low": float(low), "high": float(high)}
