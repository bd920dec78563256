"""Prometheus metrics: requests by route and status, latency, in-flight requests, batch sizes and queue wait.

Each app owns its registry (tests build many apps in one process). With several uvicorn workers the CLI points
PROMETHEUS_MULTIPROC_DIR at a shared folder before the workers start, and `/metrics` then sums every worker, so
a scrape sees the whole server whichever worker answers it.
"""

from __future__ import annotations

import os

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.5, 5.0, 10.0)
_WAIT_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.5)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.multiprocess_dir = os.environ.get(MULTIPROC_ENV) or None
        self.requests = Counter(
            "cifar10_http_requests",
            "HTTP requests answered, by route template, method and status",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "cifar10_http_request_duration_seconds",
            "Time from the request reaching the app to the end of its response",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "cifar10_http_requests_in_flight",
            "Requests being handled now, health and metrics aside (the admission limit counts these)",
            multiprocess_mode="livesum",
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "cifar10_batch_size",
            "Items per ONNX Runtime call formed by the micro-batcher",
            buckets=_BATCH_BUCKETS,
            registry=self.registry,
        )
        self.queue_wait = Histogram(
            "cifar10_batch_queue_wait_seconds",
            "Time an item waited in the micro-batcher's queue before its batch left",
            buckets=_WAIT_BUCKETS,
            registry=self.registry,
        )
        # labels() takes a lock and builds a key on every call; the hot path looks its children up here instead.
        self._request_children: dict[tuple[str, str, int], Counter] = {}
        self._latency_children: dict[str, Histogram] = {}

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        key = (route, method, status)
        counter = self._request_children.get(key)
        if counter is None:
            counter = self._request_children[key] = self.requests.labels(route, method, str(status))
        counter.inc()
        histogram = self._latency_children.get(route)
        if histogram is None:
            histogram = self._latency_children[route] = self.latency.labels(route)
        histogram.observe(seconds)

    def observe_batch(self, size: int, waits: list[float]) -> None:
        self.batch_size.observe(size)
        for wait in waits:
            self.queue_wait.observe(wait)

    def render(self) -> bytes:
        if self.multiprocess_dir:
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry, path=self.multiprocess_dir)
            return generate_latest(registry)
        return generate_latest(self.registry)

    def close(self) -> None:
        """Forget this worker's live gauges once it exits."""
        if self.multiprocess_dir:
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(os.getpid(), self.multiprocess_dir)
