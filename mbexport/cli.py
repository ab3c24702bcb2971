"""The ``mbexport`` command: a thin Typer + rich layer over the Python API.

Every user error is an ``MbexportError``: printed as one line on stderr with a
non-zero exit, never a traceback.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from mbexport.errors import MbexportError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="BERT checkpoints to fast, verified ONNX exports, and embeddings from them.")
console = Console(stderr=True)
# Piped output (logs, tests, scripts) gets room for whole names instead of rich's 80 columns.
out_console = Console(width=None if sys.stdout.isatty() else 160)

STAGE_LABELS = {"load": "Loading checkpoint", "build": "Building ONNX graph", "write": "Writing export",
                "verify": "Checking parity", "commit": "Moving into place"}


@app.command()
def convert(
    name: Annotated[str, typer.Argument(help="seed_1, 'seed_1 step_200k', earlyberts-seed1, org/name, a directory or a TF checkpoint")],
    step: Annotated[Optional[str], typer.Argument(help="step_200k / 200k (MultiBERTs) or step7000 (EarlyBERTs)")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="export directory (default: $MBEXPORT_HOME/exports/...)")] = None,
    head: Annotated[str, typer.Option(help="base | pretraining | qa | classification | auto")] = "auto",
    precision: Annotated[str, typer.Option(help="fp32 | fp16 | int8 (dynamic quantization, CPU)")] = "fp32",
    flavor: Annotated[str, typer.Option(help="fused (onnxruntime contrib ops) | portable (standard ONNX ops)")] = "fused",
    parity: Annotated[bool, typer.Option("--parity/--no-parity", help="verify against PyTorch (or numpy) before writing")] = True,
    revision: Annotated[Optional[str], typer.Option(help="hub revision for an org/name id")] = None,
    from_path: Annotated[Optional[Path], typer.Option("--from", help="local copy of a catalogue checkpoint")] = None,
) -> None:
    """Convert a checkpoint into a verified ONNX export directory."""
    from mbexport.converter import convert_detailed

    with _stages() as stage:
        result = convert_detailed(name, step, out=out, head=head, precision=precision, flavor=flavor, parity=parity,
                                  revision=revision, local=from_path, stage=stage)
    table = Table(title="mbexport convert", show_header=False)
    table.add_row("export", str(result.path))
    table.add_row("head / flavor / precision", f"{result.head} / {result.flavor} / {result.precision}")
    table.add_row("size", f"{result.bytes / 1e6:.1f} MB")
    fused = {k: v for k, v in result.op_counts.items()
             if k in ("EmbedLayerNormalization", "Attention", "SkipLayerNormalization", "BiasGelu", "FastGelu")}
    table.add_row("fused ops", ", ".join(f"{k} {v}" for k, v in fused.items()) or "none (portable)")
    table.add_row("parity", result.parity.summary() if result.parity else "skipped (--no-parity)")
    table.add_row("seconds", ", ".join(f"{k} {v:.2f}" for k, v in result.seconds.items()))
    out_console.print(table)


@app.command("list")
def list_catalog(
    family: Annotated[Optional[str], typer.Option(help="multiberts | earlyberts | google (a prefix of the family)")] = None,
) -> None:
    """The checkpoint catalogue, with what is in the HF cache or exported here."""
    from mbexport.catalog import entries, local_status
    from mbexport.converter import export_home

    table = Table(title="mbexport catalogue")
    for column in ("family", "name", "repo", "revision", "cached", "exported"):
        table.add_column(column)
    home = export_home()
    for entry in entries():
        if family and not entry.family.lower().startswith(family.lower()):
            continue
        status = local_status(entry, home)
        table.add_row(entry.family, entry.name, entry.repo_id, entry.revision or "main",
                      "yes" if status.cached else "", "yes" if status.exported else "")
    out_console.print(table)


@app.command("parity")
def parity_command(
    export_dir: Annotated[Path, typer.Argument(help="an export directory")],
    reference: Annotated[str, typer.Option(help="auto | torch | numpy")] = "auto",
) -> None:
    """Re-check an export against its source checkpoint; exit 1 beyond tolerance."""
    from mbexport.converter import verify_export

    with _stages() as stage, stage("verify"):
        report = verify_export(export_dir, reference)
    table = Table(title=f"parity vs {report.reference}")
    for column in ("output", "max |diff|", "mean |diff|", "mean cosine", "argmax agree", "tolerance", "ok"):
        table.add_column(column)
    for o in report.outputs:
        agree = "" if o.argmax_agreement is None else f"{o.argmax_agreement:.4f}"
        table.add_row(o.name, f"{o.max_abs:.2e}", f"{o.mean_abs:.2e}", f"{o.mean_cosine:.7f}", agree,
                      "-" if o.tolerance is None else f"{o.tolerance:.1e}", "yes" if o.passed else "NO")
    out_console.print(table)
    if not report.passed:
        console.print(f"error: parity failed for {export_dir}: {report.summary()}")
        raise typer.Exit(1)


@app.command()
def info(export_dir: Annotated[Path, typer.Argument(help="an export directory")]) -> None:
    """Print an export's manifest."""
    from mbexport.export.manifest import read_manifest

    out_console.print_json(json.dumps(read_manifest(export_dir)))


