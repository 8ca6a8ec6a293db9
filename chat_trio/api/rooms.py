"""Rooms: create, list, show, join, leave, members."""

from __future__ import annotations

from chat_trio.api.commands import room_name_taken
from chat_trio.api.context import Context
from chat_trio.api.shapes import bodyless, shapes_for
from chat_trio.http.router import Route
from chat_trio.http.types import Request, Response, json_response, no_content
from chat_trio.store.records import Member, iso


def routes(s: Context) -> list[Route]:
    shapes = shapes_for(s.config)

    async def create(request: Request) -> Response:
        user = await s.authenticate(request)
        body = shapes.new_room.read(request)
        name, topic = body["name"], body["topic"] or ""
        if s.store.room_name_taken(name):
            raise room_name_taken()
        room_id = await s.commands.create_room(user["id"], name, topic)
        return json_response({"room": s.room(room_id).json(user["id"])}, 201)

    async def list_rooms(request: Request) -> Response:
        user = await s.authenticate(request)
        query = shapes.list_rooms.read(request)
        page, has_more = s.store.rooms_page(query["after"] or 0, query["limit"],
                                            user["id"] if query["joined"] else None)
        return json_response({"rooms": [room.json(user["id"]) for room in page], "has_more": has_more})

    async def show(request: Request) -> Response:
        user = await s.authenticate(request)
        return json_response({"room": s.room(request.params["room_id"]).json(user["id"])})

    async def join(request: Request) -> Response:
        user = await s.authenticate(request)
        room = s.room(request.params["room_id"])
        await s.commands.join(room.id, user["id"])
        return json_response({"room": room.json(user["id"])})

    async def leave(request: Request) -> Response:
        user = await s.authenticate(request)
        room = s.room(request.params["room_id"])
        await s.commands.leave(room.id, user["id"])  # the feed ends the user's subscriptions to it
        return no_content()

    async def members(request: Request) -> Response:
        user = await s.authenticate(request)
        room = s.member_room(request.params["room_id"], user)
        listing: list[Member] = [
            {"user": s.store.users[uid], "joined_at": iso(joined), "online": s.hub.is_online(uid)}
            for uid, joined in sorted(room.members.items(), key=lambda m: (m[1], m[0]))
        ]
        return json_response({"members": listing})

    return [
        Route("POST", "/rooms", create),
        Route("GET", "/rooms", bodyless(list_rooms)),
        Route("GET", "/rooms/{room_id:int}", bodyless(show)),
        Route("POST", "/rooms/{room_id:int}/join", bodyless(join)),
        Route("POST", "/rooms/{room_id:int}/leave", bodyless(leave)),
        Route("GET", "/rooms/{room_id:int}/members", bodyless(members)),
    ]
