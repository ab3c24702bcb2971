"""Prometheus metrics of the service, one registry per app (so several apps in one process,
as in tests, never collide). Latencies are histograms; batch sizes too, so a scrape shows
how well concurrent requests coalesce (``mbexport_batch_requests``)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
_TOKEN_BUCKETS = (16, 64, 256, 1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072)
_SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Metrics:
    """Counters, gauges and histograms the app and the batcher update."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("mbexport_requests", "HTTP requests answered", ["endpoint", "status"], registry=r)
        self.in_flight = Gauge("mbexport_requests_in_flight", "embedding requests being answered", registry=r)
        self.request_seconds = Histogram("mbexport_request_seconds", "time from body read to response, per endpoint",
                                         ["endpoint"], buckets=_SECONDS_BUCKETS, registry=r)
        self.texts = Counter("mbexport_texts", "texts embedded", ["model"], registry=r)
        self.tokens = Counter("mbexport_tokens", "real tokens embedded (after truncation)", ["model"],
                              registry=r)
        self.queue_texts = Gauge("mbexport_queue_texts", "texts accepted and waiting for a batch", ["model"],
                                 registry=r)
        self.queue_requests = Gauge("mbexport_queue_requests", "requests accepted and waiting for a batch", ["model"],
                                    registry=r)
        self.queue_seconds = Histogram("mbexport_queue_seconds",
                                       "time a request waits before it joins the batching pool",
                                       ["model"], buckets=_SECONDS_BUCKETS, registry=r)
        self.rejected = Counter("mbexport_rejected", "requests refused because the queue was full", ["model"],
                                registry=r)
        self.batches = Counter("mbexport_batches", "coalesced batches (one Embedder call each)", ["model"], registry=r)
        self.model_batches = Counter("mbexport_model_batches", "padded batches the model ran (native Batcher)",
                                     ["model"], registry=r)
        self.batch_requests = Histogram("mbexport_batch_requests", "requests per coalesced batch", ["model"],
                                        buckets=_SIZE_BUCKETS, registry=r)
        self.batch_texts = Histogram("mbexport_batch_texts", "texts per coalesced batch", ["model"],
                                     buckets=_SIZE_BUCKETS, registry=r)
        self.batch_tokens = Histogram("mbexport_batch_tokens", "real tokens per coalesced batch", ["model"],
                                      buckets=_TOKEN_BUCKETS, registry=r)
        self.batch_seconds = Histogram("mbexport_batch_seconds", "model time per coalesced batch", ["model"],
                                       buckets=_SECONDS_BUCKETS, registry=r)
