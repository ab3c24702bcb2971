"""``mbexport serve`` end to end: the real console script in a subprocess on 127.0.0.1, over
the real MiniLM export, hit by the official ``openai`` client and plain httpx (TEI style).

References are independent of the server: ``Embedder.embed`` in this process for rows, the
HF ``tokenizers`` tokenizer for token counts, Prometheus' own text parser for /metrics.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from conftest import MBEXPORT, assert_one_line_error, run_mbexport

from mbexport import Embedder

openai = pytest.importorskip("openai")
prometheus_parser = pytest.importorskip("prometheus_client.parser")
tokenizers = pytest.importorskip("tokenizers")

MAX_LENGTH = 128
SERVER_OPTIONS = ("--pooling", "mean", "--normalize", "--max-length", str(MAX_LENGTH))
TEXTS = [
    "All human beings are born free and equal in dignity and rights.",
    "Alle Menschen sind frei und gleich an Würde und Rechten geboren.",
    "人人生而自由，在尊严和权利上一律平等。",
    "",
    "ok",
    "tokenization of unbelievably antidisestablishmentarianistic words",
    "The quick brown fox jumps over the lazy dog. " * 8,
]
LONG = "The quick brown fox jumps over the lazy dog. " * 40  # ~400 tokens > MAX_LENGTH


@pytest.fixture(scope="module")
def minilm_export(minilm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mbexport.converter import convert

    return Path(convert(str(minilm_dir), out=tmp_path_factory.mktemp("exp") / "minilm", head="base", parity=False))


@pytest.fixture(scope="module")
def reference(minilm_export: Path) -> Callable[..., np.ndarray]:
    """texts -> rows from an Embedder in this process, with the server's options."""
    embedders: dict[bool, Embedder] = {}

    def embed(texts: list[str], normalize: bool = True) -> np.ndarray:
        if normalize not in embedders:
            embedders[normalize] = Embedder(minilm_export, pooling="mean", normalize=normalize,
                                            max_length=MAX_LENGTH, threads=1)
        return embedders[normalize].embed(texts)

    return embed


class Server:
    """A running ``mbexport serve`` subprocess and its base URL."""

    def __init__(self, export: Path, *options: str) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen([MBEXPORT, "serve", str(export), "--name", "minilm", "--port", str(self.port),
                                         *SERVER_OPTIONS, *options], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mbexport serve exited {self.process.returncode}: {self.process.stderr.read()!r}")
            try:
                if httpx.get(f"{self.url}/health", timeout=5).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError("mbexport serve did not become healthy in 180 s")

    def metrics(self) -> dict[str, float]:
        """Prometheus samples as name{labels} -> value, parsed by prometheus_client's own parser."""
        text = httpx.get(f"{self.url}/metrics", timeout=30).text
        samples = {}
        for family in prometheus_parser.text_string_to_metric_families(text):
            for s in family.samples:
                labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
                samples[f"{s.name}{{{labels}}}"] = s.value
        return samples

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=120)
        finally:
            self.process.stdout.close()
            self.process.stderr.close()


@pytest.fixture(scope="module")
def server(minilm_export: Path) -> Iterator[Server]:
    srv = Server(minilm_export, "--max-inputs", "16", "--max-body-bytes", "65536")
    yield srv
    assert srv.stop() == 0


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-30)).min())


# -- correct answers -------------------------------------------------------------------------

def test_openai_client_equals_embedder(server: Server, reference: Callable[..., np.ndarray], minilm_dir: Path) -> None:
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=120) as client:
        expected = reference(TEXTS)
        hf = tokenizers.Tokenizer.from_file(str(minilm_dir / "tokenizer.json"))
        hf.no_padding()  # the file pads to 128; count real tokens
        tokens = sum(len(hf.encode(t).ids) for t in TEXTS)
        # Left out, encoding_format is base64: the client asks for it and decodes it (little-endian float32).
        for options in ({"encoding_format": "float"}, {}):
            result = client.embeddings.create(model="minilm", input=TEXTS, **options)
            assert [d.index for d in result.data] == list(range(len(TEXTS)))
            got = np.array([d.embedding for d in result.data])
            assert got.shape == (len(TEXTS), 384)
            assert min_cosine(got, expected) >= 0.9999
            assert result.model == "minilm"
            assert result.usage.prompt_tokens == result.usage.total_tokens == tokens
        single = client.embeddings.create(model="minilm", input=TEXTS[0])
        assert len(single.data) == 1 and min_cosine(np.array([single.data[0].embedding]), expected[:1]) >= 0.9999


