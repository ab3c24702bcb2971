"""A plain-loop Multi-Bootstrap, written from the MultiBERTs paper's algorithm: the reference
that tests/test_stats.py and bench/test_bench_stats.py hold mbexport.stats against.

Per sample: draw seeds with replacement (one draw for both sides when paired, over the shared
seeds), draw examples with replacement once for both sides, score every run of a drawn seed on
the drawn examples, average runs within a seed, then average over the drawn seeds.
"""

from __future__ import annotations

import numpy as np


def loop_multibootstrap(run_info, preds, labels, score_fn, paired_seeds, sample_seeds, sample_examples, nboot, rng):
    seeds, mask = np.asarray(run_info["seed"]), np.asarray(run_info["intervention"])
    base = {s: [i for i in range(len(seeds)) if seeds[i] == s and not mask[i]] for s in set(seeds[~mask].tolist())}
    expt = {s: [i for i in range(len(seeds)) if seeds[i] == s and mask[i]] for s in set(seeds[mask].tolist())}
    common = sorted(set(base) & set(expt))
    out = []
    for _ in range(nboot):
        if paired_seeds:
            drawn_base = list(rng.choice(common, size=len(common))) if sample_seeds else common
            drawn_expt = drawn_base
        else:
            drawn_base = list(rng.choice(sorted(base), size=len(base))) if sample_seeds else sorted(base)
            drawn_expt = list(rng.choice(sorted(expt), size=len(expt))) if sample_seeds else sorted(expt)
        jj = rng.choice(len(labels), size=len(labels)) if sample_examples else np.arange(len(labels))

        def side(groups, drawn, jj=jj):
            return np.mean([np.mean([score_fn(labels[jj], preds[i, jj]) for i in groups[s]]) for s in drawn])

        out.append((side(base, drawn_base), side(expt, drawn_expt)))
    return np.array(out)
