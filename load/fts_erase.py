"""What FTS5 secure-delete costs on a large index, and what schema migration 6 costs to start:

    .venv/bin/python -m load.fts_erase [ROOMS] [MESSAGES]      default 100 x 10,000

Seeds ROOMS x MESSAGES messages (load/timeline_seed.py) into a temp dir, then on one connection
opened as the server opens its writer (synchronous=FULL, secure_delete):
1. erases DELETES random messages one per transaction (store/timeline.py's erase_text, as a
   DELETE does), alternating secure-delete on and off, and prints p50/p99 per erase of each;
2. turns secure-delete off, marks the database schema 5 (as Debian 12's sqlite left it), erases
   DELETES more, and times the migration the server runs when it opens such a file (merging
   the whole index once).
Prints markdown lines for BENCHMARKS.md.
"""

from __future__ import annotations

import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

from chat_trio.store.schema import MIGRATIONS, migrate
from chat_trio.store.sqlite import connect, sqlite3
from chat_trio.store.timeline import erase_text
from load.timeline_seed import main as seed

DELETES = 200


def set_secure_delete(conn: sqlite3.Connection, on: bool) -> None:
    conn.execute("INSERT INTO messages_fts (messages_fts, rank) VALUES ('secure-delete', ?)", (int(on),))


def erase_one(conn: sqlite3.Connection, message_id: int) -> float:
    room_id, seq, text = conn.execute("SELECT room_id, seq, text FROM messages WHERE id = ?",
                                      (message_id,)).fetchone()
    started = time.perf_counter()
    conn.execute("BEGIN IMMEDIATE")
    erase_text(conn, room_id, [(message_id, seq, text)])
    conn.execute("COMMIT")
    return (time.perf_counter() - started) * 1000


def ms(values: list[float]) -> str:
    cuts = statistics.quantiles(values, n=100)
    return f"p50 {cuts[49]:.2f} / p99 {cuts[98]:.2f} ms (mean {statistics.fmean(values):.2f})"


def main(rooms: int, per_room: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "chat.db")
        seed(path, rooms, per_room)
        conn = connect(path)
        ids = random.Random(6).sample(range(1, rooms * per_room + 1), 3 * DELETES)
        times: dict[bool, list[float]] = {True: [], False: []}
        for n, message_id in enumerate(ids[:2 * DELETES]):
            on = n % 2 == 0
            set_secure_delete(conn, on)
            times[on].append(erase_one(conn, message_id))
        set_secure_delete(conn, False)
        for message_id in ids[2 * DELETES:]:
            erase_one(conn, message_id)
        conn.execute(f"UPDATE schema_version SET version = {len(MIGRATIONS) - 1}")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        size = Path(path).stat().st_size
        started = time.perf_counter()
        migrate(conn)
        migration = time.perf_counter() - started
        conn.close()
    print(f"- Erasing one message (one transaction, synchronous=FULL) in an index of "
          f"{rooms * per_room:,} messages, sqlite {sqlite3.sqlite_version}: secure-delete on "
          f"{ms(times[True])}; off {ms(times[False])}; {DELETES} each, alternating.")
    print(f"- Schema migration 6 on that database ({size / 2**20:.0f} MiB, {DELETES} earlier "
          f"erasures to drop): {migration:.2f} s at the first start.")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100, int(sys.argv[2]) if len(sys.argv) > 2 else 10_000)