@app.command()
def embed(
    export_dir: Annotated[Path, typer.Argument(help="an export directory (mbexport convert ... --head base)")],
    input_path: Annotated[str, typer.Argument(metavar="INPUT", help=".txt (a text per line), .jsonl, or - for stdin")],
    out: Annotated[Path, typer.Option("--out", "-o", help="output .npy (rows in input order) or .jsonl (id + embedding)")],
    field: Annotated[Optional[str], typer.Option(help="JSONL field holding the text (default: text)")] = None,
    pooling: Annotated[str, typer.Option(help="cls | mean | pooler")] = "cls",
    normalize: Annotated[bool, typer.Option("--normalize/--no-normalize", help="L2-normalize each vector")] = False,
    max_length: Annotated[Optional[int], typer.Option(help="truncate texts to this many tokens (default: the model's)")] = None,
    batch_tokens: Annotated[Optional[int], typer.Option(help="padded tokens per batch (default: 2048 CPU, 65536 CUDA)")] = None,
    device: Annotated[str, typer.Option(help="cpu | cuda | auto")] = "cpu",
    threads: Annotated[Optional[int], typer.Option(help="onnxruntime intra-op threads (default: all cores)")] = None,
    skip_bad_lines: Annotated[bool, typer.Option("--skip-bad-lines", help="skip (and count) lines that are not UTF-8/JSON")] = False,
) -> None:
    """Embed every text of INPUT into --out; the output appears only when complete."""
    import collections
    import time

    from mbexport.runtime import Embedder
    from mbexport.runtime.files import AtomicOutput, ReadCounts, read_texts

    embedder = Embedder(export_dir, device=device, pooling=pooling, normalize=normalize, max_length=max_length,
                        batch_tokens=batch_tokens, threads=threads)
    counts = ReadCounts()
    ids: collections.deque = collections.deque()

    def texts() -> Iterator[str]:
        for record_id, text in read_texts(input_path, field, skip_bad_lines, counts):
            ids.append(record_id)
            yield text

    stats = embedder.stats
    started = time.perf_counter()
    progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), TextColumn("{task.completed:,.0f} texts"),
                        TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), console=console,
                        disable=not console.is_terminal)
    with AtomicOutput(out, embedder.hidden_size) as writer, progress:
        task = progress.add_task("Embedding", total=None, rate="")
        for chunk in embedder.embed_iter(texts()):
            writer.write([ids.popleft() for _ in range(len(chunk))], chunk)
            elapsed = max(time.perf_counter() - started, 1e-9)
            progress.update(task, completed=stats.texts,
                            rate=f"{stats.texts / elapsed:,.0f} texts/s, {stats.tokens / elapsed:,.0f} tokens/s")
    elapsed = max(time.perf_counter() - started, 1e-9)
    table = Table(title="mbexport embed", show_header=False)
    table.add_row("output", f"{out} ({writer.rows} x {embedder.hidden_size} float32)")
    table.add_row("texts / tokens", f"{stats.texts:,} / {stats.tokens:,} (padding {stats.padded_tokens - stats.tokens:,})")
    table.add_row("truncated", f"{stats.truncated:,} texts longer than {embedder.max_length} tokens")
    skipped = f"{counts.skipped:,} bad lines"
    table.add_row("skipped", skipped + (f" (first: line {counts.first_skipped})" if counts.skipped else ""))
    table.add_row("device / pooling", f"{embedder.device} / {pooling}{' + normalize' if normalize else ''}")
    table.add_row("speed", f"{elapsed:.2f} s, {stats.texts / elapsed:,.0f} texts/s, {stats.tokens / elapsed:,.0f} tokens/s")
    out_console.print(table)


