"""Who may be in a room: invites, kicks, bans, and direct rooms.

Each call finds the room as the caller may see it (404 for a private room they are neither in
nor invited to) and hands the decision to `context.commands`, which checks roles on what is
committed (store/membership.py). Answers are read from the state the commit has updated."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from chat_trio.api import validate
from chat_trio.api.commands import not_a_member
from chat_trio.api.context import Context
from chat_trio.api.shapes import bodyless, shapes_for
from chat_trio.errors import APIError
from chat_trio.http.router import Handler, Route
from chat_trio.http.types import Request, Response, json_response, no_content
from chat_trio.store import membership
from chat_trio.store.membership import already_member
from chat_trio.store.records import RANK, Ban, iso
from chat_trio.store.views import invite_view, room_view


def routes(s: Context) -> list[Route]:
    shapes = shapes_for(s.config)
    state = s.store.state

    async def invite(request: Request) -> Response:
        user = await s.authenticate(request)
        room = s.visible_room(request.params["room_id"], user)
        target = s.user(shapes.target.read(request)["user_id"])
        await s.commands.invite(user["id"], room.id, target["id"])
        if target["id"] in room.members:  # a racing call: accepted at once
            raise already_member()
        if target["id"] not in room.invites:  # a racing call: declined or withdrawn at once
            raise APIError(404, "not_found", "the invite was withdrawn meanwhile")
        return json_response({"invite": invite_view(state, room, target["id"])}, 201)

    async def my_invites(request: Request) -> Response:
        user = await s.authenticate(request)
        rooms = [state.rooms[room_id] for room_id in state.invited.get(user["id"], [])]
        return json_response({"invites": [invite_view(state, room, user["id"], with_room=True)
                                          for room in rooms]})

    async def uninvite(request: Request) -> Response:
        user = await s.authenticate(request)
        room = s.visible_room(request.params["room_id"], user)
        await s.commands.uninvite(user["id"], room.id, request.params["user_id"])
        return no_content()

    def removal(action: Callable[[int, int, int, str | None], Awaitable[None]]) -> Handler:
        """A kick or a ban: `{user_id, reason?}` → 204."""

        async def remove(request: Request) -> Response:
            user = await s.authenticate(request)
            room = s.visible_room(request.params["room_id"], user)
            body = shapes.moderation.read(request)
            await action(user["id"], room.id, s.user(body["user_id"])["id"], body["reason"])
            return no_content()

        return remove

    async def unban(request: Request) -> Response:
        user = await s.authenticate(request)
        room = s.visible_room(request.params["room_id"], user)
        await s.commands.unban(user["id"], room.id, request.params["user_id"])
        return no_content()

    async def list_bans(request: Request) -> Response:
        user = await s.authenticate(request)
        room = s.visible_room(request.params["room_id"], user) if user["admin"] else (
            s.member_room(request.params["room_id"], user))
        role = "owner" if user["admin"] else room.role(user["id"])  # an admin acts as owner
        if role is None:
            raise not_a_member()
        if RANK[role] < RANK["moderator"]:
            raise APIError(403, "forbidden", "only a room's moderators may do that")
        rows = await s.store.readers.read(lambda c: membership.bans(c, room.id))
        users = state.users
        listing: list[Ban] = [{"user": users[uid], "banned_by": users[by], "reason": reason,
                               "created_at": iso(at)} for uid, by, reason, at in rows]
        return json_response({"bans": listing})

    async def direct(request: Request) -> Response:
        user = await s.authenticate(request)
        other = s.user(shapes.target.read(request)["user_id"])
        if other["id"] == user["id"]:
            raise validate.invalid("user_id", "must be another user")
        created = await s.commands.open_direct(user["id"], other["id"])
        room = state.rooms[state.directs[(min(user["id"], other["id"]), max(user["id"], other["id"]))]]
        return json_response({"room": room_view(state, room, user["id"])}, 201 if created else 200)

    return [
        Route("POST", "/rooms/{room_id:int}/invites", invite),
        Route("DELETE", "/rooms/{room_id:int}/invites/{user_id:int}", bodyless(uninvite)),
        Route("GET", "/invites", bodyless(my_invites)),
        Route("POST", "/rooms/{room_id:int}/kick", removal(s.commands.kick)),
        Route("POST", "/rooms/{room_id:int}/bans", removal(s.commands.ban)),
        Route("GET", "/rooms/{room_id:int}/bans", bodyless(list_bans)),
        Route("DELETE", "/rooms/{room_id:int}/bans/{user_id:int}", bodyless(unban)),
        Route("POST", "/direct", direct),
    ]
