"""The Commands seam (chat_trio/api/commands.py): the in-process implementation has exactly the
Protocol's methods and signatures, every argument and result is plain data that can cross a
process boundary, and it does not trust its caller's view of rooms and memberships."""

from __future__ import annotations

import inspect
import typing
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from chat_trio.api.commands import Commands, LocalCommands
from chat_trio.cluster.remote import RemoteCommands
from chat_trio.errors import APIError
from chat_trio.store import membership
from chat_trio.store.changes import Commit, MessageCommitted
from chat_trio.store.records import Message, User, now_ms
from chat_trio.store.store import Store
from tests.helpers import make_config

COMMANDS = {"check_writable", "allow_registration", "create_user", "login_allowed", "login_failed",
            "login_succeeded", "rehash_password", "create_token", "revoke_token", "create_room", "join",
            "leave", "submit_message", "update_room", "invite", "uninvite", "kick", "ban", "unban",
            "set_role", "open_direct",
            "set_password", "end_session", "touch_token", "set_admin", "deactivate", "mark_read",
            "edit_message", "delete_message"}
# What may cross a process boundary: JSON values, User/Message dicts, digests (as hex).
PLAIN: set[Any] = {int, str, bool, bytes, str | None, bytes | None, User, Message, type(None)}
SUBMITTED = Callable[[], Awaitable[tuple[Message, bool]]]  # submit_message's two-step result


def protocol_mismatches(implementation: type, plumbing: frozenset[str] = frozenset()) -> list[str]:
    """How `implementation`'s public methods differ from the Commands Protocol (empty: none);
    `plumbing` names public methods it may have besides. Annotations are compared resolved, so an
    implementation in another module is checked too."""
    problems = []
    public = {name for name in dir(implementation)
              if not name.startswith("_") and callable(getattr(implementation, name))} - plumbing
    if public != COMMANDS:
        problems.append(f"public methods differ: {sorted(public ^ COMMANDS)}")
    for name in sorted(COMMANDS & public):
        method = getattr(implementation, name)
        if not inspect.iscoroutinefunction(method):
            problems.append(f"{name} is not async")
        want = inspect.signature(getattr(Commands, name), eval_str=True)
        got = inspect.signature(method, eval_str=True)
        if got != want:
            problems.append(f"{name}{got} != {name}{want}")
    return problems


def test_the_protocol_has_the_designed_commands_with_plain_data_only() -> None:
    methods = {name for name, value in vars(Commands).items() if inspect.iscoroutinefunction(value)}
    assert methods == COMMANDS
    for name in COMMANDS:
        hints = typing.get_type_hints(getattr(Commands, name))
        result = hints.pop("return")
        assert set(hints.values()) <= PLAIN, name
        assert result in PLAIN or (name == "submit_message" and result == SUBMITTED), name


def test_local_commands_match_the_protocol_exactly() -> None:
    assert protocol_mismatches(LocalCommands) == []


def test_remote_commands_match_the_protocol_exactly() -> None:
    """A worker's commands take the same arguments and give the same results as the
    supervisor's LocalCommands that carry them out."""
    assert protocol_mismatches(RemoteCommands, frozenset({"on_reply", "on_health", "connection_lost"})) == []


def _as_commands(local: LocalCommands) -> Commands:
    return local  # mypy checks the structural match too


class _Drifted(LocalCommands):
    async def join(self, room_id: int, user_id: int, quietly: bool = False) -> None: ...

    def extra(self) -> None: ...


def test_a_drifted_implementation_is_named() -> None:
    problems = protocol_mismatches(_Drifted)
    assert problems == ["public methods differ: ['extra']",
                        "join(self, room_id: int, user_id: int, quietly: bool = False) -> None"
                        " != join(self, room_id: int, user_id: int) -> None"]


@asynccontextmanager
async def running_store(tmp_path: Path, **overrides: object) -> AsyncIterator[tuple[Store, list[Commit]]]:
    """A Store on a fresh database with its writer running, and the commits its feed applied."""
    store = await Store.open(make_config(tmp_path, **overrides))
    commits: list[Commit] = []
    store.feed.subscribe(commits.append)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(store.writer.run)
            yield store, commits
            nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            await store.close()


async def test_local_commands_check_rooms_and_membership_themselves(tmp_path: Path) -> None:
    """The supervisor serves workers whose view may lag: an unknown room is 404 and a sender who
    is not a member is 403, whatever the caller checked; nothing is written."""
    with trio.fail_after(20):
        async with running_store(tmp_path) as (store, commits):
            commands = LocalCommands(store.config, store)
            owner = await commands.create_user("owner", "hash")
            stranger = await commands.create_user("stranger", "hash")
            room_id = await commands.create_room(owner["id"], "lobby", "")
            before = len(commits)
            for call in (commands.join(room_id + 1, stranger["id"]), commands.leave(room_id + 1, owner["id"]),
                         commands.submit_message(owner["id"], room_id + 1, "hi", None)):
                with pytest.raises(APIError) as missing:
                    await call
                assert (missing.value.status, missing.value.code) == (404, "not_found")
            with pytest.raises(APIError) as refused:
                await commands.submit_message(stranger["id"], room_id, "hi", None)
            assert (refused.value.status, refused.value.code) == (403, "forbidden")
            assert len(commits) == before
            message, created = await (await commands.submit_message(owner["id"], room_id, "hi", "t1"))()
            assert created and message["seq"] == 1 and message["author"] == {"id": owner["id"],
                                                                             "username": "owner"}


