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
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

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

# Enumerated options, as typer reads them: --help lists them and a bad value is a usage error.
# They mirror HEAD_CONFIGS, PRECISIONS, FLAVORS, POOLINGS and DEVICES (tests/test_hostile_cli.py checks).
Head = Literal["base", "pretraining", "qa", "classification", "auto"]
Precision = Literal["fp32", "fp16", "int8"]
Flavor = Literal["fused", "portable"]
Reference = Literal["auto", "torch", "numpy"]
Pooling = Literal["cls", "mean", "pooler"]
Device = Literal["cpu", "cuda", "auto"]

STAGE_LABELS = {"load": "Loading checkpoint", "build": "Building ONNX graph", "write": "Writing export",
                "verify": "Checking parity", "commit": "Moving into place"}


_debug = False  # set by --debug


@app.callback()
def _global_options(
    debug: Annotated[bool, typer.Option("--debug", help="show tracebacks (also: MBEXPORT_DEBUG=1)")] = False,
) -> None:
    """BERT checkpoints to fast, verified ONNX exports, and embeddings from them."""
    global _debug
    _debug = debug


@app.command()
def convert(
    name: Annotated[str, typer.Argument(help="seed_1, 'seed_1 step_200k', earlyberts-seed1, org/name, a directory or a TF checkpoint")],
    step: Annotated[Optional[str], typer.Argument(help="step_200k / 200k (MultiBERTs) or step7000 (EarlyBERTs)")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="export directory (default: $MBEXPORT_HOME/exports/...)")] = None,
    head: Annotated[Head, typer.Option(help="the model head to export (auto: the checkpoint's own)")] = "auto",
    precision: Annotated[Precision, typer.Option(help="int8: dynamic quantization, CPU")] = "fp32",
    flavor: Annotated[Flavor, typer.Option(help="fused (onnxruntime contrib ops) | portable (standard ONNX ops)")] = "fused",
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
    pooling: Annotated[Optional[Pooling], typer.Option(help="how token vectors become one vector per text (default: what the model says, else cls)")] = None,
    normalize: Annotated[Optional[bool], typer.Option("--normalize/--no-normalize", help="L2-normalize each vector (default: what the model says, else no)")] = None,
    max_length: Annotated[Optional[int], typer.Option(min=2, help="truncate texts to this many tokens (default: what the model says, else its maximum)")] = None,
    batch_tokens: Annotated[Optional[int], typer.Option(min=1, help="padded tokens per batch (default: 2048 CPU, 65536 CUDA)")] = None,
    device: Annotated[Device, typer.Option(help="auto: CUDA when usable, else CPU")] = "cpu",
    threads: Annotated[Optional[int], typer.Option(min=1, help="onnxruntime intra-op threads (default: all cores)")] = None,
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
    table.add_row("device", embedder.device)
    for setting, value in (("pooling", embedder.pooling), ("normalize", "yes" if embedder.normalize else "no"),
                           ("max length", embedder.max_length)):
        table.add_row(setting, f"{value} (from {embedder.origins[setting.replace(' ', '_')]})")
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
            error.show()  # type: ignore[attr-defined]
            sys.exit(getattr(error, "exit_code", 2))
        cause = error.__cause__ if isinstance(error, typer.Abort) and error.__cause__ else error  # older typer
        if (_debug or os.environ.get("MBEXPORT_DEBUG") == "1") and not isinstance(cause, _UsageError):
            traceback.print_exception(cause)
        line, code = _one_line(cause)
        console.print(f"error: {' '.join(line.split())}", markup=False, highlight=False, soft_wrap=True)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
