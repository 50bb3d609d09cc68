"""`newsqa run` as an operator starts it: a real process, the real model, a local Bot API."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
from pathlib import Path

import pytest

from embeddings.encoders.base import DEFAULT_MODEL
from embeddings.encoders.onnx_export import default_export_folder
from testbed.telegram_server import TelegramServer
from tests.conftest import SEED_ARTICLE

pytestmark = pytest.mark.model

QUESTION = "Who held the press conference about the plenary session?"


async def test_run_serves_telegram_and_stops_cleanly_on_sigterm(
    tmp_path: Path, onnx_export: Path
) -> None:
    """With a token, `newsqa run` indexes, answers over Telegram, exits 0 on SIGTERM, never logs the token."""
    (tmp_path / "data").mkdir()
    shutil.copy(SEED_ARTICLE, tmp_path / "data")
    # The default (ONNX) backend's export, as a first `newsqa index` would have made it.
    shutil.copytree(onnx_export, default_export_folder(tmp_path / "index", DEFAULT_MODEL))
    async with TelegramServer() as server:
        env = {
            **os.environ,
            "TELEGRAM_BOT_TOKEN": server.token,
            "TELEGRAM_API_URL": server.base_url,
        }
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", "--log-level", "DEBUG", "run",
            "--data", str(tmp_path / "data"), "--index", str(tmp_path / "index"),
            env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            await server.wait_for(lambda: bool(server.commands), timeout=120)
            server.user_message(7, QUESTION)
            [reply] = await server.wait_for_messages(7, 1, timeout=60)
        finally:
            process.send_signal(signal.SIGTERM)
            stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
    log = (stdout + stderr).decode()
    assert process.returncode == 0, log[-3000:]
    assert reply.text.startswith("1. Chongqing Holds Third Plenary Session")
    assert "Jiang Hui" in reply.entities_of("expandable_blockquote")[0]
    assert "getUpdates" in log  # DEBUG logging really was on
    assert server.token not in log
    assert server.token.split(":")[1] not in log
