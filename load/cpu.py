"""CPU time of a server and every process under it (a `--workers N` supervisor and its workers),
from /proc: what the load scripts divide by the requests or frames a run served.

    python -m load.cpu PID        prints utime + stime of PID and its descendants, in µs"""

from __future__ import annotations

import os
import sys
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (state first); None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw.rpartition(")")[2].split()


def tree_pids(pid: int) -> list[int]:
    """`pid` and its descendants (one pass over /proc, parents found by ppid)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat_fields(int(entry.name))) is not None:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo += children.get(current, [])
    return found


def tree_cpu_seconds(pid: int) -> float | None:
    """utime + stime of `pid` and its live descendants, in seconds; None if `pid` is gone. (A
    worker that exited takes its CPU time with it: respawns during a run make this an underestimate.)"""
    total, seen = 0.0, False
    for member in tree_pids(pid):
        fields = _stat_fields(member)
        if fields is not None:
            total += (int(fields[11]) + int(fields[12])) / _TICK  # fields 14 and 15 of stat(5)
            seen = seen or member == pid
    return total if seen else None


def main() -> int:
    seconds = tree_cpu_seconds(int(sys.argv[1]))
    if seconds is None:
        print(f"no process {sys.argv[1]}", file=sys.stderr)
        return 1
    print(round(seconds * 1e6))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
