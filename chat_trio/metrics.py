"""Prometheus metrics on `prometheus_client`: counters, histograms and values sampled at scrape.

Each App has its own `Registry` (never the library's global one: tests run many servers in one
process, and two servers must not share or collide on series). The thin classes here keep the
call sites short (`requests.inc(route, method, status)`) and are created unregistered, so the
part that owns a figure (listener, writer) creates it and the App registers it.

Every label value comes from a fixed set, so one client cannot grow a scrape: routes are
patterns or "unmatched" (never raw paths), methods are the standard ones or "other"
(`method_label`), statuses are the ones this server writes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeVar

import prometheus_client
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

Labels = tuple[tuple[str, str], ...]
M = TypeVar("M", bound=Collector)

# The `_created` series double a scrape and say only when the process started.
prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]

KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE"})


def method_label(method: str) -> str:
    """A request method as a label: the standard ones as they are, anything else "other"."""
    return method if method in KNOWN_METHODS else "other"


class Counter(Collector):
    def __init__(self, name: str, help: str, label_names: tuple[str, ...] = ()) -> None:
        self._metric = prometheus_client.Counter(name, help, label_names, registry=None)
        # Each label set's child, looked up without the library's lock (this is the hot path).
        self._children: dict[tuple[str, ...], prometheus_client.Counter] = (
            {} if label_names else {(): self._metric})

    def inc(self, *labels: str, amount: float = 1.0) -> None:
        child = self._children.get(labels)
        if child is None:
            child = self._children[labels] = self._metric.labels(*labels)
        child.inc(amount)

    def collect(self) -> Iterable[Metric]:
        return self._metric.collect()


class Histogram(Collector):
    def __init__(
        self, name: str, help: str, buckets: tuple[float, ...], label_names: tuple[str, ...] = ()
    ) -> None:
        self._metric = prometheus_client.Histogram(name, help, label_names, buckets=buckets, registry=None)
        self._children: dict[tuple[str, ...], prometheus_client.Histogram] = (
            {} if label_names else {(): self._metric})

    def observe(self, value: float, *labels: str) -> None:
        child = self._children.get(labels)
        if child is None:
            child = self._children[labels] = self._metric.labels(*labels)
        child.observe(value)

    def collect(self) -> Iterable[Metric]:
        return self._metric.collect()


class Sampled(Collector):
    """A value read from its owner when scraped: a gauge (open connections, queue depth) or a
    counter the owner already keeps (messages committed)."""

    def __init__(
        self, name: str, help: str, read: Callable[[], float | dict[Labels, float]], kind: str = "gauge"
    ) -> None:
        self.name, self.help, self.read, self.kind = name, help, read, kind

    def collect(self) -> Iterable[Metric]:
        family = CounterMetricFamily if self.kind == "counter" else GaugeMetricFamily
        value = self.read()
        if not isinstance(value, dict):
            yield family(self.name, self.help, value=value)
            return
        names = [name for name, _ in next(iter(value), ())]
        labelled = family(self.name, self.help, labels=names)
        for labels, v in sorted(value.items()):
            labelled.add_metric([label for _, label in labels], v)
        yield labelled


class Registry(CollectorRegistry):
    """One server's metrics."""

    def add(self, metric: M) -> M:
        self.register(metric)
        return metric

    def render(self) -> bytes:
        """The Prometheus text format (version 0.0.4)."""
        return prometheus_client.generate_latest(self)


LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
