"""The convert pipeline: name -> Source -> Checkpoint -> ONNX -> staged export -> parity -> swap in.

``convert`` is the Python face of ``mbexport convert``; the CLI only adds
progress display and the summary table. Parity runs on the staged files, so an
export that fails it is never put in place.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mbexport import layout, registry
from mbexport.catalog import Source, resolve
from mbexport.errors import CatalogError, ExportDirError, ExportError, MbexportError, ParityError
from mbexport.export import manifest as manifest_mod
from mbexport.export import writer
from mbexport.export.build import build_model
from mbexport.export.quantize import quantize_in_place
from mbexport.families import family_of
from mbexport.parity import ParityReport, check_parity, prestart_reference, start_reference
from mbexport.provenance import identity
from mbexport.sources import load_checkpoint
from mbexport.spec import sha256_files

# Called with a stage name ("load", "build", "write", "verify", "commit"); returns a context for it.
StageReporter = Callable[[str], AbstractContextManager[Any]]


@dataclass
class ConvertResult:
    path: Path
    head: str
    flavor: str
    precision: str
    bytes: int
    op_counts: dict[str, int]
    parity: ParityReport | None
    seconds: dict[str, float]
    replaced: bool = False  # ``path`` held an export before this convert replaced it


def default_out(source: Source, head: str, flavor: str, precision: str) -> Path:
    return layout.export_home() / source.slug / f"{head}-{flavor}-{precision}"


def convert(name: str, step: str | None = None, *, out: Path | str | None = None, head: str = "auto",
            precision: str = "fp32", flavor: str = "fused", parity: bool = True, revision: str | None = None,
            local: Path | str | None = None, reference: str = "auto", label: str | None = None) -> Path:
    """Convert a checkpoint to a verified ONNX export directory and return its path.

    ``local`` is a copy of the catalogue checkpoint ``name`` names (checked to be it);
    ``label`` names a local directory for display and the default ``out``, claiming nothing.
    """
    return convert_detailed(name, step, out=out, head=head, precision=precision, flavor=flavor, parity=parity,
                            revision=revision, local=local, reference=reference, label=label).path


def convert_detailed(name: str, step: str | None = None, *, out: Path | str | None = None, head: str = "auto",
                     precision: str = "fp32", flavor: str = "fused", parity: bool = True,
                     revision: str | None = None, local: Path | str | None = None, reference: str = "auto",
                     stage: StageReporter | None = None, label: str | None = None) -> ConvertResult:
    """``convert`` with the figures the CLI shows: sizes, op counts, parity, seconds per stage."""
    timings: dict[str, float] = {}
    timed = _timer(stage or (lambda _: nullcontext()), timings)
    source = resolve(name, step, revision=revision, local=Path(local) if local else None)
    if label is not None:
        if source.repo_id is not None or not label.strip():
            raise CatalogError(f"--label {label!r} names a local directory; {name!r} is a catalogue or hub name, "
                               "which is its own label (give a local path, or drop --label)")
        source = Source(label.strip(), path=source.path)
    if parity:
        prestart_reference(reference)  # its imports overlap the conversion
    with timed("load"):
        checkpoint = load_checkpoint(source)
        claim = identity(source, checkpoint)
    with timed("build"):
        built = build_model(checkpoint, head=head, flavor=flavor, precision=precision)
    started = start_reference(checkpoint, built.head, reference, from_source=True) if parity else None
    target = Path(out) if out else default_out(source, built.head.name, flavor, precision)
    with writer.export_lock(target), _write_errors(target):
        writer.recover(target)
        writer.check_replaceable(target)
        replaced = (target / layout.MANIFEST).is_file()
        quantization: dict[str, Any] | None = None
        op_counts = built.op_counts()
        with writer.staging_dir(target) as staging:
            with timed("write"):
                model_files = writer.write_model(built, staging)
                if precision == "int8":
                    quantization, op_counts = quantize_in_place(staging / layout.MODEL)
                    model_files = {path: sha256_files([path]) for path in model_files}
                writer.write_tokenizer_files(checkpoint, checkpoint.spec.to_hf_config(checkpoint.config), staging)
            report = None
            if parity:
                with timed("verify"):
                    report = check_parity(staging / layout.MODEL, checkpoint, built.head, precision, reference,
                                          started=started)
                if not report.passed:
                    raise ParityError(f"{source.label}: parity failed, no export written: {report.summary()}")
            figures = report.to_dict() if report else {"skipped": True}
            manifest = manifest_mod.build_manifest(checkpoint, built, _source_record(source), model_files, figures,
                                                   op_counts, quantization, claim)
            writer.write_json(staging / layout.MANIFEST, manifest)
            with timed("commit"):
                writer.commit(staging, target)
        registry.record(target, source.slug)
    size = sum(p.stat().st_size for p in target.rglob("*") if p.is_file())
    return ConvertResult(target, built.head.name, flavor, precision, size, op_counts, report, timings, replaced)


def verify_export(export_dir: Path, reference: str = "auto") -> ParityReport:
    """Re-run parity for an existing export against the source its manifest names (``mbexport parity``)."""
    manifest = layout.read_manifest(export_dir)
    record = manifest["source"]
    source = Source(label=record["label"], repo_id=record.get("repo_id"), revision=record.get("revision"),
                    path=Path(record["path"]) if record.get("path") else None)
    checkpoint = load_checkpoint(source)
    if manifest.get("weights_sha256") and checkpoint.weights_sha256 != manifest["weights_sha256"]:
        raise ExportDirError(f"{export_dir}: the source weights changed since the export was made "
                             f"(sha256 {checkpoint.weights_sha256[:12]} != {manifest['weights_sha256'][:12]}); "
                             "re-run mbexport convert")
    head = family_of(checkpoint.spec).heads.get(manifest["head"])
    if head is None:
        raise ExportDirError(f"{export_dir}/mbexport.json names an unknown head {manifest['head']!r}; "
                             "re-run mbexport convert")
    return check_parity(export_dir / layout.MODEL, checkpoint, head, manifest["precision"], reference,
                        from_source=True)


def _source_record(source: Source) -> dict[str, Any]:
    record = asdict(source)
    record["path"] = str(source.path.resolve()) if source.path else None
    return record


@contextmanager
def _write_errors(target: Path) -> Iterator[None]:
    """OS errors while writing (disk full, permissions) as one ExportError naming the export."""
    try:
        yield
    except OSError as e:
        if isinstance(e, MbexportError):
            raise
        where = f" ({e.filename})" if e.filename else ""
        raise ExportError(f"cannot write the export {target}: {e.strerror or e}{where}; free some space "
                          "or choose a writable --out") from None


def _timer(stage: StageReporter, timings: dict[str, float]) -> Callable[[str], AbstractContextManager[None]]:
    @contextmanager
    def timed(name: str) -> Iterator[None]:
        start = time.perf_counter()
        with stage(name):
            yield
        timings[name] = time.perf_counter() - start

    return timed
