"""Property-based conformance: schemathesis generates requests from the live server's own
`GET /openapi.json` and checks every answer against that document — no 5xx, only documented
status codes and content types, bodies matching their schemas — once without credentials and
once with the token of a user who is a member of room 1.

The server runs as a subprocess (schemathesis' pytest integration is synchronous) with the send
and registration rate limits off (the anonymous run's registrations would use up the signed-in
run's) and a login failure limit no run can reach, so 429s do not hide everything else.
GET /ws (an upgrade) is left to the websocket tests; POST /logout is left out of the signed-in
run because it would revoke the very token the run uses (the anonymous run covers it)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import hypothesis
import pytest
import requests
import schemathesis
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from chat_trio.api import openapi
from tests.helpers import PASSWORD
from tests.server_process import ServerProcess

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          negative_data_rejection, ignored_auth]
SETTINGS = hypothesis.settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(hypothesis.HealthCheck),
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = ServerProcess(tmp_path_factory.mktemp("schemathesis"), "--send-rate", "0",
                        "--login-fail-limit", "1000000", "--register-limit", "0")
    try:
        srv.start_sync()
        yield srv
        assert srv.alive(), "the server died:\n" + srv.log()
        assert not srv.errors(), srv.errors()
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def token(server: ServerProcess) -> str:
    """A user who is a member of room 1 (its creator), and one message in it."""
    with requests.Session() as http:
        body = {"username": "schemer", "password": PASSWORD}
        assert http.post(f"{server.url}/register", json=body, timeout=10).status_code == 201
        reply = http.post(f"{server.url}/login", json=body, timeout=10)
        assert reply.status_code == 200, reply.text
        bearer = {"Authorization": f"Bearer {reply.json()['token']}"}
        room = http.post(f"{server.url}/rooms", json={"name": "lobby"}, headers=bearer, timeout=10)
        assert room.status_code == 201 and room.json()["room"]["id"] == 1, room.text
        sent = http.post(f"{server.url}/rooms/1/messages", json={"text": "hi"}, headers=bearer, timeout=10)
        assert sent.status_code == 201, sent.text
        return str(reply.json()["token"])


@pytest.fixture(scope="module")
def api_schema(server: ServerProcess) -> Any:
    return schemathesis.openapi.from_url(f"{server.url}/openapi.json")


# The operations, read from the same document the server serves (the live one is what the test
# generates from; a mismatch between the two fails in `api_schema[path][method]`).
OPERATIONS = [(method.upper(), path) for path, item in openapi.document()["paths"].items()
              for method in item if path != "/ws"]


def _run(
    api_schema: Any, server: ServerProcess, method: str, path: str, headers: dict[str, str] | None
) -> None:
    operation = api_schema[path][method]
    cases = st.one_of(operation.as_strategy(generation_mode=GenerationMode.POSITIVE),
                      operation.as_strategy(generation_mode=GenerationMode.NEGATIVE))

    @SETTINGS
    @hypothesis.given(case=cases)
    def check(case: Any) -> None:
        # A long poll (`wait`, up to 30 s) is valid but would only make the run slow: cap it.
        wait = case.query.get("wait") if isinstance(case.query, dict) else None
        if isinstance(wait, int | float) and not isinstance(wait, bool) and wait > 0.2:
            case.query["wait"] = 0.2
        if headers:  # a generated POST /rooms/1/leave must not end the membership for the rest
            requests.post(f"{server.url}/rooms/1/join", headers=headers, timeout=10).raise_for_status()
            # nor may a generated PATCH leave it private: left empty, nobody could join it again
            requests.patch(f"{server.url}/rooms/1", json={"visibility": "public"}, headers=headers,
                           timeout=10)
        response = case.call(base_url=server.url, headers=headers, timeout=15)
        case.validate_response(response, checks=CHECKS, headers=headers)

    check()


@pytest.mark.parametrize(("method", "path"), OPERATIONS)
def test_anonymous(api_schema: Any, server: ServerProcess, method: str, path: str) -> None:
    _run(api_schema, server, method, path, None)


@pytest.mark.parametrize(("method", "path"), [op for op in OPERATIONS if op != ("POST", "/logout")])
def test_signed_in_member_of_room_1(
    api_schema: Any, server: ServerProcess, token: str, method: str, path: str
) -> None:
    _run(api_schema, server, method, path, {"Authorization": f"Bearer {token}"})