def test_base64_is_little_endian_float32(server: Server, reference: Callable[..., np.ndarray]) -> None:
    import base64

    r = httpx.post(f"{server.url}/v1/embeddings", json={"input": ["ok"], "model": "minilm", "encoding_format": "base64"})
    row = np.frombuffer(base64.b64decode(r.json()["data"][0]["embedding"]), dtype="<f4")
    np.testing.assert_allclose(row, reference(["ok"])[0], atol=1e-5)


def test_tei_embed_equals_embedder(server: Server, reference: Callable[..., np.ndarray]) -> None:
    r = httpx.post(f"{server.url}/embed", json={"inputs": TEXTS}, timeout=120)
    assert r.status_code == 200
    assert min_cosine(np.array(r.json()), reference(TEXTS)) >= 0.9999
    raw = np.array(httpx.post(f"{server.url}/embed", json={"inputs": TEXTS, "normalize": False}, timeout=120).json())
    np.testing.assert_allclose(raw, reference(TEXTS, normalize=False), rtol=1e-4, atol=1e-5)  # not unit length
    single = httpx.post(f"{server.url}/embed", json={"inputs": "ok"}).json()
    assert len(single) == 1 and min_cosine(np.array(single), reference(["ok"])) >= 0.9999
    cut = httpx.post(f"{server.url}/embed", json={"inputs": [LONG], "truncate": True}, timeout=120)
    assert cut.status_code == 200 and min_cosine(np.array(cut.json()), reference([LONG])) >= 0.9999


def test_health_info_metrics(server: Server, minilm_export: Path) -> None:
    assert httpx.get(f"{server.url}/health").json()["status"] == "ok"
    info = httpx.get(f"{server.url}/info").json()
    assert info["model_id"] == "minilm" and info["max_client_batch_size"] == 16
    model = info["models"][0]
    manifest = json.loads((minilm_export / "mbexport.json").read_text())
    assert model["hidden_size"] == 384 and model["max_input_length"] == MAX_LENGTH
    assert model["pooling"] == "mean" and model["normalize"] is True
    assert model["source"] == manifest["source"]["label"] and model["model"] == manifest["model"]
    httpx.post(f"{server.url}/embed", json={"inputs": ["a b c"]})
    metrics = server.metrics()
    assert metrics["mbexport_requests_total{endpoint=/embed,status=200}"] >= 1
    assert metrics["mbexport_tokens_total{model=minilm}"] >= 5  # [CLS] a b c [SEP]
    assert metrics["mbexport_request_seconds_count{endpoint=/embed}"] >= 1
    assert "mbexport_queue_texts{model=minilm}" in metrics
    assert metrics["mbexport_batch_requests_count{model=minilm}"] >= 1


def test_concurrent_requests_share_batches(server: Server, reference: Callable[..., np.ndarray]) -> None:
    """N clients sending one text each at once: far fewer than N batches, each gets its own row."""
    n = 32
    texts = [f"request number {i} asks for its own embedding" for i in range(n)]
    before = server.metrics()

    async def fire() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=n)) as client:
            return await asyncio.gather(*(client.post(f"{server.url}/embed", json={"inputs": t}) for t in texts))

    responses = asyncio.run(fire())
    assert [r.status_code for r in responses] == [200] * n
    got = np.array([r.json()[0] for r in responses])
    assert min_cosine(got, reference(texts)) >= 0.9999  # row i is text i's, not a neighbour's
    after = server.metrics()
    key = "mbexport_batches_total{model=minilm}"
    batches = after[key] - before[key]
    assert batches <= n / 4, f"{n} concurrent requests ran as {batches} batches"


# -- refusals ------------------------------------------------------------------------------

