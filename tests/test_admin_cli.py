"""`python -m chat_trio admin …` run for real (subprocesses) against a real server, and with the
server stopped (bootstrap and recovery directly on the database)."""

from __future__ import annotations

import os
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest
import trio

from chat_trio.store.sqlite import sqlite3
from tests.client import HTTPClient
from tests.helpers import PASSWORD, assert_error, login, register_and_login
from tests.server_process import ServerProcess, has_workers_flag, workers_args
from tests.ws_client import connect

NEW_PASSWORD = "a brand new passphrase"


async def admin(db: Path, *args: str, password: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run the admin command line on `db`, the password (if any) on stdin; never a CHAT_TRIO_*
    variable from the test's environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHAT_TRIO_")}
    argv = [sys.executable, "-m", "chat_trio", "admin", "--db", str(db), *args]
    stdin = "" if password is None else password + "\n"

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=50, env=env,
                              cwd=db.parent, check=False)

    return await trio.to_thread.run_sync(run)


def one_line_error(result: subprocess.CompletedProcess[str], *words: str) -> None:
    assert result.returncode == 1, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("python -m chat_trio admin: error: "), result.stderr
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in lines[0], lines


def users_in(db: Path) -> list[tuple[str, int, int]]:
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        return conn.execute("SELECT username, admin, deactivated FROM users ORDER BY id").fetchall()