@app.command("inspect-ckpt")
def inspect_ckpt(path: Annotated[Path, typer.Argument(help="TF checkpoint directory or prefix")]) -> None:
    """List a TensorFlow checkpoint's tensors (name, dtype, shape) without TensorFlow."""
    from mbexport.sources.tf_checkpoint import list_tensors

    table = Table(title=str(path))
    for column in ("name", "dtype", "shape"):
        table.add_column(column)
    for name, dtype, shape in list_tensors(path):
        table.add_row(name, dtype, str(list(shape)))
    out_console.print(table)


@contextmanager
def _stages() -> Iterator[object]:
    """A rich progress display whose tasks are the pipeline's stages."""
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console,
                  transient=False, disable=not console.is_terminal) as progress:

        @contextmanager
        def stage(name: str) -> Iterator[None]:
            task = progress.add_task(STAGE_LABELS.get(name, name), total=1)
            yield
            progress.update(task, completed=1)

        yield stage


@app.command()
def sweep(
    family: Annotated[str, typer.Option(help="multiberts | earlyberts")] = "multiberts",
    seeds: Annotated[str, typer.Option(help="0-4 | 0,2,3 | all")] = "0-4",
    steps: Annotated[str, typer.Option(help="20k,100k,2000k | all | final (MultiBERTs); step7000,... | all (EarlyBERTs)")] = "final",
    out: Annotated[Path, typer.Option("--out", "-o", help="sweep directory: sweep.jsonl, exports/, embeddings/")] = Path("runs"),
    embed: Annotated[Optional[Path], typer.Option(help="a .txt or .jsonl dataset to embed with every checkpoint")] = None,
    field: Annotated[str, typer.Option(help="JSONL field holding the text")] = "text",
    pooling: Annotated[str, typer.Option(help="cls | mean | pooler")] = "cls",
    normalize: Annotated[bool, typer.Option("--normalize/--no-normalize", help="L2-normalize each vector")] = False,
    max_length: Annotated[Optional[int], typer.Option(help="truncate texts to this many tokens (default: the model's)")] = None,
    head: Annotated[str, typer.Option(help="base (embeddings) | pretraining | auto")] = "base",
    precision: Annotated[str, typer.Option(help="fp32 | fp16 | int8")] = "fp32",
    flavor: Annotated[str, typer.Option(help="fused | portable")] = "fused",
    parity: Annotated[bool, typer.Option("--parity/--no-parity", help="verify every export against PyTorch")] = True,
    keep_exports: Annotated[str, typer.Option(help="none | final | all: exports kept after embedding")] = "all",
    jobs: Annotated[int, typer.Option("--jobs", "-j", help="checkpoints in parallel (processes, or a local Ray's CPUs)")] = 1,
    backend: Annotated[str, typer.Option(help="local | ray (Ray tasks; pip install 'mbexport[ray]')")] = "local",
    ray: Annotated[bool, typer.Option("--ray", help="same as --backend ray")] = False,
    ray_address: Annotated[Optional[str], typer.Option(help="Ray cluster address (default: $RAY_ADDRESS, else a local Ray)")] = None,
    fail_fast: Annotated[bool, typer.Option("--fail-fast", help="stop at the first failing checkpoint")] = False,
) -> None:
    """Convert, verify (and embed a dataset with) every checkpoint of a seeds x steps grid; resumable."""
    from mbexport.sweep import SweepOptions, grid
    from mbexport.sweep import sweep as run_sweep

    points = grid(family, seeds, steps)
    options = SweepOptions(out=out, head=head, flavor=flavor, precision=precision, parity=parity, embed=embed,
                           field=field, pooling=pooling, normalize=normalize, max_length=max_length,
                           keep_exports=keep_exports)
    result = run_sweep(points, options, jobs=jobs, backend="ray" if ray else backend, ray_address=ray_address,
                       fail_fast=fail_fast, log=lambda line: console.print(line, markup=False, highlight=False, soft_wrap=True))
    table = Table(title=f"mbexport sweep ({result.manifest})")
    for column in ("seed", "step", "status", "export", "parity", "embeddings", "seconds"):
        table.add_column(column)
    for row in result.rows:
        parity_text = "skipped" if row.get("parity", {}).get("skipped") else (
            f"{row['parity']['max_abs']:.1e}" if row.get("parity") else "")
        table.add_row(str(row["seed"]), row["step"], row["status"] if row["status"] == "done" else
                      f"failed: {row['error']}", row.get("export") or "", parity_text, row.get("embeddings") or "",
                      f"{row['seconds']['total']:.1f}")
    out_console.print(table)
    console.print(f"sweep: {len(result.rows) - len(result.failed)} done ({len(result.ran)} run, "
                  f"{len(result.skipped)} skipped as already done), {len(result.failed)} failed; manifest "
                  f"{result.manifest}", markup=False, highlight=False, soft_wrap=True)
    if result.failed or len(result.rows) < len(points):
        raise typer.Exit(1)


