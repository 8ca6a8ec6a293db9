"""Rooms: create, list, show, change, join, leave, members and their roles."""

from __future__ import annotations

from chat_trio.api.commands import room_name_taken
from chat_trio.api.context import Context
from chat_trio.api.shapes import bodyless, shapes_for
from chat_trio.errors import APIError
from chat_trio.http.router import Route
from chat_trio.http.types import Request, Response, json_response, no_content
from chat_trio.store.records import RoomState, User
from chat_trio.store.views import member_view, room_view


def routes(s: Context) -> list[Route]:
    shapes = shapes_for(s.config)
    state = s.store.state

    def answer(room: RoomState, user: User, status: int = 200) -> Response:
        return json_response({"room": room_view(state, room, user["id"])}, status)

    async def create(request: Request) -> Response:
        user = await s.authenticate(request)
        body = shapes.new_room.read(request)
        name, topic, visibility = body["name"], body["topic"] or "", body["visibility"] or "public"
        if visibility == "public" and s.store.room_name_taken(name):
            raise room_name_taken()
        room_id = await s.commands.create_room(user["id"], name, topic, visibility)
        return answer(s.room(room_id), user, 201)

    async def list_rooms(request: Request) -> Response:
        user = await s.authenticate(request)
        query = shapes.list_rooms.read(request)
        page, has_more = s.store.rooms_page(user["id"], query["after"] or 0, query["limit"], query["joined"])
        return json_response({"rooms": [room_view(state, room, user["id"]) for room in page],
                              "has_more": has_more})

    async def show(request: Request) -> Response:
        user = await s.authenticate(request)
        return answer(s.visible_room(request.params["room_id"], user), user)

    async def update(request: Request) -> Response:
        user = await s.authenticate(request)
        room = s.visible_room(request.params["room_id"], user)
        body = shapes.room_update.read(request)
        await s.commands.update_room(user["id"], room.id, body["name"], body["topic"], body["visibility"])
        return answer(room, user)

    async def join(request: Request) -> Response:
        user = await s.authenticate(request)
        room = s.visible_room(request.params["room_id"], user)
        await s.commands.join(room.id, user["id"])
        return answer(room, user)

    async def leave(request: Request) -> Response:
        user = await s.authenticate(request)
        room = s.visible_room(request.params["room_id"], user)
        await s.commands.leave(room.id, user["id"])  # the feed ends the user's subscriptions to it
        return no_content()

    async def members(request: Request) -> Response:
        user = await s.authenticate(request)
        room = s.member_room(request.params["room_id"], user)
        listing = [member_view(state, room, uid, s.hub.is_online(uid))
                   for uid, _ in sorted(room.members.items(), key=lambda m: (m[1], m[0]))]
        return json_response({"members": listing})

    async def set_role(request: Request) -> Response:
        user = await s.authenticate(request)
        room = s.visible_room(request.params["room_id"], user)
        target = s.user(request.params["user_id"])
        role = shapes.role.read(request)["role"]
        await s.commands.set_role(user["id"], room.id, target["id"], role)
        if target["id"] not in room.members:  # removed meanwhile by a racing call
            raise APIError(404, "not_found", "that user is not a member of this room")
        member = member_view(state, room, target["id"], s.hub.is_online(target["id"]))
        return json_response({"member": member})

    return [
        Route("POST", "/rooms", create),
        Route("GET", "/rooms", bodyless(list_rooms)),
        Route("GET", "/rooms/{room_id:int}", bodyless(show)),
        Route("PATCH", "/rooms/{room_id:int}", update),
        Route("POST", "/rooms/{room_id:int}/join", bodyless(join)),
        Route("POST", "/rooms/{room_id:int}/leave", bodyless(leave)),
        Route("GET", "/rooms/{room_id:int}/members", bodyless(members)),
        Route("PUT", "/rooms/{room_id:int}/members/{user_id:int}/role", set_role),
    ]
