"""Command line and environment → a frozen Config, then run the app."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Callable, Mapping, Sequence

from chat_trio.config import Config

ENV_PREFIX = "CHAT_TRIO_"


def _from_env(parser: argparse.ArgumentParser, f: dataclasses.Field[object], raw: str) -> object:
    """An environment value, checked like the flag would be (type and choices): a bad one is a
    usage error (exit 2), not a traceback or a silently accepted value."""
    name = ENV_PREFIX + f.name.upper()
    kind = type(f.default)
    convert: Callable[[str], object] = f.metadata.get("parse", kind)
    try:
        value = convert(raw)
    except ValueError:
        parser.error(f"{name}: invalid {kind.__name__} value: {raw!r}")
    choices = f.metadata.get("choices")
    if choices is not None and value not in choices:
        parser.error(f"{name}: invalid choice: {raw!r} (choose from {', '.join(map(str, choices))})")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m chat_trio",
        description="Run the chat_trio server. Every flag can also be set by the environment "
        f"variable {ENV_PREFIX}<FLAG> (e.g. {ENV_PREFIX}PORT=9000); a flag wins over the variable.",
    )
    for f in dataclasses.fields(Config):
        kind = type(f.default)
        parser.add_argument(
            "--" + f.name.replace("_", "-"),
            dest=f.name,
            type=f.metadata.get("parse", kind),
            default=None,
            choices=f.metadata.get("choices"),
            help=f"{f.metadata['help']} (default {f.default!r}; env {ENV_PREFIX}{f.name.upper()})",
        )
    return parser


def parse_config(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> Config:
    env = os.environ if env is None else env
    parser = build_parser()
    args = parser.parse_args(argv)
    values: dict[str, object] = {}
    for f in dataclasses.fields(Config):
        given = getattr(args, f.name)
        if given is None and ENV_PREFIX + f.name.upper() in env:
            given = _from_env(parser, f, env[ENV_PREFIX + f.name.upper()])
        if given is not None:
            values[f.name] = given
    try:
        return Config(**values)  # type: ignore[arg-type]
    except ValueError as exc:
        parser.error(str(exc))


def main(argv: Sequence[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else list(argv)
    if args[:1] == ["admin"]:  # python -m chat_trio admin …: the operator's commands
        from chat_trio.admin_cli import main as admin

        admin(args[1:])
    from chat_trio.app import run

    run(parse_config(args))
