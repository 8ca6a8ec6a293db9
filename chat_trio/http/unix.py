"""The local admin socket's file: bound private (0600) beside the database, reachable even when
its path is longer than AF_UNIX allows, and never taken from a server that is still using it."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager

_MAX_PATH = 107  # bytes an AF_UNIX address may hold (sun_path, less its NUL)


@contextmanager
def reachable(path: str) -> Iterator[str]:
    """`path` as an AF_UNIX address: a longer one is reached through /proc/self/fd of its directory."""
    if len(os.fsencode(path)) <= _MAX_PATH:
        yield path
        return
    fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{fd}/{os.path.basename(path)}"
    finally:
        os.close(fd)


def connect(path: str, timeout: float | None = None) -> socket.socket:
    """A blocking connection to the socket at `path` (OSError if nothing answers there)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        with reachable(path) as address:
            sock.connect(address)
    except BaseException:
        sock.close()
        raise
    return sock


def listen_private(path: str) -> socket.socket:
    """A listening socket at `path` that only this user can connect to. A stale file (a server
    that died) is replaced; a live one is not: OSError EADDRINUSE. Blocking: call from a thread."""
    if os.path.exists(path):
        try:
            connect(path, timeout=1.0).close()
        except OSError:
            os.unlink(path)  # nobody answers: left by a server that stopped without cleaning up
        else:
            raise OSError(98, "another server is answering on it")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        with reachable(path) as address:
            sock.bind(address)
        os.chmod(path, 0o600)  # before listen(): until then nobody can connect at all
        sock.listen(128)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock
