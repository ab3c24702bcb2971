"""Pooling of encoder outputs into one vector per text, and L2 normalization.

``cls``     the [CLS] token's last hidden state (what BertModel's pooler reads);
``mean``    the mean of last hidden states over real tokens (sentence-transformers' default);
``pooler``  BertModel's ``pooler_output``: tanh(dense([CLS])).
Padding never counts: ``mean`` selects real tokens by the attention mask (a select, not a
multiply, so whatever sits at a padded position, NaN or Inf included, cannot leak in).
"""

from __future__ import annotations

import numpy as np

from mbexport.errors import ArgumentError

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
        real = np.asarray(attention_mask, dtype=bool)[:, :, None]  # [rows, S, 1]
        summed = np.where(real, output, 0).sum(axis=1, dtype=np.float32)
        return summed / np.maximum(real.sum(axis=1), 1).astype(np.float32)
    raise ArgumentError(f"pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (a zero row stays zero), in place when float32."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    vectors /= np.maximum(norms, 1e-12)
    return vectors
