"""The ``mbexport`` command: a thin Typer + rich layer over the Python API.

Every user error is an ``MbexportError``: printed as one line on stderr with a
non-zero exit, never a traceback (unless ``--debug`` or MBEXPORT_DEBUG=1). Bad option
values are one-line usage errors (exit 2); Ctrl-C exits 130 and SIGTERM 143, both after
the same clean-up; anything unexpected is one ``internal error`` line.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from mbexport import _native
from mbexport.errors import MbexportError
from mbexport.families import head_names

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  context_settings={"help_option_names": ["-h", "--help"]},
                  help="BERT checkpoints to fast, verified ONNX exports, and embeddings from them.")
console = Console(stderr=True)
# Piped output (logs, tests, scripts) gets room for whole names instead of rich's 80 columns.
out_console = Console(width=None if sys.stdout.isatty() else 160)

# Enumerated options, as typer reads them: --help lists them and a bad value is a usage error.
# They mirror PRECISIONS, FLAVORS, POOLINGS and DEVICES (tests/test_hostile_cli.py checks); the
# heads are the model families' (mbexport.families.head_names).
if TYPE_CHECKING:
    Head = str
else:
    _HEAD_CHOICES = (*head_names(), "auto")
    Head = Literal[_HEAD_CHOICES]
Precision = Literal["fp32", "fp16", "int8"]
Flavor = Literal["fused", "portable", "packed"]
Reference = Literal["auto", "torch", "numpy"]
Pooling = Literal["cls", "mean", "pooler"]
Device = Literal["cpu", "cuda", "openvino", "tensorrt", "auto"]
Compute = Literal["fp32", "bf16", "int8"]
LogLevel = Literal["critical", "error", "warning", "info", "debug", "trace"]
Family = Literal["multiberts", "earlyberts"]
KeepExports = Literal["none", "final", "all"]
Backend = Literal["local", "ray"]
ProbeMetric = Literal["accuracy", "error"]

BATCH_TOKENS_DEFAULT = "default: {cpu} CPU, {cuda} CUDA".format(**_native.DEFAULT_BATCH_TOKENS)
STAGE_LABELS = {"load": "Loading checkpoint", "build": "Building ONNX graph", "write": "Writing export",
                "verify": "Checking parity", "commit": "Moving into place"}


_debug = False  # set by --debug


def _print_version(value: bool) -> None:
    if value:
        from mbexport import __version__

        print(f"mbexport {__version__}")
        raise typer.Exit()


@app.callback()
def _global_options(
    debug: Annotated[bool, typer.Option("--debug", help="show tracebacks (also: MBEXPORT_DEBUG=1)")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                          help="print mbexport's version and exit")] = False,
) -> None:
    """BERT checkpoints to fast, verified ONNX exports, and embeddings from them."""
    global _debug
    _debug = debug


@app.command()
def convert(
    name: Annotated[str, typer.Argument(metavar="NAME", help="seed_1, 'seed_1 step_200k', earlyberts-seed1, org/name, a directory or a TF checkpoint")],
    step: Annotated[Optional[str], typer.Argument(metavar="STEP", help="step_200k / 200k (MultiBERTs) or step7000 (EarlyBERTs)")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="export directory (default: $MBEXPORT_HOME/exports/...)")] = None,
    head: Annotated[Head, typer.Option(help="the model head to export (auto: the checkpoint's own)")] = "auto",
    precision: Annotated[Precision, typer.Option(help="int8: dynamic quantization, CPU")] = "fp32",
    flavor: Annotated[Flavor, typer.Option(help="fused (onnxruntime contrib ops) | portable (standard ONNX ops) | "
                                                    "packed (fused + a padding-free graph CUDA runs)")] = "fused",
    parity: Annotated[bool, typer.Option("--parity/--no-parity", help="verify against PyTorch (or numpy) before writing")] = True,
    revision: Annotated[Optional[str], typer.Option(help="hub revision for an org/name id")] = None,
    from_path: Annotated[Optional[Path], typer.Option("--from", help="local copy of a catalogue checkpoint (checked to be it)")] = None,
    label: Annotated[Optional[str], typer.Option(help="a name for a local directory (display, default --out); claims no catalogue identity")] = None,
) -> None:
    """Convert a checkpoint into a verified ONNX export directory."""
    from mbexport.converter import convert_detailed

    with _stages() as stage:
        result = convert_detailed(name, step, out=out, head=head, precision=precision, flavor=flavor, parity=parity,
                                  revision=revision, local=from_path, stage=stage, label=label)
    table = Table(title="mbexport convert", show_header=False)
    table.add_row("export", str(result.path) + (" (replaced an existing export there)" if result.replaced else ""))
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
    seed: Annotated[Optional[int], typer.Option(help="only this seed (MultiBERTs, EarlyBERTs)")] = None,
    step: Annotated[Optional[str], typer.Option(help="only this step: 200k, step_200k, step7000, or final")] = None,
    cached: Annotated[bool, typer.Option("--cached", help="only checkpoints in the HF cache")] = False,
    exported: Annotated[bool, typer.Option("--exported", help="only checkpoints exported here or recorded by convert")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="a JSON array of entries with local status and export paths")] = False,
) -> None:
    """The checkpoint catalogue, with what is in the HF cache or exported (anywhere convert wrote it)."""
    from mbexport.catalog import entries, local_status, training_steps
    from mbexport.layout import export_home

    steps = None if step is None or step.lower() == "final" else training_steps(step)
    home = export_home()
    rows = []
    for entry in entries():
        if ((family and not entry.family.lower().startswith(family.lower())) or (seed is not None and entry.seed != seed)
                or (step is not None and (entry.step != steps or entry.seed is None))):
            continue
        status = local_status(entry, home)
        if (cached and not status.cached) or (exported and not status.exported):
            continue
        rows.append((entry, status))
    if as_json:
        print(json.dumps([{"family": e.family, "name": e.name, "repo_id": e.repo_id, "revision": e.revision,
                           "seed": e.seed, "step": e.step, "cached": s.cached,
                           "exports": [str(p) for p in s.export_dirs]} for e, s in rows], indent=2))
        return
    # Long names fold inside their cell on a narrow terminal instead of being cut to "…".
    table = Table(title="mbexport catalogue")
    for column in ("family", "name", "repo", "revision", "cached", "exported"):
        table.add_column(column, overflow="fold")
    for entry, status in rows:
        table.add_row(entry.family, entry.name, entry.repo_id, entry.revision or "main",
                      "yes" if status.cached else "", _exported_cell(len(status.export_dirs)))
    _print_unfolded(table)


def _exported_cell(count: int) -> str:
    """``yes`` for one export, ``yes (3)`` for several (``--json`` lists their paths)."""
    return "" if not count else "yes" if count == 1 else f"yes ({count})"


def _print_unfolded(table: Table) -> None:
    """On a terminal, fit ``table`` to it; piped, print it at its natural width whatever COLUMNS says,
    so every row is one whole line for grep and awk."""
    if out_console.is_terminal:
        out_console.print(table)
        return
    from rich.measure import Measurement

    wide = Console(width=1_000_000)
    Console(width=Measurement.get(wide, wide.options, table).maximum).print(table)


@app.command("parity")
def parity_command(
    export_dir: Annotated[Path, typer.Argument(metavar="EXPORT_DIR", help="an export directory")],
    reference: Annotated[Reference, typer.Option(help="the parity reference")] = "auto",
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
def info(
    export_dir: Annotated[Path, typer.Argument(metavar="EXPORT_DIR", help="an export directory")],
    as_json: Annotated[bool, typer.Option("--json", help="print the manifest (mbexport.json) as JSON")] = False,
) -> None:
    """Summarise an export: source, weights, graph, and the parity figures with their gates."""
    from mbexport.layout import read_manifest

    manifest = read_manifest(export_dir)
    if as_json:
        out_console.print_json(json.dumps(manifest))
        return
    from mbexport.info import parity_table, summary_table

    out_console.print(summary_table(export_dir, manifest))
    out_console.print(parity_table(manifest["parity"]))


@app.command()
def embed(
    export_dir: Annotated[Path, typer.Argument(metavar="EXPORT_DIR", help="an export directory (mbexport convert ... --head base)")],
    input_path: Annotated[str, typer.Argument(metavar="INPUT", help=".txt (a text per line), .jsonl, or - for stdin")],
    out: Annotated[Path, typer.Option("--out", "-o", metavar="FILE", help="output .npy (rows in input order), .jsonl (id + embedding), or - for JSONL on stdout")],
    field: Annotated[Optional[str], typer.Option(help="JSONL field holding the text (default: text)")] = None,
    pooling: Annotated[Optional[Pooling], typer.Option(help="how token vectors become one vector per text (default: what the model says, else cls)")] = None,
    normalize: Annotated[Optional[bool], typer.Option("--normalize/--no-normalize", help="L2-normalize each vector (default: what the model says, else no)")] = None,
    max_length: Annotated[Optional[int], typer.Option(min=2, help="truncate texts to this many tokens (default: what the model says, else its maximum)")] = None,
    batch_tokens: Annotated[Optional[int], typer.Option(min=1, help=f"padded tokens per batch ({BATCH_TOKENS_DEFAULT})")] = None,
    device: Annotated[Device, typer.Option(help="auto: CUDA when usable, else CPU; openvino: OpenVINO's CPU plugin")] = "cpu",
    compute: Annotated[Compute, typer.Option(help="arithmetic for an fp32 export; bf16 and int8 (after mbexport calibrate) on --device openvino")] = "fp32",
    threads: Annotated[Optional[int], typer.Option(min=1, help="onnxruntime intra-op threads (default: all cores)")] = None,
    skip_bad_lines: Annotated[bool, typer.Option("--skip-bad-lines", help="skip (and count) lines that are not UTF-8/JSON")] = False,
) -> None:
    """Embed every text of INPUT into --out; a file appears only when complete, --out - streams JSONL."""
    import collections
    import time

    from mbexport.runtime import Embedder
    from mbexport.runtime.files import AtomicOutput, JsonlStream, ReadCounts, count_lines, read_texts

    embedder = Embedder(export_dir, device=device, pooling=pooling, normalize=normalize, max_length=max_length,
                        batch_tokens=batch_tokens, threads=threads, compute=compute)
    to_stdout = str(out) == "-"
    writer = JsonlStream(sys.stdout) if to_stdout else AtomicOutput(out, embedder.hidden_size, skip_bad_lines, input_path)
    counts = ReadCounts()
    pending: collections.deque[tuple[Any, int]] = collections.deque()  # (id, input line) of texts read but not yet embedded

    def texts() -> Iterator[str]:
        for record_id, text in read_texts(input_path, field, skip_bad_lines, counts, embedder.over_max_length):
            pending.append((record_id, counts.lines))
            yield text

    stats = embedder.stats
    started = time.perf_counter()
    progress = _embed_progress()
    # A file's lines are counted first (one pass at disk speed) so progress has a total; stdin has none.
    total = count_lines(input_path) if console.is_terminal and Path(input_path).is_file() else None
    with writer, progress:
        task = progress.add_task("Embedding", total=total, done="", rate="")
        for chunk in embedder.embed_iter(texts()):
            done = [pending.popleft() for _ in range(len(chunk))]
            writer.write([record_id for record_id, _ in done], chunk, [number for _, number in done])
            elapsed = max(time.perf_counter() - started, 1e-9)
            line = done[-1][1] if done else 0
            progress.update(task, completed=line, done=f"{line:,}/{total:,} lines" if total else f"{line:,} lines",
                            rate=f"{stats.texts / elapsed:,.0f} texts/s")
    elapsed = max(time.perf_counter() - started, 1e-9)
    table = Table(title="mbexport embed", show_header=False)
    where = "<stdout> (JSONL)" if to_stdout else str(out)
    table.add_row("output", f"{where} ({writer.rows} x {embedder.hidden_size} float32)")
    if isinstance(writer, AtomicOutput) and writer.sidecar is not None:
        table.add_row("input lines", f"{writer.sidecar} (int64: the input line of each row)")
    table.add_row("texts / tokens", f"{stats.texts:,} / {stats.tokens:,} (padding {stats.padded_tokens - stats.tokens:,})")
    table.add_row("truncated", f"{stats.truncated:,} texts longer than {embedder.max_length} tokens")
    skipped = f"{counts.skipped:,} bad lines"
    table.add_row("skipped", skipped + (f" (first: line {counts.first_skipped})" if counts.skipped else ""))
    table.add_row("device", embedder.device if compute == "fp32" else f"{embedder.device} ({compute})")
    for setting, value in (("pooling", embedder.pooling), ("normalize", "yes" if embedder.normalize else "no"),
                           ("max length", embedder.max_length)):
        table.add_row(setting, f"{value} (from {embedder.origins[setting.replace(' ', '_')]})")
    table.add_row("speed", f"{elapsed:.2f} s, {stats.texts / elapsed:,.0f} texts/s, {stats.tokens / elapsed:,.0f} tokens/s")
    (console if to_stdout else out_console).print(table)


@app.command()
def calibrate(
    export_dir: Annotated[Path, typer.Argument(metavar="EXPORT_DIR", help="an fp32 export directory (mbexport convert ... --head base)")],
    texts: Annotated[Path, typer.Option("--texts", metavar="FILE", help="UTF-8 texts like the ones you will embed, one per line")],
    limit: Annotated[int, typer.Option(help="calibrate on the first N non-blank lines")] = 320,
) -> None:
    """Write the export's calibrated int8 model for OpenVINO (embed with --device openvino --compute int8)."""
    import time

    from mbexport.calibration import calibrate as calibrate_export
    from mbexport.calibration import read_texts_file
    from mbexport.layout import CALIBRATED_INT8, read_manifest

    started = time.perf_counter()
    path = calibrate_export(export_dir, read_texts_file(texts, limit), limit=limit)
    record = read_manifest(path.parent)[CALIBRATED_INT8]
    table = Table(title="mbexport calibrate", show_header=False)
    table.add_row("int8 model", f"{path} (+ {', '.join(n for n in record['files'] if n != path.name)})")
    table.add_row("calibrated on", f"{record['texts']:,} texts of {texts}, max length {record['max_length']}")
    table.add_row("kept in float", f"{record['kept_in_float_ops']} MatMuls: {record['kept_in_float']}")
    table.add_row("time", f"{time.perf_counter() - started:.1f} s")
    out_console.print(table)


