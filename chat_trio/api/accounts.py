"""POST /register, POST /login, POST /logout, GET /me, and an account over its lifetime:
PUT /me/password, GET and DELETE /me/sessions, DELETE /me."""

from __future__ import annotations

from chat_trio.api.commands import deactivated, invalid_credentials, username_taken
from chat_trio.api.context import Context
from chat_trio.api.shapes import bodyless, shapes_for
from chat_trio.errors import APIError
from chat_trio.http.router import Route
from chat_trio.http.types import Request, Response, json_response, no_content
from chat_trio.security.ratelimit import client_network
from chat_trio.security.tokens import digest, new_token
from chat_trio.store.records import iso

CLIENT_MAX = 256  # characters of a User-Agent kept as a session's `client`


def client_label(request: Request) -> str:
    """What a session shows as its client: the User-Agent, printable and capped."""
    raw = (request.header(b"user-agent") or b"").decode("latin-1")
    return "".join(ch for ch in raw if ch.isprintable())[:CLIENT_MAX]


def routes(s: Context) -> list[Route]:
    shapes = shapes_for(s.config)

    def credentials(request: Request) -> tuple[str, str]:
        body = shapes.credentials.read(request)
        return body["username"], body["password"]

    async def verified(username: str, password: str, where: str) -> tuple[int, str]:
        """(user id, stored hash) if `password` is the account's: the login policy applies (429),
        and a wrong one counts as a failed login (401)."""
        await s.commands.login_allowed(username, where)  # the policy: chat_trio/security/logins.py
        found = await s.store.password_hash(username)
        ok = await s.passwords.verify(found[1] if found else None, password, where)
        if not ok or found is None:
            await s.commands.login_failed(username, where, found is not None)
            raise invalid_credentials()
        return found

    async def register(request: Request) -> Response:
        username, password = credentials(request)
        if s.config.registration == "closed":
            raise APIError(403, "registration_closed", "registration is closed; ask an admin for an account")
        if s.store.username_taken(username):
            raise username_taken()
        # Every registration that gets this far costs a password hash: count them per address.
        where = client_network(request.client)
        await s.commands.allow_registration(where)
        user = await s.commands.create_user(username, await s.passwords.hash(password, where))
        return json_response({"user": user}, 201)

    async def login(request: Request) -> Response:
        username, password = credentials(request)
        where = client_network(request.client)
        user_id, stored = await verified(username, password, where)
        if s.store.users[user_id]["deactivated"]:
            raise deactivated(403)
        await s.commands.login_succeeded(username, where)
        if s.passwords.needs_rehash(stored):
            stored = await s.passwords.hash(password, where)
            await s.commands.rehash_password(user_id, stored)
        token = new_token()
        key = digest(token)
        expires = await s.commands.create_token(key, user_id, client_label(request), stored)
        s.just_seen(key)
        return json_response({"token": token, "expires_at": iso(expires), "user": s.store.users[user_id]})

    async def logout(request: Request) -> Response:
        _, key = await s.authenticate_session(request)
        await s.commands.revoke_token(key)  # the feed closes its websockets (4001)
        return no_content()

    async def me(request: Request) -> Response:
        return json_response({"user": await s.authenticate(request)})

    async def change_password(request: Request) -> Response:
        user, key = await s.authenticate_session(request)
        body = shapes.change_password.read(request)
        where = client_network(request.client)
        await verified(user["username"], body["password"], where)
        new_hash = await s.passwords.hash(body["new_password"], where)
        # Every other token stops working in the same commit; the feed closes their sockets (4001).
        await s.commands.set_password(user["id"], new_hash, key)
        return no_content()

    async def sessions(request: Request) -> Response:
        user, current = await s.authenticate_session(request)
        rows = await s.store.sessions(user["id"])
        return json_response({"sessions": [
            {"id": public_id, "created_at": iso(created), "last_seen_at": iso(seen or created),
             "client": client, "current": key == current}
            for public_id, created, seen, client, key in rows
        ]})

    async def end_session(request: Request) -> Response:
        user = await s.authenticate(request)
        session_id = request.params["session_id"]
        if len(session_id) > 64 or not await s.commands.end_session(user["id"], session_id):
            raise APIError(404, "not_found", "no such session")
        return no_content()

    async def close_account(request: Request) -> Response:
        user = await s.authenticate(request)
        body = shapes.close_account.read(request)
        await verified(user["username"], body["password"], client_network(request.client))
        await s.commands.deactivate(user["id"], bool(body["erase"]))
        return no_content()

    return [
        Route("POST", "/register", register),
        Route("POST", "/login", login),
        Route("POST", "/logout", bodyless(logout)),
        Route("GET", "/me", bodyless(me)),
        Route("DELETE", "/me", close_account),
        Route("PUT", "/me/password", change_password),
        Route("GET", "/me/sessions", bodyless(sessions)),
        Route("DELETE", "/me/sessions/{session_id}", bodyless(end_session)),
    ]