@app.command()
def probe(
    runs: Annotated[Path, typer.Argument(help="a sweep directory (mbexport sweep --embed ... --out RUNS)")],
    label_field: Annotated[str, typer.Option(help="JSONL field holding the label")] = "label",
    data: Annotated[Optional[Path], typer.Option(help="the labelled JSONL (default: the dataset the sweep embedded)")] = None,
    split_field: Annotated[Optional[str], typer.Option(help="JSONL field with train / test values")] = None,
    test_fraction: Annotated[float, typer.Option(help="without --split-field: a random test split of this fraction")] = 0.3,
    split_seed: Annotated[int, typer.Option(help="random seed of the --test-fraction split")] = 0,
    metric: Annotated[str, typer.Option(help="accuracy | error")] = "accuracy",
    compare: Annotated[Optional[str], typer.Option(help="two steps, baseline first: 20k,2000k (paired by seed)")] = None,
    compare_seeds: Annotated[Optional[str], typer.Option(help="two groups of seeds: 0,1,2:3,4 (unpaired)")] = None,
    compare_at: Annotated[Optional[str], typer.Option(help="the step of --compare-seeds (default: the last)")] = None,
    nboot: Annotated[int, typer.Option(help="Multi-Bootstrap samples")] = 1000,
    confidence: Annotated[float, typer.Option(help="interval level")] = 0.95,
    seed: Annotated[int, typer.Option(help="random seed of the bootstrap")] = 0,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="report directory (default: RUNS/probe)")] = None,
) -> None:
    """Linear probe per checkpoint of a sweep; Multi-Bootstrap intervals per step and for differences; plot."""
    from mbexport.errors import SweepError
    from mbexport.probe import ProbeOptions
    from mbexport.probe import probe as run_probe

    steps = tuple(compare.split(",")) if compare else None
    if steps is not None and len(steps) != 2:
        raise SweepError(f"--compare {compare!r}: give two steps, baseline first, e.g. 20k,2000k")
    groups = None
    if compare_seeds:
        try:
            first, second = ([int(s) for s in part.split(",") if s.strip()] for part in compare_seeds.split(":"))
        except ValueError:
            raise SweepError(f"--compare-seeds {compare_seeds!r}: write two groups of seeds, e.g. 0,1,2:3,4") from None
        groups = (first, second)
    report = run_probe(ProbeOptions(runs=runs, label_field=label_field, data=data, split_field=split_field,
                                    test_fraction=test_fraction, split_seed=split_seed, metric=metric,
                                    compare_steps=steps, compare_seeds=groups, compare_at=compare_at, nboot=nboot,
                                    confidence=confidence, rng=seed, out=out))
    out_console.print(Path(report.files["markdown"]).read_text(encoding="utf-8"))
    for kind, path in report.files.items():
        console.print(f"probe: {kind} {path}", markup=False, highlight=False, soft_wrap=True)


def main() -> None:
    try:
        app()
    except MbexportError as error:
        console.print(f"error: {error}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(error.exit_code)


if __name__ == "__main__":
    main()
