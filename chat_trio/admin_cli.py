"""`python -m chat_trio admin …`: the operator's command line (Synapse's register_new_matrix_user,
Mattermost's `mmctl --local`, Zulip's management commands).

It talks to the running server over the local admin socket (`--admin-socket`, 0600: whoever can
open it is the operator), so every change goes through the server's writer and change feed
(revocations close websockets at once, caches stay current). With the server stopped,
`create-user` and `set-password` work on the database directly (bootstrap and recovery) and
`backup` copies it directly.

Passwords come from a prompt (typed twice) or, when stdin is not a terminal, from its first line:
never from the command line, where other users could read them. Errors are one line on stderr;
the exit status is 0 on success, 1 when the server (or the database) refused, 2 for a usage error.
"""

from __future__ import annotations

import argparse
import getpass
import http.client
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn
from urllib.parse import quote

import orjson

from chat_trio.api.shapes import shapes_for
from chat_trio.cli import parse_config
from chat_trio.config import Config
from chat_trio.errors import APIError
from chat_trio.http import unix
from chat_trio.security.passwords import Passwords
from chat_trio.store import queries, sqlite
from chat_trio.store.records import now_ms
from chat_trio.store.schema import migrate
from chat_trio.store.sqlite import sqlite3

PROG = "python -m chat_trio admin"
TIMEOUT = 60.0  # seconds for one request (a password hash, a backup of a large database)
OFFLINE = frozenset({"create-user", "set-password", "backup"})  # work with the server stopped


class Failed(Exception):
    """What went wrong, in one line for the operator."""


class NotRunning(Failed):
    """Nothing answers on the admin socket."""


# -- talking to the server -----------------------------------------------------------------------


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=TIMEOUT)
        self.socket_path = path

    def connect(self) -> None:
        self.sock = unix.connect(self.socket_path, TIMEOUT)


class AdminClient:
    """Requests to the admin socket; each answer's JSON, or Failed with the server's message."""

    def __init__(self, path: str) -> None:
        self.path = path

    def call(self, method: str, target: str, body: Any = None) -> Any:
        conn = _UnixConnection(self.path)
        try:
            try:
                conn.connect()
            except OSError as exc:
                raise NotRunning(f"the server is not running (nothing answers on {self.path}: "
                                 f"{exc.strerror or exc})") from None
            headers = {"content-type": "application/json"} if body is not None else {}
            conn.request(method, target, None if body is None else orjson.dumps(body), headers)
            reply = conn.getresponse()
            data = reply.read()
        except (OSError, http.client.HTTPException) as exc:
            raise Failed(f"the server did not answer: {exc}") from None
        finally:
            conn.close()
        value = orjson.loads(data) if data else None
        if reply.status >= 300:
            error = value.get("error", {}) if isinstance(value, dict) else {}
            raise Failed(str(error.get("message") or f"the server answered {reply.status}"))
        return value

    def user(self, name: str) -> dict[str, Any]:
        """The user called `name` (ignoring case), or Failed."""
        after = 0
        while True:
            page = self.call("GET", f"/admin/users?q={quote(name)}&limit=500&after={after}")
            for user in page["users"]:
                if user["username"].lower() == name.lower():
                    return dict(user)
            if not page["has_more"]:
                raise Failed(f"no user called {name}")
            after = page["users"][-1]["id"]


# -- the database directly (server stopped) ------------------------------------------------------


def _offline(config: Config, command: str, name: str, password: str | None, admin: bool) -> str:
    """create-user or set-password on the database file itself (it is created if missing)."""
    conn = sqlite.connect(config.db, durability=config.durability)
    try:
        migrate(conn)
        assert password is not None
        password_hash = Passwords(config).hash_here(password)  # the server's argon2 parameters
        conn.execute("BEGIN IMMEDIATE")
        try:
            if command == "create-user":
                user_id, _ = queries.insert_user(conn, name, password_hash, now_ms(), admin)
                result = f"created {'admin' if admin else 'user'} {name} (id {user_id})"
            else:
                row = conn.execute("SELECT id FROM users WHERE username = ?", (name,)).fetchone()
                if row is None:
                    raise Failed(f"no user called {name}")
                queries.set_password(conn, row[0], password_hash, b"")
                result = f"set the password of {name}; all its sessions were ended"
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return result + " (directly in the database: the server is not running)"
    except queries.Conflict as exc:
        raise Failed("that username is taken" if str(exc) == "username_taken" else str(exc)) from None
    except sqlite3.Error as exc:
        raise Failed(f"cannot use the database {config.db}: {exc}") from None
    finally:
        conn.close()


# -- commands ------------------------------------------------------------------------------------


def read_password(prompt: str = "Password") -> str:
    """From a prompt (twice) on a terminal, else the first line of stdin."""
    if sys.stdin.isatty():
        first = getpass.getpass(f"{prompt}: ")
        if getpass.getpass(f"{prompt} (again): ") != first:
            raise Failed("the passwords do not match")
        return first
    line = sys.stdin.readline()
    if not line:
        raise Failed("no password on stdin")
    return line.rstrip("\r\n")


