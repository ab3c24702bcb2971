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

A request's life: Content-Type checked (415 unless JSON) -> body read with a size limit (413)
-> JSON (400) -> fields checked (400 for OpenAI, 422 for TEI; ``null`` means "the default", as
an absent field does) -> at most ``max_inputs`` texts (413) -> tokenized (on a thread unless
small; native, GIL released) -> over-long texts refused (422) unless truncation was asked ->
queued on the model's :class:`~mbexport.serve.batching.Coalescer` (429 + Retry-After when
full) -> rows. Every refusal is answered before the request touches the queue, so it never
disturbs others; a client that goes away while its request waits takes its texts out of the
queue (no model time). Unknown paths (404) and methods (405) get the same JSON error bodies.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from mbexport import __version__
from mbexport.arguments import check_int
from mbexport.errors import ArgumentError, MissingExtraError
from mbexport.runtime import Embedder
from mbexport.serve.batching import BatchLimits, Closing, Coalescer, QueueFull

try:
    import orjson
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.requests import ClientDisconnect, Request
    from starlette.responses import Response
    from starlette.routing import Route
except ImportError as error:  # pragma: no cover - exercised only without the extra
    raise MissingExtraError(f"mbexport serve needs the serve extra ({error.name} is missing); "
                            "install it with: pip install 'mbexport[serve]'") from None

from mbexport.serve.metrics import Metrics

RETRY_AFTER_SECONDS = 1
INLINE_TOKENIZE_TEXTS = 16  # requests with more texts are tokenized on a thread, off the event loop,
INLINE_TOKENIZE_CHARS = 16384  # and so are longer ones (16 MiB of text takes ~0.2 s to tokenize)
ECHO_CHARS = 80  # a client's value quoted in an error message is cut to this many characters
ENDPOINTS = "POST /v1/embeddings, POST /embed (or POST /), GET /health, GET /info, GET /metrics"


@dataclass(frozen=True)
class ServeLimits:
    """Per-request limits; queue and batch limits are :class:`BatchLimits`."""

    max_inputs: int = 2048  # texts per request (413 beyond)
    max_body_bytes: int = 16 * 1024 * 1024  # request body (413 beyond)
    auto_truncate: bool = False  # truncate over-long texts unless a request says otherwise
    body_timeout: float = 30.0  # seconds a request body may stall before 408 (and an unread answer may hold a drain)
    max_connections: int = 1024  # open connections served at once; requests on more get 503 and are closed

    def __post_init__(self) -> None:
        for name, option in (("max_inputs", "--max-inputs"), ("max_body_bytes", "--max-body-bytes"),
                             ("max_connections", "--max-connections")):
            check_int(f"{name} ({option})", getattr(self, name), 1)
        if not self.body_timeout > 0:  # NaN too
            raise ArgumentError(f"body_timeout (--body-timeout) must be > 0 seconds, got {self.body_timeout}")


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


def check_limits(limits: ServeLimits, batch_limits: BatchLimits) -> None:
    """ArgumentError unless every request the per-request limits allow fits in the queue."""
    if limits.max_inputs > batch_limits.max_queue:
        raise ArgumentError(f"max_inputs (--max-inputs, {limits.max_inputs}) must be <= the queue size (--max-queue, "
                            f"{batch_limits.max_queue}), or a full-size request could never be accepted")


