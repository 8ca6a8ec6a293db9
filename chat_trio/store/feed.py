"""The change feed: the one seam between "something committed" and "everyone reacts".

A `Commit` (store/changes.py) is the ordered changes of one transaction. `Feed.apply(commit)`
is the only consumer: it updates the `State` (store/state.py) and then tells each subscriber
(the hub: publish message frames and wake long-polls, end the subscriptions of a user who left,
close the websockets of revoked tokens with 4001). Handlers never react to their own writes;
they wait for the commit, which the feed has applied before they wake (read-your-writes).

One consumer, three transports; commits must arrive once each, in commit order:

- one process (today): the group-commit writer calls `apply` on the event loop right after
  COMMIT and before waking the writers. A plain call: no channel, no task switch.
- `--workers N`: the supervisor's writer sends `changes.encode(commit.changes)` to every worker
  over its Unix socket; each worker's reader task decodes a frame and calls `apply`.
- PostgreSQL: each node's LISTEN task decodes a NOTIFY payload the same way and calls `apply`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from chat_trio.store.changes import Commit, decode
from chat_trio.store.state import State

log = logging.getLogger("chat_trio.store")

Reaction = Callable[[Commit], None]


class Feed:
    def __init__(self, state: State) -> None:
        self.state = state
        self._reactions: list[Reaction] = []

    def subscribe(self, reaction: Reaction) -> None:
        """Call `reaction(commit)` after each commit is applied to the state. It runs on the
        event loop and must not block."""
        self._reactions.append(reaction)

    def apply(self, commit: Commit) -> None:
        self.state.apply(commit)
        for react in self._reactions:
            try:
                react(commit)
            except Exception:
                log.exception("a reaction to a commit failed")

    def apply_encoded(self, data: bytes | str) -> None:
        """A commit that arrived encoded (from a socket or a NOTIFY payload)."""
        self.apply(Commit(tuple(decode(data))))
