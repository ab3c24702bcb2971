"""Linear probes over a sweep's embeddings, with Multi-Bootstrap intervals: the MultiBERTs paper's usual
experiment.

For every ``done`` checkpoint of a sweep (``RUNS/sweep.jsonl``) with embeddings of a labelled dataset, fit
a logistic-regression probe on the train split and predict the test split; then, per (family, step), the
Multi-Bootstrap (``mbexport.stats``, resampling seeds and test examples) gives the metric's interval, and
for two steps (paired by seed) or two groups of seeds (unpaired) the interval and p-value of the
difference. Writes ``report.json``, ``report.md`` and ``metric_vs_step.png`` (metric against step with
interval bands).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mbexport.errors import InputFileError, MissingExtraError, SweepError
from mbexport.stats import METRICS, multibootstrap, report_ci
from mbexport.sweep import MANIFEST, read_rows

__all__ = ["ProbeOptions", "load_labels", "probe", "split_masks"]

_EXTRA = "pip install 'mbexport[research]' (scikit-learn, matplotlib)"


@dataclass(frozen=True)
class ProbeOptions:
    runs: Path  # a sweep directory (holds sweep.jsonl)
    label_field: str = "label"
    data: Path | None = None  # the labelled JSONL; default: the dataset the sweep embedded
    split_field: str | None = None  # a field with values train / test
    test_fraction: float = 0.3  # used without split_field: a random split with split_seed
    split_seed: int = 0
    metric: str = "accuracy"
    compare_steps: tuple[str, str] | None = None  # (baseline step, intervention step), e.g. ("20k", "final")
    compare_seeds: tuple[list[int], list[int]] | None = None  # two groups of seeds, at compare_at
    compare_at: str | None = None  # the step of a seed-group comparison (default: the largest)
    nboot: int = 1000
    confidence: float = 0.95
    rng: int = 0
    out: Path | None = None  # default: RUNS/probe


@dataclass
class ProbeReport:
    checkpoints: list[dict[str, Any]]  # one per checkpoint: seed, step, metric on the test split
    steps: list[dict[str, Any]]  # one per (family, step): seeds, mean, low, high
    comparisons: list[dict[str, Any]] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)


def probe(options: ProbeOptions) -> ProbeReport:
    """Fit the probes, bootstrap, write report.json / report.md / metric_vs_step.png; the report."""
    if options.metric not in METRICS:
        raise SweepError(f"--metric {options.metric!r}: choose one of {', '.join(METRICS)}")
    rows = [r for r in read_rows(options.runs / MANIFEST) if r.get("status") == "done" and r.get("embeddings")]
    if not rows:
        raise SweepError(f"{options.runs / MANIFEST}: no finished checkpoint with embeddings; "
                         "run mbexport sweep --embed DATA.jsonl first")
    data = options.data or _sweep_dataset(rows, options.runs)
    labels, splits = load_labels(data, options.label_field, options.split_field)
    train, test = split_masks(len(labels), splits, options.test_fraction, options.split_seed)
    preds = {row["key"]: _fit_predict(options.runs / row["embeddings"], labels, train, test) for row in rows}
    y_test = labels[test]
    score = METRICS[options.metric]
    checkpoints = [{"key": r["key"], "family": r["family"], "seed": r["seed"], "step": r["step"],
                    "steps": r["steps"], options.metric: score(y_test, preds[r["key"]])} for r in rows]
    report = ProbeReport(checkpoints, [])
    for (family, step), group in _by_step(rows).items():
        ci = _bootstrap(group, group, preds, y_test, options, paired=True)["base"]
        report.steps.append({"family": family, "step": step, "steps": group[0]["steps"],
                             "seeds": [r["seed"] for r in group], **ci})
    if options.compare_steps:
        report.comparisons.append(_compare_steps(rows, preds, y_test, options))
    if options.compare_seeds:
        report.comparisons.append(_compare_seeds(rows, preds, y_test, options))
    out = options.out or options.runs / "probe"
    out.mkdir(parents=True, exist_ok=True)
    report.files = _write(report, out, options, data, int(train.sum()), int(test.sum()))
    return report


def load_labels(data: Path, label_field: str, split_field: str | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Labels (and split values) of a JSONL, one per record: read as ``mbexport embed`` reads it, so label i
    belongs to embedding row i."""
    from mbexport.runtime.files import read_records  # not at the top: the runtime package loads onnxruntime

    labels, splits = [], []
    fields = (label_field,) if split_field is None else (label_field, split_field)
    for number, record in read_records(str(data), fields):
        for name in fields:
            if name not in record:
                raise InputFileError(f"{data}:{number}: no {name!r} field; choose the field with "
                                     f"{'--label-field' if name == label_field else '--split-field'}")
        labels.append(record[label_field])
        if split_field is not None:
            splits.append(str(record[split_field]).lower())
    return np.asarray(labels), (np.asarray(splits) if split_field is not None else None)


