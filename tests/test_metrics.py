"""GET /metrics, read with Prometheus' own text-format parser."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from chat_trio.app import App
from tests.client import HTTPClient
from tests.helpers import make_room, register_and_login, send
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
