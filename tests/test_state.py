"""The in-memory State (chat_trio/store/state.py) and what a worker relies on: a state loaded
from sqlite, then fed commits it may already have seen, ends up as if it saw each once."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import trio

from chat_trio.api.commands import LocalCommands
from chat_trio.store.records import Message
from chat_trio.store.sqlite import connect
from chat_trio.store.state import State
from tests.test_commands import running_store

RECENT = 5  # small, so the recent caches are trimmed during the workload


def load(db: str) -> State:
    conn = connect(db, readonly=True)
    try:
        state = State(RECENT)
        state.load(conn)
        return state
    finally:
        conn.close()


def view(state: State) -> dict[str, Any]:
    """What a reader of the state sees (not the token cache, which only holds tokens seen)."""
    return {
        "users": state.users, "user_ids": state.user_ids, "room_ids": state.room_ids,
        "room_order": state.room_order, "joined": state.joined,
        "rooms": {room_id: (room.name, room.topic, room.created_by, room.created_at, room.last_seq,
                            room.members) for room_id, room in state.rooms.items()},
    }


def full_view(state: State) -> dict[str, Any]:
    recent: dict[int, list[Message]] = {room_id: room.recent for room_id, room in state.rooms.items()}
    return {**view(state), "recent": recent, "messages_committed": state.messages_committed}


async def _some_of_everything(commands: LocalCommands, round_: int, *, user_ids: list[int]) -> None:
    """Users, rooms, joins, leaves, rejoins, messages, tokens issued and revoked."""
    for n in range(2):
        user_ids.append((await commands.create_user(f"u{round_}-{n}", "hash"))["id"])
    owner, other = user_ids[-2], user_ids[0]
    room_id = await commands.create_room(owner, f"room {round_}", "topic")
    await commands.join(room_id, other)
    for n in range(RECENT + 2):
        await (await commands.submit_message(owner if n % 2 else other, room_id, f"m{n}", None))()
    await commands.leave(room_id, other)
    await commands.join(room_id, other)
    await commands.leave(room_id, owner)
    if round_:  # a room of an earlier round gets more messages and members
        await commands.join(room_id - 1, owner)
        await (await commands.submit_message(owner, room_id - 1, "late", f"t{round_}"))()
    digest = bytes([round_]) * 32
    await commands.create_token(digest, owner)
    await commands.create_token(bytes([round_ + 100]) * 32, owner)
    await commands.revoke_token(digest)


async def test_a_loaded_state_replaying_commits_it_already_has_ends_as_if_it_saw_each_once(
    tmp_path: Path,
) -> None:
    with trio.fail_after(30):
        async with running_store(tmp_path, recent_cache=RECENT) as (store, commits):
            commands = LocalCommands(store.config, store)
            user_ids: list[int] = []
            for round_ in range(3):
                await _some_of_everything(commands, round_, user_ids=user_ids)
            seen = len(commits)  # a worker loads here, having subscribed some commits earlier
            replayed, fresh = load(store.config.db), load(store.config.db)
            for round_ in range(3, 5):
                await _some_of_everything(commands, round_, user_ids=user_ids)
            live = store.state

    assert seen > 40
    for commit in commits[seen - 40:]:  # every kind of change among the 40 already seen
        replayed.apply(commit)
    for commit in commits[seen:]:
        fresh.apply(commit)
    assert full_view(replayed) == full_view(fresh)
    assert view(replayed) == view(live)
    assert replayed.tokens.items() <= live.tokens.items()
    assert replayed.messages_committed == sum(
        1 for commit in commits[seen:] for change in commit.changes if change.kind == "message")

    before = copy.deepcopy(full_view(fresh))
    for commit in commits:  # everything again, from the first commit on: nothing changes
        fresh.apply(commit)
    assert full_view(fresh) == before
