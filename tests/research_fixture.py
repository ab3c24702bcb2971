"""A synthetic MultiBERTs / EarlyBERTs grid in an offline HF cache, and a labelled dataset for probes.

Each checkpoint is a tiny random BERT (conftest.write_tiny_checkpoint) whose word embeddings of a few
"positive" and "negative" words are pushed apart along one direction by an amount that grows with the
training step, so a linear probe on the [CLS] vector gets better with the step: the figures of
docs/RESEARCH.md come from this fixture, not from real MultiBERTs.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from conftest import tiny_vocab, write_hf_cache, write_tiny_checkpoint

POSITIVE = ("hello", "fast", "model", "export")
NEGATIVE = ("seed", "step", "token", "text")
FILLER = ("the", "a", "is", "of", "and", "to", "in", "it", "on", "bert", "world")
# Signal strength per step (what "training" has taught the checkpoint).
MULTIBERTS = {"20k": 0.0, "200k": 0.1, None: 0.4}  # None: the final checkpoint
EARLYBERTS = {"step10": 0.0, "step100": 0.2}


def write_checkpoint(out: Path, seed: int, signal: float) -> Path:
    """A tiny BertForPreTraining (pytorch_model.bin, as MultiBERTs ship) with ``signal`` in its embeddings."""
    import torch

    write_tiny_checkpoint(out, head="pretraining", fmt="bin", seed=seed)
    state = torch.load(out / "pytorch_model.bin", weights_only=True)
    table = state["bert.embeddings.word_embeddings.weight"]
    direction = torch.randn(table.shape[1], generator=torch.Generator().manual_seed(1234))
    vocab = tiny_vocab()
    with torch.no_grad():
        for words, sign in ((POSITIVE, 1.0), (NEGATIVE, -1.0)):
            for word in words:
                table[vocab.index(word)] += sign * signal * direction
    torch.save(state, out / "pytorch_model.bin")
    return out


def write_research_cache(root: Path, multiberts_seeds: tuple[int, ...] = (0, 1, 2),
                         earlyberts_seeds: tuple[int, ...] = (0, 1)) -> Path:
    """HF home holding google/multiberts-seed_N(-step_K) and personads/earlyberts-seedN@stepS."""
    hf_home = root / "hf_home"
    for seed in multiberts_seeds:
        for step, signal in MULTIBERTS.items():
            repo = f"google/multiberts-seed_{seed}" + (f"-step_{step}" if step else "")
            src = write_checkpoint(root / "src" / repo.replace("/", "--"), 100 * seed + len(str(step)), signal)
            write_hf_cache(hf_home, repo, src)
    for seed in earlyberts_seeds:
        for revision, signal in EARLYBERTS.items():
            src = write_checkpoint(root / "src" / f"earlyberts-seed{seed}-{revision}", 500 + 10 * seed + len(revision),
                                   signal)
            write_hf_cache(hf_home, f"personads/earlyberts-seed{seed}", src, revision=revision)
    return hf_home


def write_dataset(path: Path, n: int = 240, seed: int = 0) -> Path:
    """A labelled JSONL: a text carries two words of its class and one of the other; 10% of labels are
    flipped (so no probe reaches 100%); every 4th line is in the test split."""
    rng = np.random.default_rng(seed)
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            label = int(rng.integers(0, 2))
            mine, other = (POSITIVE, NEGATIVE) if label else (NEGATIVE, POSITIVE)
            words = [*rng.choice(FILLER, size=5), *rng.choice(mine, size=2), rng.choice(other)]
            rng.shuffle(words)
            label = label if rng.random() >= 0.1 else 1 - label
            f.write(json.dumps({"id": i, "text": " ".join(words), "label": label,
                                "split": "test" if i % 4 == 0 else "train"}) + "\n")
    return path


def offline_env(hf_home: Path, tmp: Path) -> dict[str, str]:
    return {"HF_HOME": str(hf_home), "HF_HUB_CACHE": str(hf_home / "hub"), "HF_HUB_OFFLINE": "1",
            "MBEXPORT_HOME": str(tmp / "mbhome"), "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
