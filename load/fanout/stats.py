"""Small measurement helpers: percentiles, process CPU and memory from /proc."""

from __future__ import annotations

import math
import resource
import time
from dataclasses import dataclass

from load.cpu import tree_cpu_seconds


def percentiles_ms(values_ns: list[int], points: tuple[float, ...] = (50, 90, 99)) -> dict[str, float]:
    """p50/p90/p99/max (in ms, from ns) of `values_ns`, which is sorted in place."""
    out: dict[str, float] = {"count": float(len(values_ns))}
    if not values_ns:
        for p in points:
            out[f"p{p:g}"] = 0.0
        out["max"] = 0.0
        return out
    values_ns.sort()
    n = len(values_ns)
    for p in points:
        index = min(n - 1, max(0, math.ceil(p * n / 100) - 1))  # nearest rank
        out[f"p{p:g}"] = round(values_ns[index] / 1e6, 3)
    out["max"] = round(values_ns[-1] / 1e6, 3)
    return out


def self_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def rss_kib(pid: int) -> int | None:
    """VmRSS of a process in KiB; None if it cannot be read."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


@dataclass
class CpuSample:
    wall: float
    tool: float
    server: float | None

    @classmethod
    def take(cls, server_pid: int | None) -> CpuSample:
        """The server's CPU is summed over its processes (a --workers supervisor and its workers)."""
        return cls(time.monotonic(), self_cpu_seconds(), tree_cpu_seconds(server_pid) if server_pid else None)

    def pct_since(self, earlier: CpuSample) -> tuple[float, float | None]:
        """(tool %, server %) of one core between two samples."""
        wall = max(self.wall - earlier.wall, 1e-9)
        tool = 100 * (self.tool - earlier.tool) / wall
        server = None
        if self.server is not None and earlier.server is not None:
            server = 100 * (self.server - earlier.server) / wall
        return round(tool, 1), None if server is None else round(server, 1)


def raise_fd_limit(wanted: int) -> int:
    """Raise RLIMIT_NOFILE towards `wanted` (the hard limit too when allowed); returns the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= wanted:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, max(wanted, hard)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]
