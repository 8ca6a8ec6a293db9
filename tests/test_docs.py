"""The README's configuration table is the operator's reference: it must list every setting, in
the order `--help` does, with the flag, variable, default and meaning the server really has."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from chat_trio.config import Config

README = Path(__file__).resolve().parent.parent / "README.md"
ROW = re.compile(r"^\| `--([a-z0-9-]+)` \| `([A-Z0-9_]+)` \| `([^`]*)` \| (.+) \|$", re.M)


def test_readme_configuration_table_matches_the_settings() -> None:
    rows = ROW.findall(README.read_text())
    expected = [
        (f.name.replace("_", "-"), "CHAT_TRIO_" + f.name.upper(), str(f.default), f.metadata["help"])
        for f in dataclasses.fields(Config)
    ]
    assert rows == expected
