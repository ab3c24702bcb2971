"""Grid sweeps: every MultiBERTs / EarlyBERTs checkpoint of a seeds x steps grid converted, verified and
(optionally) used to embed one dataset, with a resumable manifest of what was done.

One job per checkpoint (``run_point``): resolve it through the catalogue, reuse a verified export of the
same source weights (sha256, head, flavor, precision) or convert and verify a new one, embed the dataset
into ``RUNS/embeddings/<key>.npy``, and drop the export if ``keep_exports`` says so. Jobs run in this
process (``jobs=1``), in spawned processes (``jobs>1``) or as Ray tasks (``backend="ray"``); each returns
its manifest row and only this process writes the manifest, so every backend writes the same one.

Layout of ``RUNS/``::

    sweep.jsonl                      one JSON row per checkpoint (grid order), rewritten atomically per row
    exports/<key>/                   export directories (atomic: staged, then renamed; see export.writer)
    embeddings/<key>.npy             [texts, hidden] float32, rows in dataset order (atomic: temp + rename)

A row is written only after its files are committed, so after a kill -9 the same command skips every
``done`` row whose files and settings still match and redoes only the rest (failed rows are retried).
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mbexport import jsonfiles
from mbexport.catalog import (
    EARLYBERTS_SEEDS,
    EARLYBERTS_STEPS,
    MULTIBERTS_SEEDS,
    MULTIBERTS_STEPS,
    Source,
    resolve,
)
from mbexport.errors import (
    CatalogError,
    ExportDirError,
    MbexportError,
    MissingExtraError,
    SweepError,
)
from mbexport.layout import is_export, read_manifest
from mbexport.spec import sha256_files

__all__ = ["GridPoint", "SweepOptions", "SweepResult", "grid", "read_rows", "run_point", "sweep"]

FAMILIES = ("multiberts", "earlyberts")
KEEP_EXPORTS = ("none", "final", "all")
MANIFEST = "sweep.jsonl"
# MultiBERTs final checkpoints were trained for 2M steps (Sellam et al., 2021, section 2).
MULTIBERTS_FINAL_STEPS = 2_000_000

Log = Callable[[str], None]


@dataclass(frozen=True)
class GridPoint:
    """One checkpoint of a sweep."""

    family: str  # multiberts | earlyberts
    seed: int
    step: str  # as shown: "20k", "final", "step7000"
    steps: int  # training steps, for plots: 20000, 2000000 (final), 7000
    name: str  # catalogue name: "seed_0 step_20k", "seed_0", "earlyberts-seed0 step7000"
    final: bool  # the family's last checkpoint of this seed (MultiBERTs final, EarlyBERTs step40000)

    @property
    def source(self) -> Source:
        return resolve(self.name)

    @property
    def key(self) -> str:
        """File-system name of this checkpoint's files: the catalogue slug."""
        return self.source.slug


@dataclass(frozen=True)
class SweepOptions:
    """What every checkpoint of a sweep is turned into; a done row counts only if these still match."""

    out: Path
    head: str = "base"
    flavor: str = "fused"
    precision: str = "fp32"
    parity: bool = True
    embed: Path | None = None  # a .txt or .jsonl dataset to embed with every checkpoint
    field: str = "text"
    pooling: str = "cls"
    normalize: bool = False
    max_length: int | None = None
    keep_exports: str = "all"
    threads: int | None = None  # onnxruntime threads per job (default: the cores divided among jobs)
    dataset_sha256: str | None = None  # filled in by sweep()

    def settings(self) -> dict[str, Any]:
        """The part of a row that must match for it to be reused."""
        dataset = None
        if self.embed is not None:
            dataset = {"path": str(self.embed.resolve()), "sha256": self.dataset_sha256, "field": self.field,
                       "pooling": self.pooling, "normalize": self.normalize, "max_length": self.max_length}
        return {"head": self.head, "flavor": self.flavor, "precision": self.precision, "dataset": dataset}


