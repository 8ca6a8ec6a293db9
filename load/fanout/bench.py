"""The fan-out scenario (subscribers, senders) and the idle-connections scenario."""

from __future__ import annotations

import math
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import orjson
import trio
from trio_websocket import ConnectionClosed, HandshakeError, WebSocketConnection, open_websocket_url

from load.fanout.rest import RestClient
from load.fanout.stats import CpuSample, percentiles_ms, raise_fd_limit, rss_kib
from load.fanout.wsraw import Poller, RawWebSocket

PASSWORD = "fanout-password"
TS_TAG = b"fanout t="


@dataclass
class Options:
    url: str
    subscribers: int = 100
    rooms: int = 1
    senders: int = 1
    rate: float = 100.0
    duration: float = 10.0
    idle: int = 0
    hold: float = 5.0
    server_pid: int | None = None
    setup_concurrency: int = 16
    connect_concurrency: int = 100
    drain: float = 5.0
    text_pad: int = 0
    json_path: str | None = None
    png_path: str | None = None
    progress: bool = True
    also: tuple[str, ...] = ()  # more servers of one cluster (PostgreSQL nodes) holding subscribers

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        return urlsplit(self.url).port or 80

    @property
    def subscriber_ports(self) -> list[int]:
        """Subscribers are spread round-robin over these (`url` first, then `also`); senders
        and setup use `url` only."""
        return [self.port, *(urlsplit(u).port or 80 for u in self.also)]

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}/ws"


# -- shared measurement state --------------------------------------------------------------------


class Clock:
    """The measurement window: second buckets of received frames and their latencies."""

    def __init__(self, seconds: int) -> None:
        self.t0_ns = 0  # start of sending (time.monotonic_ns)
        self.seconds = seconds
        self.latency: list[list[int]] = [[] for _ in range(seconds)]  # ns, by receive second

    def bucket(self, now_ns: int) -> list[int]:
        index = (now_ns - self.t0_ns) // 1_000_000_000
        if index < 0:
            index = 0
        elif index >= self.seconds:
            index = self.seconds - 1
        return self.latency[index]


class Subscriber:
    """One lean websocket subscribed to one room; checks seqs and records latencies."""

    __slots__ = (
        "base_seq",
        "clock",
        "duplicates",
        "frames",
        "gaps",
        "last_seq",
        "others",
        "room_id",
        "room_tag",
        "skipped",
        "subscribed",
        "unique",
        "wrong_room",
        "ws",
    )

    def __init__(self, room_id: int, clock: Clock) -> None:
        self.room_id = room_id
        self.room_tag = b'"room_id":%d,' % room_id
        self.clock = clock
        self.ws: RawWebSocket | None = None
        self.subscribed = trio.Event()
        self.base_seq = -1  # last_seq in the `subscribed` answer; -1 until it came
        self.last_seq = -1
        self.frames = 0  # message frames received
        self.unique = 0  # frames that advanced last_seq
        self.gaps = 0
        self.skipped = 0  # seqs jumped over by gaps: lost deliveries
        self.duplicates = 0  # seq <= last_seq (duplicate or reordered)
        self.wrong_room = 0
        self.others: Counter[str] = Counter()

    def on_text(self, buf: bytes, start: int, end: int) -> None:
        if buf.startswith(b'{"type":"message"', start):
            now = time.monotonic_ns()
            i = buf.find(b'"seq":', start, end) + 6
            seq = int(buf[i : buf.find(b",", i, end)])
            self.frames += 1
            if buf.find(self.room_tag, start, end) < 0:
                self.wrong_room += 1
                return
            if seq == self.last_seq + 1:
                self.last_seq = seq
                self.unique += 1
            elif seq > self.last_seq:
                self.gaps += 1
                self.skipped += seq - self.last_seq - 1
                self.last_seq = seq
                self.unique += 1
            else:
                self.duplicates += 1
            k = buf.find(TS_TAG, start, end)
            if k >= 0:
                k += 9
                self.clock.bucket(now).append(now - int(buf[k : buf.find(b" ", k, end)]))
            return
        frame = orjson.loads(buf[start:end])
        kind = frame.get("type")
        if kind == "subscribed" and frame.get("room_id") == self.room_id:
            self.base_seq = self.last_seq = frame["last_seq"]
            self.subscribed.set()
        elif kind == "error":
            self.others[f"error:{frame.get('code')}"] += 1
        elif kind != "hello":
            self.others[str(kind)] += 1


