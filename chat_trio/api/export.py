"""GET /me/export: the caller's data as one JSON document (the right of access and portability).

It is streamed: the head (user, memberships, invites) first, then the messages a page at a time,
each page read and encoded in a reader thread, so a user with 100,000 messages costs a page of
memory, not a document, and the event loop never encodes more than a page's worth of bytes."""

from __future__ import annotations

from collections.abc import AsyncGenerator

import orjson

from chat_trio.api.context import Context
from chat_trio.api.shapes import bodyless
from chat_trio.http.router import Route
from chat_trio.http.types import Request, Response
from chat_trio.store.records import JSON, User, iso, now_ms
from chat_trio.store.views import invite_view, room_view

PAGE = 1000  # messages read, encoded and sent at a time


def routes(s: Context) -> list[Route]:
    async def export(request: Request) -> Response:
        user = await s.authenticate(request)
        disposition = f'attachment; filename="chat_trio-{user["username"]}.json"'.encode()
        return Response(200, headers=[(b"content-disposition", disposition), (b"cache-control", b"no-store")],
                        stream=document(s, user))

    return [Route("GET", "/me/export", bodyless(export))]


def head(s: Context, user: User) -> JSON:
    """Everything but the messages: small, from memory."""
    state, me = s.store.state, user["id"]
    rooms = [state.rooms[i] for i in state.joined.get(me, [])]
    memberships = [{"room": room_view(state, room, me), "joined_at": iso(room.members[me]),
                    "role": room.roles.get(me, "member")} for room in rooms]
    invites = [invite_view(state, state.rooms[i], me, with_room=True) for i in state.invited.get(me, [])]
    return {"exported_at": iso(now_ms()), "user": user, "memberships": memberships, "invites": invites}


async def document(s: Context, user: User) -> AsyncGenerator[bytes, None]:
    """`{...head, "messages": [every message the user wrote, in id order, current text]}`."""
    yield orjson.dumps(head(s, user))[:-1] + b',"messages":['
    after, first = 0, True
    while True:
        encoded, last = await s.store.export_messages(user["id"], after, PAGE)
        if not last:
            break
        yield encoded if first else b"," + encoded
        after, first = last, False
    yield b"]}"
