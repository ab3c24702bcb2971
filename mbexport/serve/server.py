"""Running the service: load every export first (a bad one fails before the port opens, with
the Embedder's one-line error), then uvicorn until SIGTERM/SIGINT.

Shutdown is uvicorn's graceful one: it stops accepting connections, waits (without a time
limit) for every in-flight request to be answered, then runs the app's lifespan exit, where
the batchers finish anything still queued. One bound is added: an answered connection whose
client does not read its answer is aborted ``body_timeout`` seconds into the drain. uvicorn
re-raises the signal it caught once it is done; ``run`` turns that into a normal return, so a
drained shutdown exits 0.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import time
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
    # The app answers 503 past --max-connections from the server's own count (``server`` is bound below,
    # before any connection is accepted).
    app = create_app(embedders, limits, batch_limits, open_connections=lambda: len(server.server_state.connections))
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=access_log,
                            lifespan="on", timeout_graceful_shutdown=None, server_header=False)
    server = _Server(config, stall=limits.body_timeout)
    previous = signal.signal(signal.SIGTERM, _drained)
    try:
        server.run()
    finally:
        signal.signal(signal.SIGTERM, previous)
    if not server.started:
        raise SystemExit(1)  # uvicorn has logged why (e.g. the port is taken)


def _drained(signum: int, frame: Any) -> None:
    """What uvicorn's re-raised SIGTERM runs after a graceful shutdown: nothing (exit 0)."""


class _Server(uvicorn.Server):
    """uvicorn's server, whose graceful drain does not wait for ever on a client that stopped reading.

    uvicorn writes an answer into the connection's buffer at once and, on shutdown, closes an
    answered connection gracefully: the close waits until the client has read everything, so a
    client that never reads held the drain (and the process) open for ever. Here a connection whose
    transport is still closing (uvicorn closes only answered or idle ones) after ``stall`` seconds
    is aborted; requests still being answered are waited for without limit, as before. Only asyncio's
    transport API is used on uvicorn's connections.
    """

    def __init__(self, config: uvicorn.Config, stall: float) -> None:
        super().__init__(config)
        self.stall = stall

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        watchdog = asyncio.get_running_loop().create_task(self._abort_stalled_readers())
        try:
            await super().shutdown(sockets)
        finally:
            watchdog.cancel()

    async def _abort_stalled_readers(self) -> None:
        flushing_since: dict[int, float] = {}
        while True:
            await asyncio.sleep(0.1)
            now = time.monotonic()
            for connection in list(self.server_state.connections):
                transport = getattr(connection, "transport", None)
                if transport is None or not transport.is_closing():
                    flushing_since.pop(id(connection), None)
                elif now - flushing_since.setdefault(id(connection), now) > self.stall:
                    transport.abort()
