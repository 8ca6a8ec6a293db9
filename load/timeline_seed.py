"""Seed a database for load/timeline.sh: ROOMS rooms of MESSAGES messages each (written straight
into sqlite with the server's own schema migrations, then indexed for search as the migration
indexes an existing database), a user `reader` who is a member of every room with their read
marker half-way, and AUTHORS other members who wrote the messages.

Texts are 8 words drawn from a 5,000-word vocabulary with Zipf weights, so `hello` (rank 1) is in
about one message in six and `zanzibar` is planted in exactly RARE messages.

    .venv/bin/python load/timeline_seed.py DB [ROOMS] [MESSAGES]
"""

from __future__ import annotations

import itertools
import random
import sys
import time

import argon2

from chat_trio.store.schema import migrate
from chat_trio.store.search import SEARCH
from chat_trio.store.sqlite import sqlite3

AUTHORS = 20
RARE = 20
WORDS_PER_MESSAGE = 8


def vocabulary(rng: random.Random, size: int) -> list[str]:
    words = {"hello"}
    while len(words) < size:
        words.add("".join(rng.choice("abcdefghijklmnoprstuvw") for _ in range(rng.randint(4, 9))))
    words.discard("hello")
    words.discard("zanzibar")
    return ["hello", *sorted(words)]


def room_texts(rng: random.Random, words: list[str], weights: list[float], room: int, per_room: int,
               rare: set[int]) -> list[str]:
    """The texts of room `room` (numbered from 1), in seq order: WORDS_PER_MESSAGE words each,
    and `zanzibar` where the corpus-wide message number is in `rare`."""
    chosen = rng.choices(words, cum_weights=weights, k=per_room * WORDS_PER_MESSAGE)
    texts = []
    for seq in range(1, per_room + 1):
        text = " ".join(chosen[(seq - 1) * WORDS_PER_MESSAGE:seq * WORDS_PER_MESSAGE])
        if (room - 1) * per_room + seq - 1 in rare:
            text += " zanzibar"
        texts.append(text)
    return texts


def main(path: str, rooms: int, per_room: int) -> None:
    rng = random.Random(16)
    words = vocabulary(rng, 5000)
    weights = list(itertools.accumulate(1 / rank for rank in range(1, len(words) + 1)))
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    migrate(conn)
    hasher = argon2.PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    started = time.monotonic()
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO users (username, password_hash, created_at) VALUES (?, ?, 0)",
                     [("reader", hasher.hash("reader-password"))]
                     + [(f"author{n}", "x") for n in range(AUTHORS)])
    rare = set(rng.sample(range(rooms * per_room), RARE))
    for room in range(1, rooms + 1):
        conn.execute("INSERT INTO rooms (id, name, name_key, created_by, created_at, last_seq, text_count)"
                     " VALUES (?, ?, ?, 2, 0, ?, ?)",
                     (room, f"room-{room}", f"room-{room}", per_room, per_room))
        half = per_room // 2
        conn.executemany("INSERT INTO members (room_id, user_id, joined_at, read_seq, read_text_n)"
                         " VALUES (?, ?, ?, ?, ?)",
                         [(room, 1, 0, half, half)]
                         + [(room, 2 + n, 0, per_room, per_room) for n in range(AUTHORS)])
        rows = [(room, seq, 2 + seq % AUTHORS, text, seq, seq)
                for seq, text in enumerate(room_texts(rng, words, weights, room, per_room, rare), 1)]
        conn.executemany("INSERT INTO messages (room_id, seq, author_id, text, created_at, text_n)"
                         " VALUES (?, ?, ?, ?, ?, ?)", rows)
    conn.execute("INSERT INTO messages_fts (messages_fts) VALUES ('rebuild')")
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    print(f"seeded {rooms} rooms x {per_room} messages in {time.monotonic() - started:.0f} s "
          f"({SEARCH.__class__.__name__})", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 100,
         int(sys.argv[3]) if len(sys.argv) > 3 else 10_000)
