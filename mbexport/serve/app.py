"""The ASGI app: OpenAI ``POST /v1/embeddings``, text-embeddings-inference ``POST /embed``,
``GET /health``, ``GET /info``, ``GET /metrics``.

Stack: Starlette on uvicorn (with uvloop and httptools, which uvicorn picks up when installed:
the serve extra installs them). Both are small, well kept (encode/) and what FastAPI itself
runs on; FastAPI's extra layer is pydantic validation whose 422 ``{"detail": [...]}`` body
is neither OpenAI's ``{"error": {...}}`` nor TEI's ``{"error", "error_type"}``, so it would
have to be overridden everywhere, and it costs time per request. The two request schemas
are small; checking them by hand gives each protocol its own status codes and error bodies.
Bodies are read and written with orjson: writing a 384-float row with the standard json module
took 176 us, a third of the event loop's time under load; orjson writes the float32 rows as they
are (shortest repr that reads back to the same float32) in 7 us.

A request's life: body read with a size limit (413) -> JSON (400) -> fields checked (400 for
OpenAI, 422 for TEI) -> at most ``max_inputs`` texts (413) -> tokenized on a thread (native,
GIL released) -> over-long texts refused (422) unless truncation was asked -> queued on the
model's :class:`~mbexport.serve.batching.Coalescer` (429 + Retry-After when full) -> rows.
Every refusal is answered before the request touches the queue, so it never disturbs others.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from mbexport.errors import MissingExtraError
from mbexport.runtime import Embedder
from mbexport.serve.batching import BatchLimits, Closing, Coalescer, QueueFull

try:
    import orjson
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
    from starlette.applications import Starlette
    from starlette.requests import ClientDisconnect, Request
    from starlette.responses import Response
    from starlette.routing import Route
except ImportError as error:  # pragma: no cover - exercised only without the extra
    raise MissingExtraError(f"mbexport serve needs the serve extra ({error.name} is missing); "
                            "install it with: pip install 'mbexport[serve]'") from None

from mbexport.serve.metrics import Metrics

RETRY_AFTER_SECONDS = 1
INLINE_TOKENIZE_TEXTS = 16  # requests with more texts are tokenized on a thread, off the event loop


@dataclass(frozen=True)
class ServeLimits:
    """Per-request limits; queue and batch limits are :class:`BatchLimits`."""

    max_inputs: int = 2048  # texts per request (413 beyond)
    max_body_bytes: int = 16 * 1024 * 1024  # request body (413 beyond)
    auto_truncate: bool = False  # truncate over-long texts unless a request says otherwise


class JSONResponse(Response):
    """A JSON body written by orjson; numpy arrays (the rows) are written directly."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


