"""Sending (idempotent by txn_id) and history paging with an optional long-poll."""

from __future__ import annotations

import trio

from chat_trio.api import validate
from chat_trio.api.context import Context
from chat_trio.api.shapes import bodyless, shapes_for
from chat_trio.http.router import Route
from chat_trio.http.types import Request, Response, json_response


def page_bounds(last_seq: int, *, before: int | None, after: int | None, limit: int) -> tuple[int, int, bool]:
    """The seq range [first, last] of a history page and whether more lie beyond it.

    Seqs are dense (1..last_seq), so every page is a plain range."""
    if after is not None:
        first, last = after + 1, min(last_seq, after + limit)
        return first, last, last < last_seq
    end = last_seq if before is None else min(before - 1, last_seq)
    first = max(1, end - limit + 1)
    return first, end, first > 1


def routes(s: Context) -> list[Route]:
    shapes = shapes_for(s.config)

    async def send(request: Request) -> Response:
        user = await s.authenticate(request)
        room = s.member_room(request.params["room_id"], user)
        body = shapes.new_message.read(request)
        committed = await s.commands.submit_message(user["id"], room.id, body["text"], body["txn_id"])
        message, created = await committed()
        return json_response({"message": message}, 201 if created else 200)

    async def history(request: Request) -> Response:
        user = await s.authenticate(request)
        room = s.member_room(request.params["room_id"], user)
        query = shapes.history.read(request)
        before, after, limit, wait = query["before"], query["after"], query["limit"], query["wait"]
        if before is not None and after is not None:
            raise validate.invalid("before", "use either before or after, not both")
        if wait is not None and after is None:
            raise validate.invalid("wait", "only allowed with after")
        if wait and after is not None and room.last_seq <= after:
            with trio.move_on_after(wait):
                while room.last_seq <= after and not s.hub.closing:
                    await s.hub.wait_for_message(room.id)
            room = s.member_room(room.id, user)  # removed meanwhile: 403, or 404 if now hidden
        first, last, more = page_bounds(room.last_seq, before=before, after=after, limit=limit)
        messages = await s.store.messages(room, first, last)
        return json_response({"messages": messages, "has_more": more})

    return [
        Route("POST", "/rooms/{room_id:int}/messages", send),
        Route("GET", "/rooms/{room_id:int}/messages", bodyless(history)),
    ]