def _embed_progress() -> Progress:
    """Lines done (of the total when known), rate, elapsed and ETA; on stderr, and only on a terminal."""
    return Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(bar_width=10), TextColumn("{task.fields[done]}"),
                    TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                    console=console, disable=not console.is_terminal)


@app.command("inspect-ckpt")
def inspect_ckpt(path: Annotated[Path, typer.Argument(metavar="CHECKPOINT", help="TF checkpoint directory or prefix")]) -> None:
    """List a TensorFlow checkpoint's tensors (name, dtype, shape) without TensorFlow."""
    from mbexport.sources.tf_checkpoint import list_tensors

    table = Table(title=str(path))
    for column in ("name", "dtype", "shape"):
        table.add_column(column)
    for name, dtype, shape in list_tensors(path):
        table.add_row(name, dtype, str(list(shape)))
    out_console.print(table)


@app.command()
def serve(
    export_dirs: Annotated[list[Path], typer.Argument(metavar="EXPORT_DIR...", help="export directories (--head base)")],
    name: Annotated[Optional[list[str]], typer.Option(help="model name per export, in order (default: the directory's name)")] = None,
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port (0: any free one)", min=0, max=65535)] = 8080,
    device: Annotated[Device, typer.Option(help="auto: CUDA when usable, else CPU; openvino: OpenVINO's CPU plugin")] = "cpu",
    compute: Annotated[Compute, typer.Option(help="arithmetic for an fp32 export; bf16 and int8 (after mbexport calibrate) on --device openvino")] = "fp32",
    pooling: Annotated[Optional[Pooling], typer.Option(help="default: what the export means")] = None,
    normalize: Annotated[Optional[bool], typer.Option("--normalize/--no-normalize", help="L2-normalize (default: what the export means; TEI requests choose)")] = None,
    max_length: Annotated[Optional[int], typer.Option(help="longest input in tokens (default: the model's)")] = None,
    batch_tokens: Annotated[Optional[int], typer.Option(help=f"padded tokens per model batch ({BATCH_TOKENS_DEFAULT})")] = None,
    threads: Annotated[Optional[int], typer.Option(help="onnxruntime intra-op threads (default: all cores)")] = None,
    max_inputs: Annotated[int, typer.Option(help="texts per request (413 beyond)")] = 2048,
    max_body_bytes: Annotated[int, typer.Option(help="request body size (413 beyond)")] = 16 * 1024 * 1024,
    body_timeout: Annotated[float, typer.Option(help="seconds a request body may stall (408), and an unread answer may hold SIGTERM's drain")] = 30.0,
    max_connections: Annotated[int, typer.Option(help="open connections served at once (503 on more: each costs memory and a file descriptor)")] = 1024,
    max_queue: Annotated[int, typer.Option(help="texts waiting per model (429 beyond)")] = 4096,
    max_batch_requests: Annotated[int, typer.Option(help="requests coalesced into one batch (1: cross-request batching off)")] = 256,
    max_batch_tokens: Annotated[int, typer.Option(help="real tokens planned together (model batches: --batch-tokens)")] = 16384,
    batch_wait_ms: Annotated[float, typer.Option(help="how long an idle batcher waits for simultaneous requests")] = 2.0,
    auto_truncate: Annotated[bool, typer.Option("--auto-truncate", help="truncate over-long texts instead of answering 422")] = False,
    log_level: Annotated[LogLevel, typer.Option(help="uvicorn log level")] = "info",
) -> None:
    """Serve exports over HTTP: OpenAI /v1/embeddings, TEI /embed, /health, /info, /metrics."""
    if name and len(name) != len(export_dirs):
        raise typer.BadParameter(f"got {len(name)} --name for {len(export_dirs)} export directories; give one per export")
    names = name or [d.resolve().name for d in export_dirs]
    if len(set(names)) != len(names):
        raise typer.BadParameter(f"model names {names} repeat; give each export its own --name")
    if not all(n.strip() for n in names):
        raise typer.BadParameter(f"model names {names} include a blank one; give each export a --name")
    from mbexport.serve.app import ServeLimits, check_limits
    from mbexport.serve.batching import BatchLimits
    from mbexport.serve.server import load_embedders, run

    limits = ServeLimits(max_inputs, max_body_bytes, auto_truncate, body_timeout,  # checked before the (slow) loading
                         max_connections=max_connections)
    batch_limits = BatchLimits(max_queue, max_batch_texts=2048, max_batch_tokens=max_batch_tokens,
                               max_batch_requests=max_batch_requests, wait=batch_wait_ms / 1000)
    check_limits(limits, batch_limits)
    given = {"pooling": pooling, "normalize": normalize, "max_length": max_length}
    embedders = load_embedders(export_dirs, names, device=device, batch_tokens=batch_tokens, threads=threads,
                               compute=compute, **{k: v for k, v in given.items() if v is not None})
    run(embedders, host, port, limits, batch_limits, log_level=log_level)


