"""Embed a ``ray.data.Dataset`` column with an export: ``map_batches`` over an actor pool,
one :class:`~mbexport.runtime.Embedder` per actor (loaded once, reused for every batch).

>>> ds = ray.data.read_parquet("s3://corpus/")            # doctest: +SKIP
>>> embed_dataset(ds, "exports/minilm", column="text", concurrency=8).write_parquet("s3://out/")

Two forms: by default every input column is kept, an ``embedding`` column is added and row
order is preserved (the dataset's ``preserve_order`` execution option is set); with
``id_column`` the result is keyed, ``{id_column, embedding}`` rows in whatever order actors
finish them (no reordering barrier: the cheaper form for large jobs). On a cluster Ray
schedules the actors across nodes; every node needs mbexport installed and the export
directory at the same path (a shared filesystem) — see docs/SERVING.md. Ray is the ``ray``
extra; without it importing this module raises :class:`~mbexport.errors.MissingExtraError`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mbexport.errors import MissingExtraError, TokenizerInputError
from mbexport.runtime import Embedder

try:
    import pyarrow as pa
    import ray.data
except ImportError:  # pragma: no cover - exercised only without the extra
    raise MissingExtraError("mbexport.integrations.ray_data needs the ray extra (ray is missing); "
                            "install it with: pip install 'mbexport[ray]'") from None

DEFAULT_BATCH_SIZE = 1024  # rows per map_batches call: half an Embedder window, small enough to stream


class EmbedActor:
    """The ``map_batches`` callable: holds one Embedder, adds the embedding column to a batch."""

    def __init__(self, export_dir: str, column: str, output_column: str, id_column: str | None,
                 embedder_options: dict[str, Any]) -> None:
        self.embedder = Embedder(export_dir, **embedder_options)
        self.column, self.output_column, self.id_column = column, output_column, id_column

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        texts = batch[self.column].tolist()
        bad = next((text for text in texts if not isinstance(text, str)), "")
        if not isinstance(bad, str):  # None / NaN: a missing value (or an object column of other things)
            raise TokenizerInputError(f"embed_dataset: column {self.column!r} holds {bad!r} "
                                      f"({type(bad).__name__}), not text; drop or fill missing values first, e.g. "
                                      f"ds.filter(lambda row: isinstance(row[{self.column!r}], str))")
        rows = self.embedder.embed(texts)
        if self.id_column is not None:
            return {self.id_column: batch[self.id_column], self.output_column: rows}
        return {**batch, self.output_column: rows}


def embed_dataset(ds: ray.data.Dataset, export_dir: str | Path, *, column: str = "text",
                  output_column: str = "embedding", id_column: str | None = None, concurrency: int = 1,
                  num_cpus: float = 1, num_gpus: float = 0, batch_size: int = DEFAULT_BATCH_SIZE,
                  device: str | None = None, **embedder_options: Any) -> ray.data.Dataset:
    """``ds`` with ``output_column`` ([hidden] float32 per row) embedded from ``column`` by
    ``concurrency`` actors, each reserving ``num_cpus`` CPUs (its onnxruntime threads) and
    ``num_gpus`` GPUs (device ``cuda`` when > 0). ``embedder_options`` go to the Embedder
    (pooling, normalize, max_length, batch_tokens; leave them out for what the export means)."""
    if concurrency < 1 or batch_size < 1:
        raise ValueError(f"embed_dataset: concurrency and batch_size must be >= 1, got {concurrency}, {batch_size}")
    schema = ds.schema()
    if schema is None:  # Ray knows no schema only for a dataset without rows: nothing to embed
        return ds
    names = list(schema.names)
    for name, role in ((column, "column"), (id_column, "id_column")):
        if name is not None and name not in names:
            raise ValueError(f"embed_dataset: {role} {name!r} is not in the dataset (columns: "
                             f"{', '.join(names)}); pass {role}= one of them")
    if output_column in (names if id_column is None else [id_column]):
        raise ValueError(f"embed_dataset: output_column {output_column!r} is already a column; pass "
                         "output_column= a new name")
    kind = dict(zip(names, schema.types))[column]
    if isinstance(kind, pa.DataType) and not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        raise ValueError(f"embed_dataset: column {column!r} holds {kind}, not text; embed a string column "
                         "(decode or format it first, e.g. with ds.map_batches)")
    options = {"device": device or ("cuda" if num_gpus > 0 else "cpu"), "threads": max(1, int(num_cpus)),
               **embedder_options}
    out = ds.map_batches(EmbedActor, fn_constructor_args=(str(Path(export_dir).resolve()), column, output_column,
                                                          id_column, options),
                         batch_size=batch_size, batch_format="numpy", concurrency=concurrency, num_cpus=num_cpus,
                         num_gpus=num_gpus or None)
    if id_column is None:
        out.context.execution_options.preserve_order = True
    return out
