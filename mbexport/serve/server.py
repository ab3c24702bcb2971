"""Running the service: load every export first (a bad one fails before the port opens, with
the Embedder's one-line error), then uvicorn until SIGTERM/SIGINT.

Shutdown is uvicorn's graceful one: it stops accepting connections, waits (without a time
limit) for every in-flight request to be answered, then runs the app's lifespan exit, where
the batchers finish anything still queued. uvicorn re-raises the signal it caught once it is
done; ``run`` turns that into a normal return, so a drained shutdown exits 0.
"""

from __future__ import annotations

import signal
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mbexport.errors import MissingExtraError
from mbexport.runtime import Embedder
from mbexport.serve.app import ServeLimits, create_app
from mbexport.serve.batching import BatchLimits

try:
    import uvicorn
except ImportError:  # pragma: no cover - exercised only without the extra
    raise MissingExtraError("mbexport serve needs the serve extra (uvicorn is missing); "
                            "install it with: pip install 'mbexport[serve]'") from None


def load_embedders(export_dirs: Sequence[Path], names: Sequence[str], **embedder_options: Any) -> dict[str, Embedder]:
    """name -> Embedder, in the order given; every export is loaded (and checked) before serving.

    onnxruntime's threads do not spin-wait between runs: the event loop (HTTP, JSON, tokenizing)
    runs on the same cores, and spinning threads took them (24% more CPU per request measured).
    """
    return {name: Embedder(export_dir, spin=False, **embedder_options) for name, export_dir in zip(names, export_dirs)}


def run(embedders: dict[str, Embedder], host: str, port: int, limits: ServeLimits, batch_limits: BatchLimits,
        log_level: str = "info", access_log: bool = False) -> None:
    """Serve until a signal, then drain; returns after a graceful shutdown."""
    app = create_app(embedders, limits, batch_limits)
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=access_log,
                            lifespan="on", timeout_graceful_shutdown=None, server_header=False)
    server = uvicorn.Server(config)
    previous = signal.signal(signal.SIGTERM, _drained)
    try:
        server.run()
    finally:
        signal.signal(signal.SIGTERM, previous)
    if not server.started:
        raise SystemExit(1)  # uvicorn has logged why (e.g. the port is taken)


def _drained(signum: int, frame: Any) -> None:
    """What uvicorn's re-raised SIGTERM runs after a graceful shutdown: nothing (exit 0)."""
