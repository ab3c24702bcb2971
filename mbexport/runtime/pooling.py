"""Pooling of encoder outputs into one vector per text, and L2 normalization.

``cls``     the [CLS] token's last hidden state (what BertModel's pooler reads);
``mean``    the mean of last hidden states over real tokens (sentence-transformers' default);
``pooler``  BertModel's ``pooler_output``: tanh(dense([CLS])).
Padding never counts: ``mean`` weighs by the attention mask.
"""

from __future__ import annotations

import numpy as np

POOLINGS = ("cls", "mean", "pooler")


def output_for(pooling: str) -> str:
    """The graph output a pooling reads."""
    return "pooler_output" if pooling == "pooler" else "last_hidden_state"


def pool(output: np.ndarray, attention_mask: np.ndarray, pooling: str) -> np.ndarray:
    """[rows, H] float32 from ``output`` ([rows, S, H], or [rows, H] for ``pooler``)."""
    if pooling == "pooler":
        return np.asarray(output, dtype=np.float32)
    if pooling == "cls":
        return np.ascontiguousarray(output[:, 0], dtype=np.float32)
    if pooling == "mean":
        mask = attention_mask.astype(output.dtype, copy=False)[:, None, :]  # [rows, 1, S]
        summed = np.matmul(mask, output)[:, 0, :].astype(np.float32, copy=False)  # one batched GEMV
        return summed / np.maximum(attention_mask.sum(axis=1, keepdims=True), 1).astype(np.float32)
    raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (a zero row stays zero), in place when float32."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    vectors /= np.maximum(norms, 1e-12)
    return vectors
