"""Prometheus metrics of one app instance, on a registry of its own (so several apps can live in one
process, as they do in tests)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._children: dict[tuple[int, str], Any] = {}
        r = self.registry
        self.connections = Gauge("assistant_ws_connections", "Open WebSocket connections", registry=r)
        self.events_in = Counter(
            "assistant_client_events_total", "Client events received", ["type"], registry=r
        )
        self.errors = Counter(
            "assistant_errors_total", "Error events sent, by code", ["code"], registry=r
        )
        self.responses = Counter(
            "assistant_responses_total", "Responses finished, by status", ["status"], registry=r
        )
        self.output_tokens = Counter(
            "assistant_output_tokens_total", "Tokens generated", registry=r
        )
        self.first_delta_s = Histogram(
            "assistant_time_to_first_delta_seconds",
            "From response.create to the first text delta",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32),
            registry=r,
        )

    # The hot path's counters: a labelled child is looked up once per label value, not per event.

    def event_in(self, kind: str) -> None:
        self._child(self.events_in, kind).inc()

    def error(self, code: str) -> None:
        self._child(self.errors, code).inc()

    def response(self, status: str, output_tokens: int) -> None:
        self._child(self.responses, status).inc()
        self.output_tokens.inc(output_tokens)

    def _child(self, metric: Counter, label: str) -> Any:
        key = (id(metric), label)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(label)
        return child

    def render(self) -> bytes:
        return generate_latest(self.registry)