OPENAI_BAD = [  # (body, status, param or None, reason)
    (b'{"input": "x", "model": ', 400, None, "not valid JSON"),
    (["x"], 400, None, "JSON object"),
    ({"input": 3, "model": "minilm"}, 400, "input", "string or a non-empty list"),
    ({"input": [], "model": "minilm"}, 400, "input", "non-empty"),
    ({"input": [[101, 2023, 102]], "model": "minilm"}, 400, "input", "token-id inputs are not supported"),
    ({"input": [1, 2, 3], "model": "minilm"}, 400, "input", "token-id inputs are not supported"),
    ({"input": "x", "model": "minilm", "dimensions": 64}, 400, "dimensions", "not supported"),
    # Python's True == 1 and 384.0 == 384: neither is an integer in JSON
    ({"input": "x", "model": "minilm", "dimensions": True}, 400, "dimensions", "must be a positive integer, got true"),
    ({"input": "x", "model": "minilm", "dimensions": 384.0}, 400, "dimensions", "positive integer, got 384.0"),
    ({"input": "x", "model": "minilm", "dimensions": "384"}, 400, "dimensions", "positive integer, got \"384\""),
    ({"input": "x", "model": "minilm", "dimensions": -1}, 400, "dimensions", "positive integer, got -1"),
    ({"input": "x", "model": "minilm", "encoding_format": False}, 400, "encoding_format", "got false"),
    ({"input": "x", "model": "minilm", "encoding_format": ""}, 400, "encoding_format", "'float' or 'base64'"),
    ({"input": "x", "model": "minilm", "user": 5}, 400, "user", "'user' must be a string"),
    ({"input": "x", "model": "m" * 5000}, 404, "model", "does not exist"),
    ({"input": "x", "model": "minilm", "encoding_format": "int8"}, 400, "encoding_format", "'float' or 'base64'"),
    ({"input": "x", "model": "gpt-4"}, 404, "model", "does not exist"),
    ({"input": "x", "model": "minilm", "temperature": 1}, 400, "temperature", "unrecognized"),
    ({"input": ["x"] * 17, "model": "minilm"}, 413, "input", "limit of 16"),
    ({"input": ["x" * 70000], "model": "minilm"}, 413, None, "larger than 65536 bytes"),
    ({"input": ["ok", LONG], "model": "minilm"}, 422, "input", "'input[1]' is longer than the model's 128 tokens"),
]
TEI_BAD = [
    (b"not json", 400, "not valid JSON"),
    ({"inputs": None}, 422, "string or a non-empty list"),
    ({"inputs": ["a", 7]}, 422, "'inputs[1]' is a number, not a string"),
    ({"inputs": "a", "normalize": "yes"}, 422, "'normalize' must be true or false"),
    ({"inputs": "a", "prompt_name": "query"}, 422, "prompt_name is not supported"),
    ({"inputs": "a", "truncation_direction": "left"}, 422, "truncation_direction"),
    ({"inputs": "a", "truncation_direction": 5}, 422, "truncation_direction must be 'right'"),
    ({"inputs": "a", "truncate": 0}, 422, "'truncate' must be true or false, got 0"),
    ({"inputs": "a", "dimensions": True}, 422, "'dimensions' must be a positive integer"),
    ({"inputs": "a", "x" * 5000: 1}, 422, "unrecognized request argument"),
    ({"inputs": ["a"] * 17}, 413, "limit of 16"),
    ({"inputs": [LONG]}, 422, "longer than the model's 128 tokens"),
]


def _post(url: str, body: object) -> httpx.Response:
    if isinstance(body, bytes):
        return httpx.post(url, content=body, headers={"content-type": "application/json"}, timeout=60)
    return httpx.post(url, json=body, timeout=60)


@pytest.mark.parametrize(("body", "status", "param", "reason"), OPENAI_BAD, ids=[c[3] for c in OPENAI_BAD])
def test_openai_bad_request(server: Server, body: object, status: int, param: str | None, reason: str) -> None:
    r = _post(f"{server.url}/v1/embeddings", body)
    assert r.status_code == status
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and reason in error["message"]
    assert len(error["message"]) < 400  # one line, however large the value it quotes
    assert error["param"] == param and error["type"] == "invalid_request_error"
    ok = httpx.post(f"{server.url}/v1/embeddings", json={"input": "still serving", "model": "minilm"}, timeout=60)
    assert ok.status_code == 200 and len(ok.json()["data"]) == 1