def test_help_names_every_subcommand_and_how_passwords_are_read() -> None:
    result = subprocess.run([sys.executable, "-m", "chat_trio", "admin", "--help"], capture_output=True,
                            text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    for word in ("create-user", "set-password", "promote", "demote", "deactivate", "users", "backup",
                 "stdin", "Exit status"):
        assert word in result.stdout, word
    sub = subprocess.run([sys.executable, "-m", "chat_trio", "admin", "deactivate", "--help"],
                         capture_output=True, text=True, timeout=30, check=False)
    assert sub.returncode == 0 and "--erase" in sub.stdout
    # There is no way to give a password on the command line.
    argv = [sys.executable, "-m", "chat_trio", "admin", "create-user", "x", "--password", "y"]
    usage = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    assert usage.returncode == 2 and "unrecognized arguments" in usage.stderr


async def test_bootstrap_and_recovery_work_with_the_server_stopped(tmp_path: Path) -> None:
    db = tmp_path / "chat.db"
    made = await admin(db, "create-user", "alice", "--admin", password=PASSWORD)
    assert made.returncode == 0, made.stderr
    assert "created admin alice" in made.stdout and "server is not running" in made.stdout
    assert users_in(db) == [("alice", 1, 0)]
    one_line_error(await admin(db, "create-user", "ALICE", password=PASSWORD), "taken")
    one_line_error(await admin(db, "create-user", "bob", password="short"), "password")
    one_line_error(await admin(db, "create-user", "bob"), "no password")
    one_line_error(await admin(db, "users"), "not running")
    server = ServerProcess(tmp_path, db=db)
    try:
        client = HTTPClient(await server.start())
        token = await login(client, "alice")
        assert (await client.get("/me", token=token)).json["user"]["admin"] is True
        await client.aclose()
    finally:
        server.stop()
    assert not os.path.exists(str(db) + ".sock")  # the server took its socket away
    reset = await admin(db, "set-password", "alice", password=NEW_PASSWORD)
    assert reset.returncode == 0, reset.stderr
    one_line_error(await admin(db, "set-password", "nobody", password=NEW_PASSWORD), "no user called nobody")
    server = ServerProcess(tmp_path, db=db, log_name="second.log")
    try:
        client = HTTPClient(await server.start())
        assert_error(await client.post("/login", {"username": "alice", "password": PASSWORD}), 401,
                     "invalid_credentials")
        await login(client, "alice", NEW_PASSWORD)
        await client.aclose()
    finally:
        server.stop()


@pytest.mark.parametrize("workers", [1, 2])
async def test_every_subcommand_against_a_running_server(tmp_path: Path, workers: int) -> None:
    if workers > 1 and not has_workers_flag():
        pytest.skip("this chat_trio has no --workers flag")
    db = tmp_path / "chat.db"
    server = ServerProcess(tmp_path, *(workers_args(workers) if workers > 1 else ()), db=db)
    try:
        port = await server.start()
        assert oct(os.stat(str(db) + ".sock").st_mode & 0o777) == "0o600"
        client = HTTPClient(port)
        bob, _ = await register_and_login(client, "bob")
        made = await admin(db, "create-user", "root", "--admin", password=PASSWORD)
        assert made.returncode == 0 and "created admin root" in made.stdout, made
        listed = await admin(db, "users")
        assert listed.returncode == 0 and [line.split()[1] for line in listed.stdout.splitlines()[1:]] == [
            "bob", "root"]
        assert (await admin(db, "users", "ro")).stdout.count("\n") == 2  # the header and root
        one_line_error(await admin(db, "demote", "root"), "at least one admin")
        assert (await admin(db, "promote", "bob")).returncode == 0
        assert (await admin(db, "demote", "root")).returncode == 0
        assert users_in(db)[:2] == [("bob", 1, 0), ("root", 0, 0)]
        one_line_error(await admin(db, "promote", "nobody"), "no user called nobody")

        async with connect(port, bob) as ws:
            reset = await admin(db, "set-password", "bob", password=NEW_PASSWORD)
            assert reset.returncode == 0, reset.stderr
            code, _ = await ws.closed()
            assert code == 4001
        assert_error(await client.get("/me", token=bob), 401, "unauthorized")
        root = await login(client, "root")
        closed = await admin(db, "deactivate", "root", "--erase")
        assert closed.returncode == 0 and "erased" in closed.stdout, closed
        assert_error(await client.get("/me", token=root), 401, "unauthorized")
        refused = await client.post("/login", {"username": "root", "password": PASSWORD})
        assert_error(refused, 403, "deactivated")

        copy = tmp_path / "backup.db"
        backup = await admin(db, "backup", "backup.db")  # relative to where the command runs
        assert backup.returncode == 0 and str(copy) in backup.stdout, backup
        assert users_in(copy) == users_in(db)
        one_line_error(await admin(db, "backup", str(copy)), "exists")
        await client.aclose()
    finally:
        server.stop()
    assert not server.errors(), server.log()


async def test_the_admin_socket_is_never_taken_from_a_live_server_and_a_dead_ones_is_replaced(
    tmp_path: Path,
) -> None:
    db = tmp_path / "chat.db"
    first = ServerProcess(tmp_path, db=db)
    try:
        await first.start()
        second = ServerProcess(tmp_path, db=db, log_name="second.log")
        assert await second.wait() == 1
        assert "cannot open the admin socket" in second.log() and "another server" in second.log()
        assert (await admin(db, "users")).returncode == 0  # still the first one's
    finally:
        first.stop()
    # A server killed outright leaves its socket file behind; the next start replaces it.
    killed = ServerProcess(tmp_path, db=db, log_name="killed.log")
    await killed.start()
    killed.kill()
    assert os.path.exists(str(db) + ".sock")
    third = ServerProcess(tmp_path, db=db, log_name="third.log")
    try:
        await third.start()
        assert (await admin(db, "users")).returncode == 0
    finally:
        third.stop()


async def test_a_socket_path_longer_than_a_unix_address_still_works(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    db = deep / "chat.db"
    assert len(os.fsencode(str(db) + ".sock")) > 108
    server = ServerProcess(tmp_path, db=db)
    try:
        await server.start()
        made = await admin(db, "create-user", "root", "--admin", password=PASSWORD)
        assert made.returncode == 0 and "server is not running" not in made.stdout, made
    finally:
        server.stop()