@contextmanager
def _stages() -> Iterator[Callable[[str], AbstractContextManager[None]]]:
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
    family: Annotated[Family, typer.Option(help="the checkpoint family of the grid")] = "multiberts",
    seeds: Annotated[str, typer.Option(help="0-4 | 0,2,3 | all")] = "0-4",
    steps: Annotated[str, typer.Option(help="20k,100k,2000k | all | final (MultiBERTs); step7000,... | all (EarlyBERTs)")] = "final",
    out: Annotated[Path, typer.Option("--out", "-o", help="sweep directory: sweep.jsonl, exports/, embeddings/")] = Path("runs"),
    embed: Annotated[Optional[Path], typer.Option(help="a .txt or .jsonl dataset to embed with every checkpoint")] = None,
    field: Annotated[str, typer.Option(help="JSONL field holding the text")] = "text",
    pooling: Annotated[Pooling, typer.Option(help="how token vectors become one vector per text")] = "cls",
    normalize: Annotated[bool, typer.Option("--normalize/--no-normalize", help="L2-normalize each vector")] = False,
    max_length: Annotated[Optional[int], typer.Option(help="truncate texts to this many tokens (default: the model's)")] = None,
    head: Annotated[Head, typer.Option(help="base gives the embeddings --embed needs")] = "base",
    precision: Annotated[Precision, typer.Option(help="int8: dynamic quantization, CPU")] = "fp32",
    flavor: Annotated[Flavor, typer.Option(help="fused (onnxruntime contrib ops) | portable (standard ONNX ops) | "
                                                    "packed (fused + a padding-free graph CUDA runs)")] = "fused",
    parity: Annotated[bool, typer.Option("--parity/--no-parity", help="verify every export against PyTorch")] = True,
    keep_exports: Annotated[KeepExports, typer.Option(help="exports kept after embedding")] = "all",
    jobs: Annotated[int, typer.Option("--jobs", "-j", help="checkpoints in parallel (processes, or a local Ray's CPUs)")] = 1,
    backend: Annotated[Backend, typer.Option(help="ray: Ray tasks (pip install 'mbexport[ray]')")] = "local",
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
    metric: Annotated[ProbeMetric, typer.Option(help="the probe's test metric")] = "accuracy",
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