@pytest.mark.parametrize(("body", "status", "reason"), TEI_BAD, ids=[c[2] for c in TEI_BAD])
def test_tei_bad_request(server: Server, body: object, status: int, reason: str) -> None:
    r = _post(f"{server.url}/embed", body)
    assert r.status_code == status
    assert reason in r.json()["error"] and r.json()["error_type"] == "Validation"
    assert len(r.json()["error"]) < 400
    assert httpx.post(f"{server.url}/embed", json={"inputs": "still serving"}, timeout=60).status_code == 200


def test_bad_requests_mixed_with_good_ones(server: Server, reference: Callable[..., np.ndarray]) -> None:
    """Bad requests arriving together with good ones are refused alone; the good ones get their rows."""
    good = [f"good request {i}" for i in range(8)]
    bad = [{"inputs": [LONG]}, {"inputs": [3]}, {"inputs": ["x"] * 17}, {"inputs": "a", "normalize": 1}]

    async def fire() -> tuple[list[httpx.Response], list[httpx.Response]]:
        async with httpx.AsyncClient(timeout=120) as client:
            goods = [client.post(f"{server.url}/embed", json={"inputs": t}) for t in good]
            bads = [client.post(f"{server.url}/embed", json=b) for b in bad]
            results = await asyncio.gather(*goods, *bads)
            return list(results[:len(good)]), list(results[len(good):])

    goods, bads = asyncio.run(fire())
    assert [r.status_code for r in bads] == [422, 422, 413, 422]
    assert [r.status_code for r in goods] == [200] * len(good)
    assert min_cosine(np.array([r.json()[0] for r in goods]), reference(good)) >= 0.9999


def test_null_fields_mean_the_default(server: Server, reference: Callable[..., np.ndarray]) -> None:
    """``null`` for an optional field is the default, as leaving it out is (clients serialize None)."""
    body = {"input": ["ok"], "model": None, "encoding_format": None, "dimensions": None, "user": None}
    r = httpx.post(f"{server.url}/v1/embeddings", json=body, timeout=60)
    assert r.status_code == 200 and r.json()["model"] == "minilm"
    assert min_cosine(np.array([r.json()["data"][0]["embedding"]]), reference(["ok"])) >= 0.9999
    tei = {"inputs": ["ok"], "normalize": None, "truncate": None, "truncation_direction": None, "prompt_name": None,
           "dimensions": None}
    r = httpx.post(f"{server.url}/embed", json=tei, timeout=60)
    assert r.status_code == 200 and min_cosine(np.array(r.json()), reference(["ok"])) >= 0.9999
    exact = {"inputs": "ok", "dimensions": 384, "truncation_direction": "Right"}  # TEI's spelling of the enum
    assert httpx.post(f"{server.url}/embed", json=exact, timeout=60).status_code == 200


def test_content_type_and_byte_order_mark(server: Server, reference: Callable[..., np.ndarray]) -> None:
    """A body declared as something other than JSON is refused (415) in each protocol's shape; a JSON
    body with a UTF-8 byte order mark, or with no Content-Type at all, is read."""
    body = json.dumps({"input": "ok", "inputs": "ok"}).encode()
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
        r = httpx.post(f"{server.url}/v1/embeddings", content=body, headers={"content-type": content_type})
        assert r.status_code == 415 and r.json()["error"]["code"] == "unsupported_media_type"
        assert "Content-Type: application/json" in r.json()["error"]["message"]
        r = httpx.post(f"{server.url}/embed", content=body, headers={"content-type": content_type})
        assert r.status_code == 415 and r.json()["error_type"] == "Validation"
    bom = b"\xef\xbb\xbf" + json.dumps({"inputs": "ok"}).encode()
    for headers in ({"content-type": "application/json; charset=utf-8"}, {}, {"content-type": ""}):
        r = httpx.post(f"{server.url}/embed", content=bom, headers=headers, timeout=60)
        assert r.status_code == 200 and min_cosine(np.array(r.json()), reference(["ok"])) >= 0.9999


