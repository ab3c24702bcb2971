"""Running exports: onnxruntime sessions (providers, threads, graph optimizations), backends and the Embedder."""

from __future__ import annotations

from mbexport.runtime.backends import BACKENDS, Backend, resolve_device
from mbexport.runtime.embedder import Embedder, EmbedStats
from mbexport.runtime.pooling import POOLINGS, l2_normalize, pool
from mbexport.runtime.session import create_session, cuda_problems

__all__ = ["BACKENDS", "POOLINGS", "Backend", "EmbedStats", "Embedder", "create_session", "cuda_problems",
           "l2_normalize", "pool", "resolve_device"]
