"""The deployment examples in deploy/: real newsqa commands, and replicas sharing one database."""

from __future__ import annotations

import configparser
import os
import re
import shlex
from pathlib import Path
from typing import Any

import pytest

from bot.cli import main
from embeddings.stores import is_database_url

yaml = pytest.importorskip("yaml")

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
# Compose's ${NAME}, ${NAME:?message} and ${NAME:-default}.
_VARIABLE = re.compile(r"\$\{(\w+)(?::?[-?][^}]*)?\}")


def _interpolated(value: str) -> str:
    """`value` with each compose variable replaced by a sample value (letters only)."""
    return _VARIABLE.sub(lambda match: f"sample{match.group(1).lower().replace('_', '')}", value)


def _parse(
    arguments: list[str], environment: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> dict[str, Any]:
    """The options `newsqa <command> ...` would run with in `environment`, by click's own
    parser: an unknown command or option, or a bad value, fails here."""
    assert Path(arguments[0]).name == "newsqa", arguments
    for name in [name for name in os.environ if name.startswith(("NEWSQA_", "TELEGRAM_"))]:
        monkeypatch.delenv(name)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    command = main.commands[arguments[1]]
    return dict(command.make_context(arguments[1], arguments[2:]).params)


def _compose() -> dict[str, Any]:
    services: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]
    return services


def _bots(services: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: s for name, s in services.items() if s.get("command", [])[1:2] == ["bot"]}


def _options(service: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    environment = {
        name: _interpolated(str(value)) for name, value in service["environment"].items()
    }
    return _parse(service["command"], environment, monkeypatch)


def test_every_newsqa_service_in_compose_runs_a_real_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The index job and the replicas run commands and options that `newsqa` accepts."""
    services = _compose()
    commands = [s["command"][1] for s in services.values() if s.get("command", [""])[0] == "newsqa"]
    assert sorted(commands) == ["bot", "bot", "index"]
    for service in services.values():
        if service.get("command", [""])[0] == "newsqa":
            assert is_database_url(_options(service, monkeypatch)["store"])


def test_compose_replicas_share_one_database_webhook_and_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Both replicas use the same store, webhook URL and secret; the index job fills that store."""
    services = _compose()
    bots = [_options(service, monkeypatch) for service in _bots(services).values()]
    assert len(bots) == 2
    shared = {(o["store"], o["webhook_url"], o["webhook_secret"]) for o in bots}
    assert len(shared) == 1
    store, url, secret = shared.pop()
    assert url.startswith("https://") and url.endswith("/telegram") and secret
    assert _options(services["index"], monkeypatch)["store"] == store
    assert services["db"]["image"].startswith("pgvector/pgvector:")


def test_the_proxy_deals_updates_to_both_replicas_in_turn(monkeypatch: pytest.MonkeyPatch) -> None:
    """Caddy's round robin names every replica at the port it listens on."""
    services = _compose()
    caddyfile = (DEPLOY / "Caddyfile").read_text()
    assert "lb_policy round_robin" in caddyfile
    for name, service in _bots(services).items():
        port = _options(service, monkeypatch)["webhook_port"]
        assert f" {name}:{port}" in caddyfile
    assert "./Caddyfile:/etc/caddy/Caddyfile:ro" in services["proxy"]["volumes"]


def test_the_systemd_unit_runs_a_replica_on_a_database(monkeypatch: pytest.MonkeyPatch) -> None:
    """The unit's ExecStart is a real `newsqa bot` command line, in webhook mode on a database."""
    unit = configparser.ConfigParser(interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(DEPLOY / "newsqa-bot.service")
    options = _parse(shlex.split(unit["Service"]["ExecStart"]), {}, monkeypatch)
    assert is_database_url(options["store"])
    assert options["webhook_url"].startswith("https://")
    assert unit["Service"]["EnvironmentFile"]  # the token and webhook secret, shared by replicas
