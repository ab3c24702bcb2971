"""``mbexport serve``: an HTTP embedding service over one Embedder per export.

Thin layers over :class:`mbexport.runtime.Embedder`: ``batching`` coalesces the texts of
concurrent requests into token-budget batches, ``app`` speaks the OpenAI and
text-embeddings-inference protocols, ``metrics`` exposes Prometheus counters. The serving
dependencies are the ``serve`` extra; importing ``app`` without them raises
:class:`~mbexport.errors.MissingExtraError` naming it.
"""

from __future__ import annotations

from mbexport.serve.batching import BatchLimits

__all__ = ["BatchLimits"]
