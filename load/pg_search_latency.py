"""Search latency on PostgreSQL: the corpus of load/timeline_seed.py (ROOMS rooms of MESSAGES
messages, 8 words each from the same Zipf vocabulary, `zanzibar` planted in 20) written into a
fresh schema with the server's migrations and indexed as the server indexes (store/pgsearch.py),
then each query run through the store's own search query (`queries.search`, on one connection,
as a reader thread runs it) over the reader's 100 rooms: p50 / p99 in ms. The schema is dropped
at the end.

    .venv/bin/python -m load.pg_search_latency DSN [ROOMS] [MESSAGES] [RUNS]
"""

from __future__ import annotations

import itertools
import random
import secrets
import statistics
import sys
import time
from urllib.parse import quote

from chat_trio.store import queries
from chat_trio.store.pg import PgConnection
from chat_trio.store.pgschema import migrate
from chat_trio.store.pgsearch import add_many
from chat_trio.store.search import words as query_words
from load.timeline_seed import AUTHORS, RARE, room_texts, vocabulary

QUERIES = ["hello", "zanzibar", "a", "hello zanzibar"]
CHUNK = 20_000


def seed(conn: PgConnection, rooms: int, per_room: int) -> None:
    rng = random.Random(16)
    words = vocabulary(rng, 5000)
    weights = list(itertools.accumulate(1 / rank for rank in range(1, len(words) + 1)))
    migrate(conn)
    conn.executemany("INSERT INTO users (username, password_hash, created_at) VALUES (?, 'x', 0)",
                     [("reader",)] + [(f"author{n}",) for n in range(AUTHORS)])
    rare = set(rng.sample(range(rooms * per_room), RARE))
    for room in range(1, rooms + 1):
        conn.execute("INSERT INTO rooms (id, name, name_key, created_by, created_at, last_seq, text_count)"
                     " VALUES (?, ?, ?, 2, 0, ?, ?)",
                     (room, f"room-{room}", f"room-{room}", per_room, per_room))
        conn.execute("INSERT INTO members (room_id, user_id, joined_at) VALUES (?, 1, 0)", (room,))
        texts = room_texts(rng, words, weights, room, per_room, rare)
        for start in range(0, per_room, CHUNK):
            part = texts[start:start + CHUNK]
            seqs = list(range(start + 1, start + len(part) + 1))
            rows = conn.execute(
                "INSERT INTO messages (room_id, seq, author_id, text, created_at, text_n)"
                " SELECT ?, s, 2, t, s, s FROM unnest(?::bigint[], ?::text[]) AS v(s, t) RETURNING id, text",
                (room, seqs, part)).fetchall()
            add_many(conn, [(message_id, room, text) for message_id, text in rows])
    conn.execute("VACUUM ANALYZE messages")
    conn.execute("VACUUM ANALYZE messages_search")


def measure(conn: PgConnection, q: str, rooms: list[int], runs: int) -> tuple[float, float, int]:
    found = query_words(q)
    times = []
    hits = 0
    for _ in range(runs):
        started = time.perf_counter()
        hits = len(queries.search(conn, found, rooms, None, 21))
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, int(len(times) * 0.99))], hits


def main(dsn: str, rooms: int, per_room: int, runs: int) -> None:
    schema = "bench_" + secrets.token_hex(4)
    admin = PgConnection.connect(dsn)
    admin.execute(f"CREATE SCHEMA {schema}")
    joiner = "&" if "?" in dsn else "?"
    conn = PgConnection.connect(f"{dsn}{joiner}options={quote(f'-csearch_path={schema}')}")
    try:
        started = time.monotonic()
        seed(conn, rooms, per_room)
        size = conn.execute("SELECT pg_size_pretty(pg_total_relation_size('messages_search')),"
                            " pg_size_pretty(pg_total_relation_size('messages'))").fetchone()
        print(f"seeded {rooms} x {per_room} in {time.monotonic() - started:.0f} s; index {size[0]},"
              f" messages {size[1]}")
        every = list(range(1, rooms + 1))
        for q in QUERIES:
            p50, p99, hits = measure(conn, q, every, runs)
            print(f"{q!r} in {rooms} rooms: p50 {p50:.2f} ms, p99 {p99:.2f} ms ({hits} rows)")
        for q in ("hello", "zanzibar"):
            p50, p99, hits = measure(conn, q, [1], runs)
            print(f"{q!r} in one room: p50 {p50:.2f} ms, p99 {p99:.2f} ms ({hits} rows)")
    finally:
        conn.close()
        admin.execute(f"DROP SCHEMA {schema} CASCADE")
        admin.close()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 100,
         int(sys.argv[3]) if len(sys.argv) > 3 else 10_000, int(sys.argv[4]) if len(sys.argv) > 4 else 200)
