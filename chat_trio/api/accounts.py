"""POST /register, POST /login, POST /logout, GET /me."""

from __future__ import annotations

from chat_trio.api.commands import username_taken
from chat_trio.api.context import WWW_AUTHENTICATE, Context, bearer_token
from chat_trio.api.shapes import bodyless, shapes_for
from chat_trio.errors import APIError
from chat_trio.http.router import Route
from chat_trio.http.types import Request, Response, json_response, no_content
from chat_trio.security.ratelimit import client_network
from chat_trio.security.tokens import digest, new_token
from chat_trio.store.records import iso


def routes(s: Context) -> list[Route]:
    shapes = shapes_for(s.config)

    def credentials(request: Request) -> tuple[str, str]:
        body = shapes.credentials.read(request)
        return body["username"], body["password"]

    async def register(request: Request) -> Response:
        username, password = credentials(request)
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
        await s.commands.login_allowed(username, where)  # the policy: chat_trio/security/logins.py
        found = await s.store.password_hash(username)
        ok = await s.passwords.verify(found[1] if found else None, password, where)
        if not ok or found is None:
            await s.commands.login_failed(username, where, found is not None)
            raise APIError(401, "invalid_credentials", "wrong username or password",
                            headers=[WWW_AUTHENTICATE])
        user_id, stored = found
        await s.commands.login_succeeded(username, where)
        if s.passwords.needs_rehash(stored):
            await s.commands.rehash_password(user_id, await s.passwords.hash(password, where))
        token = new_token()
        expires = await s.commands.create_token(digest(token), user_id)
        return json_response({"token": token, "expires_at": iso(expires), "user": s.store.users[user_id]})

    async def logout(request: Request) -> Response:
        await s.authenticate(request)
        token = bearer_token(request)
        assert token is not None
        await s.commands.revoke_token(digest(token))  # the feed closes its websockets (4001)
        return no_content()

    async def me(request: Request) -> Response:
        return json_response({"user": await s.authenticate(request)})

    return [
        Route("POST", "/register", register),
        Route("POST", "/login", login),
        Route("POST", "/logout", bodyless(logout)),
        Route("GET", "/me", bodyless(me)),
    ]