def create_app(embedders: dict[str, Embedder], limits: ServeLimits = DEFAULT_LIMITS,
               batch_limits: BatchLimits = DEFAULT_BATCH_LIMITS,
               open_connections: Callable[[], int] | None = None) -> Starlette:
    """The service over ``embedders`` (name -> Embedder; the first is the default model).
    ``open_connections``: the server's count of open connections (the requesting one included); a request
    arriving while it is over ``limits.max_connections`` is answered 503 and its connection closed."""
    if not embedders:
        raise ValueError("create_app needs at least one Embedder")
    check_limits(limits, batch_limits)
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
        return await _answer(request, "/v1/embeddings", metrics, limits,
                             lambda body: _openai(body, models, default(), limits))

    async def embed(request: Request) -> Response:
        """text-embeddings-inference ``POST /embed`` (and ``POST /``, TEI's route for its model's
        task, where huggingface_hub's InferenceClient sends): a list of vectors."""
        return await _answer(request, request.url.path if request.url.path == "/" else "/embed", metrics, limits,
                             lambda body: _tei(body, default(), limits))

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "models": list(models)})

    async def info(request: Request) -> Response:
        served = default()
        return JSONResponse({**_tei_info(served, limits, batch_limits),
                             "max_queue": batch_limits.max_queue,
                             "models": [_summary(served) for served in models.values()]})

    async def metrics_endpoint(request: Request) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def refuse(request: Request, error: Exception) -> Response:
        """An unknown path (404) or method (405) in the protocol's error shape (OpenAI's for ``/v1...`` and
        ``.../embeddings``, TEI's for the rest), counted under one label
        (``other``), so that requests for random URLs cannot grow the metrics."""
        status = error.status_code if isinstance(error, HTTPException) else 500
        allowed = (error.headers or {}).get("Allow", "") if isinstance(error, HTTPException) else ""
        method, path = request.method, _cut(request.url.path)
        if status == 405:
            message = f"{method} is not allowed on {path}; use {allowed}"
        else:
            message = f"no endpoint {method} {path}; this server answers {ENDPOINTS}"
        headers = {"Allow": allowed} if allowed else None
        metrics.requests.labels("other", str(status)).inc()
        return _in_shape(ApiError(status, message, headers=headers), path)

    routes = [Route("/v1/embeddings", embeddings, methods=["POST"]), Route("/embed", embed, methods=["POST"]),
              Route("/", embed, methods=["POST"]), Route("/health", health, methods=["GET"]),
              Route("/info", info, methods=["GET"]), Route("/metrics", metrics_endpoint, methods=["GET"])]
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={HTTPException: refuse})
    app.router.redirect_slashes = False  # a redirect would echo the client's Host header; 404 names the path
    if open_connections is not None:
        app.add_middleware(_ConnectionLimit, open_connections=open_connections, limit=limits.max_connections,
                           metrics=metrics)
    return app


class _ConnectionLimit:
    """ASGI middleware: a request arriving while more than ``limit`` connections are open is answered 503 in
    the protocol's JSON shape and its connection closed (uvicorn's own limit answers plain text, which neither
    protocol's clients read)."""

    def __init__(self, app: Any, open_connections: Callable[[], int], limit: int, metrics: Metrics) -> None:
        self.app, self.open_connections, self.limit, self.metrics = app, open_connections, limit, metrics

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or self.open_connections() <= self.limit:
            await self.app(scope, receive, send)
            return
        self.metrics.requests.labels("other", "503").inc()
        refusal = ApiError(503, f"this server holds at most {self.limit} open connections (--max-connections) and "
                           "all are open; retry, or reuse a kept-alive connection", kind="server_error",
                           code="too_many_connections",
                           headers={"Connection": "close", "Retry-After": str(RETRY_AFTER_SECONDS)})
        await _in_shape(refusal, scope["path"])(scope, receive, send)


def _in_shape(refusal: ApiError, path: str) -> JSONResponse:
    """A refusal outside the endpoints' own handling, in the shape of the protocol ``path`` belongs to: OpenAI's
    for ``/v1...`` and ``.../embeddings`` (e.g. a base_url without /v1), TEI's for the rest."""
    openai_like = path.startswith("/v1") or path.rstrip("/").endswith("/embeddings")
    return refusal.openai() if openai_like else refusal.tei()


# -- request handling ----------------------------------------------------------------------

