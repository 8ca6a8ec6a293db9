"""Rooms: create, list, show, join, leave, members."""

from __future__ import annotations

from chat_trio.api import validate
from chat_trio.api.services import Services
from chat_trio.http.messages import HTTPError, Request, Response, json_response, no_content
from chat_trio.http.router import Route
from chat_trio.store.queries import Conflict
from chat_trio.store.records import iso


def routes(s: Services) -> list[Route]:
    c = s.config

    async def create(request: Request) -> Response:
        user = await s.authenticate(request)
        body = request.json()
        validate.only(body, ("name", "topic"))
        name = validate.text(validate.string(body, "name", max_len=c.room_name_max) or "", "name")
        topic = validate.string(body, "topic", min_len=0, max_len=c.topic_max, required=False) or ""
        validate.text(topic, "topic")
        if not name.strip():
            raise validate.invalid("name", "must not be blank")
        if s.store.room_name_taken(name):
            raise HTTPError(409, "room_name_taken", "a room with that name exists")
        s.check_room_create_rate(user)  # valid and free: only rooms that would be created count
        try:
            room = await s.store.create_room(user["id"], name, topic)
        except Conflict:
            raise HTTPError(409, "room_name_taken", "a room with that name exists") from None
        return json_response({"room": room.json()}, 201)

    async def list_rooms(request: Request) -> Response:
        user = await s.authenticate(request)
        joined = validate.query_bool(request.query, "joined")
        rooms = [room.json() for room in s.store.rooms.values()
                 if not joined or user["id"] in room.members]
        return json_response({"rooms": rooms})

    async def show(request: Request) -> Response:
        await s.authenticate(request)
        return json_response({"room": s.room(request.params["room_id"]).json()})

    async def join(request: Request) -> Response:
        user = await s.authenticate(request)
        room = s.room(request.params["room_id"])
        await s.store.join(room, user["id"])
        return json_response({"room": room.json()})

    async def leave(request: Request) -> Response:
        user = await s.authenticate(request)
        room = s.room(request.params["room_id"])
        await s.store.leave(room, user["id"])
        s.hub.user_left(room.id, user["id"])
        return no_content()

    async def members(request: Request) -> Response:
        user = await s.authenticate(request)
        room = s.member_room(request.params["room_id"], user)
        listing = [
            {"user": s.store.users[uid], "joined_at": iso(joined), "online": s.hub.is_online(uid)}
            for uid, joined in sorted(room.members.items(), key=lambda m: (m[1], m[0]))
        ]
        return json_response({"members": listing})

    return [
        Route("POST", "/rooms", create),
        Route("GET", "/rooms", list_rooms),
        Route("GET", "/rooms/{room_id:int}", show),
        Route("POST", "/rooms/{room_id:int}/join", join),
        Route("POST", "/rooms/{room_id:int}/leave", leave),
        Route("GET", "/rooms/{room_id:int}/members", members),
    ]
