"""The access log: one line per request, as text or as JSON lines (--log-format)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from chat_trio.logs import setup_logging
from tests.rawhttp import RawConn, get
from tests.server_process import ServerProcess


async def test_json_access_log_has_one_structured_line_per_request(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path, "--log-format", "json")
    try:
        port = await server.start()
        conn = await RawConn.open(port)
        await conn.send(get("/healthz?secret=query-is-not-logged") + get("/nope"))
        assert (await conn.read_response()).status == 200
        assert (await conn.read_response()).status == 404
        await conn.aclose()
        await server.wait_for_log('"status":404')
        lines = [json.loads(line) for line in server.log().splitlines() if line.strip()]
        access = [entry for entry in lines if entry["logger"] == "chat_trio.access"]
        assert [(e["method"], e["path"], e["status"]) for e in access] == [
            ("GET", "/healthz", 200), ("GET", "/nope", 404)]
        assert all(isinstance(e["ms"], float | int) and e["ts"].endswith("Z") for e in access)
        assert "query-is-not-logged" not in server.log()
    finally:
        server.kill()


async def test_text_access_log(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path)  # text is the default
    try:
        port = await server.start()
        conn = await RawConn.open(port)
        await conn.send(get("/healthz"))
        assert (await conn.read_response()).status == 200
        await conn.aclose()
        await server.wait_for_log(r"chat_trio\.access: GET /healthz 200 [0-9.]+ms")
    finally:
        server.kill()


def test_a_process_name_goes_on_every_line(capsys: pytest.CaptureFixture[str]) -> None:
    """In workers mode each line says which process wrote it, as text and as JSON."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        for fmt in ("text", "json"):
            setup_logging("info", fmt, "worker 2")
            logging.getLogger("chat_trio").info("hello")
            line = capsys.readouterr().err.strip()
            assert ("[worker 2] chat_trio: hello" in line if fmt == "text"
                    else json.loads(line)["process_name"] == "worker 2")
        setup_logging("info", "text")
        logging.getLogger("chat_trio").info("plain")
        assert "[" not in capsys.readouterr().err
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])
