"""A websocket's outbound frames: written at once when nothing is ahead of them, else queued
(bounded) for one writer task that sends whatever has piled up in a single write.

Fan-out is the hot path: with 1000 subscribers a message is 1000 deliveries. Writing a frame
directly to an idle socket costs one non-blocking send and no task switch; only sockets that
are behind pay for the queue and the writer task.
"""

from __future__ import annotations

from typing import Protocol

import trio

_BATCH_BYTES = 256 * 1024  # most queued bytes written with one send


class DirectStream(Protocol):
    """A stream that can also write without waiting (http.upgrade.ReplayStream). Its `send_all`
    holds `lock`, which every writer of the connection goes through (the websocket library too)."""

    unsent: bytes
    lock: trio.StrictFIFOLock

    def write_now(self, data: bytes) -> None: ...

    async def send_all(self, data: bytes) -> None: ...


class Outbox:
    def __init__(self, stream: DirectStream, capacity: int) -> None:
        self._stream = stream
        self._in, self._out = trio.open_memory_channel[bytes](capacity)
        self.capacity = capacity
        self.backlog = 0  # frames queued and not yet written
        self.open = True  # False once the session is closing: queue only, no direct writes

    def offer(self, frame: bytes) -> bool:
        """Write or queue `frame` without waiting. False if the queue is full."""
        if self.backlog == 0 and self.open and not self._stream.lock.locked():
            self._stream.write_now(frame)
            if not self._stream.unsent:
                return True
            frame = b""  # wakes the writer, whose send_all writes the kept tail first
        try:
            self._in.send_nowait(frame)
        except trio.WouldBlock:
            return False
        self.backlog += 1
        return True

    async def put(self, frame: bytes) -> None:
        """Queue `frame`, waiting for room (a replay larger than the queue)."""
        self.backlog += 1  # counted before the wait, so no direct write overtakes it
        try:
            await self._in.send(frame)
        except BaseException:
            self.backlog -= 1
            raise

    async def next_batch(self) -> list[bytes]:
        """Wait for queued frames; take all that are ready (up to _BATCH_BYTES)."""
        batch = [await self._out.receive()]
        size = len(batch[0])
        while size < _BATCH_BYTES:
            try:
                frame = self._out.receive_nowait()
            except trio.WouldBlock:
                break
            batch.append(frame)
            size += len(frame)
        return batch

    async def write(self, batch: list[bytes]) -> None:
        await self._stream.send_all(b"".join(batch))
        self.backlog -= len(batch)