async def test_a_retried_send_over_the_rate_gets_its_original_and_a_new_one_is_refused(
    tmp_path: Path,
) -> None:
    with trio.fail_after(20):
        async with running_store(tmp_path, send_rate=0.001, send_burst=1) as (store, _):
            commands = LocalCommands(store.config, store)
            user = await commands.create_user("ann", "hash")
            room_id = await commands.create_room(user["id"], "lobby", "")
            first, created = await (await commands.submit_message(user["id"], room_id, "one", "t1"))()
            assert created
            again, created = await (await commands.submit_message(user["id"], room_id, "one", "t1"))()
            assert (again, created) == (first, False)
            with pytest.raises(APIError) as limited:
                await commands.submit_message(user["id"], room_id, "two", "t2")
            assert limited.value.status == 429


async def test_a_login_that_raced_a_password_change_or_a_deactivation_gets_no_token(tmp_path: Path) -> None:
    """The token of a login whose password check saw the old password (or an open account) is
    refused in the writer, so no token outlives the revocation that committed meanwhile."""
    with trio.fail_after(20):
        async with running_store(tmp_path) as (store, _):
            commands = LocalCommands(store.config, store)
            user = await commands.create_user("ann", "old hash")
            await commands.set_password(user["id"], "new hash")
            with pytest.raises(APIError) as stale:
                await commands.create_token(b"\x01" * 32, user["id"], "", "old hash")
            assert (stale.value.status, stale.value.code) == (401, "invalid_credentials")
            await commands.create_token(b"\x02" * 32, user["id"], "", "new hash")
            await commands.deactivate(user["id"], False)
            with pytest.raises(APIError) as closed:
                await commands.create_token(b"\x03" * 32, user["id"], "", "new hash")
            assert (closed.value.status, closed.value.code) == (403, "deactivated")
            assert await store.token_user(b"\x02" * 32) is None  # revoked by the deactivation


async def test_room_administration_is_decided_on_what_is_committed(tmp_path: Path) -> None:
    """A worker's view of roles, bans and invites may lag, and a request may race another: the
    supervisor's LocalCommands decide on the committed rows, whatever the caller checked. An
    outsider is refused (403 on a public room, 404 on a private one or a missing one) and
    nothing is written."""
    with trio.fail_after(20):
        async with running_store(tmp_path) as (store, commits):
            commands = LocalCommands(store.config, store)
            owner = await commands.create_user("owner", "hash")
            member = await commands.create_user("member", "hash")
            stranger = await commands.create_user("stranger", "hash")
            public = await commands.create_room(owner["id"], "lobby", "")
            private = await commands.create_room(owner["id"], "secret", "", "private")
            await commands.join(public, member["id"])
            before = len(commits)
            for room_id, actor, status in ((public, stranger, 403), (public, member, 403),
                                           (private, stranger, 404), (private + 1, owner, 404)):
                who, target = actor["id"], member["id"] if actor is not member else owner["id"]
                for call in (commands.kick(who, room_id, target, None),
                             commands.ban(who, room_id, target, "x"), commands.unban(who, room_id, target),
                             commands.invite(who, room_id, stranger["id"]),
                             commands.set_role(who, room_id, target, "moderator"),
                             commands.update_room(who, room_id, "taken", None, None)):
                    with pytest.raises(APIError) as refused:
                        await call
                    assert refused.value.status == status, (room_id, actor["username"], refused.value)
            with pytest.raises(APIError) as hidden:
                await commands.join(private, stranger["id"])
            assert (hidden.value.status, hidden.value.code) == (404, "not_found")
            assert len(commits) == before
            assert await commands.open_direct(owner["id"], member["id"]) is True
            assert await commands.open_direct(member["id"], owner["id"]) is False


async def queue_a_kick(store: Store) -> tuple[LocalCommands, User, User, int, Any]:
    """An owner and bob in a room, and bob's kick handed to the writer but not yet committed: a
    send checked against the state now passes the membership check and queues behind the kick.
    Returns (commands, owner, bob, room id, the kick's pending write)."""
    commands = LocalCommands(store.config, store)
    owner = await commands.create_user("owner", "hash")
    bob = await commands.create_user("bob", "hash")
    room_id = await commands.create_room(owner["id"], "lobby", "")
    await commands.join(room_id, bob["id"])
    kick = await store.writer.submit_changes(
        lambda c: membership.kick(c, room_id, owner, bob, None, now_ms()))
    return commands, owner, bob, room_id, kick


async def test_a_send_checked_before_a_kick_commits_after_it_is_refused(tmp_path: Path) -> None:
    """A send passes the membership check on the state before a kick has committed, and is
    queued behind it: the kick commits first, so the send must not land after the kick entry (a
    removal takes effect at commit). It is refused with what a non-member gets; nothing of it is
    written, and the next send of the kicked user is refused at once."""
    with trio.fail_after(20):
        async with running_store(tmp_path) as (store, commits):
            commands, _, bob, room_id, kick = await queue_a_kick(store)
            # checked against the state, where bob is a member still
            send = await commands.submit_message(bob["id"], room_id, "sneaked in", "t1")
            await kick.result()
            with pytest.raises(APIError) as refused:
                await send()
            assert (refused.value.status, refused.value.code) == (403, "forbidden")
            entries = [c.message for commit in commits for c in commit.changes
                       if isinstance(c, MessageCommitted)]
            assert [(m["kind"], m["seq"]) for m in entries] == [("join", 1), ("kick", 2)]
            room = store.room(room_id)
            assert room is not None and room.last_seq == 2
            with pytest.raises(APIError) as again:
                await commands.submit_message(bob["id"], room_id, "again", "t2")
            assert again.value.status == 403