class ApiError(Exception):
    """A refused request: the HTTP status and what each protocol's error body says."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.param, self.code = status, message, kind, param, code
        self.headers = headers

    def openai(self) -> JSONResponse:
        body = {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}
        return JSONResponse(body, self.status, headers=self.headers)

    def tei(self) -> JSONResponse:
        kind = {429: "Overloaded", 503: "Unhealthy"}.get(self.status, "Validation" if self.status < 500 else "Backend")
        return JSONResponse({"error": self.message, "error_type": kind}, self.status, headers=self.headers)


@dataclass
class Served:
    """One export being served: its name, Embedder and batcher."""

    name: str
    embedder: Embedder
    coalescer: Coalescer


DEFAULT_LIMITS = ServeLimits()
DEFAULT_BATCH_LIMITS = BatchLimits()


def create_app(embedders: dict[str, Embedder], limits: ServeLimits = DEFAULT_LIMITS,
               batch_limits: BatchLimits = DEFAULT_BATCH_LIMITS) -> Starlette:
    """The service over ``embedders`` (name -> Embedder; the first is the default model)."""
    if not embedders:
        raise ValueError("create_app needs at least one Embedder")
    if limits.max_inputs > batch_limits.max_queue:
        raise ValueError(f"max_inputs ({limits.max_inputs}) must be <= the queue size ({batch_limits.max_queue}), "
                         "or a full-size request could never be accepted")
    metrics = Metrics()
    models: dict[str, Served] = {}

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        for name, embedder in embedders.items():
            models[name] = Served(name, embedder, Coalescer(name, embedder, batch_limits, metrics))
            models[name].coalescer.start()
        yield
        # uvicorn has answered every in-flight request by now; finish anything still queued.
        await asyncio.gather(*(served.coalescer.close() for served in models.values()))

    def default() -> Served:
        return next(iter(models.values()))

    async def embeddings(request: Request) -> Response:
        """OpenAI ``POST /v1/embeddings``."""
        return await _answer(request, "openai", metrics, limits, lambda body: _openai(body, models, default(), limits))

    async def embed(request: Request) -> Response:
        """text-embeddings-inference ``POST /embed``: a list of vectors."""
        return await _answer(request, "tei", metrics, limits, lambda body: _tei(body, default(), limits))

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "models": list(models)})

    async def info(request: Request) -> Response:
        return JSONResponse({"model_id": default().name, "max_client_batch_size": limits.max_inputs,
                             "max_batch_tokens": batch_limits.max_batch_tokens, "max_queue": batch_limits.max_queue,
                             "models": [_summary(served) for served in models.values()]})

    async def metrics_endpoint(request: Request) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    routes = [Route("/v1/embeddings", embeddings, methods=["POST"]), Route("/embed", embed, methods=["POST"]),
              Route("/health", health, methods=["GET"]), Route("/info", info, methods=["GET"]),
              Route("/metrics", metrics_endpoint, methods=["GET"])]
    return Starlette(routes=routes, lifespan=lifespan)


# -- request handling ----------------------------------------------------------------------

async def _answer(request: Request, protocol: str, metrics: Metrics, limits: ServeLimits,
                  handle: Callable[[Any], Awaitable[Response]]) -> Response:
    """Read, parse and handle one request; any ApiError becomes the protocol's error body."""
    started = time.perf_counter()
    endpoint = request.url.path
    metrics.in_flight.inc()
    try:
        body = _parse_json(await _read_body(request, limits.max_body_bytes))
        response = await handle(body)
    except ClientDisconnect:
        response = Response(status_code=499)
    except Exception as error:  # noqa: BLE001 - a failing batch answers 500 JSON, the server keeps serving
        if not isinstance(error, ApiError):
            error = ApiError(500, f"embedding failed: {type(error).__name__}: {error}", kind="server_error")
        response = error.openai() if protocol == "openai" else error.tei()
    finally:
        metrics.in_flight.dec()
    metrics.requests.labels(endpoint, str(response.status_code)).inc()
    metrics.request_seconds.labels(endpoint).observe(time.perf_counter() - started)
    return response


async def _read_body(request: Request, max_bytes: int) -> bytes:
    """The body, refusing (413) as soon as it is known to exceed ``max_bytes``."""
    too_large = ApiError(413, f"request body is larger than {max_bytes} bytes; send fewer or shorter inputs "
                              "per request", code="request_too_large")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def _parse_json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise ApiError(400, f"request body is not valid JSON ({error}); send a JSON object",
                       code="invalid_json") from None


