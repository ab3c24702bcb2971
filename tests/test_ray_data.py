"""Ray Data integration on a local Ray instance over the real MiniLM export: a few thousand
rows embedded by an actor pool equal ``Embedder.embed`` row for row, in both forms."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest

from mbexport import Embedder

ray = pytest.importorskip("ray")
from mbexport.integrations.ray_data import embed_dataset  # noqa: E402 (after importorskip: needs ray)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.*")

ROWS = 800
WORDS = ("embedding", "pipeline", "token", "seed", "checkpoint", "Ray", "actor", "cluster", "Straße", "数据", "über")


def corpus() -> list[str]:
    """Texts of varied lengths (1 to 60 words) so batches mix lengths and some truncate."""
    rng = np.random.default_rng(7)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(1, 60)))) for _ in range(ROWS)]


@pytest.fixture(scope="module")
def minilm_export(minilm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mbexport.converter import convert

    return Path(convert(str(minilm_dir), out=tmp_path_factory.mktemp("exp") / "minilm", head="base", parity=False))


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory: pytest.TempPathFactory):
    # Ray puts the driver's working directory on its workers' sys.path: start it from a neutral
    # directory, so workers import the installed package, not a source checkout without _native.
    here = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("ray-cwd"))
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    finally:
        os.chdir(here)
    yield
    ray.shutdown()


@pytest.mark.slow
def test_actor_pool_equals_embedder_in_both_forms(minilm_export: Path, local_ray: None) -> None:
    texts = corpus()
    options = {"pooling": "mean", "normalize": True, "max_length": 48}
    expected = Embedder(minilm_export, threads=1, **options).embed(texts)
    ds = ray.data.from_items([{"id": i, "text": t} for i, t in enumerate(texts)], override_num_blocks=12)

    ordered = embed_dataset(ds, minilm_export, concurrency=2, batch_size=256, **options).take_all()
    assert [row["text"] for row in ordered] == texts  # every column kept, input order kept
    got = np.stack([row["embedding"] for row in ordered])
    assert got.shape == (ROWS, 384) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=1e-5)

    keyed_rows = 300
    keyed = embed_dataset(ds.limit(keyed_rows), minilm_export, id_column="id", concurrency=2, batch_size=128,
                          **options).take_all()
    assert sorted(keyed[0]) == ["embedding", "id"]
    by_id = {int(row["id"]): row["embedding"] for row in keyed}
    assert sorted(by_id) == list(range(keyed_rows))
    np.testing.assert_allclose(np.stack([by_id[i] for i in range(keyed_rows)]), expected[:keyed_rows], atol=1e-5)


def test_missing_column_is_named(minilm_export: Path, local_ray: None) -> None:
    ds = ray.data.from_items([{"body": "x"}])
    with pytest.raises(ValueError, match="column 'text' is not in the dataset \\(columns: body\\)"):
        embed_dataset(ds, minilm_export)


def test_empty_dataset_embeds_to_empty(minilm_export: Path, local_ray: None) -> None:
    assert embed_dataset(ray.data.from_items([]), minilm_export).take_all() == []


@pytest.mark.parametrize(("rows", "kind"), [([{"text": 1}], "int64"), ([{"text": b"x"}], "binary"),
                                            ([{"text": ["a", "b"]}], "list<item: string>")])
def test_non_text_column_is_refused_before_running(minilm_export: Path, local_ray: None, rows: list[dict],
                                                   kind: str) -> None:
    with pytest.raises(ValueError, match=f"column 'text' holds {re.escape(kind)}, not text"):
        embed_dataset(ray.data.from_items(rows), minilm_export)


def test_output_column_never_overwrites_an_input_column(minilm_export: Path, local_ray: None) -> None:
    with pytest.raises(ValueError, match="output_column 'text' is already a column"):
        embed_dataset(ray.data.from_items([{"text": "a"}]), minilm_export, output_column="text")


def test_missing_values_are_named(minilm_export: Path, local_ray: None) -> None:
    """A None (or NaN) among the texts fails the job with the column and the value, never a silent row."""
    pandas = pytest.importorskip("pandas")
    ds = ray.data.from_pandas(pandas.DataFrame({"text": ["a", None, "b"]}))
    # pandas' None reaches the actor as None or NaN, depending on the Ray/pandas conversion path
    with pytest.raises(Exception, match=r"embed_dataset: column 'text' holds (None \(NoneType\)|nan \(float\)), not"):
        embed_dataset(ds, minilm_export, batch_size=8).take_all()