@dataclass
class SweepResult:
    manifest: Path
    rows: list[dict[str, Any]]  # this grid's rows, in grid order
    ran: list[str] = field(default_factory=list)  # keys run this time
    skipped: list[str] = field(default_factory=list)  # keys already done before

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [row for row in self.rows if row["status"] != "done"]


# ---------------------------------------------------------------------------------------------
# The grid


def grid(family: str, seeds: str, steps: str) -> list[GridPoint]:
    """The checkpoints of ``family`` for ``seeds`` ("0-4", "0,2", "all") x ``steps`` ("20k,2000k", "all",
    "final"; EarlyBERTs "step7000,step10"), each resolved through the catalogue; ``CatalogError`` names
    the first combination that was never published."""
    family = family.lower().replace("-", "")
    if family not in FAMILIES:
        raise CatalogError(f"--family {family!r}: choose multiberts or earlyberts")
    seed_list = _parse_seeds(seeds, MULTIBERTS_SEEDS if family == "multiberts" else EARLYBERTS_SEEDS)
    step_list = _parse_steps(steps, family)
    try:
        points = [_point(family, seed, step) for seed in seed_list for step in step_list]
    except CatalogError as error:
        raise CatalogError(f"--seeds {seeds} --steps {steps}: {error}") from None
    return list({p.key: p for p in points}.values())


def _parse_seeds(text: str, known: tuple[int, ...]) -> list[int]:
    if text.strip().lower() == "all":
        return list(known)
    seeds: list[int] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not m or (m[2] is not None and int(m[2]) < int(m[1])):
            raise CatalogError(f"--seeds {text!r}: cannot read {part!r}; write e.g. 0-4, 0,2,3 or all")
        seeds += range(int(m[1]), int(m[2] or m[1]) + 1)
    if not seeds:
        raise CatalogError(f"--seeds {text!r} names no seed; write e.g. 0-4, 0,2,3 or all")
    return list(dict.fromkeys(seeds))


def _parse_steps(text: str, family: str) -> list[str | None]:
    """Step words for ``resolve``; None is a MultiBERTs final checkpoint."""
    steps: list[str | None] = []
    for part in filter(None, (p.strip().lower() for p in text.split(","))):
        if part == "all":
            steps += [f"{k}k" for k in MULTIBERTS_STEPS] if family == "multiberts" else [
                f"step{s}" for s in EARLYBERTS_STEPS]
        elif part in ("final", "last"):
            if family == "earlyberts":
                raise CatalogError(f"--steps {text!r}: EarlyBERTs have no final checkpoint; their last step is "
                                   f"step{EARLYBERTS_STEPS[-1]}")
            steps.append(None)
        else:
            steps.append(part)
    if not steps:
        raise CatalogError(f"--steps {text!r} names no step; write e.g. 20k,2000k, all or final")
    return list(dict.fromkeys(steps))


def _point(family: str, seed: int, step: str | None) -> GridPoint:
    if family == "multiberts":
        source = resolve(f"seed_{seed}", step)
        m = re.search(r"step_(\d+)k$", source.label)
        if m is None:
            return GridPoint(family, seed, "final", MULTIBERTS_FINAL_STEPS, f"seed_{seed}", True)
        k = int(m[1])
        return GridPoint(family, seed, f"{k}k", k * 1000, f"seed_{seed} step_{k}k", False)
    source = resolve(f"earlyberts-seed{seed}", step)
    n = int(str(source.revision).removeprefix("step"))
    return GridPoint(family, seed, f"step{n}", n, f"earlyberts-seed{seed} step{n}", n == EARLYBERTS_STEPS[-1])


# ---------------------------------------------------------------------------------------------
# One checkpoint