def run(config: Config, args: argparse.Namespace) -> str:
    """Carry out one subcommand; what to print."""
    client = AdminClient(config.admin_socket_path() or "")
    command = args.command
    if config.admin_socket_path() is None and command not in OFFLINE:
        raise Failed("the admin socket is off (--admin-socket off)")
    try:
        return _online(client, command, args)
    except NotRunning:
        if command not in OFFLINE:
            raise
    if command == "backup":
        _backup(config.db, args.path)
        return f"backed up {config.db} to {args.path}"
    return _offline(config, command, args.name, args.password, getattr(args, "admin", False))


def _backup(db: str, path: str) -> None:
    try:
        sqlite.backup(db, path)
    except FileExistsError:
        raise Failed(f"{path} exists; choose a new file") from None
    except (OSError, sqlite3.Error) as exc:
        raise Failed(f"cannot back up {db} to {path}: {exc}") from None


def _online(client: AdminClient, command: str, args: argparse.Namespace) -> str:
    if command == "create-user":
        body = {"username": args.name, "password": args.password, "admin": args.admin}
        user = client.call("POST", "/admin/users", body)["user"]
        return f"created {'admin' if user['admin'] else 'user'} {user['username']} (id {user['id']})"
    if command == "set-password":
        user = client.user(args.name)
        client.call("PUT", f"/admin/users/{user['id']}/password", {"new_password": args.password})
        return f"set the password of {user['username']}; all its sessions were ended"
    if command in ("promote", "demote"):
        user = client.user(args.name)
        client.call("PUT", f"/admin/users/{user['id']}/admin", {"admin": command == "promote"})
        return f"{user['username']} is {'now' if command == 'promote' else 'no longer'} an admin"
    if command == "deactivate":
        user = client.user(args.name)
        client.call("POST", f"/admin/users/{user['id']}/deactivate", {"erase": args.erase})
        return f"deactivated {user['username']}{' and erased its messages' if args.erase else ''}"
    if command == "users":
        return _users_table(client, args.prefix or "")
    assert command == "backup"
    reply = client.call("POST", "/admin/backup", {"path": args.path})
    return f"backed up to {reply['path']} ({reply['bytes']} bytes)"


def _users_table(client: AdminClient, prefix: str) -> str:
    lines = [f"{'id':>6}  {'username':<32}  {'admin':<5}  {'deactivated':<11}  last seen"]
    after = 0
    while True:
        page = client.call("GET", f"/admin/users?q={quote(prefix)}&limit=500&after={after}")
        for u in page["users"]:
            lines.append(f"{u['id']:>6}  {u['username']:<32}  {'yes' if u['admin'] else 'no':<5}  "
                         f"{'yes' if u['deactivated'] else 'no':<11}  {u['last_seen_at'] or 'never'}")
        if not page["has_more"]:
            return "\n".join(lines)
        after = page["users"][-1]["id"]


# -- the command line ----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Operate a chat_trio server over its local admin socket. create-user and "
                    "set-password also work with the server stopped (directly on the database), as "
                    "does backup. Passwords are read from a prompt, or from stdin's first line when "
                    "it is not a terminal; never from the command line.",
        epilog="Exit status: 0 done, 1 refused or failed (one line on stderr), 2 usage error.")
    parser.add_argument("--db", help="the server's database (default: CHAT_TRIO_DB or ./chat.db)")
    parser.add_argument("--admin-socket", help="the server's admin socket (default: CHAT_TRIO_ADMIN_SOCKET, "
                                               "or the database path + .sock)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    create = commands.add_parser("create-user", help="create an account (password from a prompt or stdin)")
    create.add_argument("name")
    create.add_argument("--admin", action="store_true", help="make it a server admin")
    commands.add_parser("set-password", help="set an account's password and end all its sessions"
                        ).add_argument("name")
    commands.add_parser("promote", help="make a user a server admin").add_argument("name")
    commands.add_parser("demote", help="make an admin a plain user (the last admin stays)"
                        ).add_argument("name")
    deactivate = commands.add_parser("deactivate", help="close an account: sessions end, it leaves every "
                                                        "room, it cannot log in, its name stays taken")
    deactivate.add_argument("name")
    deactivate.add_argument("--erase", action="store_true", help="also erase every message text it wrote")
    commands.add_parser("users", help="list users (whose name starts with PREFIX)").add_argument(
        "prefix", nargs="?", metavar="PREFIX")
    commands.add_parser("backup", help="write a consistent copy of the database to PATH (a new file)"
                        ).add_argument("path", metavar="PATH")
    return parser


def main(argv: Sequence[str], env: Mapping[str, str] | None = None) -> NoReturn:
    parser = build_parser()
    args = parser.parse_args(argv)
    flags = [*(["--db", args.db] if args.db else []),
             *(["--admin-socket", args.admin_socket] if args.admin_socket else [])]
    config = parse_config(flags, os.environ if env is None else env)
    if args.command == "backup":
        args.path = os.path.abspath(args.path)
    try:
        if args.command in ("create-user", "set-password"):
            args.password = read_password()
            try:  # the rules of POST /register, also when the database is written directly
                shapes_for(config).credentials.values({"username": args.name, "password": args.password})
            except APIError as exc:
                raise Failed(exc.message) from None
        print(run(config, args))
    except Failed as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        raise SystemExit(1) from None
    raise SystemExit(0)
