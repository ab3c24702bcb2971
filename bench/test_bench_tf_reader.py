"""Reading TensorFlow BERT checkpoints: our TensorBundle reader against plain file reads and safetensors.

The checkpoint is BERT-base sized (~440 MB of float32 under Google's TF1 names; 2 layers in
--quick mode) with random weights. TensorFlow is not installed here, so it is written by
tests/fixtures/tf/bundle_writer.py, the test-only writer whose .index output the unit tests
check byte for byte against files real TensorFlow wrote; the data shard is raw tensor bytes
either way. The same weights are saved as an HF directory (model.safetensors) for the
convert comparison. Files were just written, so reads come from the page cache: the
figures are memory speed, the best a reader can do.

Workloads (``benchmark.group``):
- ``tf-read``: every tensor CRC-checked and copied out (BundleReader), the whole
  load_tf_checkpoint (name mapping, kernel transposes, sha256 of the files), the baseline
  of reading the same bytes with Path.read_bytes, and load_hf_dir on the safetensors copy.
- ``tf-convert``: mbexport convert (no parity) from the TF checkpoint and from safetensors;
  ``extra_info["ratio_vs_safetensors"]`` must stay <= 2 (issue 4's acceptance).
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

BERT_BASE = {"vocab_size": 30522, "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
             "intermediate_size": 3072, "max_position_embeddings": 512, "type_vocab_size": 2, "hidden_act": "gelu",
             "layer_norm_eps": 1e-12}
SMALL = {**BERT_BASE, "hidden_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 1024}

RESULTS: dict[str, float] = {}


def _writer():  # noqa: ANN202
    path = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "tf" / "bundle_writer.py"
    spec = importlib.util.spec_from_file_location("_mbexport_tf_bundle_writer", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _tf1_weights(config: dict, rng: np.random.Generator) -> dict[str, np.ndarray]:
    h, i, v = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    shapes = {"bert/embeddings/word_embeddings": (v, h),
              "bert/embeddings/token_type_embeddings": (config["type_vocab_size"], h),
              "bert/embeddings/position_embeddings": (config["max_position_embeddings"], h),
              "bert/embeddings/LayerNorm/gamma": (h,), "bert/embeddings/LayerNorm/beta": (h,)}
    for n in range(config["num_hidden_layers"]):
        p = f"bert/encoder/layer_{n}/"
        for proj in ("query", "key", "value"):
            shapes |= {f"{p}attention/self/{proj}/kernel": (h, h), f"{p}attention/self/{proj}/bias": (h,)}
        shapes |= {f"{p}attention/output/dense/kernel": (h, h), f"{p}attention/output/dense/bias": (h,),
                   f"{p}attention/output/LayerNorm/gamma": (h,), f"{p}attention/output/LayerNorm/beta": (h,),
                   f"{p}intermediate/dense/kernel": (h, i), f"{p}intermediate/dense/bias": (i,),
                   f"{p}output/dense/kernel": (i, h), f"{p}output/dense/bias": (h,),
                   f"{p}output/LayerNorm/gamma": (h,), f"{p}output/LayerNorm/beta": (h,)}
    shapes |= {"bert/pooler/dense/kernel": (h, h), "bert/pooler/dense/bias": (h,)}
    return {name: (rng.standard_normal(shape, dtype=np.float32) * 0.02) for name, shape in shapes.items()}


def _hf_name(tf_name: str) -> str:
    name = tf_name.replace("bert/encoder/layer_", "bert/encoder/layer/").replace("/", ".")
    for old, new in ((".kernel", ".weight"), (".gamma", ".weight"), (".beta", ".bias")):
        if name.endswith(old):
            name = name[: -len(old)] + new
    return name + ".weight" if name.endswith("_embeddings") else name


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory, quick: bool) -> dict[str, Path]:
    """{"tf": dir with bert_model.ckpt.*, "safetensors": HF dir} holding the same weights."""
    from safetensors.numpy import save_file

    config = dict(SMALL if quick else BERT_BASE)
    weights = _tf1_weights(config, np.random.default_rng(0))
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab += [f"w{i}" for i in range(config["vocab_size"] - len(vocab))]
    tf_dir = tmp_path_factory.mktemp("tf-bert")
    _writer().write_bundle(tf_dir / "bert_model.ckpt", weights)
    (tf_dir / "bert_config.json").write_text(json.dumps(config))
    (tf_dir / "vocab.txt").write_text("\n".join(vocab) + "\n")
    st_dir = tmp_path_factory.mktemp("st-bert")
    save_file({_hf_name(k): np.ascontiguousarray(v.T if k.endswith("kernel") else v) for k, v in weights.items()},
              str(st_dir / "model.safetensors"))
    (st_dir / "config.json").write_text(json.dumps({**config, "model_type": "bert", "architectures": ["BertModel"]}))
    (st_dir / "vocab.txt").write_text("\n".join(vocab) + "\n")
    return {"tf": tf_dir, "safetensors": st_dir}


def _data_bytes(tf_dir: Path) -> int:
    return sum(p.stat().st_size for p in tf_dir.glob("bert_model.ckpt.data-*"))


def _record(benchmark, name: str, nbytes: int) -> None:  # noqa: ANN001
    from mbexport.sources.crc import CRC32C_IMPLEMENTATION

    mean = benchmark.stats.stats.mean
    RESULTS[name] = mean
    benchmark.extra_info.update({"MB": round(nbytes / 1e6, 1), "MB_per_s": round(nbytes / 1e6 / mean, 1),
                                 "crc32c": CRC32C_IMPLEMENTATION})
    if name != "read_bytes" and "read_bytes" in RESULTS:
        benchmark.extra_info["ratio_vs_read_bytes"] = round(mean / RESULTS["read_bytes"], 2)


class TestRead:
    def test_read_bytes_baseline(self, benchmark, checkpoints, quick) -> None:  # noqa: ANN001
        benchmark.group = "tf-read"
        files = sorted(checkpoints["tf"].glob("bert_model.ckpt.*"))
        benchmark.pedantic(lambda: [len(p.read_bytes()) for p in files], rounds=2 if quick else 5, iterations=1)
        _record(benchmark, "read_bytes", _data_bytes(checkpoints["tf"]))

    def test_bundle_reader_all_tensors(self, benchmark, checkpoints, quick) -> None:  # noqa: ANN001
        from mbexport.sources.tf_bundle import BundleReader

        benchmark.group = "tf-read"

        def run() -> int:
            with BundleReader(checkpoints["tf"] / "bert_model.ckpt") as reader:
                return sum(reader.read(name).nbytes for name in reader.entries)

        total = benchmark.pedantic(run, rounds=2 if quick else 5, iterations=1)
        assert total == _data_bytes(checkpoints["tf"])
        _record(benchmark, "bundle_reader", total)

    def test_load_tf_checkpoint(self, benchmark, checkpoints, quick) -> None:  # noqa: ANN001
        from mbexport.sources.tf_checkpoint import load_tf_checkpoint

        benchmark.group = "tf-read"
        checkpoint = benchmark.pedantic(lambda: load_tf_checkpoint(checkpoints["tf"], "bench"),
                                        rounds=2 if quick else 3, iterations=1)
        assert checkpoint.spec.num_layers == (SMALL if quick else BERT_BASE)["num_hidden_layers"]
        _record(benchmark, "load_tf_checkpoint", _data_bytes(checkpoints["tf"]))

    def test_load_safetensors_dir(self, benchmark, checkpoints, quick) -> None:  # noqa: ANN001
        from mbexport.sources.hf_dir import load_hf_dir

        benchmark.group = "tf-read"
        benchmark.pedantic(lambda: load_hf_dir(checkpoints["safetensors"]), rounds=2 if quick else 3, iterations=1)
        _record(benchmark, "load_safetensors", (checkpoints["safetensors"] / "model.safetensors").stat().st_size)


class TestConvert:
    def test_convert_from_safetensors(self, benchmark, checkpoints, tmp_path, quick) -> None:  # noqa: ANN001
        from mbexport.converter import convert_detailed

        benchmark.group = "tf-convert"
        benchmark.pedantic(lambda: convert_detailed(str(checkpoints["safetensors"]), out=tmp_path / "st", head="base",
                                                    parity=False), rounds=1 if quick else 3, iterations=1)
        RESULTS["convert_safetensors"] = benchmark.stats.stats.mean

    def test_convert_from_tf_checkpoint(self, benchmark, checkpoints, tmp_path, quick) -> None:  # noqa: ANN001
        from mbexport.converter import convert_detailed

        benchmark.group = "tf-convert"
        result = benchmark.pedantic(lambda: convert_detailed(str(checkpoints["tf"]), out=tmp_path / "tf", head="base",
                                                             parity=False), rounds=1 if quick else 3, iterations=1)
        benchmark.extra_info["load_seconds"] = round(result.seconds["load"], 3)
        if "convert_safetensors" in RESULTS:
            ratio = benchmark.stats.stats.mean / RESULTS["convert_safetensors"]
            benchmark.extra_info["ratio_vs_safetensors"] = round(ratio, 2)
            if not quick:
                assert ratio <= 2.0, f"TF convert takes {ratio:.2f}x the safetensors convert"
