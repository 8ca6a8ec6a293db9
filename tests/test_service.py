from chat_trio.app import App
from tests.client import HTTPClient


async def test_healthz(client: HTTPClient) -> None:
    reply = await client.get("/healthz")
    assert reply.status == 200
    assert reply.json == {"status": "ok"}
    assert reply.headers[b"content-type"] == b"application/json"


async def test_openapi_lists_exactly_the_router_routes(app: App, client: HTTPClient) -> None:
    reply = await client.get("/openapi.json")
    assert reply.status == 200
    doc = reply.json
    assert doc["openapi"].startswith("3.1")
    documented = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    assert app.server is not None
    routed = {(r.method, r.pattern.replace(":int}", "}")) for r in app.server.router.routes}
    assert documented == routed