@dataclass
class SenderStats:
    sent: int = 0
    acked: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    late: int = 0  # sends more than 10 ms behind schedule
    max_lag_s: float = 0.0
    ack_latency: list[int] = field(default_factory=list)
    room_max_seq: dict[int, int] = field(default_factory=dict)
    closed: Counter[str] = field(default_factory=Counter)


class _Countdown:
    def __init__(self, n: int) -> None:
        self.left = n
        self.event = trio.Event()
        if n <= 0:
            self.event.set()

    def done(self) -> None:
        self.left -= 1
        if self.left <= 0:
            self.event.set()


class Run:
    def __init__(self, opts: Options) -> None:
        self.opts = opts
        self.prefix = "f" + os.urandom(4).hex()
        self.clock = Clock(math.ceil(opts.duration + opts.drain) + 2)
        self.subs: list[Subscriber] = []
        self.poller = Poller()
        self.senders = SenderStats()
        self.connect_failures: Counter[str] = Counter()
        self.sending_done = False
        self.drain_complete = False

    # -- setup over REST -------------------------------------------------------------------

    async def _user(self, rest: RestClient, name: str) -> tuple[int, str]:
        await rest.call("POST", "/register", {"username": name, "password": PASSWORD}, ok=(201,))
        login = await rest.call("POST", "/login", {"username": name, "password": PASSWORD})
        return int(login["user"]["id"]), str(login["token"])

    async def _bounded(self, jobs: list[Any], limit: int) -> list[Any]:
        """Run zero-argument async callables with at most `limit` at once; results in order."""
        results: list[Any] = [None] * len(jobs)
        slots = trio.Semaphore(limit)

        async def one(i: int) -> None:
            async with slots:
                results[i] = await jobs[i]()

        async with trio.open_nursery() as nursery:
            for i in range(len(jobs)):
                nursery.start_soon(one, i)
        return results

    async def setup(self, n_subscribers: int, n_senders: int, n_rooms: int) -> tuple[
        list[int], list[str], list[str]
    ]:
        """Users and rooms; returns (room ids, subscriber tokens, sender tokens)."""
        o = self.opts
        async with RestClient(o.host, o.port, size=o.setup_concurrency) as rest:
            users = await self._bounded(
                [
                    (lambda name=name: self._user(rest, name))
                    for name in [f"{self.prefix}_s{i}" for i in range(n_senders)]
                    + [f"{self.prefix}_r{i}" for i in range(n_subscribers)]
                ],
                o.setup_concurrency,
            )
            sender_tokens = [token for _, token in users[:n_senders]]
            sub_tokens = [token for _, token in users[n_senders:]]
            owner = sender_tokens[0] if sender_tokens else sub_tokens[0]
            rooms = [
                int((await rest.call("POST", "/rooms", {"name": f"{self.prefix}-room{i}"}, owner, ok=(201,)))
                    ["room"]["id"])
                for i in range(n_rooms)
            ]
            joins = [(t, rooms[i % n_rooms]) for i, t in enumerate(sub_tokens)]
            joins += [(t, r) for t in sender_tokens for r in rooms]
            await self._bounded(
                [
                    (lambda t=t, r=r: rest.call("POST", f"/rooms/{r}/join", None, t))
                    for t, r in joins
                ],
                o.setup_concurrency,
            )
        return rooms, sub_tokens, sender_tokens

    # -- subscribers -------------------------------------------------------------------------

    async def _connect(self, token: str, port: int) -> RawWebSocket | None:
        o = self.opts
        try:
            with trio.fail_after(10):
                return await RawWebSocket.connect(
                    o.host, port, "/ws", [("Authorization", f"Bearer {token}")]
                )
        except Exception as exc:  # refused, timed out, bad handshake: count it and go on
            self.connect_failures[type(exc).__name__ + ": " + str(exc)[:80]] += 1
            return None

    async def _subscriber(
        self, sub: Subscriber, token: str, port: int, slots: trio.Semaphore, ready: _Countdown
    ) -> None:
        """Connect and subscribe through trio, then hand the socket to the poller."""
        try:
            async with slots:
                ws = await self._connect(token, port)
                if ws is None:
                    return
                sub.ws = ws
                await ws.send_text(f'{{"type":"subscribe","room_id":{sub.room_id}}}')
                with trio.move_on_after(10):
                    while not sub.subscribed.is_set() and await ws.read_frames(sub.on_text):
                        pass
                if not ws.closed:
                    self.poller.add(ws, sub.on_text)
        finally:
            ready.done()

    async def _open_all(self, nursery: trio.Nursery, tokens: list[str], what: str) -> float:
        """Connect and subscribe every subscriber (tokens reused round-robin); returns the seconds taken."""
        t_conn = time.monotonic()
        ready = _Countdown(len(self.subs))
        slots = trio.Semaphore(self.opts.connect_concurrency)
        ports = self.opts.subscriber_ports
        for i, sub in enumerate(self.subs):
            nursery.start_soon(self._subscriber, sub, tokens[i % len(tokens)], ports[i % len(ports)], slots,
                               ready)
        while not ready.event.is_set():
            with trio.move_on_after(1):
                await ready.event.wait()
            if self.opts.progress:
                sys.stderr.write(f"\r{what}: {len(self.subs) - ready.left}/{len(self.subs)} "
                                 f"({time.monotonic() - t_conn:.1f}s)   ")
                sys.stderr.flush()
        if self.opts.progress:
            sys.stderr.write("\n")
        return time.monotonic() - t_conn

    # -- senders -----------------------------------------------------------------------------

    async def _sender(self, index: int, token: str, rooms: list[int], start: float, end: float,
                      ws_ready: trio.Event) -> None:
        o = self.opts
        st = self.senders
        interval = o.senders / o.rate
        my_sent = 0
        my_done = 0
        async with open_websocket_url(
            o.ws_url, extra_headers=[(b"authorization", f"Bearer {token}".encode())], message_queue_size=4096
        ) as ws:
            await ws.get_message()  # hello
            ws_ready.set()

            async def acks(ws: WebSocketConnection) -> None:
                nonlocal my_done
                while True:
                    frame = orjson.loads(await ws.get_message())
                    kind = frame.get("type")
                    if kind == "ack":
                        now = time.monotonic_ns()
                        message = frame["message"]
                        st.acked += 1
                        my_done += 1
                        room = message["room_id"]
                        if message["seq"] > st.room_max_seq.get(room, 0):
                            st.room_max_seq[room] = message["seq"]
                        text: str = message["text"]
                        if text.startswith("fanout t="):
                            st.ack_latency.append(now - int(text[9 : text.index(" ", 9)]))
                    elif kind == "error":
                        st.errors[str(frame.get("code"))] += 1
                        my_done += 1
                    if self.sending_done and my_done >= my_sent:
                        return

            async with trio.open_nursery() as nursery:
                nursery.start_soon(acks, ws)
                t = start + index * interval / o.senders
                n = 0
                while t < end:
                    await trio.sleep_until(t)
                    lag = trio.current_time() - t
                    if lag > 0.010:
                        st.late += 1
                    st.max_lag_s = max(st.max_lag_s, lag)
                    room = rooms[n % len(rooms)]
                    text = f"fanout t={time.monotonic_ns()} s={index}#{n}" + "x" * o.text_pad
                    txn_id = f"{self.prefix}-{index}-{n}"
                    frame = {"type": "send", "room_id": room, "text": text, "txn_id": txn_id}
                    await ws.send_message(orjson.dumps(frame).decode())
                    st.sent += 1
                    my_sent += 1
                    n += 1
                    t += interval
                # wait for the remaining acks (the drain deadline bounds this from outside)
                while my_done < my_sent:
                    await trio.sleep(0.01)
                nursery.cancel_scope.cancel()

    async def _sender_guard(self, *args: Any) -> None:
        try:
            await self._sender(*args)
        except (ConnectionClosed, HandshakeError, OSError) as exc:
            reason = getattr(exc, "reason", None)
            code = getattr(reason, "code", None)
            self.senders.closed[f"{type(exc).__name__}:{code}"] += 1

    # -- progress ----------------------------------------------------------------------------

    def _delivered(self) -> int:
        return sum(s.frames for s in self.subs)

    async def _progress(self, start_wall: float) -> None:
        last_count = self._delivered()
        last_cpu = CpuSample.take(self.opts.server_pid)
        while True:
            await trio.sleep(1)
            count = self._delivered()
            cpu = CpuSample.take(self.opts.server_pid)
            tool_pct, server_pct = cpu.pct_since(last_cpu)
            bucket_index = max(0, (time.monotonic_ns() - self.clock.t0_ns) // 1_000_000_000 - 1)
            recent = list(self.clock.latency[min(bucket_index, self.clock.seconds - 1)])
            p99 = percentiles_ms(recent)["p99"] if recent else 0.0
            closed = sum(1 for s in self.subs if s.ws is None or s.ws.closed)
            line = (
                f"\r[{time.monotonic() - start_wall:5.1f}s] sent {self.senders.sent} "
                f"acked {self.senders.acked} "
                f"delivered/s {count - last_count} p99 {p99:.1f} ms closed {closed} "
                f"cpu tool {tool_pct:.0f}% server {server_pct if server_pct is not None else '?'}%   "
            )
            sys.stderr.write(line)
            sys.stderr.flush()
            last_count, last_cpu = count, cpu

    # -- the fan-out scenario ------------------------------------------------------------------

    async def fanout(self) -> dict[str, Any]:
        o = self.opts
        raise_fd_limit(o.subscribers + o.senders + 1024)
        t_setup = time.monotonic()
        rooms, sub_tokens, sender_tokens = await self.setup(o.subscribers, o.senders, o.rooms)
        setup_s = time.monotonic() - t_setup
        self.subs = [Subscriber(rooms[i % len(rooms)], self.clock) for i in range(o.subscribers)]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.poller.run)
            connect_s = await self._open_all(nursery, sub_tokens, "subscribers connected")
            not_subscribed = sum(1 for s in self.subs if not s.subscribed.is_set())
            if self.opts.progress:
                print(f"setup {setup_s:.1f}s ({o.subscribers + o.senders} users), {o.subscribers} "
                      f"subscribers in {connect_s:.1f}s, not subscribed: {not_subscribed}", file=sys.stderr)

            ready = [trio.Event() for _ in sender_tokens]
            lead = 1.0  # the senders' websockets open during this second
            start = trio.current_time() + lead
            end = start + o.duration
            async with trio.open_nursery() as senders:
                for i, token in enumerate(sender_tokens):
                    senders.start_soon(self._sender_guard, i, token, rooms, start, end, ready[i])
                await trio.sleep_until(start)
                self.clock.t0_ns = time.monotonic_ns()
                cpu0 = CpuSample.take(o.server_pid)
                start_wall = time.monotonic()
                async with trio.open_nursery() as progress:
                    if o.progress:
                        progress.start_soon(self._progress, start_wall)
                    await trio.sleep_until(end)
                    cpu1 = CpuSample.take(o.server_pid)
                    delivered_window = self._delivered()
                    self.sending_done = True
                    drain_start = time.monotonic()
                    with trio.move_on_after(o.drain):
                        while not self._drained():
                            await trio.sleep(0.02)
                    self.drain_complete = self._drained()
                    drain_s = time.monotonic() - drain_start
                    senders.cancel_scope.cancel()
                    progress.cancel_scope.cancel()
            nursery.cancel_scope.cancel()
        closed = self._closed()  # before this tool closes its own sockets
        with trio.move_on_after(10):
            for sub in self.subs:
                if sub.ws is not None:
                    await sub.ws.aclose()
        self.poller.close()
        if o.progress:
            sys.stderr.write("\n")
        tool_pct, server_pct = cpu1.pct_since(cpu0)
        return self._fanout_result(
            rooms, setup_s, connect_s, delivered_window, drain_s, tool_pct, server_pct, closed
        )

    def _pings(self) -> int:
        return sum(s.ws.pings for s in self.subs if s.ws is not None)

    def _closed(self) -> dict[str, int]:
        """Subscribers that failed to connect or were closed, by close code."""
        closed: Counter[str] = Counter()
        for s in self.subs:
            if s.ws is None:
                closed["connect_failed"] += 1
            elif s.ws.closed:
                closed[str(s.ws.close_code)] += 1
        return dict(closed)

    def _room_final(self) -> dict[int, int]:
        final = dict(self.senders.room_max_seq)
        for s in self.subs:
            if s.last_seq > final.get(s.room_id, 0):
                final[s.room_id] = s.last_seq
        return final

    def _drained(self) -> bool:
        st = self.senders
        if st.acked + sum(st.errors.values()) < st.sent and not st.closed:
            return False
        final = self._room_final()
        live = [s for s in self.subs if s.ws is not None and not s.ws.closed]
        return all(s.last_seq >= final.get(s.room_id, 0) for s in live)

    def _fanout_result(self, rooms: list[int], setup_s: float, connect_s: float, delivered_window: int,
                       drain_s: float, tool_pct: float, server_pct: float | None,
                       closed: dict[str, int]) -> dict[str, Any]:
        o = self.opts
        st = self.senders
        final = self._room_final()
        missing = 0  # lost: seqs skipped, or never delivered to a socket that is gone
        backlog = 0  # not (yet) delivered to a live socket when the drain period ended
        for s in self.subs:
            missing += s.skipped
            base = max(s.base_seq, 0)
            tail = max(0, final.get(s.room_id, 0) - max(s.last_seq, base))
            if s.ws is not None and s.ws.close_code is None and s.base_seq >= 0:
                backlog += tail
            else:
                missing += tail
        per_second = []
        all_latency: list[int] = []
        for i, bucket in enumerate(self.clock.latency):
            if not bucket and i >= o.duration:
                continue
            all_latency.extend(bucket)
            pct = percentiles_ms(list(bucket))
            pct.pop("count")
            per_second.append({"t": i, "delivered": len(bucket), **pct})
        in_window = [b for i, b in enumerate(self.clock.latency) if i < o.duration]
        window_latency = [x for b in in_window for x in b]
        others: Counter[str] = Counter()
        for s in self.subs:
            others.update(s.others)
        total = self._delivered()
        return {
            "mode": "fanout",
            "options": {
                "url": o.url, "subscribers": o.subscribers, "rooms": o.rooms, "senders": o.senders,
                "rate": o.rate, "duration": o.duration, "server_pid": o.server_pid,
            },
            "setup_s": round(setup_s, 2),
            "connect_s": round(connect_s, 2),
            "subscribed": sum(1 for s in self.subs if s.subscribed.is_set()),
            "sent": st.sent,
            "acked": st.acked,
            "send_rate_achieved": round(st.sent / o.duration, 1),
            "send_errors": dict(st.errors),
            "sender_closed": dict(st.closed),
            "sends_late_10ms": st.late,
            "sender_max_lag_ms": round(st.max_lag_s * 1000, 1),
            "expected_deliveries": sum(final.get(s.room_id, 0) - max(s.base_seq, 0) for s in self.subs),
            "delivered_in_window": delivered_window,
            "delivered_per_s": round(delivered_window / o.duration, 1),
            "delivered_total": total,
            "drain_s": round(drain_s, 2),
            "latency_ms": percentiles_ms(all_latency),
            "latency_in_window_ms": percentiles_ms(window_latency),
            "ack_latency_ms": percentiles_ms(st.ack_latency),
            "closed": closed,
            "connect_failures": dict(self.connect_failures),
            "order_violations": sum(s.gaps + s.duplicates + s.wrong_room for s in self.subs),
            "gaps": sum(s.gaps for s in self.subs),
            "duplicates": sum(s.duplicates for s in self.subs),
            "wrong_room": sum(s.wrong_room for s in self.subs),
            "missing": missing,
            "backlog_at_end": backlog,
            "drain_timed_out": not self.drain_complete,
            "other_frames": dict(others),
            "pings_answered": self._pings(),
            "receiver": {"wakeups": self.poller.wakeups, "reads": self.poller.reads,
                         "frames_per_read": round(total / max(1, self.poller.reads), 2)},
            "cpu_pct": {"tool": tool_pct, "server": server_pct},
            "rooms": rooms,
            "room_last_seq": {str(k): v for k, v in final.items()},
            "per_second": per_second,
        }

    # -- the idle scenario --------------------------------------------------------------------

    async def idle(self) -> dict[str, Any]:
        o = self.opts
        n = o.idle
        raise_fd_limit(n + 1024)
        t_setup = time.monotonic()
        rooms, tokens, _ = await self.setup(1, 0, 1)
        setup_s = time.monotonic() - t_setup
        await trio.sleep(0.5)  # let the server finish with the setup connections
        pid = o.server_pid
        rss_before = rss_kib(pid) if pid else None
        self.subs = [Subscriber(rooms[0], self.clock) for _ in range(n)]
        rss_peak = rss_before or 0
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.poller.run)
            connect_s = await self._open_all(nursery, tokens, "idle websockets opened")
            cpu0 = CpuSample.take(pid)
            rss_open = rss_kib(pid) if pid else None
            deadline = trio.current_time() + o.hold
            while trio.current_time() < deadline:
                await trio.sleep(min(1.0, max(0.0, deadline - trio.current_time())))
                rss = rss_kib(pid) if pid else None
                rss_peak = max(rss_peak, rss or 0)
                if o.progress:
                    alive = sum(1 for s in self.subs if s.ws is not None and not s.ws.closed)
                    sys.stderr.write(f"\rholding {alive} idle websockets, server RSS {rss} KiB   ")
                    sys.stderr.flush()
            rss_after = rss_kib(pid) if pid else None
            cpu1 = CpuSample.take(pid)
            alive = sum(1 for s in self.subs if s.ws is not None and not s.ws.closed)
            nursery.cancel_scope.cancel()
        closed = self._closed()
        if o.progress:
            sys.stderr.write("\n")
        with trio.move_on_after(10):
            for sub in self.subs:
                if sub.ws is not None:
                    await sub.ws.aclose()
        self.poller.close()
        subscribed = sum(1 for s in self.subs if s.subscribed.is_set())
        per_conn = None
        if rss_before is not None and rss_after is not None and alive:
            per_conn = round((rss_after - rss_before) / alive, 1)
        tool_pct, server_pct = cpu1.pct_since(cpu0)
        return {
            "mode": "idle",
            "options": {"url": o.url, "idle": n, "hold": o.hold, "server_pid": pid},
            "setup_s": round(setup_s, 2),
            "connect_s": round(connect_s, 2),
            "connects_per_s": round(n / connect_s, 1) if connect_s else None,
            "opened": sum(1 for s in self.subs if s.ws is not None),
            "subscribed": subscribed,
            "alive_after_hold": alive,
            "closed": closed,
            "connect_failures": dict(self.connect_failures),
            "pings_answered": self._pings(),
            "server_rss_kib": {"before": rss_before, "all_open": rss_open, "after_hold": rss_after,
                               "peak": rss_peak},
            "server_kib_per_connection": per_conn,
            "cpu_pct_while_idle": {"tool": tool_pct, "server": server_pct},
        }