def run_point(point: GridPoint, options: SweepOptions) -> dict[str, Any]:
    """Convert (or reuse), verify and embed one checkpoint; the manifest row, ``failed`` on any error."""
    started = time.perf_counter()
    row: dict[str, Any] = {**asdict(point), "key": point.key, "status": "failed", "error": None,
                           "settings": options.settings()}
    source = point.source
    row.update(repo_id=source.repo_id, revision=source.revision)
    try:
        row.update(_convert_and_embed(point, source, options))
        row["status"] = "done"
    except MbexportError as error:
        row["error"] = _one_line(str(error))
    except Exception as error:  # noqa: BLE001 - a bug in one checkpoint must not stop the sweep; recorded
        row["error"] = _one_line(f"{type(error).__name__}: {error}")
    row.setdefault("seconds", {})["total"] = round(time.perf_counter() - started, 3)
    row["finished"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    return row


def _convert_and_embed(point: GridPoint, source: Source, options: SweepOptions) -> dict[str, Any]:
    from mbexport.converter import convert_detailed, default_out

    seconds: dict[str, float] = {}
    started = time.perf_counter()
    sha = source_sha256(source)
    own = options.out / "exports" / point.key
    candidates = [own, default_out(source, options.head, options.flavor, options.precision)]
    export = next((c for c in candidates if _reusable(c, sha, options)), None)
    reused = export is not None
    if export is None:
        export = convert_detailed(point.name, out=own, head=options.head, flavor=options.flavor,
                                  precision=options.precision, parity=options.parity).path
    seconds["convert"] = round(time.perf_counter() - started, 3)

    manifest = read_manifest(export)
    row: dict[str, Any] = {"export": _relative(export, options.out), "export_reused": reused,
                           "weights_sha256": manifest["weights_sha256"], "parity": parity_summary(manifest),
                           "embeddings": None, "rows": None, "hidden": manifest["model"]["hidden"]}
    if options.embed is not None:
        started = time.perf_counter()
        embeddings = options.out / "embeddings" / f"{point.key}.npy"
        row["rows"] = _embed(export, embeddings, options)
        row["embeddings"] = _relative(embeddings, options.out)
        seconds["embed"] = round(time.perf_counter() - started, 3)
    if export == own and (options.keep_exports == "none" or (options.keep_exports == "final" and not point.final)):
        shutil.rmtree(own)
        row["export"] = None
    row["seconds"] = seconds
    return row


def source_sha256(source: Source) -> str | None:
    """sha256 of the source's weight files, as the manifest records it (HF directories; None otherwise)."""
    from mbexport.sources.hf_dir import find_weight_files, has_weight_files
    from mbexport.spec import sha256_files

    if source.path is not None:
        path = source.path
    else:
        from mbexport.sources.hub import fetch

        path = fetch(str(source.repo_id), source.revision)
    if not has_weight_files(path):
        return None
    return sha256_files(find_weight_files(path))


def _reusable(export: Path, sha: str | None, options: SweepOptions) -> bool:
    """A committed export of the same weights, head, flavor and precision, verified if parity is asked for."""

    if sha is None or not is_export(export):
        return False
    try:
        manifest = read_manifest(export)
    except ExportDirError:
        return False
    same = (manifest.get("weights_sha256") == sha and manifest.get("head") == options.head
            and manifest.get("flavor") == options.flavor and manifest.get("precision") == options.precision)
    return same and (not options.parity or manifest.get("parity", {}).get("passed") is True)


def parity_summary(manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest's parity figures in brief: passed, reference, worst max |diff| and mean cosine."""
    parity = manifest.get("parity") or {}
    if parity.get("skipped") or "outputs" not in parity:
        return {"skipped": True}
    outputs = parity["outputs"].values()
    return {"passed": parity["passed"], "reference": parity["reference"],
            "max_abs": max(o["max_abs"] for o in outputs), "mean_cosine": min(o["mean_cosine"] for o in outputs)}


def _embed(export: Path, target: Path, options: SweepOptions) -> int:
    from mbexport.runtime import Embedder
    from mbexport.runtime.files import AtomicOutput

    assert options.embed is not None
    embedder = Embedder(export, pooling=options.pooling, normalize=options.normalize,
                        max_length=options.max_length, threads=options.threads)
    texts = (text for _, text in _dataset(options))
    target.parent.mkdir(parents=True, exist_ok=True)
    with AtomicOutput(target, embedder.hidden_size) as out:
        for chunk in embedder.embed_iter(texts):
            out.write([], chunk)
    return out.rows


# ---------------------------------------------------------------------------------------------
# The sweep


def sweep(points: list[GridPoint], options: SweepOptions, *, jobs: int = 1, backend: str = "local",
          ray_address: str | None = None, fail_fast: bool = False, log: Log | None = None) -> SweepResult:
    """Run ``points`` (skipping rows already done with the same settings) and keep ``RUNS/sweep.jsonl``."""
    log = log or (lambda message: print(message, file=sys.stderr, flush=True))
    _check_options(options, jobs, backend)
    options.out.mkdir(parents=True, exist_ok=True)
    if options.embed is not None:
        options = _with_dataset(options)
    manifest = options.out / MANIFEST
    with _sweep_lock(options.out):
        rows = {row["key"]: row for row in read_rows(manifest)}
        todo = [p for p in points if not _finished(rows.get(p.key), options)]
        result = SweepResult(manifest, [], skipped=[p.key for p in points if p not in todo])
        log(f"sweep: {len(points)} checkpoints, {len(result.skipped)} already done (skipped), {len(todo)} to run")
        run = _run_ray(ray_address, jobs) if backend == "ray" else _run_local(jobs)
        for count, row in enumerate(run(todo, options, fail_fast), start=1):
            rows[row["key"]] = row
            result.ran.append(row["key"])
            _write_rows(manifest, _ordered(rows, points))
            what = ("reused export" if row.get("export_reused") else "converted") if row["status"] == "done" else ""
            log(f"sweep: [{count}/{len(todo)}] {row['key']} {row['status']} in {row['seconds']['total']:.1f} s"
                + (f" ({what})" if what else f": {row['error']}"))
        result.rows = [rows[p.key] for p in points if p.key in rows]
    return result


def _check_options(options: SweepOptions, jobs: int, backend: str) -> None:
    if options.keep_exports not in KEEP_EXPORTS:
        raise SweepError(f"--keep-exports {options.keep_exports!r}: choose none, final or all")
    if options.keep_exports != "all" and options.embed is None:
        raise SweepError(f"--keep-exports {options.keep_exports} deletes exports after embedding: "
                         "it needs --embed DATA (or use --keep-exports all)")
    if jobs < 1:
        raise SweepError(f"--jobs {jobs}: give 1 or more parallel checkpoints")
    if backend not in ("local", "ray"):
        raise SweepError(f"--backend {backend!r}: choose local or ray")


def _dataset(options: SweepOptions) -> Iterator[tuple[Any, str]]:
    """The dataset's (id, text) rows; ``field`` (default "text") applies to a .jsonl dataset only."""
    from mbexport.runtime.files import input_format, read_texts

    path = str(options.embed)
    return read_texts(path, options.field if input_format(path, None) == "jsonl" else None)


def _with_dataset(options: SweepOptions) -> SweepOptions:
    """Check the dataset reads (every line) before any checkpoint starts, and fingerprint it."""
    from dataclasses import replace

    assert options.embed is not None
    count = sum(1 for _ in _dataset(options))
    if count == 0:
        raise SweepError(f"--embed {options.embed}: no texts in it; give a .txt or .jsonl with at least one text")
    digest = sha256_files([options.embed])  # streamed: the dataset may be larger than memory
    return replace(options, dataset_sha256=digest)


def _finished(row: dict[str, Any] | None, options: SweepOptions) -> bool:
    """Done with the same settings, its files still there, and verified if parity is asked for."""
    if row is None or row.get("status") != "done" or row.get("settings") != options.settings():
        return False
    if options.parity and not row.get("parity", {}).get("passed"):
        return False
    files = [row[k] for k in ("export", "embeddings") if row.get(k)]
    return all((options.out / f).exists() for f in files)


def _ordered(rows: dict[str, dict[str, Any]], points: list[GridPoint]) -> list[dict[str, Any]]:
    """This grid's rows in grid order, then rows of earlier sweeps into the same RUNS/."""
    keys = [p.key for p in points if p.key in rows]
    return [rows[k] for k in keys] + [row for k, row in rows.items() if k not in set(keys)]


def read_rows(manifest: Path) -> list[dict[str, Any]]:
    """The rows of a sweep manifest ([] when there is none yet)."""
    if not manifest.exists():
        return []
    rows = []
    for number, line in enumerate(manifest.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = jsonfiles.loads(line)
        except ValueError:
            row = None
        if not isinstance(row, dict):
            raise SweepError(f"{manifest}:{number} is not a JSON object; it was edited by hand? "
                             "fix or delete the line")
        rows.append(row)
    return rows


def _write_rows(manifest: Path, rows: list[dict[str, Any]]) -> None:
    write_text_atomic(manifest, "".join(json.dumps(row) + "\n" for row in rows))


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` atomically: a temp file beside it, fsynced, renamed over it (a kill leaves old or new)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def _sweep_lock(out: Path) -> Iterator[None]:
    with open(out / ".sweep.lock", "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SweepError(f"another mbexport sweep is running in {out}; "
                             "wait for it or choose another --out") from None
        for stale in out.glob(f".{MANIFEST}.*.partial"):
            stale.unlink()
        yield


# ---------------------------------------------------------------------------------------------
# Backends: each yields rows as checkpoints finish


Runner = Callable[[list[GridPoint], SweepOptions, bool], Iterator[dict[str, Any]]]


def _run_local(jobs: int) -> Runner:
    def run(points: list[GridPoint], options: SweepOptions, fail_fast: bool) -> Iterator[dict[str, Any]]:
        if jobs == 1 or len(points) <= 1:
            for point in points:
                row = run_point(point, options)
                yield row
                if fail_fast and row["status"] != "done":
                    return
            return
        import multiprocessing

        options = _threads_per_job(options, jobs)
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=jobs, mp_context=context, initializer=_die_with_parent) as pool:
            pending: set[Future[dict[str, Any]]] = {pool.submit(run_point, p, options) for p in points}
            while pending:
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    row = future.result()
                    yield row
                    if fail_fast and row["status"] != "done":
                        pool.shutdown(wait=True, cancel_futures=True)
                        return

    return run


def _threads_per_job(options: SweepOptions, jobs: int) -> SweepOptions:
    from dataclasses import replace

    return options if options.threads else replace(options, threads=max(1, (os.cpu_count() or 1) // jobs))


def _die_with_parent() -> None:
    """Worker processes end with the sweep (Linux): a kill -9 of the sweep leaves no orphan writing files."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _run_ray(address: str | None, jobs: int) -> Runner:
    try:
        import ray
    except ImportError:
        raise MissingExtraError("--backend ray needs Ray: pip install 'mbexport[ray]'") from None

    def run(points: list[GridPoint], options: SweepOptions, fail_fast: bool) -> Iterator[dict[str, Any]]:
        if not points:
            return
        if not ray.is_initialized():
            address_given = address or os.environ.get("RAY_ADDRESS") or None
            ray.init(address=address_given, num_cpus=None if address_given else jobs, include_dashboard=False,
                     log_to_driver=False, configure_logging=False)
        task = ray.remote(num_cpus=1)(run_point)
        options_ref = ray.put(_threads_per_job(options, jobs) if not address else options)
        pending = [task.remote(p, options_ref) for p in points]
        while pending:
            finished, pending = ray.wait(pending, num_returns=1)
            row = ray.get(finished[0])
            yield row
            if fail_fast and row["status"] != "done":
                for ref in pending:
                    ray.cancel(ref, force=True)
                return

    return run


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path.resolve())


def _one_line(text: str) -> str:
    return " ".join(text.split())
