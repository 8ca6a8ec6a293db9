"""GET /metrics, read with Prometheus' own text-format parser."""

from __future__ import annotations

from pathlib import Path

import trio
from prometheus_client.parser import text_string_to_metric_families

from chat_trio.app import App
from chat_trio.metrics import Registry
from tests.client import HTTPClient
from tests.helpers import (
    Request,
    Response,
    Route,
    make_config,
    make_room,
    register_and_login,
    send,
    serve,
    start_routes,
)
from tests.rawhttp import exchange, statuses
from tests.ws_client import connect


async def scrape(client: HTTPClient) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """{sample name: {sorted labels: value}} for every sample of the scrape."""
    reply = await client.get("/metrics")
    assert reply.status == 200
    assert reply.headers[b"content-type"].startswith(b"text/plain; version=0.0.4")
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(reply.body.decode()):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def value(samples: dict[str, dict[tuple[tuple[str, str], ...], float]], name: str, **labels: str) -> float:
    return samples.get(name, {}).get(tuple(sorted(labels.items())), 0.0)


async def test_metrics_parse_and_follow_the_traffic(app: App, client: HTTPClient) -> None:
    before = await scrape(client)

    token, _ = await register_and_login(client, "alice")
    room = await make_room(client, token, "metrics")
    for i in range(3):
        assert (await send(client, token, room["id"], f"m{i}")).status == 201
    assert (await client.get("/nope")).status == 404
    async with connect(app.port, token):
        during = await scrape(client)
    after = await scrape(client)

    for family in ("chat_trio_http_requests_total", "chat_trio_open_connections",
                   "chat_trio_open_websockets", "chat_trio_messages_committed_total",
                   "chat_trio_store_queue_depth", "chat_trio_thread_limiter_borrowed"):
        assert family in after, family
    route = "/rooms/{room_id:int}/messages"
    posted = {"route": route, "method": "POST", "status": "201"}
    requests = "chat_trio_http_requests_total"
    assert value(after, requests, **posted) - value(before, requests, **posted) == 3
    assert value(after, "chat_trio_http_requests_total", route="unmatched", method="GET", status="404") >= 1
    committed = "chat_trio_messages_committed_total"
    assert value(after, committed) - value(before, committed) == 3
    assert value(during, "chat_trio_open_websockets") == 1
    assert value(after, "chat_trio_open_websockets") == 0
    assert value(during, "chat_trio_open_connections") >= 2  # this client and the websocket
    # The latency histogram counted every send, and its +Inf bucket equals its count.
    latency = "chat_trio_http_request_duration_seconds"
    count = value(after, latency + "_count", route=route)
    assert count >= 3 and value(after, latency + "_bucket", route=route, le="+Inf") == count
    batches = value(after, "chat_trio_group_commit_batch_size_count")
    assert batches >= 1 and value(after, "chat_trio_store_commits_total") >= batches


async def test_labels_come_from_fixed_sets_whatever_clients_send(app: App, client: HTTPClient) -> None:
    """Made-up methods and paths, and requests the HTTP layer refuses, add no series: a method
    is a standard one or "other", a route a pattern or "unmatched", a refusal "unparsed"."""
    await scrape(client)
    before = len((await client.get("/metrics")).body)
    with trio.fail_after(30):
        for i in range(300):
            raw, _ = await exchange(app.port, f"M{i:05d} /x{i} HTTP/1.1\r\nHost: t\r\n"
                                             "Connection: close\r\n\r\n".encode())
            assert statuses(raw) == [404]
        for data in (b"GARBAGE\r\n\r\n", b"GET / HTTP/2.0\r\nHost: t\r\n\r\n",
                     b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 99999999\r\n\r\n"):
            await exchange(app.port, data)
        after = await scrape(client)
    assert len((await client.get("/metrics")).body) - before < 2000
    requests = after["chat_trio_http_requests_total"]
    assert requests[(("method", "other"), ("route", "unmatched"), ("status", "404"))] == 300
    for status in ("400", "505", "413"):
        assert requests[(("method", "-"), ("route", "unparsed"), ("status", status))] == 1
    assert {dict(labels)["method"] for labels in requests} <= {"GET", "POST", "other", "-"}


async def test_each_server_has_its_own_registry(tmp_path: Path) -> None:
    """Two servers in one process: neither sees the other's requests."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    async with serve(make_config(tmp_path / "a")) as one, serve(make_config(tmp_path / "b")) as two:
        first, second = HTTPClient(one.port), HTTPClient(two.port)
        with trio.fail_after(10):
            for _ in range(5):
                assert (await first.get("/healthz")).status == 200
            healthz = (("method", "GET"), ("route", "/healthz"), ("status", "200"))
            assert (await scrape(first))["chat_trio_http_requests_total"][healthz] == 5
            assert healthz not in (await scrape(second)).get("chat_trio_http_requests_total", {})
        await first.aclose()
        await second.aclose()


async def test_a_status_the_server_does_not_name_is_counted_by_its_class(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    async def odd(request: Request) -> Response:
        return Response(299, b"{}")

    server, port = await start_routes(nursery, make_config(tmp_path), [Route("GET", "/odd", odd)])
    with trio.fail_after(10):
        raw, _ = await exchange(port, b"GET /odd HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    assert statuses(raw) == [299]
    registry = Registry()
    registry.add(server.requests)
    families = text_string_to_metric_families(registry.render().decode())
    scraped = {tuple(sorted(s.labels.items())): s.value for family in families for s in family.samples}
    assert scraped == {(("method", "GET"), ("route", "/odd"), ("status", "2xx")): 1.0}
