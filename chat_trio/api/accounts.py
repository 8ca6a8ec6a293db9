"""POST /register, POST /login, POST /logout, GET /me."""

from __future__ import annotations

from chat_trio.api.context import WWW_AUTHENTICATE, Context, bearer_token, rate_limited
from chat_trio.api.shapes import bodyless, shapes_for
from chat_trio.errors import APIError
from chat_trio.http.router import Route
from chat_trio.http.types import Request, Response, json_response, no_content
from chat_trio.security.ratelimit import client_network
from chat_trio.security.tokens import digest, new_token
from chat_trio.store.queries import Conflict
from chat_trio.store.records import iso


def routes(s: Context) -> list[Route]:
    c = s.config
    shapes = shapes_for(c)

    def credentials(request: Request) -> tuple[str, str]:
        body = shapes.credentials.read(request)
        return body["username"], body["password"]

    async def register(request: Request) -> Response:
        username, password = credentials(request)
        if s.store.username_taken(username):
            raise APIError(409, "username_taken", "that username is taken")
        # Every registration that gets this far costs a password hash: count them per address.
        where = client_network(request.client)
        wait = s.registrations.retry_after(where)
        if wait:
            raise rate_limited(wait)
        s.registrations.add(where)
        hashed = await s.passwords.hash(password, where)
        try:
            user = await s.store.create_user(username, hashed)
        except Conflict:
            raise APIError(409, "username_taken", "that username is taken") from None
        return json_response({"user": user}, 201)

    async def login(request: Request) -> Response:
        username, password = credentials(request)
        name_key, where = username.lower(), client_network(request.client)
        wait = s.logins.check(name_key, where)  # the policy: chat_trio/security/logins.py
        if wait:
            raise rate_limited(wait)
        found = await s.store.password_hash(username)
        ok = await s.passwords.verify(found[1] if found else None, password, where)
        if not ok or found is None:
            s.logins.failed(name_key, where, account=found is not None)
            raise APIError(401, "invalid_credentials", "wrong username or password",
                            headers=[WWW_AUTHENTICATE])
        user_id, stored = found
        wait = s.logins.succeeded(name_key, where)
        if wait:
            raise rate_limited(wait)
        if s.passwords.needs_rehash(stored):
            await s.store.rehash_password(user_id, await s.passwords.hash(password, where))
        token = new_token()
        expires = await s.store.create_token(digest(token), user_id, int(c.token_ttl * 1000),
                                             keep=c.max_tokens_per_user)
        return json_response({"token": token, "expires_at": iso(expires), "user": s.store.users[user_id]})

    async def logout(request: Request) -> Response:
        await s.authenticate(request)
        token = bearer_token(request)
        assert token is not None
        await s.store.revoke_token(digest(token))  # the feed closes its websockets (4001)
        return no_content()

    async def me(request: Request) -> Response:
        return json_response({"user": await s.authenticate(request)})

    return [
        Route("POST", "/register", register),
        Route("POST", "/login", login),
        Route("POST", "/logout", bodyless(logout)),
        Route("GET", "/me", bodyless(me)),
    ]
