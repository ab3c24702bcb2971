"""mbexport.stats against a plain-loop Multi-Bootstrap written from the paper's algorithm
(tests/multibootstrap_reference.py): exactly where nothing is sampled, within Monte-Carlo
error otherwise."""

from __future__ import annotations

import numpy as np
import pytest
from multibootstrap_reference import loop_multibootstrap

from mbexport.stats import multibootstrap, pointwise, report_ci


def ks_distance(x, y):
    x, y = np.round(x, 9), np.round(y, 9)  # the same atom computed two ways must not count as two
    grid = np.union1d(x, y)
    return np.max(np.abs(np.searchsorted(np.sort(x), grid, side="right") / len(x)
                         - np.searchsorted(np.sort(y), grid, side="right") / len(y)))


def accuracy(y_true, y_pred):
    return float(np.mean(y_true == y_pred))


@pytest.fixture(scope="module")
def experiment():
    """5 baseline seeds, 5 intervention seeds (4 shared), 2 runs for some seeds, 300 examples; the
    intervention is about 3 points better and seeds differ by a couple of points."""
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 3, size=300)
    run_seeds, run_side, rows = [], [], []
    for side, seeds, skill in ((False, [0, 1, 2, 3, 4], 0.70), (True, [0, 1, 2, 3, 5], 0.73)):
        for seed in seeds:
            for _ in range(2 if seed % 2 else 1):
                p = skill + 0.02 * np.sin(seed)
                correct = rng.random(300) < p
                rows.append(np.where(correct, labels, (labels + 1) % 3))
                run_seeds.append(seed)
                run_side.append(side)
    run_info = {"seed": np.array(run_seeds), "intervention": np.array(run_side)}
    return run_info, np.stack(rows), labels


@pytest.mark.parametrize("paired", [False, True])
def test_no_sampling_is_exactly_the_macro_average(experiment, paired):
    run_info, preds, labels = experiment
    ours = multibootstrap(run_info, preds, labels, "accuracy", paired_seeds=paired, sample_seeds=False,
                          sample_examples=False, nboot=3, rng=0)
    loop = loop_multibootstrap(run_info, preds, labels, accuracy, paired, False, False, 3, np.random.default_rng(0))
    np.testing.assert_allclose(ours, loop, rtol=0, atol=1e-12)
    # The macro-average: seeds with two runs weigh the same as seeds with one.
    seeds, mask = run_info["seed"], run_info["intervention"]
    per_seed = [np.mean([accuracy(labels, preds[i]) for i in np.flatnonzero((seeds == s) & ~mask)])
                for s in ([0, 1, 2, 3] if paired else [0, 1, 2, 3, 4])]
    assert ours[0, 0] == pytest.approx(np.mean(per_seed), abs=1e-12)


@pytest.mark.parametrize("paired", [False, True])
@pytest.mark.parametrize(("sample_seeds", "sample_examples"), [(True, True), (True, False), (False, True)])
def test_intervals_agree_with_the_plain_loop(experiment, paired, sample_seeds, sample_examples):
    run_info, preds, labels = experiment
    n = 2000
    ours = multibootstrap(run_info, preds, labels, "accuracy", paired_seeds=paired, sample_seeds=sample_seeds,
                          sample_examples=sample_examples, nboot=n, rng=1)
    loop = loop_multibootstrap(run_info, preds, labels, accuracy, paired, sample_seeds, sample_examples, n,
                               np.random.default_rng(2))
    a, b = report_ci(ours), report_ci(loop)
    for column in (0, 1, None):
        x = ours[:, 1] - ours[:, 0] if column is None else ours[:, column]
        y = loop[:, 1] - loop[:, 0] if column is None else loop[:, column]
        # Monte-Carlo error: means within 5 standard errors; the laws within the two-sample
        # Kolmogorov-Smirnov distance that identical laws exceed with probability 0.001.
        assert abs(x.mean() - y.mean()) <= 5 * y.std() / np.sqrt(n) + 1e-12
        assert ks_distance(x, y) <= 1.95 * np.sqrt(2 / n)
    assert abs(a["delta"]["p"] - b["delta"]["p"]) <= 0.05


