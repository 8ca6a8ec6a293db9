"""Limits that must hold when clients race each other: checks made before an await that a
parallel request can pass too."""

from __future__ import annotations

import math
from contextlib import closing
from pathlib import Path

import pytest
import trio

from chat_trio.store.sqlite import sqlite3
from tests.helpers import PASSWORD, Client, StartServed, make_config, register, register_and_login, serve

# The login policy is exact for the whole server (the supervisor decides it, or one node): its two
# tests run in every mode. Hashing time is per process, the room pages test writes the sqlite file
# and the connection cap counts per process (README): those run in one process.


@pytest.mark.workers
async def test_parallel_logins_of_one_user_cannot_pass_the_per_user_limit(shared_served: StartServed) -> None:
    """login_user_limit counts successes, and a success is only known after the password hash:
    logins that start together (from several addresses, so no per-address limit applies) must
    still get at most login_user_limit tokens between them."""
    statuses: list[int] = []
    with trio.fail_after(30):
        app = await shared_served(login_user_limit=2, login_user_window=3600.0)
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


async def test_one_address_logging_in_in_parallel_does_not_queue_everyone_else_behind_it(
    tmp_path: Path,
) -> None:
    """Each login costs a password hash on a few threads. Logins one address sends at once (all
    within its burst, all with the right password) take their turns one after another, so a
    login from another address waits for at most one of them, not for all of them."""
    config = make_config(tmp_path, argon2_time_cost=2, argon2_memory_kib=65536, hash_threads=1,
                         login_user_limit=0)
    with trio.fail_after(60):
        async with serve(config) as app:
            await register(Client(app.port), "yuri")
            await register(Client(app.port), "zora")
            other = Client(app.port, local_address="127.0.0.3")

            async def timed_login() -> float:
                started = trio.current_time()
                reply = await other.post("/login", {"username": "zora", "password": PASSWORD})
                assert reply.status == 200, reply.body
                return trio.current_time() - started

            alone = min([await timed_login() for _ in range(3)])

            async def flood_login() -> None:
                client = Client(app.port, local_address="127.0.0.2")
                reply = await client.post("/login", {"username": "yuri", "password": PASSWORD})
                assert reply.status == 200, reply.body
                await client.aclose()

            async with trio.open_nursery() as nursery:
                for _ in range(16):
                    nursery.start_soon(flood_login)
                await trio.sleep(alone)  # the flood's logins are all waiting for the hash thread
                crowded = await timed_login()
            await other.aclose()
    # Behind the whole flood it would be about 16 hashes; its own turn costs about 2.
    assert crowded < 6 * alone, (crowded, alone)


@pytest.mark.workers
async def test_guessing_usernames_that_do_not_exist_takes_no_backoff_memory(
    shared_served: StartServed,
) -> None:
    """The per-username backoff protects accounts, and remembers each username for a day. Were
    usernames that name no account counted too, every address could add about 14,000 entries a
    day (50 failures per 300 s, each a new name), without bound as addresses are added. A name
    with no account is never backed off (its existence is no secret: /register says 409)."""
    with trio.fail_after(30):
        app = await shared_served(login_backoff_after=1)
        await register(Client(app.port), "anna")
        statuses: dict[str, list[int]] = {"anna": [], "nobody-here": []}
        for n in range(3):  # each guess from an address of its own
            for i, (name, seen) in enumerate(statuses.items()):
                client = Client(app.port, local_address=f"127.0.{n + 1}.{i + 1}")
                seen.append((await client.post("/login", {"username": name,
                                                          "password": "wrong-one"})).status)
                await client.aclose()
    assert statuses == {"anna": [401, 401, 429], "nobody-here": [401, 401, 401]}, statuses


async def test_a_late_page_of_rooms_costs_what_an_early_one_does(tmp_path: Path) -> None:
    """GET /rooms is paged so one answer stays small; the page must also be found without walking
    every room before it on the event loop, or paging through N rooms costs N²/limit and each late
    page (or `joined=true` for a user in few rooms) stalls every other client for a scan."""
    config = make_config(tmp_path)
    rooms = 200_000
    with trio.fail_after(120):
        async with serve(config) as app:
            client = Client(app.port)
            token, user = await register_and_login(client, "boris")
            await client.aclose()
        with closing(sqlite3.connect(config.db)) as db:
            db.executemany("INSERT INTO rooms (name, name_key, created_by, created_at) VALUES (?, ?, ?, 0)",
                           ((f"r{n}", f"r{n}", user["id"]) for n in range(rooms)))
            db.execute("INSERT INTO members (room_id, user_id, joined_at) VALUES (?, ?, 0)",
                       (rooms, user["id"]))
            db.commit()
        async with serve(config) as app:
            client = Client(app.port)

            async def page(query: str) -> float:
                best = math.inf
                for _ in range(5):
                    started = trio.current_time()
                    reply = await client.get(f"/rooms?{query}", token=token)
                    assert reply.status == 200 and reply.json["rooms"], reply.body
                    best = min(best, trio.current_time() - started)
                return best

            first = await page("limit=10")
            last = await page(f"after={rooms - 10}&limit=10")
            joined = await page("joined=true&limit=10")
            await client.aclose()
    assert last < 5 * first and joined < 5 * first, (first, last, joined)


async def test_per_address_limits_count_an_ipv6_client_by_its_64_network(tmp_path: Path) -> None:
    """An IPv6 host is given a /64 (or more) and may use any address in it, so counted per
    address it would get a fresh allowance (connections, registrations, logins) per request.
    Per-address limits count IPv6 clients by their /64, IPv4 ones by their address."""
    config = make_config(tmp_path, register_limit=1, max_connections_per_address=1,
                         trusted_proxies="127.0.0.2")
    with trio.fail_after(30):
        async with serve(config) as app:
            def via_proxy() -> Client:
                return Client(app.port, local_address="127.0.0.2")

            async def register_from(client: Client, name: str, forwarded: str) -> int:
                reply = await client.post("/register", {"username": name, "password": PASSWORD},
                                          headers=[("x-forwarded-for", forwarded)])
                return reply.status

            first, second, third = via_proxy(), via_proxy(), via_proxy()
            assert await register_from(first, "ines", "2001:db8::1") == 201
            # `first` keeps its connection open, holding 2001:db8::/64's one slot.
            assert await register_from(second, "joan", "2001:db8::2") == 503
            assert await register_from(third, "kira", "2001:db8:0:1::1") == 201  # another /64
            await first.aclose()
            await trio.sleep(0.1)  # the server notices the close and frees the slot
            assert await register_from(via_proxy(), "lena", "2001:db8::ffff") == 429
            for client in (second, third):
                await client.aclose()
