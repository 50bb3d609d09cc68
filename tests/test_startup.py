"""`newsqa bot` as a service starts it: one sentence for what will not get better, patience for
what will, and a stop when another process polls with the same token. Real processes, real PTB,
the local Bot API server."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import sys
from pathlib import Path

from embeddings.articles import read_articles
from embeddings.index.build import build_index
from testbed.fake_encoder import FakeEncoder
from testbed.telegram_server import TelegramServer

RETRY_LINE = re.compile(
    r"WARNING bot\.startup: Telegram did not answer at \S+ .*; trying again in \d+ s$"
)


async def _start_bot(
    tmp_path: Path, data_dir: Path, env: dict[str, str], *options: str
) -> asyncio.subprocess.Process:
    """`newsqa bot` over a fake-model index (nothing is ever encoded), at the default log level."""
    index = tmp_path / "index"
    if not index.exists():
        build_index(read_articles(data_dir).articles, FakeEncoder("no-such-model"), index)
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "bot", "--model", "no-such-model", "--backend", "torch",
        "--index", str(index), *options,
        env={**os.environ, **env}, cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def _finish(process: asyncio.subprocess.Process, timeout: float = 60) -> list[str]:  # noqa: ASYNC109
    """Wait for the process to end on its own; its stderr lines."""
    _, stderr = await asyncio.wait_for(process.communicate(), timeout)
    return stderr.decode().splitlines()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_rejected_token_exits_1_with_one_line(data_dir: Path, tmp_path: Path) -> None:
    """A token Telegram answers 401 to: exit 1 at once, one line naming the fix, no traceback."""
    async with TelegramServer() as server:
        wrong = {"TELEGRAM_BOT_TOKEN": "123:wrong", "TELEGRAM_API_URL": server.base_url}
        lines = await _finish(await _start_bot(tmp_path, data_dir, wrong))
    assert lines == [
        "Error: Telegram rejected the bot token (401); copy the token @BotFather gave into "
        "TELEGRAM_BOT_TOKEN (or --token)"
    ]


async def test_rejected_token_is_one_json_line_with_json_logs(
    data_dir: Path, tmp_path: Path
) -> None:
    """With NEWSQA_LOG_FORMAT=json the same failure is one JSON error line, not click's text."""
    async with TelegramServer() as server:
        wrong = {"TELEGRAM_BOT_TOKEN": "123:wrong", "TELEGRAM_API_URL": server.base_url}
        lines = await _finish(
            await _start_bot(tmp_path, data_dir, {**wrong, "NEWSQA_LOG_FORMAT": "json"})
        )
    [line] = [json.loads(text) for text in lines]
    assert line["level"] == "ERROR" and line["event"] == "error"
    assert line["message"].startswith("Telegram rejected the bot token (401); copy the token")


async def test_closed_port_is_retried_until_telegram_answers(
    data_dir: Path, tmp_path: Path
) -> None:
    """Nothing listening at --api-url: one warning with the delay (later tries are INFO), then
    the bot answers once the server is up, and stops with 0 on SIGTERM."""
    port = _free_port()
    env = {"TELEGRAM_BOT_TOKEN": TelegramServer().token}
    env["TELEGRAM_API_URL"] = f"http://127.0.0.1:{port}/bot"
    process = await _start_bot(tmp_path, data_dir, env)
    assert process.stderr is not None
    first = (await asyncio.wait_for(process.stderr.readline(), 60)).decode().rstrip("\n")
    async with TelegramServer(port=port) as server:
        try:
            await server.wait_for(lambda: bool(server.commands), timeout=60)
            server.user_message(7, "/about")
            await server.wait_for_messages(7, 1, timeout=20)
        finally:
            process.send_signal(signal.SIGTERM)
            lines = [first, *await _finish(process, 30)]
    assert process.returncode == 0, lines
    assert len(lines) == 1 and RETRY_LINE.search(lines[0]), lines
    assert "trying again in 1 s" in lines[0]


async def test_second_poller_conflict_stops_with_one_line(data_dir: Path, tmp_path: Path) -> None:
    """getUpdates answered 409 (another poller): one line naming the fix, exit 1, no fight."""
    async with TelegramServer() as server:
        server.fail_next("getUpdates", status=409, times=50)
        env = {"TELEGRAM_BOT_TOKEN": server.token, "TELEGRAM_API_URL": server.base_url}
        lines = await _finish(await _start_bot(tmp_path, data_dir, env))
        polls = [call for call, _ in server.calls if call == "getUpdates"]
    assert lines == [
        "Error: Another process is polling Telegram with this bot token (409 Conflict); stop the "
        "other bot (one poller per token), or run every replica with --webhook-url"
    ]
    assert len(polls) <= 2


async def test_refused_webhook_url_exits_1_with_one_line(data_dir: Path, tmp_path: Path) -> None:
    """A webhook address Telegram refuses: exit 1 at once, one line naming the fix."""
    async with TelegramServer() as server:
        env = {"TELEGRAM_BOT_TOKEN": server.token, "TELEGRAM_API_URL": server.base_url}
        options = ("--webhook-url", "ftp://example.org/hook", "--webhook-listen", "127.0.0.1")
        process = await _start_bot(
            tmp_path, data_dir, env, *options, "--webhook-port", str(_free_port())
        )
        lines = await _finish(process)
    assert process.returncode == 1
    assert len(lines) == 1 and lines[0].startswith(
        "Error: Telegram refused the webhook URL ftp://example.org/hook: "
    ), lines


async def test_webhook_port_in_use_exits_1_with_one_line(data_dir: Path, tmp_path: Path) -> None:
    """The webhook port is taken: exit 1 before Telegram is told anything, one line."""
    with socket.create_server(("127.0.0.1", 0)) as holder:
        port = holder.getsockname()[1]
        async with TelegramServer() as server:
            env = {"TELEGRAM_BOT_TOKEN": server.token, "TELEGRAM_API_URL": server.base_url}
            options = ("--webhook-url", "https://example.org/hook", "--webhook-listen", "127.0.0.1")
            process = await _start_bot(
                tmp_path, data_dir, env, *options, "--webhook-port", str(port)
            )
            lines = await _finish(process)
            set_hooks = [call for call, _ in server.calls if call == "setWebhook"]
    assert process.returncode == 1
    assert lines == [
        f"Error: Port {port} on 127.0.0.1 (--webhook-port) is already in use; stop the process "
        "that holds it, or choose another port"
    ]
    assert set_hooks == []