def test_unknown_paths_and_methods_answer_json_and_keep_metrics_bounded(server: Server) -> None:
    """404 and 405 come in the protocol's error shape (OpenAI's under /v1/), never a redirect that echoes
    the Host header, and requests for random URLs add no metrics series."""
    with httpx.Client(base_url=server.url, timeout=60) as client:
        for i in range(40):
            r = client.request(("GET", "POST", "DELETE")[i % 3], f"/v1/random-{i}-{'x' * i}")
            assert r.status_code == 404 and "/v1/embeddings" in r.json()["error"]["message"]
            r = client.post(f"/random/{i}", json={"inputs": "x"})
            assert r.status_code == 404 and r.json()["error_type"] == "Validation"
        r = client.post("/v1/embeddings/", json={"input": "x"}, headers={"host": "evil.example"})
        assert r.status_code == 404 and "location" not in r.headers
        r = client.get("/v1/embeddings")
        assert r.status_code == 405 and r.headers["allow"] == "POST" and "use POST" in r.json()["error"]["message"]
        r = client.put("/embed", json={"inputs": "x"})
        assert r.status_code == 405 and "use POST" in r.json()["error"]
        assert client.delete("/health").status_code == 405 and client.head("/health").status_code == 200
    forgot_v1 = openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0)  # posts to /embeddings
    with forgot_v1, pytest.raises(openai.NotFoundError, match="no endpoint POST /embeddings; .* POST /v1/embeddings"):
        forgot_v1.embeddings.create(model="minilm", input="x")
    text = httpx.get(f"{server.url}/metrics", timeout=30).text
    endpoints = {s.labels["endpoint"] for family in prometheus_parser.text_string_to_metric_families(text)
                 for s in family.samples if "endpoint" in s.labels}
    assert endpoints <= {"/v1/embeddings", "/embed", "/", "other"}, endpoints
    assert server.metrics()["mbexport_requests_total{endpoint=other,status=404}"] >= 81


