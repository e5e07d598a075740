"""Prometheus metrics of one app instance, on a registry of its own (so several apps can live in one
process, as they do in tests).

The counters a text turn bumps (client events, responses, output tokens, errors) are plain Python
integers, read only when ``/metrics`` is scraped (``_TurnCounters``): a prometheus_client counter
takes a lock per increment, and a turn makes five of them.

How full the process's bounded caches are (``assistant.heap``) is read at the scrape too
(``_CacheFill``), with the pid of the worker that answered: several workers share one port, each
scrape lands on one of them."""

from __future__ import annotations

import os
from collections import Counter as Tally
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]


class _TurnCounters(Collector):
    """assistant_client_events_total{type}, assistant_errors_total{code},
    assistant_responses_total{status}, assistant_voice_early_responses_total{outcome} (early
    replies to spoken turns started, committed, dropped) and assistant_output_tokens_total."""

    def __init__(self) -> None:
        self.events_in: Tally[str] = Tally()
        self.errors: Tally[str] = Tally()
        self.responses: Tally[str] = Tally()
        self.early: Tally[str] = Tally()
        self.output_tokens = 0

    def collect(self) -> Iterator[CounterMetricFamily]:
        for name, doc, label, tally in (
            ("assistant_client_events", "Client events received", "type", self.events_in),
            ("assistant_errors", "Error events sent, by code", "code", self.errors),
            ("assistant_responses", "Responses finished, by status", "status", self.responses),
            ("assistant_voice_early_responses", "Early spoken replies", "outcome", self.early),
        ):
            family = CounterMetricFamily(name, doc, labels=[label])
            for value, count in sorted(tally.items()):
                family.add_metric([value], count)
            yield family
        yield CounterMetricFamily(
            "assistant_output_tokens", "Tokens generated", value=self.output_tokens
        )


class _CacheFill(Collector):
    """assistant_cache_entries{cache} and assistant_cache_capacity{cache}: what each bounded
    in-process cache holds and may hold (entries; tokens for ``kv_cache_tokens``), and
    assistant_worker_pid: the process that answered."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        from assistant import heap

        entries = GaugeMetricFamily(
            "assistant_cache_entries", "What a bounded cache holds", labels=["cache"]
        )
        capacity = GaugeMetricFamily(
            "assistant_cache_capacity", "The most a bounded cache holds", labels=["cache"]
        )
        for name, fill in heap.caches().items():
            entries.add_metric([name], fill.entries)
            capacity.add_metric([name], fill.capacity)
        yield entries
        yield capacity
        yield GaugeMetricFamily("assistant_worker_pid", "The worker process", value=os.getpid())


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.connections = Gauge("assistant_ws_connections", "Open WebSocket connections", registry=r)
        self.first_delta_s = Histogram(
            "assistant_time_to_first_delta_seconds",
            "From response.create to the first text delta",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32),
            registry=r,
        )
        self._counts = _TurnCounters()
        r.register(self._counts)
        r.register(_CacheFill())

    def event_in(self, kind: str) -> None:
        self._counts.events_in[kind] += 1

    def error(self, code: str) -> None:
        self._counts.errors[code] += 1

    def response(self, status: str, output_tokens: int) -> None:
        self._counts.responses[status] += 1
        self._counts.output_tokens += output_tokens

    def early_response(self, outcome: str) -> None:
        """An early reply to a spoken turn ``started``, ``committed`` or ``dropped``."""
        self._counts.early[outcome] += 1

    def render(self) -> bytes:
        return generate_latest(self.registry)
