"""Command line and environment → a frozen Config, then run the app."""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Mapping, Sequence

from chat_trio.config import Config

ENV_PREFIX = "CHAT_TRIO_"


def _convert(kind: type, raw: str) -> object:
    return kind(raw)


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
            type=kind,
            default=None,
            choices=f.metadata.get("choices"),
            help=f"{f.metadata['help']} (default {f.default!r}; env {ENV_PREFIX}{f.name.upper()})",
        )
    return parser


def parse_config(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> Config:
    env = os.environ if env is None else env
    args = build_parser().parse_args(argv)
    values: dict[str, object] = {}
    for f in dataclasses.fields(Config):
        given = getattr(args, f.name)
        if given is None and ENV_PREFIX + f.name.upper() in env:
            given = _convert(type(f.default), env[ENV_PREFIX + f.name.upper()])
        if given is not None:
            values[f.name] = given
    return Config(**values)  # type: ignore[arg-type]


def main(argv: Sequence[str] | None = None) -> None:
    from chat_trio.app import run

    run(parse_config(argv))
