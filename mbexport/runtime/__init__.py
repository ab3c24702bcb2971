"""Running exports: onnxruntime sessions (providers, threads, graph optimizations) and the Embedder."""

from __future__ import annotations

from mbexport.runtime.embedder import Embedder, EmbedStats
from mbexport.runtime.pooling import POOLINGS, l2_normalize, pool
from mbexport.runtime.session import CpuFallbackWarning, create_session, cuda_problems, resolve_device

__all__ = ["POOLINGS", "CpuFallbackWarning", "EmbedStats", "Embedder", "create_session", "cuda_problems",
           "l2_normalize", "pool", "resolve_device"]
