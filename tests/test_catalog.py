"""Catalogue: name grammar -> Source, what was published, errors that say what exists, local status."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from mbexport import catalog
from mbexport.catalog import CatalogEntry, Source, entries, local_status, resolve
from mbexport.errors import CatalogError, SourceNotFoundError

# (name, step, revision) -> (repo_id, revision, label)
VALID = [
    (("seed_1", "step_200k", None), ("google/multiberts-seed_1-step_200k", None, "MultiBERTs seed_1 step_200k")),
    (("seed_1 step_200k", None, None), ("google/multiberts-seed_1-step_200k", None, "MultiBERTs seed_1 step_200k")),
    (("seed_1 200k", None, None), ("google/multiberts-seed_1-step_200k", None, "MultiBERTs seed_1 step_200k")),
    (("seed_1", "200k", None), ("google/multiberts-seed_1-step_200k", None, "MultiBERTs seed_1 step_200k")),
    (("seed_1 step_200000", None, None), ("google/multiberts-seed_1-step_200k", None, "MultiBERTs seed_1 step_200k")),
    (("  SEED_1   Step_200K ", None, None), ("google/multiberts-seed_1-step_200k", None, "MultiBERTs seed_1 step_200k")),
    (("multiberts-seed_1-step_200k", None, None), ("google/multiberts-seed_1-step_200k", None, "MultiBERTs seed_1 step_200k")),
    (("google/multiberts-seed_1-step_200k", None, None), ("google/multiberts-seed_1-step_200k", None, "MultiBERTs seed_1 step_200k")),
    (("multiberts-seed_4-step_2000k", None, None), ("google/multiberts-seed_4-step_2000k", None, "MultiBERTs seed_4 step_2000k")),
    (("seed_0 step_20k", None, None), ("google/multiberts-seed_0-step_20k", None, "MultiBERTs seed_0 step_20k")),
    (("seed_2 step_0k", None, None), ("google/multiberts-seed_2-step_0k", None, "MultiBERTs seed_2 step_0k")),
    (("seed_1", None, None), ("google/multiberts-seed_1", None, "MultiBERTs seed_1")),
    (("seed_24", None, None), ("google/multiberts-seed_24", None, "MultiBERTs seed_24")),
    (("multiberts-seed_24", None, None), ("google/multiberts-seed_24", None, "MultiBERTs seed_24")),
    (("google/multiberts-seed_7", None, None), ("google/multiberts-seed_7", None, "MultiBERTs seed_7")),
    (("seed_3", "final", None), ("google/multiberts-seed_3", None, "MultiBERTs seed_3")),
    (("seed_1 step_200k", None, "abc123"), ("google/multiberts-seed_1-step_200k", "abc123", "MultiBERTs seed_1 step_200k")),
    (("earlyberts-seed1 step7000", None, None), ("personads/earlyberts-seed1", "step7000", "EarlyBERTs seed1 step7000")),
    (("earlyberts-seed1", "step7000", None), ("personads/earlyberts-seed1", "step7000", "EarlyBERTs seed1 step7000")),
    (("earlyberts-seed1", "7000", None), ("personads/earlyberts-seed1", "step7000", "EarlyBERTs seed1 step7000")),
    (("earlyberts-seed1", "7k", None), ("personads/earlyberts-seed1", "step7000", "EarlyBERTs seed1 step7000")),
    (("earlyberts-seed1", None, "step7000"), ("personads/earlyberts-seed1", "step7000", "EarlyBERTs seed1 step7000")),
    (("personads/earlyberts-seed0", "step10", None), ("personads/earlyberts-seed0", "step10", "EarlyBERTs seed0 step10")),
    (("earlyberts-seed4 step40000", None, None), ("personads/earlyberts-seed4", "step40000", "EarlyBERTs seed4 step40000")),
    (("bert-base-uncased", None, None), ("google-bert/bert-base-uncased", None, "Google BERT bert-base-uncased")),
    (("google-bert/bert-large-cased", None, None), ("google-bert/bert-large-cased", None, "Google BERT bert-large-cased")),
    (("bert-base-multilingual-cased", None, None), ("google-bert/bert-base-multilingual-cased", None, "Google BERT bert-base-multilingual-cased")),
    (
        ("bert-large-cased-whole-word-masking-finetuned-squad", None, None),
        ("google-bert/bert-large-cased-whole-word-masking-finetuned-squad", None,
         "Google BERT bert-large-cased-whole-word-masking-finetuned-squad"),
    ),
    (("sentence-transformers/all-MiniLM-L6-v2", None, None), ("sentence-transformers/all-MiniLM-L6-v2", None, "sentence-transformers/all-MiniLM-L6-v2")),
    (("org/some.model_v2", None, "v1.0"), ("org/some.model_v2", "v1.0", "org/some.model_v2@v1.0")),
]  # fmt: skip


@pytest.mark.parametrize(("args", "expected"), VALID, ids=[" ".join(filter(None, a)) for a, _ in VALID])
def test_valid_names(args: tuple[str, str | None, str | None], expected: tuple[str, str | None, str]) -> None:
    name, step, revision = args
    source = resolve(name, step, revision=revision)
    assert (source.repo_id, source.revision, source.label) == expected
    assert source.path is None


# (name, step, revision) -> fragments the one-line message must contain
INVALID = [
    (("seed_25", None, None), ["MultiBERTs seeds are 0–24", "intermediate steps exist only for seeds 0–4", "20k, 40k", "2000k"]),
    (("seed_99 step_200k", None, None), ["no MultiBERTs seed 99", "0–24"]),
    (("seed_7 step_200k", None, None), ["seed 7 has only its final checkpoint", "seed_7", "0–4"]),
    (("seed_1 step_250k", None, None), ["seed 1 has no checkpoint at step step_250k", "200k, 300k"]),
    (("seed_1 step_210k", None, None), ["no checkpoint", "20k, 40k, 60k"]),
    (("seed_1 200", None, None), ["did you mean 200k?"]),
    (("seed_1 step_abc", None, None), ["cannot read step 'step_abc'", "step_200k"]),
    (("seed_1 step_200k", "step_300k", None), ["already names a step"]),
    (("multiberts-seed_1-step_200k", "step_300k", None), ["already names a step"]),
    (("earlyberts-seed1 step7500", None, None), ["EarlyBERTs seed1 has no checkpoint at step step7500", "step10, step100", "step20000, step40000"]),
    (("earlyberts-seed1 step30000", None, None), ["no checkpoint", "step40000"]),
    (("earlyberts-seed1", None, None), ["needs a step", "earlyberts-seed1 step7000", "step10"]),
    (("earlyberts-seed5 step7000", None, None), ["no EarlyBERTs seed 5", "0–4"]),
    (("earlyberts-seed1 step7000", None, "step8000"), ["disagree"]),
    (("bert-base-uncased", "step_20k", None), ["single checkpoint"]),
    (("org/name", "step_20k", None), ["--revision"]),
    (("hello", None, None), ["neither a catalogue name", "seed_1 step_200k", "mbexport list"]),
    (("seed_1 step_200k extra", None, None), ["cannot parse", "seed_1 step_200k"]),
    (("multiberts-seedx", None, None), ["cannot parse"]),
    (("", None, None), ["empty checkpoint name"]),
    (("a/b/c", None, None), ["neither a catalogue name"]),
]  # fmt: skip


@pytest.mark.parametrize(("args", "fragments"), INVALID, ids=[" ".join(filter(None, a)) or "empty" for a, _ in INVALID])
def test_invalid_names(args: tuple[str, str | None, str | None], fragments: list[str]) -> None:
    name, step, revision = args
    with pytest.raises(CatalogError) as info:
        resolve(name, step, revision=revision)
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


def test_published_counts() -> None:
    assert len(catalog.MULTIBERTS_SEEDS) == 25
    assert len(catalog.MULTIBERTS_STEPS) == 28
    assert catalog.MULTIBERTS_STEPS[:3] == (20, 40, 60) and catalog.MULTIBERTS_STEPS[9:12] == (200, 300, 400)
    assert catalog.MULTIBERTS_STEPS[-1] == 2000
    assert len(catalog.EARLYBERTS_STEPS) == 31
    assert catalog.EARLYBERTS_STEPS[:3] == (10, 100, 200) and catalog.EARLYBERTS_STEPS[-3:] == (19000, 20000, 40000)

    listed = entries()
    families = Counter(e.family for e in listed)
    assert families["MultiBERTs"] == 25
    assert families["MultiBERTs intermediate"] == 5 * 28 == 140
    assert families["MultiBERTs init"] == 5
    assert families["EarlyBERTs"] == 5 * 31
    assert families["Google BERT"] == len(catalog.GOOGLE_BERT)
    assert len({(e.repo_id, e.revision) for e in listed}) == len(listed)  # no duplicates


def test_every_entry_resolves_to_itself() -> None:
    for entry in entries():
        source = resolve(entry.name)
        assert (source.repo_id, source.revision) == (entry.repo_id, entry.revision), entry
        assert entry.source == source


def test_local_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model_dir = tmp_path / "my-model"
    model_dir.mkdir()
    source = resolve(str(model_dir))
    assert source == Source(str(model_dir), path=model_dir)

    # A TF1 checkpoint prefix exists only through its .index file.
    (tmp_path / "bert_model.ckpt.index").write_bytes(b"")
    prefix = tmp_path / "bert_model.ckpt"
    assert resolve(str(prefix)).path == prefix

    # Relative paths, and a directory that shadows nothing in the catalogue.
    monkeypatch.chdir(tmp_path)
    assert resolve("my-model").path == Path("my-model")
    assert resolve("./my-model").path == Path("my-model")

    with pytest.raises(SourceNotFoundError, match="does not exist"):
        resolve(str(tmp_path / "missing"))
    with pytest.raises(SourceNotFoundError, match="does not exist"):
        resolve("./missing")
    with pytest.raises(CatalogError, match="local path"):
        resolve(str(model_dir), "step_200k")


def test_from_gives_a_catalogue_name_a_local_copy(tmp_path: Path) -> None:
    source = resolve("seed_1", "step_200k", local=tmp_path)
    assert source.repo_id == "google/multiberts-seed_1-step_200k" and source.path == tmp_path
    with pytest.raises(SourceNotFoundError, match="--from"):
        resolve("seed_1", "step_200k", local=tmp_path / "nope")


def test_slugs_are_distinct_and_file_safe() -> None:
    slugs = [e.source.slug for e in entries()]
    assert len(set(slugs)) == len(slugs)
    assert resolve("seed_1 step_200k").slug == "multiberts-seed_1-step_200k"
    assert resolve("seed_1").slug == "multiberts-seed_1"
    assert resolve("earlyberts-seed1 step7000").slug == "earlyberts-seed1-step7000"
    assert resolve("bert-base-uncased").slug == "google-bert-bert-base-uncased"
    assert resolve("org/model", revision="v1").slug == "org-model-v1"
    assert all("/" not in s for s in slugs)


def test_local_status(tiny_checkpoint, hf_cache, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    entry = CatalogEntry("MultiBERTs intermediate", "seed_1 step_200k", "google/multiberts-seed_1-step_200k")
    early = CatalogEntry("EarlyBERTs", "earlyberts-seed1 step7000", "personads/earlyberts-seed1", "step7000")
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty_home"))
    assert local_status(entry, tmp_path / "exports") == catalog.LocalStatus(cached=False, export_dir=None)

    src = tiny_checkpoint(head="pretraining", fmt="bin")
    hf_home = hf_cache(entry.repo_id, src)
    hf_cache(early.repo_id, src, revision="step7000")
    monkeypatch.setenv("HF_HOME", str(hf_home))
    exports = tmp_path / "exports"
    (exports / entry.source.slug / "pretraining-fused-fp32").mkdir(parents=True)
    (exports / entry.source.slug / "pretraining-fused-fp32" / "mbexport.json").write_text("{}")
    (exports / "earlyberts-seed1-step7000").mkdir(parents=True)  # an export dir with no manifest: not exported

    status = local_status(entry, exports)
    assert status.cached and status.exported
    assert status.export_dir == exports / "multiberts-seed_1-step_200k" / "pretraining-fused-fp32"
    assert local_status(early, exports) == catalog.LocalStatus(cached=True, export_dir=None)
    (exports / "earlyberts-seed1-step7000" / "mbexport.json").write_text("{}")
    assert local_status(early, exports).export_dir == exports / "earlyberts-seed1-step7000"
    other_step = CatalogEntry("EarlyBERTs", "earlyberts-seed1 step8000", "personads/earlyberts-seed1", "step8000")
    assert not local_status(other_step, None).cached