def test_any_callable_takes_the_same_draws_as_the_fast_path(experiment):
    """A plain callable (the library's interface) and the built-in pointwise metric see the same
    samples from the same generator, so they agree to rounding."""
    run_info, preds, labels = experiment
    fast = multibootstrap(run_info, preds, labels, "accuracy", nboot=50, rng=3)
    plain = multibootstrap(run_info, preds, labels, accuracy, nboot=50, rng=3)
    custom = multibootstrap(run_info, preds, labels, pointwise(lambda t, p: (t == p).astype(float)), nboot=50, rng=3)
    np.testing.assert_allclose(plain, fast, atol=1e-12)
    np.testing.assert_allclose(custom, fast, atol=1e-12)


def test_paired_seeds_use_one_draw_for_both_sides():
    """Two sides with identical runs: paired seeds give identical scores in every sample; unpaired do not."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 100)
    preds = np.stack([np.where(rng.random(100) < 0.5 + 0.08 * s, labels, 1 - labels) for s in range(6)])
    run_info = {"seed": np.array([0, 1, 2, 0, 1, 2]), "intervention": np.array([False] * 3 + [True] * 3)}
    preds[3:] = preds[:3]
    paired = multibootstrap(run_info, preds, labels, "accuracy", paired_seeds=True, nboot=200, rng=0)
    np.testing.assert_array_equal(paired[:, 0], paired[:, 1])
    unpaired = multibootstrap(run_info, preds, labels, "accuracy", paired_seeds=False, nboot=200, rng=0)
    assert np.any(unpaired[:, 0] != unpaired[:, 1])


def test_report_ci_matches_numpy_and_floors_the_p_value():
    rng = np.random.default_rng(4)
    samples = np.stack([rng.normal(0.7, 0.005, 1000), rng.normal(0.75, 0.005, 1000)], axis=1)
    report = report_ci(samples, c=0.9, abs_threshold=0.04, rel_threshold=0.05)
    deltas = samples[:, 1] - samples[:, 0]
    assert report["delta"]["mean"] == pytest.approx(deltas.mean())
    assert report["delta"]["low"] == pytest.approx(np.quantile(deltas, 0.05))
    assert report["expt"]["high"] == pytest.approx(np.quantile(samples[:, 1], 0.95))
    assert report["delta"]["p"] == 1 / 1000  # no sample with delta <= 0: floored at 1/nboot
    assert report["delta"]["p_abs_threshold"] == pytest.approx(np.mean(deltas >= 0.04))
    assert report["delta"]["p_rel_threshold"] == pytest.approx(np.mean(deltas / samples[:, 0] >= 0.05))
    negative = report_ci(samples, expect_negative_effect=True)
    assert negative["delta"]["p"] == pytest.approx(1.0)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"preds": np.zeros((3, 4))}, "preds must be"),
    ({"run_info": {"seed": np.arange(4)}}, "'seed' and an 'intervention'"),
    ({"run_info": {"seed": np.arange(4), "intervention": np.array([0, 1, 0, 1])}}, "boolean"),
    ({"run_info": {"seed": np.arange(4), "intervention": np.zeros(4, bool)}}, "both sides"),
    ({"score_fn": "f1"}, "not a built-in metric"),
    ({"nboot": 0}, "nboot"),
    ({"rng": "seed"}, "rng must be"),
])
def test_bad_arguments_are_clear(kwargs, message):
    args = {"run_info": {"seed": np.arange(4), "intervention": np.array([False, False, True, True])},
            "preds": np.zeros((4, 5), int), "labels": np.zeros(5, int), "score_fn": "accuracy"}
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        multibootstrap(args.pop("run_info"), args.pop("preds"), args.pop("labels"), args.pop("score_fn"), **args)
