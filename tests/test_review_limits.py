"""Limits that must hold when clients race each other: checks made before an await that a
parallel request can pass too."""

from __future__ import annotations

from pathlib import Path

import trio

from tests.conftest import make_config
from tests.helpers import PASSWORD, Client, register, serve


async def test_parallel_logins_of_one_user_cannot_pass_the_per_user_limit(tmp_path: Path) -> None:
    """login_user_limit counts successes, and a success is only known after the password hash:
    logins that start together (from several addresses, so no per-address limit applies) must
    still get at most login_user_limit tokens between them."""
    config = make_config(tmp_path, login_user_limit=2, login_user_window=3600.0)
    statuses: list[int] = []
    with trio.fail_after(30):
        async with serve(config) as app:
            await register(Client(app.port), "wanda")

            async def attempt(n: int) -> None:
                client = Client(app.port, local_address=f"127.0.0.{n + 2}")
                reply = await client.post("/login", {"username": "wanda", "password": PASSWORD})
                statuses.append(reply.status)
                await client.aclose()

            async with trio.open_nursery() as nursery:
                for n in range(8):
                    nursery.start_soon(attempt, n)
    assert sorted(statuses) == [200, 200] + [429] * 6, statuses