def split_masks(n: int, splits: np.ndarray | None, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) boolean masks: from the split values, or a random split of ``test_fraction``."""
    if splits is not None:
        train, test = splits == "train", splits == "test"
    else:
        if not 0 < test_fraction < 1:
            raise SweepError(f"--test-fraction {test_fraction}: give a fraction in (0, 1)")
        test = np.zeros(n, dtype=bool)
        test[np.random.default_rng(seed).permutation(n)[: max(1, round(n * test_fraction))]] = True
        train = ~test
    if not train.any() or not test.any():
        raise SweepError(f"the split has {int(train.sum())} train and {int(test.sum())} test examples; both are "
                         "needed (split values must be 'train' and 'test')")
    return train, test


def _sweep_dataset(rows: list[dict[str, Any]], runs: Path) -> Path:
    paths = {(r.get("settings") or {}).get("dataset", {}).get("path") for r in rows}
    if len(paths) != 1 or None in paths:
        raise SweepError(f"{runs / MANIFEST}: the checkpoints embedded different datasets; pass --data")
    return Path(str(paths.pop()))


def _fit_predict(embeddings: Path, labels: np.ndarray, train: np.ndarray, test: np.ndarray) -> np.ndarray:
    try:
        from sklearn.linear_model import LogisticRegression  # type: ignore[import-untyped]
        from sklearn.pipeline import make_pipeline  # type: ignore[import-untyped]
        from sklearn.preprocessing import StandardScaler  # type: ignore[import-untyped]
    except ImportError:
        raise MissingExtraError(f"mbexport probe needs scikit-learn: {_EXTRA}") from None
    x = np.load(embeddings)
    if len(x) != len(labels):
        raise SweepError(f"{embeddings} has {len(x)} rows but the dataset has {len(labels)} labelled lines; "
                         "probe the dataset the sweep embedded (--data)")
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    return model.fit(x[train], labels[train]).predict(x[test])


def _by_step(rows: list[dict[str, Any]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in sorted(rows, key=lambda r: (r["family"], r["steps"], r["step"] == "final", r["seed"])):
        groups.setdefault((row["family"], row["step"]), []).append(row)
    return groups


def _bootstrap(base: list[dict[str, Any]], expt: list[dict[str, Any]], preds: dict[str, np.ndarray],
               y_test: np.ndarray, options: ProbeOptions, paired: bool) -> dict[str, dict[str, float]]:
    runs = base + expt
    run_info = {"seed": np.array([r["seed"] for r in runs]),
                "intervention": np.array([False] * len(base) + [True] * len(expt))}
    samples = multibootstrap(run_info, np.stack([preds[r["key"]] for r in runs]), y_test, options.metric,
                             paired_seeds=paired, nboot=options.nboot, rng=options.rng)
    return report_ci(samples, c=options.confidence)


def _compare_steps(rows: list[dict[str, Any]], preds: dict[str, np.ndarray], y_test: np.ndarray,
                   options: ProbeOptions) -> dict[str, Any]:
    assert options.compare_steps is not None
    sides = [[r for r in rows if r["step"] == step.strip().lower()] for step in options.compare_steps]
    for step, side in zip(options.compare_steps, sides):
        if not side:
            known = sorted({r["step"] for r in rows}, key=lambda s: (len(s), s))
            raise SweepError(f"--compare {','.join(options.compare_steps)}: no probed checkpoint at step {step!r}; "
                             f"steps in the sweep: {', '.join(known)}")
    seeds = {r["seed"] for r in sides[0]} & {r["seed"] for r in sides[1]}
    if not seeds:
        raise SweepError(f"--compare {','.join(options.compare_steps)}: the two steps share no seed to pair")
    paired = [[r for r in side if r["seed"] in seeds] for side in sides]
    return {"kind": "steps", "baseline": options.compare_steps[0], "intervention": options.compare_steps[1],
            "seeds": sorted(seeds), "paired_seeds": True,
            **_bootstrap(paired[0], paired[1], preds, y_test, options, paired=True)}


def _compare_seeds(rows: list[dict[str, Any]], preds: dict[str, np.ndarray], y_test: np.ndarray,
                   options: ProbeOptions) -> dict[str, Any]:
    assert options.compare_seeds is not None
    step = options.compare_at or max(rows, key=lambda r: (r["steps"], r["step"] == "final"))["step"]
    sides = [[r for r in rows if r["step"] == step and r["seed"] in group] for group in options.compare_seeds]
    if not sides[0] or not sides[1]:
        raise SweepError(f"--compare-seeds: a group has no probed checkpoint at step {step!r}; "
                         "choose seeds the sweep ran (and --compare-at)")
    return {"kind": "seeds", "step": step, "baseline": sorted(options.compare_seeds[0]),
            "intervention": sorted(options.compare_seeds[1]), "paired_seeds": False,
            **_bootstrap(sides[0], sides[1], preds, y_test, options, paired=False)}


def _write(report: ProbeReport, out: Path, options: ProbeOptions, data: Path, n_train: int, n_test: int
           ) -> dict[str, str]:
    from mbexport.sweep import write_text_atomic

    files = {"json": out / "report.json", "markdown": out / "report.md", "plot": out / "metric_vs_step.png"}
    header = {"metric": options.metric, "nboot": options.nboot, "confidence": options.confidence,
              "dataset": str(data), "train_examples": n_train, "test_examples": n_test,
              "probe": "StandardScaler + LogisticRegression (scikit-learn)"}
    body = {**header, "steps": report.steps, "comparisons": report.comparisons, "checkpoints": report.checkpoints}
    write_text_atomic(files["json"], json.dumps(body, indent=2) + "\n")
    write_text_atomic(files["markdown"], _markdown(report, header))
    _plot(report, options, files["plot"])
    return {k: str(v) for k, v in files.items()}


def _markdown(report: ProbeReport, header: dict[str, Any]) -> str:
    metric, pct = header["metric"], round(100 * header["confidence"])
    lines = [f"# Probe {metric} per step (Multi-Bootstrap, {pct}% intervals, {header['nboot']} samples)", "",
             (f"{header['probe']} on {header['train_examples']} train / {header['test_examples']} test examples "
              f"of `{header['dataset']}`."), "",
             f"| family | step | seeds | {metric} | {pct}% interval |", "|---|---|---|---|---|"]
    lines += [f"| {s['family']} | {s['step']} | {len(s['seeds'])} | {s['mean']:.4f} "
              f"| [{s['low']:.4f}, {s['high']:.4f}] |" for s in report.steps]
    if report.comparisons:
        lines += ["", f"| comparison | baseline | intervention | difference | {pct}% interval | p |",
                  "|---|---|---|---|---|---|"]
        for c in report.comparisons:
            what = "steps (paired seeds)" if c["kind"] == "steps" else f"seed groups at {c['step']}"
            d = c["delta"]
            lines.append(f"| {what} | {c['baseline']}: {c['base']['mean']:.4f} | {c['intervention']}: "
                         f"{c['expt']['mean']:.4f} | {d['mean']:+.4f} | [{d['low']:+.4f}, {d['high']:+.4f}] | "
                         f"{d['p']:.3f} |")
    return "\n".join(lines) + "\n"


def _plot(report: ProbeReport, options: ProbeOptions, target: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise MissingExtraError(f"mbexport probe needs matplotlib for its plot: {_EXTRA}") from None
    from mbexport.sweep import write_bytes_atomic

    fig, ax = plt.subplots(figsize=(7, 4))
    for index, family in enumerate(dict.fromkeys(s["family"] for s in report.steps)):
        steps = [s for s in report.steps if s["family"] == family]
        x = np.array([s["steps"] for s in steps], dtype=float)
        ax.plot(x, [s["mean"] for s in steps], marker="o", label=f"{family} (mean over seeds)")
        ax.fill_between(x, [s["low"] for s in steps], [s["high"] for s in steps], alpha=0.25,
                        label=f"{family}: {round(100 * options.confidence)}% Multi-Bootstrap interval")
        points = [c for c in report.checkpoints if c["family"] == family]
        ax.scatter([c["steps"] for c in points], [c[options.metric] for c in points], s=10, color="gray",
                   alpha=0.6, label="one seed" if index == 0 else None, zorder=3)
        for s in steps:
            if s["step"] == "final":
                ax.annotate("final", (s["steps"], s["mean"]), textcoords="offset points", xytext=(4, 6))
    ax.set_xscale("log")
    ax.set_xlabel("pretraining step")
    ax.set_ylabel(f"probe {options.metric} (test split)")
    ax.set_title(f"Linear probe {options.metric} against pretraining step")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    write_bytes_atomic(target, buffer.getvalue())
