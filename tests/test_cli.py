"""The command line: every Config field is a flag and a CHAT_TRIO_* variable; a flag wins."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from chat_trio.cli import build_parser, parse_config
from chat_trio.config import Config


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
