"""The API objects built from the in-memory state as one viewer sees them (rooms, members,
invites), shared by the REST handlers and the hub's live frames so both show the same shape."""

from __future__ import annotations

from chat_trio.store.records import Invite, Member, Room, RoomState, iso
from chat_trio.store.state import State


def room_view(state: State, room: RoomState, viewer: int) -> Room:
    """The room as `viewer` sees it: their role, a direct room named after the other user."""
    return room.json(viewer, state.users)


def member_view(state: State, room: RoomState, user_id: int, online: bool) -> Member:
    return {"user": state.users[user_id], "joined_at": iso(room.members[user_id]), "online": online,
            "role": room.roles.get(user_id, "member")}


def invite_view(state: State, room: RoomState, user_id: int, with_room: bool = False) -> Invite:
    """A pending invite of `user_id` to `room` (and the room as the invitee sees it)."""
    invited_by, created_at = room.invites[user_id]
    invite: Invite = {"room_id": room.id, "user": state.users[user_id], "invited_by": state.users[invited_by],
                      "created_at": iso(created_at)}
    if with_room:
        invite["room"] = room_view(state, room, user_id)
    return invite