_signalled: int | None = None  # SIGINT or SIGTERM, once one arrived


def _on_signal(signum: int, frame: object) -> None:
    """SIGTERM (and Ctrl-C) as KeyboardInterrupt, so the same clean-up runs (partial outputs, staging dirs)."""
    global _signalled
    _signalled = signum
    raise KeyboardInterrupt


# typer >= 0.2x vendors click (typer._click): take its exception classes from a public subclass.
_CLICK: dict[str, Any] = {cls.__name__: cls for cls in typer.BadParameter.__mro__}
_ClickException, _UsageError = _CLICK["ClickException"], _CLICK["UsageError"]


def _one_line(error: BaseException) -> tuple[str, int]:
    """The ``error:`` line and exit status for anything that ends a command."""
    if isinstance(error, _UsageError):
        ctx = getattr(error, "ctx", None)
        hint = f" (see '{ctx.command_path} --help')" if ctx else ""
        return f"{error.format_message()}{hint}", error.exit_code
    if isinstance(error, _ClickException):
        return error.format_message(), error.exit_code
    if isinstance(error, KeyboardInterrupt):
        return ("terminated", 143) if _signalled == signal.SIGTERM else ("interrupted", 130)
    if isinstance(error, MbexportError):
        return str(error), error.exit_code
    if isinstance(error, OSError):
        where = f"{error.filename}: " if error.filename else ""
        return f"{where}{error.strerror or error}; check the path, its permissions and free space", 1
    return f"internal error: {type(error).__name__}: {error} (re-run with --debug for the traceback)", 1


def main() -> None:
    """The console script: every failure is one ``error:`` line on stderr, a traceback only with --debug."""
    signal.signal(signal.SIGTERM, _on_signal)
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not when started with SIGINT ignored
        signal.signal(signal.SIGINT, _on_signal)
    try:
        code = app(standalone_mode=False)
        if _signalled is not None:  # typer turns KeyboardInterrupt into a silent exit 130
            raise KeyboardInterrupt
    except (Exception, KeyboardInterrupt) as error:
        if type(error).__name__ == "NoArgsIsHelpError":  # bare `mbexport`: the help, as before
            error.show()  # type: ignore[union-attr]
            sys.exit(getattr(error, "exit_code", 2))
        cause = error.__cause__ if isinstance(error, typer.Abort) and error.__cause__ else error  # older typer
        if (_debug or os.environ.get("MBEXPORT_DEBUG") == "1") and not isinstance(cause, _UsageError):
            traceback.print_exception(cause)
        line, code = _one_line(cause)
        console.print(f"error: {' '.join(line.split())}", markup=False, highlight=False, soft_wrap=True)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
