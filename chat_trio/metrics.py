"""A minimal Prometheus text-format registry: counters, histograms and values sampled at scrape.

Deliberately tiny (no dependency, no locks: everything runs on the one Trio thread, except
values read at scrape time). Label values are bounded by construction: routes are patterns,
never raw paths.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TypeVar

Labels = tuple[tuple[str, str], ...]
M = TypeVar("M", "Counter", "Histogram", "Sampled")


def _fmt_labels(labels: Labels, extra: tuple[tuple[str, str], ...] = ()) -> str:
    pairs = labels + extra
    if not pairs:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in pairs) + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _fmt_value(value: float) -> str:
    if value == int(value):
        return str(int(value))
    return repr(value)


@dataclass(eq=False)
class Counter:
    name: str
    help: str
    label_names: tuple[str, ...] = ()
    values: dict[tuple[str, ...], float] = field(default_factory=dict)

    def inc(self, *labels: str, amount: float = 1.0) -> None:
        self.values[labels] = self.values.get(labels, 0.0) + amount

    def render(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} counter"
        for labels, value in sorted(self.values.items()):
            named = tuple(zip(self.label_names, labels, strict=True))
            yield f"{self.name}_total{_fmt_labels(named)} {_fmt_value(value)}"


@dataclass(eq=False)
class Histogram:
    name: str
    help: str
    buckets: tuple[float, ...]
    label_names: tuple[str, ...] = ()
    series: dict[tuple[str, ...], list[float]] = field(default_factory=dict)  # counts…, sum, count

    def observe(self, value: float, *labels: str) -> None:
        row = self.series.get(labels)
        if row is None:
            row = self.series[labels] = [0.0] * (len(self.buckets) + 3)  # buckets, +Inf, sum, count
        row[bisect.bisect_left(self.buckets, value)] += 1  # non-cumulative; summed when rendered
        row[-2] += value
        row[-1] += 1

    def render(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} histogram"
        for labels, row in sorted(self.series.items()):
            named = tuple(zip(self.label_names, labels, strict=True))
            cumulative = 0.0
            for bound, count in zip((*self.buckets, float("inf")), row[:-2], strict=True):
                cumulative += count
                le = "+Inf" if bound == float("inf") else _fmt_value(bound)
                yield f"{self.name}_bucket{_fmt_labels(named, (('le', le),))} {_fmt_value(cumulative)}"
            yield f"{self.name}_sum{_fmt_labels(named)} {_fmt_value(row[-2])}"
            yield f"{self.name}_count{_fmt_labels(named)} {_fmt_value(row[-1])}"


@dataclass(eq=False)
class Sampled:
    """A value read from its owner when scraped: a gauge (open connections, queue depth) or a
    counter the owner already keeps (messages committed)."""

    name: str
    help: str
    read: Callable[[], float | dict[Labels, float]]
    kind: str = "gauge"

    def render(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} {self.kind}"
        sample = self.name + ("_total" if self.kind == "counter" else "")
        value = self.read()
        if isinstance(value, dict):
            for labels, v in sorted(value.items()):
                yield f"{sample}{_fmt_labels(labels)} {_fmt_value(v)}"
        else:
            yield f"{sample} {_fmt_value(value)}"


class Registry:
    def __init__(self) -> None:
        self._metrics: list[Counter | Histogram | Sampled] = []

    def add(self, metric: M) -> M:
        self._metrics.append(metric)
        return metric

    def render(self) -> bytes:
        lines: list[str] = []
        for metric in self._metrics:
            lines.extend(metric.render())
        return ("\n".join(lines) + "\n").encode()


LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
