"""Speed baseline: the bare Trio + h11 HTTP/1.1 server that chat_trio is measured against.

Shaped like h11's examples/trio-server.py, minus its debug printing: one task per connection,
keep-alive, h11 does all parsing and framing. Every request (any method, any path) is read to its
end and answered `200 {"status":"ok"}` with content-type and content-length.

Kept deliberately equal to what any real server must do per request, no more and no less:
- one idle/request timeout per cycle (`move_on_after`, like the h11 example);
- a Date header (cached per second, as every production server does) and a Server header;
- the response head, body and end-of-message are written with one `send_all` (one syscall).
No routing, no logging, no request object: the gap between this and chat_trio is the cost of
chat_trio's own per-request code.

    python load/baseline_server.py --port 8081
"""

from __future__ import annotations

import argparse
import contextlib
import time
from email.utils import formatdate

import h11
import trio

MAX_RECV = 64 * 1024
TIMEOUT = 10.0
BODY = b'{"status":"ok"}'
STATIC_HEADERS = [
    (b"server", b"baseline"),
    (b"content-type", b"application/json"),
    (b"content-length", str(len(BODY)).encode()),
]

_date: tuple[int, bytes] = (0, b"")


def date_header() -> bytes:
    global _date
    now = int(time.time())
    if now != _date[0]:
        _date = (now, formatdate(now, usegmt=True).encode())
    return _date[1]


async def next_event(conn: h11.Connection, stream: trio.SocketStream) -> object:
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await stream.receive_some(MAX_RECV))
            continue
        return event


async def serve_connection(stream: trio.SocketStream) -> None:
    conn = h11.Connection(h11.SERVER)
    try:
        while True:
            with trio.move_on_after(TIMEOUT):
                event = await next_event(conn, stream)
                if type(event) is not h11.Request:
                    return  # ConnectionClosed (or garbage): done with this peer
                while type(await next_event(conn, stream)) is not h11.EndOfMessage:
                    pass  # discard any request body
                out = conn.send(
                    h11.Response(
                        status_code=200, reason=b"OK", headers=[(b"date", date_header()), *STATIC_HEADERS]
                    )
                )
                out += conn.send(h11.Data(data=BODY))
                out += conn.send(h11.EndOfMessage())
                await stream.send_all(out)
            if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                return  # timed out mid-request, or Connection: close
            conn.start_next_cycle()
    except (h11.ProtocolError, trio.BrokenResourceError, trio.ClosedResourceError):
        return
    finally:
        await stream.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        trio.run(lambda: trio.serve_tcp(serve_connection, args.port, host=args.host, backlog=4096))


if __name__ == "__main__":
    main()
