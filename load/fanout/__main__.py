"""Websocket fan-out benchmark for chat_trio.

    python -m load.fanout --url http://127.0.0.1:PORT --subscribers N --rooms R --senders S \\
        --rate MSGS_PER_S --duration SECONDS [--server-pid PID] [--json out.json] [--png out.png]
    python -m load.fanout --url http://127.0.0.1:PORT --idle 10000 --server-pid PID [--hold 5]

Start the server with cheap password hashing (setup registers one user per socket) and no send
limits, and with a raised fd limit for many sockets (this tool raises its own), e.g.

    ulimit -n 65536    # or at least the hard limit: ulimit -n "$(ulimit -Hn)"
    python -m chat_trio --port 18090 --db "$(mktemp -d)/chat.db" --log-level warning \\
        --argon2-time-cost 1 --argon2-memory-kib 1024 --argon2-parallelism 1 --send-rate 0 \\
        --register-limit 0 --ws-rate 0 --ws-queue 4096

(`--ws-rate 0`: one sender socket sends far more than the default 50 frames/s; `--register-limit 0`:
setup registers every user from 127.0.0.1.) See load/fanout.sh.
"""

from __future__ import annotations

import argparse
import sys
from urllib.parse import urlsplit

import trio

from load.fanout.bench import Options, Run
from load.fanout.report import summary, write_json, write_png


def parse(argv: list[str] | None) -> Options:
    p = argparse.ArgumentParser(prog="python -m load.fanout", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", required=True, help="server base URL, e.g. http://127.0.0.1:18090")
    p.add_argument("--subscribers", type=int, default=100, help="subscriber websockets (one user each)")
    p.add_argument("--rooms", type=int, default=1, help="rooms; subscribers are spread round-robin")
    p.add_argument("--senders", type=int, default=1, help="sender websockets (one user each)")
    p.add_argument("--rate", type=float, default=100.0, help="messages per second, all senders together")
    p.add_argument("--duration", type=float, default=10.0, help="seconds of sending (at most 60)")
    p.add_argument("--drain", type=float, default=5.0, help="seconds to wait for stragglers after sending")
    p.add_argument("--text-pad", type=int, default=0, help="extra characters per message text")
    p.add_argument("--idle", type=int, default=0, help="idle mode: open this many websockets and hold them")
    p.add_argument("--hold", type=float, default=5.0, help="idle mode: seconds to hold the sockets open")
    p.add_argument("--server-pid", type=int, help="server process id, for its CPU and RSS (/proc)")
    p.add_argument("--setup-concurrency", type=int, default=16, help="REST requests in flight during setup")
    p.add_argument("--connect-concurrency", type=int, default=100, help="websocket handshakes in flight")
    p.add_argument("--json", dest="json_path", help="write the results here")
    p.add_argument("--png", dest="png_path", help="plot latency and throughput over time here")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    p.add_argument("--also", action="append", default=[], metavar="URL",
                   help="another node of the same cluster (PostgreSQL): subscribers are spread over "
                        "--url and every --also; repeatable")
    a = p.parse_args(argv)
    hosts = {urlsplit(u).hostname for u in (a.url, *a.also)}
    if not hosts <= {"127.0.0.1", "localhost", "::1"}:
        p.error("only a local server (127.0.0.1) may be targeted")
    if not 0 < a.duration <= 60 or not 0 <= a.drain <= 30 or not 0 < a.hold <= 60:
        p.error("bounded runs only: 0 < duration <= 60, 0 <= drain <= 30, 0 < hold <= 60")
    if a.idle <= 0 and (a.subscribers < 1 or a.senders < 1 or a.rooms < 1 or a.rate <= 0):
        p.error("need subscribers, senders and rooms >= 1 and rate > 0")
    return Options(
        url=a.url, subscribers=a.subscribers, rooms=a.rooms, senders=a.senders, rate=a.rate,
        duration=a.duration, idle=a.idle, hold=a.hold, server_pid=a.server_pid,
        setup_concurrency=a.setup_concurrency, connect_concurrency=a.connect_concurrency, drain=a.drain,
        text_pad=a.text_pad, json_path=a.json_path, png_path=a.png_path, progress=not a.quiet,
        also=tuple(a.also),
    )


def main(argv: list[str] | None = None) -> int:
    opts = parse(argv)
    run = Run(opts)
    # Hard bound: setup and connecting get at most 120 s on top of the run itself.
    limit = 120 + (opts.hold if opts.idle else opts.duration + opts.drain + 5)
    result = trio.run(_bounded, run, limit)
    if result is None:
        print(f"run did not finish within {limit:.0f} s", file=sys.stderr)
        return 1
    print(summary(result))
    if opts.json_path:
        write_json(result, opts.json_path)
    if opts.png_path and result["mode"] == "fanout":
        write_png(result, opts.png_path)
    return 0


async def _bounded(run: Run, limit: float) -> dict[str, object] | None:
    with trio.move_on_after(limit):
        return await (run.idle() if run.opts.idle else run.fanout())
    return None


if __name__ == "__main__":
    raise SystemExit(main())
