"""Summarise a `py-spy record --format raw` file: the hottest functions by self and total time.

    python load/pyspy_top.py /tmp/profile.txt [N] [--rps REQ_PER_S] [--all-threads]

Each raw line is `frame;frame;...;leaf COUNT` with frames like `func (path/file.py:123)`. Self time
counts the leaf frame; total time counts every function once per stack it appears in. Line numbers
are dropped so one function is one row; paths are shortened to the package-relative part.

Only the main thread (the Trio event loop) is counted: stacks rooted in `threading` (trio's
worker-thread cache, sqlite threads) are mostly idle waits that py-spy still samples, and would
dilute the percentages. Pass --all-threads to keep them. Percentages are of main-thread samples;
with the server saturated that is ~100% of wall time, so with --rps (wrk's Requests/sec during the
recording) each row also shows microseconds per request. The "total" list leaves out the frames
every stack shares (runpy, trio.run, ...).
"""

from __future__ import annotations

import re
import sys
from collections import Counter

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>.*?)(?::\d+)?\)$")
_SHORTEN = re.compile(r".*/(site-packages|lib/python3\.\d+)/")


def name(frame: str) -> str:
    m = _FRAME.match(frame.strip())
    if not m:
        return frame.strip()
    path = _SHORTEN.sub("", m["file"])
    path = re.sub(r".*/(chat_trio|load)/", r"\1/", path)
    return f"{m['func']} ({path})"


def main() -> None:
    argv = sys.argv[1:]
    rps = 0.0
    if "--rps" in argv:
        i = argv.index("--rps")
        rps = float(argv[i + 1])
        del argv[i : i + 2]
    all_threads = "--all-threads" in argv
    args = [a for a in argv if a != "--all-threads"]
    path = args[0]
    top = int(args[1]) if len(args) > 1 else 15
    skipped = 0
    self_t: Counter[str] = Counter()
    total_t: Counter[str] = Counter()
    samples = 0
    with open(path) as f:
        for line in f:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if not stack:
                continue
            n = int(count)
            frames = [name(fr) for fr in stack.split(";")]
            if frames and frames[0].startswith("process "):
                frames = frames[1:]  # --pid header frame
            if frames and frames[0].startswith("thread "):
                frames = frames[1:]
            if not all_threads and frames[0].endswith("(threading.py)"):
                skipped += n
                continue
            samples += n
            self_t[frames[-1]] += n
            for fn in set(frames):
                total_t[fn] += n
    print(f"{samples} samples" + (f" ({skipped} from other threads left out)" if skipped else "") + "\n")
    us = 1e6 / rps if rps else 0.0
    shared = Counter({fn: n for fn, n in total_t.items() if n < 0.995 * samples})
    for title, counter in (("self", self_t), ("total (inclusive)", shared)):
        print(f"top {top} by {title}:")
        print(f"{'%':>6}  {'us/req' if us else ''}  function")
        for fn, n in counter.most_common(top):
            per = f"{us * n / samples:6.1f}" if us else ""
            print(f"{100 * n / samples:5.1f}%  {per}  {fn}")
        print()


if __name__ == "__main__":
    main()