async def _answer(request: Request, endpoint: str, metrics: Metrics, limits: ServeLimits,
                  handle: Callable[[Any], Awaitable[Response]]) -> Response:
    """Read, parse and handle one request; any ApiError becomes the protocol's error body. ``endpoint``
    is the metrics label: a route's fixed path, never the request's own."""
    started = time.perf_counter()
    metrics.in_flight.inc()
    try:
        _check_content_type(request)
        body = _parse_json(await _read_body(request, limits))
        response = await _unless_gone(request, handle(body))
    except ClientDisconnect:
        response = Response(status_code=499)
    except Exception as error:  # noqa: BLE001 - a failing batch answers 500 JSON, the server keeps serving
        if not isinstance(error, ApiError):
            error = ApiError(500, f"embedding failed: {type(error).__name__}: {error}", kind="server_error")
        response = error.openai() if endpoint == "/v1/embeddings" else error.tei()
    finally:
        metrics.in_flight.dec()
    metrics.requests.labels(endpoint, str(response.status_code)).inc()
    metrics.request_seconds.labels(endpoint).observe(time.perf_counter() - started)
    return response


async def _unless_gone(request: Request, work: Awaitable[Response]) -> Response:
    """``work``'s response, or :class:`ClientDisconnect` when the client goes away first: the work is
    then cancelled, which cancels its queued job, so the batcher skips its texts (no model time)."""
    task = asyncio.ensure_future(work)
    watch = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait((task, watch), return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone = not task.done()
        watch.cancel()
        task.cancel()  # no-op when done; else the client (or this request) is gone: drop the work
    if gone:
        raise ClientDisconnect
    return task.result()


async def _disconnected(request: Request) -> None:
    """Returns when the client disconnects (the body has been read: the server sends nothing else)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _check_content_type(request: Request) -> None:
    """415 for a body declared as something other than JSON (a missing or empty Content-Type is read as JSON)."""
    declared = request.headers.get("content-type", "")
    media = declared.split(";", 1)[0].strip().lower()
    if media and media != "application/json" and not media.endswith("+json"):
        raise ApiError(415, f"Content-Type must be application/json, got {_shown(declared)}; send the JSON body "
                            "with the header Content-Type: application/json", code="unsupported_media_type")


async def _read_body(request: Request, limits: ServeLimits) -> bytes:
    """The body, refusing (413) as soon as it is known to exceed ``max_body_bytes``, and (408) when
    nothing of it arrives for ``body_timeout`` seconds: a stalled upload would otherwise hold its
    request open for ever, and a graceful shutdown waits for every open request."""
    max_bytes = limits.max_body_bytes
    too_large = ApiError(413, f"request body is larger than {max_bytes} bytes; send fewer or shorter inputs "
                              "per request", code="request_too_large")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise too_large
    chunks: list[bytes] = []
    size, stream = 0, request.stream()
    while True:
        try:
            chunk = await asyncio.wait_for(anext(stream), limits.body_timeout)
        except StopAsyncIteration:
            return b"".join(chunks)
        except asyncio.TimeoutError:
            raise ApiError(408, f"the request body stalled: nothing arrived for {limits.body_timeout:g} s; send "
                                "the whole body (Content-Length bytes) without pausing", code="request_timeout",
                           headers={"Connection": "close"}) from None
        size += len(chunk)
        if size > max_bytes:
            raise too_large
        chunks.append(chunk)


def _parse_json(body: bytes) -> Any:
    """The body's JSON value; a UTF-8 byte order mark is ignored (RFC 8259 allows that), anything
    that is not UTF-8 JSON is refused."""
    try:
        return orjson.loads(body.removeprefix(b"\xef\xbb\xbf"))
    except orjson.JSONDecodeError as error:
        raise ApiError(400, f"request body is not valid JSON ({error}); send a UTF-8 JSON object",
                       code="invalid_json") from None


def _fields(body: Any, known: tuple[str, ...], status: int) -> dict[str, Any]:
    """The body's fields with the null ones left out (null means the default, as an absent field does);
    a body that is not an object, or has a field outside ``known``, is refused."""
    if not isinstance(body, dict):
        raise ApiError(status, f"request body must be a JSON object with {known[0]!r}")
    unknown = sorted(set(body) - set(known))
    if unknown:
        more = f" (and {len(unknown) - 3} more)" if len(unknown) > 3 else ""
        shown = ", ".join(_cut(key) for key in unknown[:3]) + more
        raise ApiError(status, f"unrecognized request argument supplied: {shown}; this endpoint takes "
                               f"{', '.join(known)}", param=unknown[0][:ECHO_CHARS], code="unsupported_parameter")
    return {key: value for key, value in body.items() if value is not None}


async def _openai(body: Any, models: dict[str, Served], default: Served, limits: ServeLimits) -> Response:
    fields = _fields(body, ("input", "model", "encoding_format", "dimensions", "user"), 400)
    name = fields.get("model", default.name)
    if not isinstance(name, str):
        raise ApiError(400, f"'model' must be a string naming a served model, got {_shown(name)}", param="model")
    if name not in models:
        raise ApiError(404, f"the model {_shown(name)} does not exist; served models: {', '.join(models)}",
                       param="model", code="model_not_found")
    served = models[name]
    fmt = fields.get("encoding_format", "float")
    if fmt not in ("float", "base64"):
        raise ApiError(400, f"encoding_format must be 'float' or 'base64', got {_shown(fmt)}", param="encoding_format")
    if not isinstance(fields.get("user", ""), str):
        raise ApiError(400, f"'user' must be a string, got {_shown(fields['user'])}", param="user")
    _check_dimensions(fields, served, 400)
    texts = _texts(fields.get("input"), "input", 400, limits)
    rows, tokens = await _embed(served, texts, limits.auto_truncate, served.embedder.normalize, "input")
    data = [{"object": "embedding", "index": i, "embedding": _encode(row, fmt)} for i, row in enumerate(rows)]
    return JSONResponse({"object": "list", "data": data, "model": name,
                         "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})


async def _tei(body: Any, served: Served, limits: ServeLimits) -> Response:
    fields = _fields(body, ("inputs", "normalize", "truncate", "truncation_direction", "prompt_name", "dimensions"),
                     422)
    normalize = _flag(fields, "normalize", True)
    truncate = _flag(fields, "truncate", limits.auto_truncate)
    direction = fields.get("truncation_direction", "right")
    if not isinstance(direction, str) or direction.lower() != "right":
        raise ApiError(422, f"truncation_direction must be 'right' (BERT keeps the start of a text), got "
                            f"{_shown(direction)}", param="truncation_direction")
    if "prompt_name" in fields:
        raise ApiError(422, f"prompt_name is not supported: {served.name} has no prompts; leave it out and put "
                            "any prompt in the text", param="prompt_name")
    _check_dimensions(fields, served, 422)
    texts = _texts(fields.get("inputs"), "inputs", 422, limits)
    rows, _tokens = await _embed(served, texts, truncate, normalize, "inputs")
    return JSONResponse(rows)


def _flag(fields: dict[str, Any], key: str, default: bool) -> bool:
    value = fields.get(key, default)
    if not isinstance(value, bool):
        raise ApiError(422, f"'{key}' must be true or false, got {_shown(value)}", param=key)
    return value


def _check_dimensions(fields: dict[str, Any], served: Served, status: int) -> None:
    """``dimensions`` may only repeat the model's size (the rows are not Matryoshka-trained to cut)."""
    dimensions = fields.get("dimensions")
    if dimensions is None:
        return
    hidden = served.embedder.hidden_size
    if not _is_int(dimensions) or dimensions < 1:
        raise ApiError(status, f"'dimensions' must be a positive integer, got {_shown(dimensions)}; leave it out "
                               f"for {served.name}'s {hidden}", param="dimensions")
    if dimensions != hidden:
        raise ApiError(status, f"'dimensions' is not supported: {served.name} returns {hidden} dimensions; leave it "
                               "out", param="dimensions", code="unsupported_parameter")


def _texts(value: Any, key: str, status: int, limits: ServeLimits) -> list[str]:
    """``value`` as a non-empty list of at most ``max_inputs`` strings, or the reason it is not."""
    texts = [value] if isinstance(value, str) else value
    if not isinstance(texts, list) or not texts:
        raise ApiError(status, f"'{key}' must be a string or a non-empty list of strings, got {_shown(value)}",
                       param=key)
    if len(texts) > limits.max_inputs:
        raise ApiError(413, f"'{key}' has {len(texts)} texts, more than this server's limit of {limits.max_inputs} "
                            "per request; split it", param=key, code="too_many_inputs")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            tokens = _is_int(text) or (isinstance(text, list) and all(_is_int(t) for t in text))
            hint = ("token-id inputs are not supported; send text (LangChain's OpenAIEmbeddings sends token ids "
                    "unless check_embedding_ctx_length=False)" if tokens else "send strings")
            raise ApiError(status, f"'{key}[{i}]' is {_json_type(text)}, not a string; {hint}", param=key)
    return texts


def _is_int(value: Any) -> bool:
    """A JSON integer: Python's bool is an int (True == 1), JSON's true is not."""
    return isinstance(value, int) and not isinstance(value, bool)


def _json_type(value: Any) -> str:
    """The JSON name of a parsed value's type (what the client sent, not Python's name for it)."""
    names = {bool: "a boolean", int: "a number", float: "a number", list: "an array", dict: "an object"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def _shown(value: Any) -> str:
    """A client's value as JSON, cut to ``ECHO_CHARS``: an error message quotes it without growing with it."""
    return _cut(orjson.dumps(value).decode())


def _cut(text: str) -> str:
    return text if len(text) <= ECHO_CHARS else f"{text[:ECHO_CHARS]}..."


async def _embed(served: Served, texts: list[str], truncate: bool, normalize: bool, key: str) -> tuple[np.ndarray, int]:
    """Rows for ``texts`` (queued on the model's batcher) and the real tokens they cost."""
    embedder = served.embedder
    small = len(texts) <= INLINE_TOKENIZE_TEXTS and sum(map(len, texts)) <= INLINE_TOKENIZE_CHARS
    try:  # a few short texts tokenize in microseconds: a thread hop would cost more than it saves
        ids, cu = embedder.tokenize(texts) if small else await asyncio.to_thread(embedder.tokenize, texts)
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


def _tei_info(served: Served, limits: ServeLimits, batch_limits: BatchLimits) -> dict[str, Any]:
    """TEI's ``/info`` fields for the default model (the one ``/embed`` serves), as TEI clients read them."""
    embedder, precision = served.embedder, served.embedder.manifest.get("precision")
    return {"model_id": served.name, "model_sha": embedder.manifest.get("revision"),
            "model_dtype": {"fp32": "float32", "fp16": "float16"}.get(str(precision), precision),
            "model_type": {"embedding": {"pooling": embedder.pooling}}, "max_input_length": embedder.max_length,
            "max_batch_tokens": batch_limits.max_batch_tokens, "max_batch_requests": batch_limits.max_batch_requests,
            "max_client_batch_size": limits.max_inputs, "auto_truncate": limits.auto_truncate,
            "version": __version__}


def _summary(served: Served) -> dict[str, Any]:
    """What ``/info`` says of an export: its manifest's identity and how it is being run."""
    manifest, embedder = served.embedder.manifest, served.embedder
    return {"name": served.name, "source": manifest.get("source", {}).get("label"),
            "revision": manifest.get("revision"), "head": manifest.get("head"), "flavor": manifest.get("flavor"),
            "precision": manifest.get("precision"), "model": manifest.get("model"),
            "mbexport_version": manifest.get("mbexport_version"), "parity": manifest.get("parity"),
            "hidden_size": embedder.hidden_size, "max_input_length": embedder.max_length,
            "pooling": embedder.pooling, "normalize": embedder.normalize, "device": embedder.device}
