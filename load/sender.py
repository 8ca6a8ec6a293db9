"""Background sender for the long-poll scenario: POST messages at a steady rate for a bounded time.

    python load/sender.py --url http://127.0.0.1:18080 --room 1 --token T --rate 50 --duration 11

One keep-alive connection (http.client), one message every 1/rate s; prints how many it sent and
how many answered 2xx. Only a local server may be targeted.
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import time
from urllib.parse import urlsplit


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", required=True)
    p.add_argument("--room", type=int, required=True)
    p.add_argument("--token", required=True)
    p.add_argument("--rate", type=float, default=50.0)
    p.add_argument("--duration", type=float, default=11.0)
    a = p.parse_args()
    url = urlsplit(a.url)
    if url.hostname not in ("127.0.0.1", "localhost") or not 0 < a.duration <= 30 or a.rate <= 0:
        p.error("local server only, 0 < duration <= 30, rate > 0")
    conn = http.client.HTTPConnection(url.hostname, url.port or 80, timeout=5)
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {a.token}"}
    sent = ok = 0
    start = time.monotonic()
    while (now := time.monotonic()) - start < a.duration:
        due = start + sent / a.rate
        if due > now:
            time.sleep(due - now)
        body = json.dumps({"text": f"long-poll wake {sent}", "txn_id": f"lp-{start:.0f}-{sent}"})
        try:
            conn.request("POST", f"/rooms/{a.room}/messages", body, headers)
            status = conn.getresponse()
            status.read()
            ok += 200 <= status.status < 300
        except (OSError, http.client.HTTPException):
            conn.close()
        sent += 1
    print(f"sender: sent {sent} ok {ok} in {time.monotonic() - start:.1f}s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