async def _openai(body: Any, models: dict[str, Served], default: Served, limits: ServeLimits) -> Response:
    if not isinstance(body, dict):
        raise ApiError(400, "request body must be a JSON object with 'input' and 'model'")
    unknown = sorted(set(body) - {"input", "model", "encoding_format", "dimensions", "user"})
    if unknown:
        raise ApiError(400, f"unrecognized request argument supplied: {', '.join(unknown)}", param=unknown[0],
                       code="unsupported_parameter")
    name = body.get("model", default.name)
    if not isinstance(name, str):
        raise ApiError(400, "'model' must be a string naming a served model", param="model")
    if name not in models:
        raise ApiError(404, f"the model {name!r} does not exist; served models: {', '.join(models)}", param="model",
                       code="model_not_found")
    served = models[name]
    fmt = body.get("encoding_format") or "float"
    if fmt not in ("float", "base64"):
        raise ApiError(400, f"encoding_format must be 'float' or 'base64', got {fmt!r}", param="encoding_format")
    dimensions = body.get("dimensions")
    if dimensions is not None and dimensions != served.embedder.hidden_size:
        raise ApiError(400, f"'dimensions' is not supported: {name} returns {served.embedder.hidden_size} "
                            "dimensions; leave it out", param="dimensions", code="unsupported_parameter")
    texts = _texts(body.get("input"), "input", 400, limits)
    rows, tokens = await _embed(served, texts, limits.auto_truncate, served.embedder.normalize, "input")
    data = [{"object": "embedding", "index": i, "embedding": _encode(row, fmt)} for i, row in enumerate(rows)]
    return JSONResponse({"object": "list", "data": data, "model": name,
                         "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})


async def _tei(body: Any, served: Served, limits: ServeLimits) -> Response:
    if not isinstance(body, dict):
        raise ApiError(422, "request body must be a JSON object with 'inputs'")
    unknown = sorted(set(body) - {"inputs", "normalize", "truncate", "truncation_direction"})
    if unknown:
        raise ApiError(422, f"unsupported field(s): {', '.join(unknown)}; this server takes inputs, normalize, "
                            "truncate, truncation_direction")
    normalize = _flag(body, "normalize", True)
    truncate = _flag(body, "truncate", limits.auto_truncate)
    if str(body.get("truncation_direction", "right")).lower() != "right":
        raise ApiError(422, "truncation_direction must be 'right' (BERT keeps the start of a text)")
    texts = _texts(body.get("inputs"), "inputs", 422, limits)
    rows, _tokens = await _embed(served, texts, truncate, normalize, "inputs")
    return JSONResponse(rows)


def _flag(body: dict[str, Any], key: str, default: bool) -> bool:
    value = body.get(key, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ApiError(422, f"'{key}' must be true or false, got {json.dumps(value)}")
    return value


def _texts(value: Any, key: str, status: int, limits: ServeLimits) -> list[str]:
    """``value`` as a non-empty list of at most ``max_inputs`` strings, or the reason it is not."""
    texts = [value] if isinstance(value, str) else value
    if not isinstance(texts, list) or not texts:
        raise ApiError(status, f"'{key}' must be a string or a non-empty list of strings", param=key)
    if len(texts) > limits.max_inputs:
        raise ApiError(413, f"'{key}' has {len(texts)} texts, more than this server's limit of {limits.max_inputs} "
                            "per request; split it", param=key, code="too_many_inputs")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            tokens = isinstance(text, int) or (isinstance(text, list) and all(isinstance(t, int) for t in text))
            hint = "token-id inputs are not supported; send text" if tokens else "send strings"
            raise ApiError(status, f"'{key}[{i}]' is {type(text).__name__}, not a string; {hint}", param=key)
    return texts


async def _embed(served: Served, texts: list[str], truncate: bool, normalize: bool, key: str) -> tuple[np.ndarray, int]:
    """Rows for ``texts`` (queued on the model's batcher) and the real tokens they cost."""
    embedder = served.embedder
    try:  # a few texts tokenize in microseconds: a thread hop would cost more than it saves
        ids, cu = (embedder.tokenize(texts) if len(texts) <= INLINE_TOKENIZE_TEXTS
                   else await asyncio.to_thread(embedder.tokenize, texts))
    except ValueError as error:  # lone surrogates and the like: the tokenizer says which text
        raise ApiError(422 if key == "inputs" else 400, str(error), param=key) from None
    lengths = np.diff(cu)
    over = np.flatnonzero(lengths > embedder.max_length)
    if len(over) and not truncate:
        raise ApiError(422, f"'{key}[{over[0]}]' is longer than the model's {embedder.max_length} tokens "
                            f"({len(over)} such text(s)); shorten it or ask for truncation", param=key,
                       code="context_length_exceeded")
    tokens = int(np.minimum(lengths, embedder.max_length).sum())
    try:
        future = served.coalescer.submit(ids, cu, tokens, normalize)
    except QueueFull:
        raise ApiError(429, f"the queue of model {served.name!r} is full; retry after {RETRY_AFTER_SECONDS} s",
                       kind="rate_limit_error", code="queue_full",
                       headers={"Retry-After": str(RETRY_AFTER_SECONDS)}) from None
    except Closing:
        raise ApiError(503, "the server is shutting down; retry on another instance", kind="server_error",
                       code="shutting_down") from None
    return await future, tokens


def _encode(row: np.ndarray, fmt: str) -> np.ndarray | str:
    """A row as OpenAI sends it: floats (the array; JSONResponse writes it), or base64 of
    little-endian float32 bytes."""
    if fmt == "base64":
        return base64.b64encode(row.astype("<f4").tobytes()).decode("ascii")
    return row


def _summary(served: Served) -> dict[str, Any]:
    """What ``/info`` says of an export: its manifest's identity and how it is being run."""
    manifest, embedder = served.embedder.manifest, served.embedder
    return {"name": served.name, "source": manifest.get("source", {}).get("label"),
            "revision": manifest.get("revision"), "head": manifest.get("head"), "flavor": manifest.get("flavor"),
            "precision": manifest.get("precision"), "model": manifest.get("model"),
            "mbexport_version": manifest.get("mbexport_version"), "parity": manifest.get("parity"),
            "hidden_size": embedder.hidden_size, "max_input_length": embedder.max_length,
            "pooling": embedder.pooling, "normalize": embedder.normalize, "device": embedder.device}
