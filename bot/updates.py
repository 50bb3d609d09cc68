"""Updates PTB can read: one it cannot read is skipped with a log line, not fetched forever."""

from __future__ import annotations

import logging
from typing import Any

from telegram import Update
from telegram.request import HTTPXRequest

log = logging.getLogger(__name__)


class ReadableUpdates(HTTPXRequest):
    """The connection getUpdates is sent on, passing on only updates PTB can read.

    PTB reads a batch of updates in one go: a single update it cannot read (a field missing,
    or a shape from a newer Bot API) fails the whole batch, which its updater then asks for
    again, forever, so nobody's question is answered. Such an update is cut down to its bare
    `update_id`, which no handler takes, and the updater moves past it.
    """

    def __init__(self) -> None:
        super().__init__(connection_pool_size=1)  # PTB's own pool size for getUpdates

    @staticmethod
    def parse_json_payload(payload: bytes) -> dict[str, Any]:
        """The Bot API's answer, its updates made readable (PTB's documented hook)."""
        answer = HTTPXRequest.parse_json_payload(payload)
        if isinstance(answer.get("result"), list):
            answer["result"] = [readable(update) for update in answer["result"]]
        return answer


def readable(update: dict[str, Any]) -> dict[str, Any]:
    """`update` if PTB can read it, else only its id, with one line in the log."""
    try:
        Update.de_json(update, None)
    except Exception as error:  # PTB raises KeyError, TypeError, ValueError... for bad JSON
        log.warning("Skipped update %s, which PTB cannot read: %r", update.get("update_id"), error)
        return {"update_id": update["update_id"]}
    return update
