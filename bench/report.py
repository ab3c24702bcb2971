"""Turn a pytest-benchmark JSON file into docs/BENCHMARKS.md tables and PNG plots.

    python -m bench.report BENCH.json [--out docs/BENCHMARKS.md] [--plots docs/bench] [--command "..."]

Everything in the report comes from the JSON (machine, versions, date, each
benchmark's timing and ``extra_info``), so the report regenerates from it alone.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

# extra_info keys shown as columns when present, in this order; the rest are appended.
PREFERRED = ("engine", "speedup", "ratio", "texts_per_s", "tokens_per_s", "mb_per_s", "seq_per_s", "threads",
             "batch", "sequence", "parity_max_abs", "cosine")


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        # cosines and agreements near 1 need their digits; everything else reads best at 4.
        return f"{value:.7f}" if 0.99 <= value < 1 else f"{value:.4g}"
    return str(value)


# extra_info keys plotted, not tabulated.
PLOTTED_ONLY = ("abs_diff_histogram",)


def group_table(rows: list[dict[str, Any]]) -> str:
    extra_keys = [k for k in PREFERRED if any(k in r["extra_info"] for r in rows)]
    extra_keys += sorted({k for r in rows for k in r["extra_info"]} - set(extra_keys) - set(PLOTTED_ONLY))
    header = ["benchmark", "mean (s)", "stddev (s)", "rounds", *extra_keys]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        stats = r["stats"]
        cells = [r["name"], f"{stats['mean']:.4g}", f"{stats['stddev']:.2g}", str(stats["rounds"])]
        cells += [_fmt(r["extra_info"].get(k, "")) for k in extra_keys]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, plots: Path, name: str) -> Path:
    plots.mkdir(parents=True, exist_ok=True)
    path = plots / f"{re.sub(r'[^A-Za-z0-9]+', '-', name).strip('-')}.png"  # safe in a file name and a link
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    _pyplot().close(fig)
    return path


def plot_group(group: str, rows: list[dict[str, Any]], plots: Path) -> Path:
    """Throughput (1 / mean time) per benchmark in a group, as a horizontal bar chart."""
    names = [r["name"].removeprefix("test_") for r in rows]
    ops = [1.0 / r["stats"]["mean"] for r in rows]
    fig, ax = _pyplot().subplots(figsize=(8, 0.5 * len(rows) + 1.5))
    ax.barh(names, ops, color="#4472c4")
    ax.set_xlabel("runs per second (higher is faster)")
    ax.set_title(group)
    return _save(fig, plots, group)


def plot_batch_scaling(group: str, rows: list[dict[str, Any]], plots: Path) -> Path:
    """Sequences per second vs batch size, one line per engine, one panel per sequence length."""
    sequences = sorted({r["extra_info"]["sequence"] for r in rows})
    fig, axes = _pyplot().subplots(1, len(sequences), figsize=(5 * len(sequences), 4), squeeze=False)
    for ax, seq in zip(axes[0], sequences):
        lines: dict[str, list[tuple[int, float]]] = defaultdict(list)
        for r in rows:
            info = r["extra_info"]
            if info["sequence"] == seq:
                lines[info["engine"]].append((info["batch"], info["batch"] / r["stats"]["mean"]))
        for engine, points in sorted(lines.items()):
            points.sort()
            ax.plot([b for b, _ in points], [v for _, v in points], marker="o", label=engine)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch size")
        ax.set_ylabel("sequences per second")
        ax.set_title(f"{group}, sequence {seq}")
        ax.legend(fontsize=7)
    return _save(fig, plots, f"{group}-scaling")


def plot_histograms(group: str, rows: list[dict[str, Any]], plots: Path) -> Path:
    """|diff| vs the reference by decade, one bar series per export."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 4))
    width = 0.8 / len(rows)
    for k, r in enumerate(rows):
        hist = r["extra_info"]["abs_diff_histogram"]
        decades, counts = hist["decades"], hist["counts"]
        total = max(sum(counts), 1)
        ax.bar([i + k * width for i in range(len(counts))], [c / total for c in counts], width,
               label=f"{r['extra_info'].get('engine', r['name'])} ({hist['output']})")
    # bin 0 is below the first decade, bin i covers [1e(decades[i-1]), 1e(decades[i])), the last is open
    labels = [f"<1e{decades[0]}"] + [f"1e{d}" for d in decades]
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(labels))], labels, rotation=45, fontsize=8)
    ax.set_xlabel("|ours - reference| (bin lower edge)")
    ax.set_ylabel("fraction of values")
    ax.set_title(f"{group}: |diff| histogram")
    ax.legend(fontsize=7)
    return _save(fig, plots, f"{group}-histogram")


def plots_for(group: str, rows: list[dict[str, Any]], plots: Path) -> list[Path]:
    """The group's bar chart, plus scaling lines for batch grids and histograms where rows carry them."""
    made = [plot_group(group, rows, plots)]
    grid = [r for r in rows if {"batch", "sequence", "engine"} <= r["extra_info"].keys()]
    if len({r["extra_info"]["batch"] for r in grid}) > 1:
        made.append(plot_batch_scaling(group, grid, plots))
    with_hist = [r for r in rows if "abs_diff_histogram" in r["extra_info"]]
    if with_hist:
        made.append(plot_histograms(group, with_hist, plots))
    return made


def render(data: dict[str, Any], command: str, out: Path, plots: Path | None) -> str:
    machine = data.get("machine_info", {})
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for bench in data["benchmarks"]:
        groups[bench.get("group") or "ungrouped"].append(bench)
    cpu = machine.get("cpu", {})
    parts = [
        "# Benchmarks",
        "",
        "Generated by `python -m bench.report` from a pytest-benchmark JSON file; every figure below",
        "comes from that run, baselines included (measured in the same run, never typed in).",
        "",
        f"- command: `{command}`",
        f"- date: {data.get('datetime', '?')}",
        f"- machine: {cpu.get('brand_raw', machine.get('processor', '?'))}, {cpu.get('count', '?')} cores, "
        f"{machine.get('system', '?')} {machine.get('release', '')}",
        f"- python: {machine.get('python_version', '?')}; pytest-benchmark {data.get('version', '?')}",
        f"- commit: {data.get('commit_info', {}).get('id', '?')}",
        "",
    ]
    for group, rows in sorted(groups.items()):
        parts += [f"## {group}", "", group_table(rows), ""]
        for image in plots_for(group, rows, plots) if plots is not None else []:
            link = image.relative_to(out.parent) if image.is_relative_to(out.parent) else image
            parts += [f"![{image.stem}]({link})", ""]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", type=Path, nargs="+", help="pytest-benchmark JSON file(s), merged in order")
    parser.add_argument("--out", type=Path, default=Path("docs/BENCHMARKS.md"))
    parser.add_argument("--plots", type=Path, default=Path("docs/bench"))
    parser.add_argument("--no-plots", action="store_true")
    parser.add_argument("--command", default="pytest bench/ --benchmark-json BENCH.json")
    args = parser.parse_args(argv)
    data = load(args.json[0])
    for extra in args.json[1:]:
        data["benchmarks"] += load(extra)["benchmarks"]
    text = render(data, args.command, args.out, None if args.no_plots else args.plots)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
