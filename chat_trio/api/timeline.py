"""Edits and deletes (PATCH / DELETE /rooms/{id}/messages/{seq}), read markers
(PUT /rooms/{id}/read) and full-text search (GET /search)."""

from __future__ import annotations

from chat_trio.api import validate
from chat_trio.api.context import Context
from chat_trio.api.shapes import bodyless, shapes_for
from chat_trio.http.router import Route
from chat_trio.http.types import Request, Response, json_response
from chat_trio.store.search import highlights, words

MAX_WORDS = 16  # each word is one index lookup; more make one request cost many


def routes(s: Context) -> list[Route]:
    shapes = shapes_for(s.config)

    async def edit(request: Request) -> Response:
        user = await s.authenticate(request)
        room = s.member_room(request.params["room_id"], user)
        body = shapes.new_message.read(request)
        entry = await s.commands.edit_message(user["id"], room.id, request.params["seq"], body["text"],
                                              body["txn_id"])
        return json_response({"message": entry})

    async def delete(request: Request) -> Response:
        user = await s.authenticate(request)
        room = s.visible_room(request.params["room_id"], user)  # an admin need not be a member
        entry = await s.commands.delete_message(user["id"], room.id, request.params["seq"])
        return json_response({"message": entry})

    async def mark_read(request: Request) -> Response:
        user = await s.authenticate(request)
        room = s.member_room(request.params["room_id"], user)
        seq = shapes.read_marker.read(request)["seq"]
        read_seq = await s.commands.mark_read(user["id"], room.id, seq)  # the feed tells their websockets
        return json_response({"read_seq": read_seq})

    async def search(request: Request) -> Response:
        user = await s.authenticate(request)
        query = shapes.search.read(request)
        if query["room_id"] is not None:
            room_ids = [s.member_room(query["room_id"], user).id]
        else:
            room_ids = list(s.store.state.joined.get(user["id"], ()))
        found = words(query["q"])
        if len(found) > MAX_WORDS:
            raise validate.invalid("q", f"at most {MAX_WORDS} different words")
        limit = query["limit"]
        messages = []
        if found and room_ids:  # a query of punctuation alone finds nothing
            messages = await s.store.search(found, room_ids, query["before"], limit + 1)
        results = [{"message": m, "highlights": highlights(m["text"], found)} for m in messages[:limit]]
        return json_response({"results": results, "has_more": len(messages) > limit})

    return [
        Route("PATCH", "/rooms/{room_id:int}/messages/{seq:int}", edit),
        Route("DELETE", "/rooms/{room_id:int}/messages/{seq:int}", bodyless(delete)),
        Route("PUT", "/rooms/{room_id:int}/read", mark_read),
        Route("GET", "/search", bodyless(search)),
    ]