def test_huggingface_hub_inference_client(server: Server, reference: Callable[..., np.ndarray],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """huggingface_hub's InferenceClient, pointed at a TEI URL, posts to ``/`` (TEI's route for its
    model's task) with TEI's fields."""
    hub = pytest.importorskip("huggingface_hub")
    from huggingface_hub import constants, errors

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # it refuses even loopback URLs when offline
    client = hub.InferenceClient(model=server.url, api_key="unused", timeout=120)
    got = client.feature_extraction(TEXTS[0])
    assert got.shape == (1, 384) and min_cosine(got, reference(TEXTS[:1])) >= 0.9999
    cut = client.feature_extraction(LONG, normalize=True, truncate=True, truncation_direction="Right")
    assert min_cosine(cut, reference([LONG])) >= 0.9999
    with pytest.raises(errors.HfHubHTTPError, match="422"):
        client.feature_extraction(LONG)


def test_a_client_gone_before_its_batch_costs_no_model_time(minilm_export: Path) -> None:
    """A client that disconnects while its request waits for a batch takes its texts out of the batcher,
    and out of the queue at once: it holds no room there that would refuse other clients (429)."""
    srv = Server(minilm_export, "--batch-wait-ms", "8000", "--max-queue", "6", "--max-inputs", "6")
    try:
        body = json.dumps({"inputs": ["a client that goes away " * 8] * 6}).encode()
        with socket.create_connection(("127.0.0.1", srv.port)) as gone:
            gone.sendall(b"POST /embed HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
            deadline = time.monotonic() + 60
            while srv.metrics().get("mbexport_queue_texts{model=minilm}") != 6 and time.monotonic() < deadline:
                time.sleep(0.02)
        deadline = time.monotonic() + 60
        while srv.metrics().get("mbexport_requests_total{endpoint=/embed,status=499}") != 1:
            assert time.monotonic() < deadline, "the gone client's request was never given up"
            time.sleep(0.05)
        assert srv.metrics()["mbexport_queue_texts{model=minilm}"] == 0  # before the 8 s wait ends
        assert httpx.post(f"{srv.url}/embed", json={"inputs": ["still here"]}, timeout=120).status_code == 200
        metrics = srv.metrics()
        assert metrics["mbexport_batch_texts_sum{model=minilm}"] == 1  # only the client that stayed
        assert metrics["mbexport_texts_total{model=minilm}"] == 1
    finally:
        assert srv.stop() == 0


def test_full_queue_answers_429_then_recovers(minilm_export: Path) -> None:
    """A 5 s batch wait holds the first request in the queue, so the queue (8 texts) is full."""
    srv = Server(minilm_export, "--max-queue", "8", "--max-inputs", "8", "--batch-wait-ms", "5000")
    try:
        with ThreadPoolExecutor(1) as pool:
            first = pool.submit(httpx.post, f"{srv.url}/embed", json={"inputs": ["x"] * 8}, timeout=120)
            deadline = time.monotonic() + 60
            while srv.metrics().get("mbexport_queue_texts{model=minilm}") != 8 and time.monotonic() < deadline:
                time.sleep(0.05)
            refused = httpx.post(f"{srv.url}/v1/embeddings", json={"input": "y", "model": "minilm"})
            assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
            assert refused.json()["error"]["code"] == "queue_full"
            tei = httpx.post(f"{srv.url}/embed", json={"inputs": "y"})
            assert tei.status_code == 429 and tei.json()["error_type"] == "Overloaded"
            assert first.result().status_code == 200 and len(first.result().json()) == 8
        assert httpx.post(f"{srv.url}/embed", json={"inputs": "y"}, timeout=60).status_code == 200
        assert srv.metrics()["mbexport_rejected_total{model=minilm}"] == 2
    finally:
        assert srv.stop() == 0


def test_sigterm_drains_accepted_requests(minilm_export: Path, reference: Callable[..., np.ndarray]) -> None:
    """SIGTERM while accepted requests wait in the batcher: every one is answered with its rows, exit 0."""
    srv = Server(minilm_export, "--batch-wait-ms", "3000")
    n = 6
    texts = [[f"client {i} text {j}: " + "words to embed " * 10 for j in range(8)] for i in range(n)]

    def call(batch: list[str]) -> httpx.Response:
        with httpx.Client(timeout=120) as client:  # a connection of its own
            return client.post(f"{srv.url}/embed", json={"inputs": batch})

    try:
        with ThreadPoolExecutor(n) as pool:
            futures = [pool.submit(call, batch) for batch in texts]
            deadline = time.monotonic() + 60
            while srv.metrics().get("mbexport_requests_in_flight{}") != n and time.monotonic() < deadline:
                time.sleep(0.02)
            assert srv.metrics()["mbexport_requests_in_flight{}"] == n  # all accepted, none answered yet
            srv.process.send_signal(signal.SIGTERM)
            responses = [f.result() for f in futures]
        assert [r.status_code for r in responses] == [200] * n
        for batch, r in zip(texts, responses):
            assert min_cosine(np.array(r.json()), reference(batch)) >= 0.9999
        assert srv.process.wait(timeout=120) == 0
        assert b"Application shutdown complete" in srv.process.stderr.read()
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{srv.url}/health")
    finally:
        srv.stop()


def test_stalled_clients_get_408_and_never_block_shutdown(minilm_export: Path) -> None:
    """A client that stops sending its body mid-way is answered 408 after --body-timeout, and one that
    never reads its (large) answer is cut off that long into a drain: either used to hold its
    connection open for ever, and SIGTERM's drain waited on it for ever."""
    srv = Server(minilm_export, "--body-timeout", "1")
    stall = (b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
             b"Content-Length: 100\r\n\r\n{\"inp")
    try:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=60) as stalled:
            stalled.sendall(stall)
            reply = b""
            while chunk := stalled.recv(65536):  # the server closes the connection after its answer
                reply += chunk
        head, _, body = reply.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408"), reply
        assert json.loads(body)["error"]["code"] == "request_timeout"
        big = json.dumps({"inputs": ["a"] * 2048}).encode()  # ~9 MB of answer, more than socket buffers hold
        with socket.socket() as not_reading, socket.create_connection(("127.0.0.1", srv.port), timeout=60) as stalled:
            not_reading.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            not_reading.connect(("127.0.0.1", srv.port))
            not_reading.sendall(b"POST /embed HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                                b"Content-Length: %d\r\n\r\n%s" % (len(big), big))
            deadline = time.monotonic() + 120
            while srv.metrics().get("mbexport_requests_total{endpoint=/embed,status=200}") != 1:
                assert time.monotonic() < deadline
                time.sleep(0.1)
            stalled.sendall(stall)
            deadline = time.monotonic() + 30
            while srv.metrics().get("mbexport_requests_in_flight{}") != 1 and time.monotonic() < deadline:
                time.sleep(0.02)
            srv.process.send_signal(signal.SIGTERM)
            assert srv.process.wait(timeout=60) == 0
    finally:
        srv.stop()


def test_connections_past_max_connections_get_503_until_one_closes(minilm_export: Path) -> None:
    """Open connections are bounded (each holds memory and a descriptor): with --max-connections 2, two
    kept-alive clients are served, a third connection's request gets 503 in its protocol's JSON error shape
    and is closed, and once one of the two closes, a new connection is served again (the count is taken
    when a request arrives, and a close is noticed asynchronously: hence the retries)."""
    srv = Server(minilm_export, "--max-connections", "2")
    health = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"

    def status(sock: socket.socket, request: bytes = health) -> bytes:
        sock.sendall(request)
        reply = b""
        while b"\r\n\r\n" not in reply:
            reply += sock.recv(4096)
        return reply.split(b" ", 2)[1]

    def refused(request: bytes) -> tuple[dict[bytes, bytes], dict]:
        """A third connection's answer to ``request`` (headers, JSON body), read until the server closes it."""
        with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as third:
            third.sendall(request)
            reply = b""
            while chunk := third.recv(4096):  # the server closes it after the 503
                reply += chunk
        head, body = reply.split(b"\r\n\r\n", 1)
        lines = head.split(b"\r\n")
        assert lines[0].split(b" ", 2)[1] == b"503", reply
        return dict(line.lower().split(b": ", 1) for line in lines[1:]), json.loads(body)

    try:
        first, second = (socket.create_connection(("127.0.0.1", srv.port), timeout=30) for _ in range(2))
        with first, second:
            assert status(first) == status(second) == b"200"  # kept alive: both stay open
            headers, tei = refused(health)
            assert headers[b"connection"] == b"close" and headers[b"retry-after"] == b"1"
            assert tei["error_type"] == "Unhealthy" and "--max-connections" in tei["error"]
            body = b'{"input": "a"}'
            _, openai = refused(b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                                b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
            assert openai["error"]["code"] == "too_many_connections" and "retry" in openai["error"]["message"]
            assert status(second) == b"200"  # the refusals cost the open connections nothing
            first.close()
            deadline = time.monotonic() + 30
            while True:  # the server notices the close asynchronously
                with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as fourth:
                    if status(fourth) == b"200":
                        break
                assert time.monotonic() < deadline
                time.sleep(0.05)
    finally:
        assert srv.stop() == 0


def test_invalid_export_fails_fast(tmp_path: Path) -> None:
    result = run_mbexport("serve", str(tmp_path), "--port", "9")
    assert_one_line_error(result, str(tmp_path), "mbexport convert")


@pytest.mark.parametrize(("options", "named"), [
    (["--max-queue", "8"], "--max-queue"),  # the default --max-inputs 2048 could never be queued
    (["--max-inputs", "0"], "--max-inputs"),
    (["--max-body-bytes", "0"], "--max-body-bytes"),
    (["--max-queue", "0"], "--max-queue"),
    (["--batch-wait-ms", "-1"], "--batch-wait-ms"),
    (["--body-timeout", "0"], "--body-timeout"),
    (["--max-connections", "0"], "--max-connections"),
    (["--port", "70000"], "--port"),
    (["--name", " "], "--name"),
])
def test_bad_serve_options_fail_fast(minilm_export: Path, options: list[str], named: str) -> None:
    """A limit that cannot work is one usage line and exit 2, before anything loads or listens."""
    result = run_mbexport("serve", str(minilm_export), "--port", "0", *options, timeout=60)
    assert_one_line_error(result, named, code=2)
