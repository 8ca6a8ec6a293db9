"""Websocket sessions at the edges of the server's life: what a socket that is still
authenticating when shutdown starts gets."""

from __future__ import annotations

from pathlib import Path

import trio

from tests.helpers import Client, make_config, register_and_login, serve
from tests.ws_client import connect


# In one process: the test starts the shutdown itself, at the moment it needs (app.shutdown()).
async def test_a_socket_that_authenticates_after_shutdown_began_is_closed_1001(tmp_path: Path) -> None:
    """Shutdown closes every session with 1001; one still waiting for its auth frame is not in the
    hub yet, so it must be refused when that frame comes, not let in and served until the grace
    period cuts it off without a close code that says why."""
    config = make_config(tmp_path, shutdown_grace=3.0)
    with trio.fail_after(20):
        async with serve(config) as app:
            client = Client(app.port)
            token, _ = await register_and_login(client, "xena")
            await client.aclose()
            async with connect(app.port, None, auth="none", hello=False) as ws:
                app.shutdown()
                await trio.sleep(0.1)
                await ws.send({"type": "auth", "token": token})
                with trio.fail_after(1.5):  # well before the grace period ends
                    assert await ws.closed() == (1001, [])
