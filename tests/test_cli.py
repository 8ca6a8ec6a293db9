"""The command line: every Config field is a flag and a CHAT_TRIO_* variable; a flag wins."""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

from chat_trio.cli import build_parser, parse_config
from chat_trio.config import Config
from tests.helpers import make_config, serve
from tests.server_process import ServerProcess


def test_help_lists_every_flag() -> None:
    result = subprocess.run([sys.executable, "-m", "chat_trio", "--help"], capture_output=True,
                            text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    for f in dataclasses.fields(Config):
        flag = "--" + f.name.replace("_", "-")
        assert flag in result.stdout, flag
        assert "CHAT_TRIO_" + f.name.upper() in result.stdout.replace("\n", " ").replace(" ", "")


def test_help_formats_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert all("--" + f.name.replace("_", "-") in out for f in dataclasses.fields(Config))


def test_defaults_without_flags_or_env() -> None:
    assert parse_config([], {}) == Config()


def test_env_is_read() -> None:
    config = parse_config([], {
        "CHAT_TRIO_PORT": "9001",
        "CHAT_TRIO_HOST": "0.0.0.0",
        "CHAT_TRIO_HEAD_TIMEOUT": "2.5",
        "CHAT_TRIO_MAX_CONNECTIONS": "7",
        "CHAT_TRIO_LOG_FORMAT": "json",
        "CHAT_TRIO_WS_ORIGINS": "https://a.example,https://b.example",
        "UNRELATED": "x",
        "PORT": "1",
    })
    assert config.port == 9001
    assert config.host == "0.0.0.0"
    assert config.head_timeout == 2.5
    assert config.max_connections == 7
    assert config.log_format == "json"
    assert config.ws_origins == "https://a.example,https://b.example"
    assert config.db == Config().db


def test_flags_are_read() -> None:
    config = parse_config(["--port", "9002", "--max-head-bytes", "2048", "--keepalive-timeout", "1",
                           "--durability", "normal"], {})
    assert (config.port, config.max_head_bytes, config.keepalive_timeout, config.durability) == (
        9002, 2048, 1.0, "normal")
    assert isinstance(config.keepalive_timeout, float)


def test_flag_wins_over_env() -> None:
    config = parse_config(["--port", "9003", "--log-format", "text"],
                          {"CHAT_TRIO_PORT": "9004", "CHAT_TRIO_LOG_FORMAT": "json",
                           "CHAT_TRIO_MAX_BODY_BYTES": "123"})
    assert config.port == 9003
    assert config.log_format == "text"
    assert config.max_body_bytes == 123  # env still fills what no flag sets


@pytest.mark.parametrize(
    ("argv", "env"),
    [
        (["--port", "abc"], {}),
        (["--log-format", "xml"], {}),
        (["--no-such-flag"], {}),
        ([], {"CHAT_TRIO_PORT": "abc"}),
        ([], {"CHAT_TRIO_HEAD_TIMEOUT": "soon"}),
        ([], {"CHAT_TRIO_LOG_FORMAT": "xml"}),
        ([], {"CHAT_TRIO_DURABILITY": "none"}),
        (["--log-level", "loud"], {}),
        (["--readers", "0"], {}),
        (["--max-body-bytes", "-1"], {}),
        (["--port", "70000"], {}),
        (["--db", ":memory:"], {}),
    ],
)
def test_bad_values_are_usage_errors(
    argv: list[str], env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        parse_config(argv, env)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "usage:" in err
    for name in env:
        assert name in err


def test_bad_env_value_does_not_print_a_traceback() -> None:
    result = subprocess.run([sys.executable, "-m", "chat_trio"], capture_output=True, text=True,
                            timeout=30, check=False, env={"CHAT_TRIO_PORT": "abc", "PATH": ""})
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "CHAT_TRIO_PORT" in result.stderr


# -- start-up failures: one line naming what and why, exit status 1 ------------------------------


def _failed_start(tmp_path: Path, *args: str, db: Path | None = None) -> str:
    """Run the server expecting it not to start; its one line of output (checked to be one line,
    without a traceback or an exception group)."""
    server = ServerProcess(tmp_path, *args, db=db)
    try:
        assert server.proc.wait(30) == 1
    finally:
        server.kill()
    lines = [line for line in server.log().splitlines() if line.strip()]
    assert len(lines) == 1, server.log()
    assert "Traceback" not in lines[0] and "ExceptionGroup" not in lines[0]
    return lines[0]


@pytest.mark.parametrize(
    ("where", "reason"),
    [
        ("missing/chat.db", "its directory does not exist"),
        (".", "it is a directory"),
        ("garbage.db", "file is not a database"),
        ("/proc/chat_trio_test.db", "unable to open database file"),  # a file system that refuses it
    ],
)
def test_bad_database_is_one_line_and_exit_1(tmp_path: Path, where: str, reason: str) -> None:
    (tmp_path / "garbage.db").write_bytes(b"this is not sqlite\n" * 100)
    db = tmp_path / where
    line = _failed_start(tmp_path, db=db)
    assert f"cannot open the database {db}: {reason}" in line


def test_busy_port_is_one_line_and_the_database_is_never_opened(tmp_path: Path) -> None:
    """The port is bound before the database is opened: a second instance on a busy port stops
    before it touches the database the first one uses."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        line = _failed_start(tmp_path, "--port", str(port))
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in line
    assert not list(tmp_path.glob("chat.db*"))


def test_unknown_host_is_one_line(tmp_path: Path) -> None:
    line = _failed_start(tmp_path, "--host", "no-such-host.invalid")
    assert "cannot listen on no-such-host.invalid:0" in line


class _TwoAddresses(trio.abc.HostnameResolver):
    """Resolves "dual.test" to an IPv4 and an IPv6 loopback address (like "localhost" on many
    systems), through trio's resolver hook: the name is resolved by trio, never on the loop."""

    async def getaddrinfo(self, host: bytes | None, port: bytes | str | int | None, family: int = 0,
                          type: int = 0, proto: int = 0, flags: int = 0) -> list[Any]:
        assert host == b"dual.test"
        number = int(port or 0)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", number)),
                (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("::1", number, 0, 0))]

    async def getnameinfo(self, sockaddr: tuple[Any, ...], flags: int) -> tuple[str, str]:
        raise NotImplementedError


async def test_every_resolved_address_is_listened_on(tmp_path: Path) -> None:
    trio.socket.set_custom_hostname_resolver(_TwoAddresses())
    try:
        async with serve(make_config(tmp_path, host="dual.test")) as app:
            with trio.fail_after(10):
                for address in ("127.0.0.1", "::1"):
                    stream = await trio.open_tcp_stream(address, app.port)
                    await stream.send_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                    received = b""
                    while chunk := await stream.receive_some():
                        received += chunk
                    assert received.startswith(b"HTTP/1.1 200 "), (address, received)
                    await stream.aclose()
    finally:
        trio.socket.set_custom_hostname_resolver(None)


def test_workers_auto_means_one_per_cpu() -> None:
    cpus = os.cpu_count() or 1
    assert parse_config(["--workers", "auto"], {}).workers == cpus
    assert parse_config([], {"CHAT_TRIO_WORKERS": "auto"}).workers == cpus
    assert parse_config(["--workers", "3"], {"CHAT_TRIO_WORKERS": "auto"}).workers == 3
    assert parse_config([], {}).workers == 1
    with pytest.raises(SystemExit):
        parse_config(["--workers", "0"], {})
