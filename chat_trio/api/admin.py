"""/admin/*: what server operators do (Synapse's admin API, Mattermost's system console):
list, create, reset, promote and deactivate users, and list every room. Admins call it with
their token; the local admin socket calls it without one (`Request.operator`). Everyone else
gets 403."""

from __future__ import annotations

import os

import trio

from chat_trio.api.commands import username_taken
from chat_trio.api.context import Context
from chat_trio.api.shapes import NO_BODY, Body, Query, bodyless, shapes_for
from chat_trio.errors import APIError
from chat_trio.http.router import Route
from chat_trio.http.types import Request, Response, json_response, no_content
from chat_trio.security.ratelimit import client_network
from chat_trio.store.records import JSON, User, iso
from chat_trio.store.views import room_view


def routes(s: Context) -> list[Route]:
    shapes = shapes_for(s.config)

    async def admitted(request: Request, shape: Body | Query = NO_BODY, *, local: bool = False) -> JSON:
        """The call's body or query once the caller may make it: 401 without a valid token, then
        400 / 415 / 422 for the input, then 403 unless the caller is an admin (with `local`, only
        the admin socket may). The admin socket needs no token."""
        user = None if request.operator else await s.authenticate(request)
        values = shape.read(request)
        if user is not None and (local or not user["admin"]):
            raise APIError(403, "forbidden", "backups are made over the local admin socket" if local
                           else "only server admins may do this")
        return values

    def target(request: Request) -> User:
        user = s.store.users.get(request.params["user_id"])
        if user is None:
            raise APIError(404, "not_found", "no such user")
        return user

    async def list_users(request: Request) -> Response:
        query = await admitted(request, shapes.list_users)
        page, has_more = await s.store.users_page(query["q"] or "", query["after"] or 0, query["limit"])
        return json_response({
            "users": [{**user, "last_seen_at": None if seen is None else iso(seen)} for user, seen in page],
            "has_more": has_more,
        })

    async def create_user(request: Request) -> Response:
        body = await admitted(request, shapes.new_user)
        if s.store.username_taken(body["username"]):
            raise username_taken()
        password_hash = await s.passwords.hash(body["password"], client_network(request.client))
        user = await s.commands.create_user(body["username"], password_hash, bool(body["admin"]))
        return json_response({"user": user}, 201)

    async def reset_password(request: Request) -> Response:
        body = await admitted(request, shapes.reset_password)
        user = target(request)
        password_hash = await s.passwords.hash(body["new_password"], client_network(request.client))
        await s.commands.set_password(user["id"], password_hash)  # every token: the feed closes (4001)
        return no_content()

    async def set_admin(request: Request) -> Response:
        body = await admitted(request, shapes.set_admin)
        user = target(request)
        return json_response({"user": await s.commands.set_admin(user["id"], body["admin"])})

    async def deactivate(request: Request) -> Response:
        body = await admitted(request, shapes.deactivate)
        user = target(request)
        await s.commands.deactivate(user["id"], bool(body["erase"]))
        return no_content()

    async def list_rooms(request: Request) -> Response:
        query = await admitted(request, shapes.list_all_rooms)
        page, has_more = s.store.every_room_page(query["after"] or 0, query["limit"])
        viewer = 0 if request.operator else (await s.authenticate(request))["id"]
        return json_response({"rooms": [room_view(s.store.state, room, viewer) for room in page],
                              "has_more": has_more})

    async def backup(request: Request) -> Response:
        """A consistent online copy of the database (sqlite's backup API), written by the server
        to a path on its own machine: so only over the local admin socket, never over TCP."""
        path = (await admitted(request, shapes.backup, local=True))["path"]
        if not os.path.isabs(path):
            raise APIError(422, "validation_failed", "path: must be absolute", extra={"field": "path"})
        try:
            await s.store.backup(path)
        except FileExistsError:
            raise APIError(409, "conflict", f"{path} exists; choose a new file") from None
        except OSError as exc:
            raise APIError(422, "validation_failed", f"path: cannot write there ({exc.strerror})",
                           extra={"field": "path"}) from None
        return json_response({"path": path, "bytes": await trio.to_thread.run_sync(os.path.getsize, path)})

    return [
        Route("GET", "/admin/users", bodyless(list_users)),
        Route("POST", "/admin/users", create_user),
        Route("PUT", "/admin/users/{user_id:int}/password", reset_password),
        Route("PUT", "/admin/users/{user_id:int}/admin", set_admin),
        Route("POST", "/admin/users/{user_id:int}/deactivate", deactivate),
        Route("GET", "/admin/rooms", bodyless(list_rooms)),
        Route("POST", "/admin/backup", backup),
    ]
