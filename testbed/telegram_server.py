"""A local Telegram Bot API server for end-to-end tests of a real PTB ``Application``.

The server speaks HTTP on 127.0.0.1, so the bot under test uses its ordinary
network stack::

    async with TelegramServer() as server:
        app = (
            Application.builder()
            .token(server.token)
            .base_url(server.base_url)
            .base_file_url(server.base_file_url)
            .build()
        )
        ...
        server.user_message(42, "/start")
        [reply] = await server.wait_for_messages(42, 1)

Where Telegram's behaviour matters to a bot (HTML parsing, text limits, edit
rules, long polling, webhooks, error shapes) it follows the Bot API and the
tdlib sources the official server is built on (``td/telegram/MessageEntity.cpp``:
``parse_html``, ``fix_formatted_text``). Two rules are stricter than Telegram
by default (``strict=True``), so that escaping bugs fail loudly in tests:

* a bare ``&`` that does not start a character reference is rejected (Telegram
  keeps it as a literal ``&``);
* the 4096 limit is counted in UTF-16 code units (Telegram counts code points).

Pass ``strict=False`` to get Telegram's exact behaviour for both.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import re
import string
import time
import zlib
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final, Literal, NoReturn
from urllib.parse import parse_qs

import aiohttp
from aiohttp import web

JSON = dict[str, Any]
ChatId = int | str
ChatType = Literal["private", "group", "supergroup", "channel"]

DEFAULT_TOKEN: Final = "7000000001:AAFnewsqa-test-token-0123456789abcd"
DEFAULT_USERNAME: Final = "newsqa_test_bot"
DEFAULT_GROUP_USER_ID: Final = 424242
MAX_TEXT_LENGTH: Final = 4096
MAX_CALLBACK_DATA_BYTES: Final = 64
SECRET_HEADER: Final = "X-Telegram-Bot-Api-Secret-Token"

# Canonical spellings; Telegram matches method names case-insensitively.
_METHODS: Final = (
    "getMe",
    "logOut",
    "close",
    "getUpdates",
    "setWebhook",
    "deleteWebhook",
    "getWebhookInfo",
    "sendMessage",
    "editMessageText",
    "answerCallbackQuery",
    "sendChatAction",
    "setMyCommands",
    "getMyCommands",
    "deleteMyCommands",
    "getFile",
)
_CANONICAL: Final = {name.lower(): name for name in _METHODS}

# Update types Telegram leaves out unless they are asked for by name.
_OPT_IN_UPDATES: Final = frozenset({"chat_member", "message_reaction", "message_reaction_count"})
_CHAT_ACTIONS: Final = frozenset(
    {
        "typing",
        "upload_photo",
        "record_video",
        "upload_video",
        "record_voice",
        "upload_voice",
        "upload_document",
        "choose_sticker",
        "find_location",
        "record_video_note",
        "upload_video_note",
    }
)
# Parameters that are strings in the Bot API: never JSON-decode them, or a text
# of "123" would turn into a number.
_STRING_PARAMS: Final = frozenset(
    {
        "text",
        "parse_mode",
        "caption",
        "callback_query_id",
        "inline_message_id",
        "url",
        "secret_token",
        "ip_address",
        "action",
        "language_code",
        "business_connection_id",
        "message_effect_id",
        "description",
        "short_description",
        "name",
        "emoji",
        "query",
        "file_id",
    }
)
_BUTTON_ACTIONS: Final = (
    "url",
    "callback_data",
    "web_app",
    "login_url",
    "switch_inline_query",
    "switch_inline_query_current_chat",
    "switch_inline_query_chosen_chat",
    "copy_text",
    "callback_game",
    "pay",
)


# ---------------------------------------------------------------------------
# UTF-16 helpers: Bot API entity offsets and lengths are in UTF-16 code units.
# ---------------------------------------------------------------------------


def utf16_len(text: str) -> int:
    """Length of ``text`` in UTF-16 code units."""
    return len(text) + sum(1 for ch in text if ord(ch) > 0xFFFF)


def utf16_slice(text: str, offset: int, length: int) -> str:
    """The part of ``text`` that an entity with this offset and length covers."""
    data = text.encode("utf-16-le", "surrogatepass")
    return data[2 * offset : 2 * (offset + length)].decode("utf-16-le", "surrogatepass")


def _utf16_offset(text: str, index: int) -> int:
    """UTF-16 offset of the character at ``index``."""
    return utf16_len(text[:index])


# ---------------------------------------------------------------------------
# parse_mode=HTML: a port of tdlib's parse_html (td/telegram/MessageEntity.cpp).
# ---------------------------------------------------------------------------


class HtmlParseError(ValueError):
    """Telegram refused the HTML; ``str(error)`` is tdlib's reason."""


_SUPPORTED_TAGS: Final = frozenset(
    {
        "a",
        "b",
        "strong",
        "i",
        "em",
        "s",
        "strike",
        "del",
        "u",
        "ins",
        "tg-spoiler",
        "tg-emoji",
        "span",
        "pre",
        "code",
        "blockquote",
    }
)
_SIMPLE_TAGS: Final = {
    "b": "bold",
    "strong": "bold",
    "i": "italic",
    "em": "italic",
    "u": "underline",
    "ins": "underline",
    "s": "strikethrough",
    "strike": "strikethrough",
    "del": "strikethrough",
    "tg-spoiler": "spoiler",
    "span": "spoiler",
}
_NAMED_REFERENCES: Final = {"lt": ord("<"), "gt": ord(">"), "amp": ord("&"), "quot": ord('"')}
# td::is_space; NUL is in it because tdlib reads a C string, so NUL is also "end".
_SPACES: Final = frozenset(" \t\r\n\0\v")
# MessageEntity::get_type_priority, used to order entities sharing a range.
_PRIORITY: Final = {
    "blockquote": 0,
    "expandable_blockquote": 0,
    "pre": 11,
    "code": 20,
    "text_link": 49,
    "text_mention": 49,
    "bold": 90,
    "italic": 91,
    "underline": 92,
    "strikethrough": 93,
    "spoiler": 94,
    "custom_emoji": 99,
}


def _char_at(text: str, index: int) -> str:
    """The character at ``index``, or NUL past the end, like reading a C string."""
    return text[index] if index < len(text) else "\0"


def _ascii_lower(text: str) -> str:
    """Lower-case ASCII letters only, as td::to_lower does."""
    return "".join(ch.lower() if ch.isascii() else ch for ch in text)


def _decode_reference(text: str, pos: int) -> tuple[int, int] | None:
    """Decode the character reference starting at ``text[pos] == "&"``.

    Returns ``(code point, index after it)``, or None when tdlib would keep the
    ``&`` as a literal character. The trailing ``;`` is optional, as in tdlib.
    """
    end = pos + 1
    if _char_at(text, end) == "#":
        end += 1
        digits, base = string.digits, 10
        if _char_at(text, end) == "x":  # only lower-case x, as in tdlib
            end += 1
            digits, base = string.hexdigits, 16
        start = end
        while _char_at(text, end) in digits and end < len(text):
            end += 1
        code = int(text[start:end], base) if end > start else 0
        if code == 0 or code >= 0x10FFFF or end - pos >= 10:
            return None
    else:
        while _char_at(text, end).isascii() and _char_at(text, end).isalpha():
            end += 1
        named = _NAMED_REFERENCES.get(text[pos + 1 : end])
        if named is None:
            return None
        code = named
    if _char_at(text, end) == ";":
        end += 1
    return code, end


def _entity_sort_key(entity: JSON) -> tuple[int, int, int]:
    """tdlib's entity order: by offset, longer first, then by type priority."""
    priority = _PRIORITY.get(entity["type"], 50)
    if entity["type"] == "pre" and entity.get("language"):
        priority = 10  # PreCode sorts before Pre
    return entity["offset"], -entity["length"], priority


def _link_user_id(url: str) -> int | None:
    """The user id of a ``tg://user?id=N`` link, which becomes a text_mention."""
    match = re.fullmatch(r"(?i:tg:)(?://)?user\?(.*)", url)
    if match is None:
        return None
    values = parse_qs(match.group(1)).get("id", [])
    if values and re.fullmatch(r"\d{1,19}", values[0]) and int(values[0]) > 0:
        return int(values[0])
    return None


def checked_link(url: str) -> str | None:
    """A simplified LinkManager::get_checked_link: the URL Telegram keeps, or None.

    Telegram silently drops a link whose URL it cannot use (no dot in the host,
    an unsupported scheme, ...) instead of failing the request.
    """
    internal = re.fullmatch(r"(?i)(tg|ton|tonsite):(?://)?([A-Za-z0-9_.-]+)([/?#].*)?", url)
    if internal is not None:
        scheme, host, tail = internal.groups()
        if "." in host and scheme.lower() != "tonsite":
            return None
        query = tail if (tail or "").startswith("/") else "/" + (tail or "")
        if query[1:2] == "?":
            query = query[1:]
        return f"{scheme.lower()}://{host}{query}"
    scheme, rest = "http", url
    if explicit := re.match(r"([A-Za-z][A-Za-z0-9+.-]*)://", url):
        scheme, rest = explicit.group(1).lower(), url[explicit.end() :]
        if scheme not in ("http", "https"):
            return None
    authority, tail = re.fullmatch(r"([^/?#]*)(.*)", rest, re.DOTALL).groups()  # type: ignore[union-attr]
    host_port = authority.rpartition("@")[2]
    host, _, port = ("", "", "") if host_port.startswith("[") else host_port.partition(":")
    if port and not (port.isdigit() and 0 < int(port) < 65536):
        return None
    if not host_port.startswith("[") and (
        not host or "." not in host or re.search(r"[\s<>\"'`\\^{}|]", host)
    ):
        return None
    path = tail if tail.startswith("/") else "/" + tail
    return f"{scheme}://{authority}{path}"


@dataclass(slots=True)
class _OpenTag:
    """A start tag waiting for its end tag."""

    name: str
    argument: str
    utf16_start: int
    out_start: int


class _HtmlParser:
    """tdlib's parse_html: plain text plus Bot API entities, or HtmlParseError."""

    def __init__(self, source: str, *, strict_ampersand: bool) -> None:
        self.src = source
        self.pos = 0
        self.out: list[str] = []
        self.utf16 = 0
        self.entities: list[JSON] = []
        self.stack: list[_OpenTag] = []
        self.strict_ampersand = strict_ampersand
        self.saw_surrogate = False

    def parse(self) -> tuple[str, list[JSON]]:
        """Run the parser over the whole source."""
        while self.pos < len(self.src):
            ch = self.src[self.pos]
            if ch == "&" and self._reference():
                continue
            if ch == "<":
                self._tag()
            else:
                self._emit(ch)
                self.pos += 1
        if self.stack:
            self._fail(f'Can\'t find end tag corresponding to start tag "{self.stack[-1].name}"')
        if self.saw_surrogate:
            self._fail(
                "Text contains invalid Unicode characters after decoding HTML entities, "
                "check for unmatched surrogate code units"
            )
        for entity in self.entities:
            if entity["type"] == "code":
                entity.pop("language", None)  # a language only counts inside <pre>
        self.entities.sort(key=_entity_sort_key)
        return "".join(self.out), self.entities

    def _fail(self, reason: str) -> NoReturn:
        """Abort parsing with Telegram's reason text."""
        raise HtmlParseError(reason)

    def _byte_offset(self, index: int) -> int:
        """tdlib reports positions as byte offsets into the UTF-8 source."""
        return len(self.src[:index].encode("utf-8", "surrogatepass"))

    def _at(self, index: int) -> str:
        """The source character at ``index`` (NUL past the end)."""
        return _char_at(self.src, index)

    def _emit(self, ch: str) -> None:
        """Append one character of plain text."""
        self.out.append(ch)
        self.utf16 += 2 if ord(ch) > 0xFFFF else 1

    def _reference(self) -> bool:
        """Emit the character reference at ``pos``; False if it is a literal ``&``."""
        decoded = _decode_reference(self.src, self.pos)
        if decoded is None:
            if self.strict_ampersand:
                self._fail(
                    f'Unescaped "&" at byte offset {self._byte_offset(self.pos)} '
                    "(strict test server: write &amp;)"
                )
            return False
        code, self.pos = decoded
        self.saw_surrogate |= 0xD800 <= code <= 0xDFFF
        self._emit(chr(code))
        return True

    def _tag(self) -> None:
        """Handle the start or end tag at ``pos`` (which is ``<``)."""
        begin = self.pos
        self.pos += 1
        if self._at(self.pos) == "/":
            self._end_tag(begin)
        else:
            self._start_tag(begin)
        self.pos += 1  # past ">"

    def _skip_spaces(self) -> None:
        """Advance over whitespace, stopping at the end of input."""
        while self._at(self.pos) != "\0" and self._at(self.pos) in _SPACES:
            self.pos += 1

    def _scan_name(self) -> None:
        """Advance to the next space or ``>``."""
        while self._at(self.pos) not in _SPACES and self._at(self.pos) != ">":
            self.pos += 1

    def _start_tag(self, begin: int) -> None:
        """Parse a start tag and its attributes and open it."""
        self._scan_name()
        if self._at(self.pos) == "\0":
            self._fail(f"Unclosed start tag at byte offset {self._byte_offset(begin)}")
        name = _ascii_lower(self.src[begin + 1 : self.pos])
        if name not in _SUPPORTED_TAGS:
            self._fail(f'Unsupported start tag "{name}" at byte offset {self._byte_offset(begin)}')
        argument = self._attributes(name, begin)
        if name == "span" and argument != "spoiler":
            self._fail(
                f'Tag "span" must have class "tg-spoiler" at byte offset {self._byte_offset(begin)}'
            )
        self.stack.append(_OpenTag(name, argument, self.utf16, len(self.out)))

    def _attributes(self, name: str, begin: int) -> str:
        """Parse attributes up to ``>``; returns the one that matters for this tag."""
        argument = ""
        unclosed = f'Unclosed start tag "{name}" at byte offset {self._byte_offset(begin)}'
        while self._at(self.pos) != ">":
            self._skip_spaces()
            if self._at(self.pos) == ">":
                break
            start = self.pos
            while self._at(self.pos) not in _SPACES and self._at(self.pos) not in "=>/\"'":
                self.pos += 1
            attribute = self.src[start : self.pos]
            if not attribute:
                self._fail(
                    f'Empty attribute name in the tag "{name}" at byte offset '
                    f"{self._byte_offset(begin)}"
                )
            self._skip_spaces()
            if self._at(self.pos) != "=":
                if self._at(self.pos) == "\0":
                    self._fail(unclosed)
                if name == "blockquote" and attribute == "expandable":
                    argument = "1"  # a boolean attribute without a value
                continue
            self.pos += 1
            self._skip_spaces()
            if self._at(self.pos) == "\0":
                self._fail(unclosed)
            value = self._attribute_value()
            if self._at(self.pos) == "\0":
                self._fail(f"Unclosed start tag at byte offset {self._byte_offset(begin)}")
            argument = _tag_argument(name, attribute, value, argument)
        return argument

    def _attribute_value(self) -> str:
        """Parse a quoted string or an unquoted name token."""
        quote = self._at(self.pos)
        if quote not in ("'", '"'):
            start = self.pos
            while self._at(self.pos).isascii() and (
                self._at(self.pos).isalnum() or self._at(self.pos) in ".-"
            ):
                self.pos += 1
            if self._at(self.pos) not in _SPACES and self._at(self.pos) != ">":
                self._fail(
                    f"Unexpected end of name token at byte offset {self._byte_offset(start)}"
                )
            return _ascii_lower(self.src[start : self.pos])  # name tokens are case-insensitive
        self.pos += 1
        chars: list[str] = []
        while self._at(self.pos) not in (quote, "\0"):
            if self._at(self.pos) == "&":
                decoded = _decode_reference(self.src, self.pos)
                if decoded is not None:
                    code, self.pos = decoded
                    chars.append(chr(code))
                    continue
                if self.strict_ampersand:
                    self._fail(
                        f'Unescaped "&" at byte offset {self._byte_offset(self.pos)} '
                        "(strict test server: write &amp;)"
                    )
            chars.append(self.src[self.pos])
            self.pos += 1
        if self._at(self.pos) == quote:
            self.pos += 1
        return "".join(chars)

    def _end_tag(self, begin: int) -> None:
        """Parse an end tag and close the innermost open tag."""
        if not self.stack:
            self._fail(f"Unexpected end tag at byte offset {self._byte_offset(begin)}")
        self._scan_name()
        end_name = _ascii_lower(self.src[begin + 2 : self.pos])
        self._skip_spaces()
        if self._at(self.pos) != ">":
            self._fail(f"Unclosed end tag at byte offset {self._byte_offset(begin)}")
        open_tag = self.stack[-1]
        if end_name and end_name != open_tag.name:  # "</>" closes anything, as in tdlib
            self._fail(
                f"Unmatched end tag at byte offset {self._byte_offset(begin)}, "
                f'expected "</{open_tag.name}>", found "</{end_name}>"'
            )
        if self.utf16 > open_tag.utf16_start:  # empty tags make no entity
            self._close(open_tag)
        self.stack.pop()

    def _add(self, kind: str, tag: _OpenTag, **extra: Any) -> None:
        """Record an entity spanning from the tag's start to here."""
        offset = tag.utf16_start
        self.entities.append(
            {"type": kind, "offset": offset, "length": self.utf16 - offset, **extra}
        )

    def _close(self, tag: _OpenTag) -> None:
        """Turn a closed tag into its entity."""
        if tag.name in _SIMPLE_TAGS:
            self._add(_SIMPLE_TAGS[tag.name], tag)
        elif tag.name == "tg-emoji":
            if not re.fullmatch(r"-?\d{1,19}", tag.argument) or int(tag.argument) == 0:
                self._fail("Invalid custom emoji identifier specified")
            self._add("custom_emoji", tag, custom_emoji_id=str(int(tag.argument)))
        elif tag.name == "a":
            self._close_link(tag)
        elif tag.name in ("pre", "code"):
            self._close_code(tag)
        elif tag.argument:
            self._add("expandable_blockquote", tag)
        else:
            self._add("blockquote", tag)

    def _close_link(self, tag: _OpenTag) -> None:
        """<a href>: a text_mention for tg://user links, a text_link, or nothing."""
        url = tag.argument or "".join(self.out[tag.out_start :])  # no href: the text is the URL
        user_id = _link_user_id(url)
        if user_id is not None:
            self._add(
                "text_mention", tag, user={"id": user_id, "is_bot": False, "first_name": "User"}
            )
            return
        checked = checked_link(url)
        if checked is not None:
            self._add("text_link", tag, url=checked)

    def _close_code(self, tag: _OpenTag) -> None:
        """<pre> and <code>; <pre><code class="language-x"> becomes one pre entity."""
        last = self.entities[-1] if self.entities else None
        same_range = (
            last is not None
            and last["offset"] == tag.utf16_start
            and last["length"] == self.utf16 - tag.utf16_start
        )
        if tag.name == "pre":
            if same_range and last is not None and last["type"] == "code" and last.get("language"):
                last["type"] = "pre"
            else:
                self._add("pre", tag)
        elif same_range and last is not None and last["type"] == "pre" and tag.argument:
            last["language"] = tag.argument
        else:
            self._add("code", tag, **({"language": tag.argument} if tag.argument else {}))


def _tag_argument(name: str, attribute: str, value: str, current: str) -> str:
    """Keep the attribute tdlib reads for this tag, ignoring all others."""
    if name == "a" and attribute == "href":
        return value
    if name == "code" and attribute == "class" and value.startswith("language-"):
        return value.removeprefix("language-")
    if name == "span" and attribute == "class" and value.startswith("tg-"):
        return value.removeprefix("tg-")
    if name == "tg-emoji" and attribute == "emoji-id":
        return value
    if name == "blockquote" and attribute == "expandable":
        return "1"
    return current


def parse_html(source: str, *, strict_ampersand: bool = False) -> tuple[str, list[JSON]]:
    """Parse Telegram HTML into plain text and entities (UTF-16 offsets)."""
    return _HtmlParser(source, strict_ampersand=strict_ampersand).parse()


# ---------------------------------------------------------------------------
# fix_formatted_text: control characters and trimming, applied to every text.
# ---------------------------------------------------------------------------

# clean_input_string_with_entities removes these outright.
_REMOVED_CHARS: Final = frozenset("\r\u2028\u2029\u202a\u202b\u202c\u202d\u202e\u0333\u033f\u030a")


def _clean_char(ch: str) -> str:
    """What tdlib keeps of one character: itself, a space, or nothing."""
    if ch in _REMOVED_CHARS:
        return ""
    if ord(ch) < 32 and ch != "\n":
        return " "  # tabs and other control characters become spaces
    return ch


def _clean_text(text: str, entities: list[JSON]) -> tuple[str, list[JSON]]:
    """Drop or replace control characters, moving entities with the text."""
    kept: list[str] = []
    new_offsets = [0]  # new UTF-16 offset for every old UTF-16 offset
    for ch in text:
        cleaned = _clean_char(ch)
        kept.append(cleaned)
        before = new_offsets[-1]
        width = 2 if ord(ch) > 0xFFFF else 1
        new_offsets.extend([before] * (width - 1) + [before + utf16_len(cleaned)])
    moved = []
    for entity in entities:
        start = new_offsets[entity["offset"]]
        end = new_offsets[entity["offset"] + entity["length"]]
        if end > start:
            moved.append({**entity, "offset": start, "length": end - start})
    return "".join(kept), moved


def _trim_text(text: str, entities: list[JSON]) -> tuple[str, list[JSON]]:
    """Strip trailing spaces/newlines, and leading ones not covered by an entity."""
    text = text.rstrip(" \n")
    end = utf16_len(text)
    kept = [
        {**entity, "length": min(entity["length"], end - entity["offset"])}
        for entity in entities
        if entity["offset"] < end
    ]
    first_entity = min((entity["offset"] for entity in kept), default=len(text))
    lead = 0
    while lead < first_entity and lead < len(text) and text[lead] in " \n":
        lead += 1
    shifted = [{**entity, "offset": entity["offset"] - lead} for entity in kept]
    return text[lead:], sorted(shifted, key=_entity_sort_key)


class ApiError(Exception):
    """A Bot API error reply: HTTP status, Telegram's description, parameters."""

    def __init__(self, status: int, description: str, *, retry_after: int | None = None) -> None:
        super().__init__(description)
        self.status = status
        self.description = description
        self.retry_after = retry_after

    def to_json(self) -> JSON:
        """The response body, in Bot API shape."""
        body: JSON = {"ok": False, "error_code": self.status, "description": self.description}
        if self.retry_after is not None:
            body["parameters"] = {"retry_after": self.retry_after}
        return body


def _bad_request(reason: str) -> ApiError:
    """A 400 with Telegram's "Bad Request: " prefix."""
    return ApiError(400, f"Bad Request: {reason}")


def _explicit_entities(text: str, raw: Any) -> list[JSON]:
    """Validate an ``entities`` parameter against the text it formats."""
    if not isinstance(raw, list):
        raise _bad_request("can't parse entities JSON object")
    size = utf16_len(text)
    entities = []
    for entity in raw:
        if not isinstance(entity, dict) or not isinstance(entity.get("type"), str):
            raise _bad_request("can't parse MessageEntity JSON object")
        offset, length = entity.get("offset"), entity.get("length")
        if not isinstance(offset, int) or not isinstance(length, int) or offset < 0 or length < 0:
            raise _bad_request("can't parse MessageEntity JSON object")
        if offset + length > size:
            raise _bad_request(
                f"can't parse entities: Entity beginning at UTF-16 offset {offset} ends after "
                f"the end of the text at UTF-16 offset {offset + length}"
            )
        if length:
            entities.append(dict(entity))
    return sorted(entities, key=_entity_sort_key)


def format_message_text(
    raw: str, parse_mode: str | None, entities: Any = None, *, strict: bool = True
) -> tuple[str, list[JSON]]:
    """Turn a sendMessage/editMessageText text into (plain text, entities) or ApiError."""
    mode = (parse_mode or "").lower()
    if entities is not None:
        text, parsed = raw, _explicit_entities(raw, entities)  # entities win over parse_mode
    elif mode == "html":
        try:
            text, parsed = parse_html(raw, strict_ampersand=strict)
        except HtmlParseError as exc:
            raise _bad_request(f"can't parse entities: {exc}") from exc
    elif mode in ("markdown", "markdownv2"):
        raise _bad_request(f"unsupported parse_mode {parse_mode} (the test server implements HTML)")
    elif mode:
        raise _bad_request("unsupported parse_mode")
    else:
        text, parsed = raw, []
    text, parsed = _trim_text(*_clean_text(text, parsed))
    if not text:
        raise _bad_request("message text is empty")
    # tdlib counts code points; UTF-16 units (strict) are never fewer.
    if (utf16_len(text) if strict else len(text)) > MAX_TEXT_LENGTH:
        raise _bad_request("message is too long")
    return text, parsed


def find_entities(text: str) -> list[JSON]:
    """The mention and bot_command entities Telegram detects in a user's text."""
    found = []
    patterns = (
        ("mention", r"(?<!\w)@[A-Za-z0-9_]{2,32}+(?!\w)"),
        ("bot_command", r"(?<![\w/<>])/[A-Za-z0-9_]{1,64}+(?:@[A-Za-z0-9_]{3,32}+)?+(?![\w/<>@])"),
    )
    for kind, pattern in patterns:
        for match in re.finditer(pattern, text):
            offset = _utf16_offset(text, match.start())
            found.append({"type": kind, "offset": offset, "length": utf16_len(match.group())})
    return sorted(found, key=_entity_sort_key)


def mention_entity(text: str, mention: str) -> JSON:
    """A mention entity for the first ``mention`` (e.g. "@newsqa_test_bot") in ``text``."""
    index = text.index(mention)
    return {"type": "mention", "offset": _utf16_offset(text, index), "length": utf16_len(mention)}


# ---------------------------------------------------------------------------
# reply_markup validation
# ---------------------------------------------------------------------------


def _validate_button(button: Any) -> None:
    """Check one inline keyboard button like Telegram does."""
    if not isinstance(button, dict) or not isinstance(button.get("text"), str):
        raise _bad_request(
            'can\'t parse inline keyboard button: Field "text" must be of type String'
        )
    actions = [key for key in _BUTTON_ACTIONS if key in button]
    if not actions:
        raise _bad_request(
            "can't parse inline keyboard button: Text buttons are unallowed in the inline keyboard"
        )
    if "callback_data" in button:
        data = button["callback_data"]
        size = len(data.encode("utf-8")) if isinstance(data, str) else 0
        if not 1 <= size <= MAX_CALLBACK_DATA_BYTES:
            raise _bad_request("BUTTON_DATA_INVALID")
    if "url" in button:
        url = button["url"]
        if not isinstance(url, str) or (checked_link(url) is None and _link_user_id(url) is None):
            raise _bad_request("BUTTON_URL_INVALID")


def validate_reply_markup(markup: Any) -> JSON | None:
    """Return the reply_markup as a dict, or raise ApiError for a bad inline keyboard."""
    if markup is None:
        return None
    if not isinstance(markup, dict):
        raise _bad_request("can't parse reply keyboard markup JSON object")
    if "inline_keyboard" in markup:
        rows = markup["inline_keyboard"]
        if not isinstance(rows, list) or not all(isinstance(row, list) for row in rows):
            raise _bad_request(
                'field "inline_keyboard" of the InlineKeyboardMarkup must be an Array'
            )
        for row in rows:
            for button in row:
                _validate_button(button)
    return markup


def _inline_markup(markup: JSON | None) -> JSON | None:
    """The part of a markup a Message carries: only inline keyboards are echoed back."""
    return markup if markup is not None and "inline_keyboard" in markup else None


# ---------------------------------------------------------------------------
# Stored state
# ---------------------------------------------------------------------------


@dataclass
class SentMessage:
    """A text message the bot sent, as the server stored it."""

    message_id: int
    chat_id: ChatId
    chat: JSON
    sender: JSON
    raw_text: str
    text: str
    parse_mode: str | None
    entities: list[JSON]
    reply_markup: JSON | None
    reply_to_message_id: int | None
    reply_parameters: JSON | None
    date: int
    params: JSON
    reply_to_message: JSON | None = None
    edit_date: int | None = None
    history: list[str] = field(default_factory=list)  # earlier plain texts, oldest first

    def to_api(self) -> JSON:
        """The Bot API Message object for this message."""
        message: JSON = {
            "message_id": self.message_id,
            "from": dict(self.sender),
            "chat": dict(self.chat),
            "date": self.date,
            "text": self.text,
        }
        if self.entities:
            message["entities"] = [dict(entity) for entity in self.entities]
        if self.edit_date is not None:
            message["edit_date"] = self.edit_date
        if self.reply_to_message is not None:
            message["reply_to_message"] = self.reply_to_message
        if (markup := _inline_markup(self.reply_markup)) is not None:
            message["reply_markup"] = markup
        return message

    def entity_text(self, entity: JSON) -> str:
        """The text an entity of this message covers."""
        return utf16_slice(self.text, entity["offset"], entity["length"])

    def entities_of(self, kind: str) -> list[str]:
        """Texts of all entities of one type, e.g. ``"blockquote"``."""
        return [self.entity_text(e) for e in self.entities if e["type"] == kind]

    @property
    def buttons(self) -> list[JSON]:
        """All inline keyboard buttons, row by row."""
        markup = _inline_markup(self.reply_markup) or {"inline_keyboard": []}
        return [button for row in markup["inline_keyboard"] for button in row]

    @property
    def callback_data(self) -> list[str]:
        """callback_data of every inline button, in order."""
        return [b["callback_data"] for b in self.buttons if "callback_data" in b]


@dataclass
class _Chat:
    """Per-chat state: the Chat object and both sides' messages."""

    chat: JSON
    next_message_id: int = 1
    bot_messages: dict[int, SentMessage] = field(default_factory=dict)
    user_messages: dict[int, JSON] = field(default_factory=dict)

    def take_message_id(self) -> int:
        """Message ids count up per chat, shared by the user's and the bot's messages."""
        message_id = self.next_message_id
        self.next_message_id += 1
        return message_id

    def find(self, message_id: int) -> JSON | None:
        """Any message in this chat as Bot API JSON, without its own reply_to_message."""
        if message_id in self.bot_messages:
            found = self.bot_messages[message_id].to_api()
        elif message_id in self.user_messages:
            found = dict(self.user_messages[message_id])
        else:
            return None
        found.pop("reply_to_message", None)  # Telegram does not nest replies
        return found


@dataclass
class _Fault:
    """One injected misbehaviour for the next call of a method."""

    kind: Literal["fail", "delay", "drop"]
    status: int = 0
    description: str = ""
    retry_after: int | None = None
    seconds: float = 0.0
    process: bool = True


@dataclass
class _Described:
    """A successful result that also carries Telegram's optional description."""

    result: Any
    description: str


_DEFAULT_DESCRIPTIONS: Final = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden: bot was blocked by the user",
    404: "Not Found",
    409: "Conflict: terminated by other getUpdates request; "
    "make sure that only one bot instance is running",
    500: "Internal Server Error",
    502: "Bad Gateway",
}


def _int_param(params: JSON, name: str, default: int) -> int:
    """An integer parameter, or 400 like Telegram for a non-number."""
    value = params.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise _bad_request(f"invalid {name} specified")
    try:
        return int(value)
    except ValueError:
        raise _bad_request(f"invalid {name} specified") from None


def _number_param(params: JSON, name: str) -> float:
    """A number parameter such as getUpdates' timeout (0 when absent)."""
    value = params.get(name, 0)
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise _bad_request(f"invalid {name} specified")
    try:
        return float(value or 0)
    except ValueError:
        raise _bad_request(f"invalid {name} specified") from None


def _decode_value(name: str, value: Any) -> Any:
    """PTB JSON-encodes every non-string parameter; decode those, keep strings as strings."""
    if name in _STRING_PARAMS:
        return value if isinstance(value, str) else json.dumps(value)
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value  # e.g. chat_id="@channel"
    return value


async def _read_params(request: web.Request) -> JSON:
    """Parameters from the query string and a form, multipart or JSON body."""
    raw: JSON = dict(request.query)
    if request.body_exists:
        if request.content_type == "application/json":
            try:
                body = await request.json()
            except ValueError:
                raise _bad_request("can't parse JSON object") from None
            if not isinstance(body, dict):
                raise _bad_request("can't parse JSON object")
            raw.update(body)
        else:
            form = await request.post()
            for key, value in form.items():
                if isinstance(value, web.FileField):
                    raw[key] = {"filename": value.filename, "size": len(value.file.read())}
                else:
                    raw[key] = value
    return {key: _decode_value(key, value) for key, value in raw.items()}


def _json_response(body: JSON, status: int = 200) -> web.Response:
    """A JSON response with the body Telegram would send."""
    return web.json_response(body, status=status)


def _chat_key(chat_id: Any) -> ChatId:
    """Chat ids are ints; ``@username`` strings are kept as they are."""
    if isinstance(chat_id, bool):
        raise _bad_request("chat not found")
    if isinstance(chat_id, int):
        return chat_id
    text = str(chat_id)
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    if re.fullmatch(r"@[A-Za-z][A-Za-z0-9_]{3,31}", text):
        return text
    raise _bad_request("chat not found")


def _photo_size(unique: str, width: int, height: int, size: int) -> JSON:
    """A PhotoSize object with made-up file ids."""
    return {
        "file_id": f"AgACAgIAAx{unique}",
        "file_unique_id": unique,
        "width": width,
        "height": height,
        "file_size": size,
    }


def _suffix(file_name: str) -> str:
    """A file name's extension, as Telegram keeps it in the paths of stored files."""
    _, dot, suffix = file_name.rpartition(".")
    return f".{suffix}" if dot else ""


def _guess_chat(chat_id: ChatId) -> JSON:
    """A plausible Chat object for a chat the bot writes to before any user did."""
    if isinstance(chat_id, str):
        name = chat_id[1:]
        synthetic_id = -1001000000000 - sum(map(ord, name))
        return {"id": synthetic_id, "type": "channel", "title": name, "username": name}
    if chat_id > 0:
        return {"id": chat_id, "type": "private", "first_name": "Ann"}
    kind = "supergroup" if str(chat_id).startswith("-100") else "group"
    return {"id": chat_id, "type": kind, "title": "Test group"}


class TelegramServer:
    """A Bot API server on 127.0.0.1 that a real PTB bot can talk to over HTTP."""

    def __init__(
        self,
        token: str = DEFAULT_TOKEN,
        *,
        username: str = DEFAULT_USERNAME,
        first_name: str = "NewsQA Test Bot",
        strict: bool = True,
        port: int = 0,
    ) -> None:
        self.token = token
        self.strict = strict
        bot_id = token.partition(":")[0]
        self.bot_user: JSON = {
            "id": int(bot_id) if bot_id.isdigit() else 7000000001,
            "is_bot": True,
            "first_name": first_name,
            "username": username,
        }
        self.calls: list[tuple[str, JSON]] = []
        self.sent: list[SentMessage] = []
        self.chat_actions: list[tuple[ChatId, str]] = []
        self.callback_answers: list[JSON] = []
        self.commands: list[JSON] = []
        self.webhook_url = ""
        self.webhook_secret: str | None = None
        self._webhook_settings: JSON = {}
        self._updates: list[JSON] = []
        self._next_update_id = 100_000_001
        self._chats: dict[ChatId, _Chat] = {}
        self._faults: dict[str, deque[_Fault]] = {}
        self._open_callbacks: set[str] = set()
        self._callback_ids = itertools.count(1)
        self._command_sets: dict[str, list[JSON]] = {}
        self._allowed_updates: list[str] = []
        self._poll_generation = 0
        self._changed = asyncio.Event()
        self._closing = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._port = port  # 0: any free port
        self._methods: dict[str, Callable[[JSON], Awaitable[Any]]] = {
            "getMe": self._get_me,
            "logOut": self._log_out,
            "close": self._log_out,
            "getUpdates": self._get_updates,
            "setWebhook": self._set_webhook,
            "deleteWebhook": self._delete_webhook,
            "getWebhookInfo": self._get_webhook_info,
            "sendMessage": self._send_message,
            "editMessageText": self._edit_message_text,
            "answerCallbackQuery": self._answer_callback_query,
            "sendChatAction": self._send_chat_action,
            "setMyCommands": self._set_my_commands,
            "getMyCommands": self._get_my_commands,
            "deleteMyCommands": self._delete_my_commands,
            "getFile": self._get_file,
        }
        self.files: dict[str, tuple[str, bytes]] = {}  # file_id -> (file_path, content)
        self.downloads: list[str] = []  # the file paths the bot downloaded

    # -- lifecycle ---------------------------------------------------------

    async def start(self) -> None:
        """Listen on 127.0.0.1, on the port given or else a free one."""
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/bot{token}/{method}", self._handle)
        app.router.add_route("*", "/file/bot{token}/{path:.*}", self._download)
        app.router.add_route("*", "/{path:.*}", self._not_found)
        # A short shutdown timeout: open long polls must not hold up stop().
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self._port)
        await site.start()
        self._port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        """Answer pending long polls, end delayed calls and close the listener."""
        self._closing.set()
        self._notify()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> TelegramServer:
        """Start the server."""
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the server."""
        await self.stop()

    @property
    def port(self) -> int:
        """The TCP port the server listens on (0 before start)."""
        return self._port

    @property
    def base_url(self) -> str:
        """Value for ``ApplicationBuilder.base_url`` / ``Bot(base_url=...)``."""
        return f"http://127.0.0.1:{self._port}/bot"

    @property
    def base_file_url(self) -> str:
        """Value for ``ApplicationBuilder.base_file_url`` (the files users sent)."""
        return f"http://127.0.0.1:{self._port}/file/bot"

    @property
    def bot_mention(self) -> str:
        """The bot's @username, as users type it."""
        return f"@{self.bot_user['username']}"

    # -- HTTP --------------------------------------------------------------

    async def _not_found(self, request: web.Request) -> web.Response:
        """Telegram's answer for paths that are not Bot API methods."""
        return _json_response(ApiError(404, "Not Found").to_json(), 404)

    async def _download(self, request: web.Request) -> web.Response:
        """A file download: the content of a file a user sent, by the path getFile gave."""
        path = request.match_info["path"]
        found = [content for file_path, content in self.files.values() if file_path == path]
        if request.match_info["token"] != self.token or not found:
            return await self._not_found(request)
        self.downloads.append(path)
        self._notify()
        return web.Response(body=found[0], content_type="application/octet-stream")

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        """Serve one Bot API call: /bot{token}/{method}."""
        if request.match_info["token"] != self.token:
            return _json_response(ApiError(401, "Unauthorized").to_json(), 401)
        name = request.match_info["method"]
        method = _CANONICAL.get(name.lower(), name)
        try:
            params = await _read_params(request)
        except ApiError as exc:
            return _json_response(exc.to_json(), exc.status)
        self.calls.append((method, params))
        self._notify()
        fault = self._pop_fault(method)
        if fault is not None:
            response = await self._apply_fault(fault, request)
            if response is not None:
                return response
        try:
            result = await self._dispatch(method, params)
        except ApiError as exc:
            return _json_response(exc.to_json(), exc.status)
        finally:
            self._notify()
        if isinstance(result, _Described):
            return _json_response(
                {"ok": True, "result": result.result, "description": result.description}
            )
        return _json_response({"ok": True, "result": result})

    async def _dispatch(self, method: str, params: JSON) -> Any:
        """Run the method's handler."""
        handler = self._methods.get(method)
        if handler is None:
            raise _bad_request("method not found")
        return await handler(params)

    def _pop_fault(self, method: str) -> _Fault | None:
        """The next injected fault for this method, if any."""
        queue = self._faults.get(method.lower())
        return queue.popleft() if queue else None

    async def _apply_fault(self, fault: _Fault, request: web.Request) -> web.StreamResponse | None:
        """Answer with the fault; None means "now handle the call normally"."""
        if fault.kind == "fail":
            error = ApiError(fault.status, fault.description, retry_after=fault.retry_after)
            return _json_response(error.to_json(), fault.status)
        if fault.kind == "delay":
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), fault.seconds)
            if fault.process and not self._closing.is_set():
                return None
        if request.transport is not None:
            request.transport.abort()  # the client sees the connection drop, no response
        return web.Response(status=204)

    # -- change notification -------------------------------------------------

    def _notify(self) -> None:
        """Wake everyone waiting for the server's state to change."""
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def _wait_change(self, seconds: float) -> None:
        """Sleep until the next state change, at most ``seconds``."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), seconds)

    # -- Bot API methods -----------------------------------------------------

    async def _get_me(self, params: JSON) -> JSON:
        """getMe."""
        return {
            **self.bot_user,
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
            "can_connect_to_business": False,
            "has_main_web_app": False,
        }

    async def _log_out(self, params: JSON) -> bool:
        """logOut and close."""
        return True

    async def _get_updates(self, params: JSON) -> list[JSON]:
        """getUpdates with real long polling."""
        if self.webhook_url:
            raise ApiError(
                409,
                "Conflict: can't use getUpdates method while webhook is active; "
                "use deleteWebhook to delete the webhook first",
            )
        # A newer getUpdates ends an older one with 409, as on Telegram.
        self._poll_generation += 1
        generation = self._poll_generation
        self._notify()
        offset = _int_param(params, "offset", 0)
        limit = min(max(_int_param(params, "limit", 100), 1), 100)
        timeout = max(_number_param(params, "timeout"), 0.0)
        if isinstance(params.get("allowed_updates"), list):
            self._allowed_updates = [str(kind) for kind in params["allowed_updates"]]
        self._confirm(offset)
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            batch = self._take_updates(limit)
            remaining = deadline - asyncio.get_running_loop().time()
            if batch or remaining <= 0 or self._closing.is_set():
                return batch
            await self._wait_change(remaining)
            if generation != self._poll_generation:
                raise ApiError(409, _DEFAULT_DESCRIPTIONS[409])

    def _confirm(self, offset: int) -> None:
        """Forget updates below ``offset``; a negative offset keeps the last -offset ones."""
        if offset > 0:
            self._updates = [u for u in self._updates if u["update_id"] >= offset]
        elif offset < 0:
            self._updates = self._updates[offset:]

    def _take_updates(self, limit: int) -> list[JSON]:
        """The first ``limit`` queued updates of an allowed type, dropping the rest."""
        self._updates = [u for u in self._updates if self._is_allowed(u)]
        return [json.loads(json.dumps(u)) for u in self._updates[:limit]]

    def _is_allowed(self, update: JSON) -> bool:
        """Whether allowed_updates lets this update through."""
        kind = next((key for key in update if key != "update_id"), "")
        if self._allowed_updates:
            return kind in self._allowed_updates
        return kind not in _OPT_IN_UPDATES

    async def _set_webhook(self, params: JSON) -> _Described:
        """setWebhook: remember the URL and secret; an empty URL removes the webhook."""
        url = str(params.get("url") or "")
        secret = params.get("secret_token")
        if url and not re.match(r"(?i)https?://[^/]", url):
            raise _bad_request("bad webhook: An HTTPS URL must be provided for webhook")
        if secret is not None and not re.fullmatch(r"[A-Za-z0-9_-]{1,256}", str(secret)):
            raise _bad_request("secret token contains unallowed characters")
        if params.get("drop_pending_updates"):
            self._updates.clear()
        if isinstance(params.get("allowed_updates"), list):
            self._allowed_updates = [str(kind) for kind in params["allowed_updates"]]
        self.webhook_url = url
        self.webhook_secret = str(secret) if url and secret is not None else None
        self._webhook_settings = {
            key: params[key] for key in ("max_connections", "ip_address") if key in params
        }
        return _Described(True, "Webhook was set" if url else "Webhook was deleted")

    async def _delete_webhook(self, params: JSON) -> _Described:
        """deleteWebhook, optionally dropping pending updates."""
        if params.get("drop_pending_updates"):
            self._updates.clear()
        had_webhook = bool(self.webhook_url)
        self.webhook_url, self.webhook_secret = "", None
        return _Described(
            True, "Webhook was deleted" if had_webhook else "Webhook is already deleted"
        )

    async def _get_webhook_info(self, params: JSON) -> JSON:
        """getWebhookInfo."""
        info: JSON = {
            "url": self.webhook_url,
            "has_custom_certificate": False,
            "pending_update_count": len(self._updates),
        }
        if self.webhook_url:
            info.update({"max_connections": 40, **self._webhook_settings})
            if self._allowed_updates:
                info["allowed_updates"] = list(self._allowed_updates)
        return info

    async def _send_message(self, params: JSON) -> JSON:
        """sendMessage: validate like Telegram, then store and return the Message."""
        chat_key = self._require_chat(params)
        text, entities = self._format(params)
        markup = validate_reply_markup(params.get("reply_markup"))
        chat = self._chat_state(chat_key)
        reply_to_id, reply_parameters, reply_to = self._reply_target(chat, params)
        message = SentMessage(
            message_id=chat.take_message_id(),
            chat_id=chat_key,
            chat=chat.chat,
            sender=dict(self.bot_user),
            raw_text=str(params["text"]),
            text=text,
            parse_mode=params.get("parse_mode"),
            entities=entities,
            reply_markup=markup,
            reply_to_message_id=reply_to_id,
            reply_parameters=reply_parameters,
            date=int(time.time()),
            params=params,
            reply_to_message=reply_to,
        )
        chat.bot_messages[message.message_id] = message
        self.sent.append(message)
        return message.to_api()

    def _require_chat(self, params: JSON) -> ChatId:
        """The chat_id parameter, which every chat method needs."""
        if params.get("chat_id") in (None, ""):
            raise _bad_request("chat_id is empty")
        return _chat_key(params["chat_id"])

    def _format(self, params: JSON) -> tuple[str, list[JSON]]:
        """Plain text and entities of the ``text`` parameter."""
        raw = params.get("text")
        if raw is None or raw == "":
            raise _bad_request("message text is empty")
        mode = params.get("parse_mode")
        return format_message_text(
            str(raw), str(mode) if mode else None, params.get("entities"), strict=self.strict
        )

    def _reply_target(
        self, chat: _Chat, params: JSON
    ) -> tuple[int | None, JSON | None, JSON | None]:
        """Resolve reply_parameters / reply_to_message_id to the replied-to message."""
        reply_parameters = params.get("reply_parameters")
        if isinstance(reply_parameters, dict):
            message_id = reply_parameters.get("message_id")
            allow_missing = bool(reply_parameters.get("allow_sending_without_reply"))
        elif "reply_to_message_id" in params:
            reply_parameters = None
            message_id = params["reply_to_message_id"]
            allow_missing = bool(params.get("allow_sending_without_reply"))
        else:
            return None, None, None
        target = chat.find(message_id) if isinstance(message_id, int) else None
        if target is None:
            if allow_missing:
                return None, reply_parameters, None
            raise _bad_request("message to be replied not found")
        return message_id, reply_parameters, target

    async def _edit_message_text(self, params: JSON) -> JSON:
        """editMessageText on a message the bot sent."""
        if "inline_message_id" in params:
            raise _bad_request("MESSAGE_ID_INVALID")
        chat = self._chat_state(self._require_chat(params))
        message_id = _int_param(params, "message_id", 0)
        message = chat.bot_messages.get(message_id)
        if message is None:
            if message_id in chat.user_messages:
                raise _bad_request("message can't be edited")
            raise _bad_request("message to edit not found")
        text, entities = self._format(params)
        markup = validate_reply_markup(params.get("reply_markup"))
        old = (message.text, message.entities, _inline_markup(message.reply_markup))
        if (text, entities, _inline_markup(markup)) == old:
            raise _bad_request(
                "message is not modified: specified new message content and reply markup are "
                "exactly the same as a current content and reply markup of the message"
            )
        message.history.append(message.text)
        message.raw_text, message.text, message.entities = str(params["text"]), text, entities
        message.parse_mode = params.get("parse_mode")
        message.reply_markup = markup  # no reply_markup in an edit removes the keyboard
        message.edit_date = int(time.time())
        return message.to_api()

    async def _answer_callback_query(self, params: JSON) -> bool:
        """answerCallbackQuery: each query can be answered once."""
        query_id = str(params.get("callback_query_id", ""))
        if query_id not in self._open_callbacks:
            raise _bad_request(
                "query is too old and response timeout expired or query ID is invalid"
            )
        self._open_callbacks.discard(query_id)
        self.callback_answers.append(dict(params))
        return True

    async def _get_file(self, params: JSON) -> JSON:
        """The File object of a file a user sent, with the path to download it from."""
        file_id = params.get("file_id")
        if file_id not in self.files:
            raise _bad_request("invalid file_id")
        file_path, content = self.files[file_id]
        return {
            "file_id": file_id,
            "file_unique_id": file_id[-12:],
            "file_size": len(content),
            "file_path": file_path,
        }

    async def _send_chat_action(self, params: JSON) -> bool:
        """sendChatAction."""
        chat_key = self._require_chat(params)
        action = params.get("action")
        if action not in _CHAT_ACTIONS:
            raise _bad_request("wrong parameter action in request")
        self.chat_actions.append((chat_key, str(action)))
        return True

    async def _set_my_commands(self, params: JSON) -> bool:
        """setMyCommands with Telegram's command and description rules."""
        commands = params.get("commands")
        if not isinstance(commands, list) or len(commands) > 100:
            raise _bad_request("can't parse commands JSON object")
        for command in commands:
            if not isinstance(command, dict):
                raise _bad_request("can't parse BotCommand JSON object")
            if not re.fullmatch(r"[a-z0-9_]{1,32}", str(command.get("command", ""))):
                raise _bad_request("BOT_COMMAND_INVALID")
            if not 1 <= len(str(command.get("description", "")).strip()) <= 256:
                raise _bad_request("BOT_COMMAND_DESCRIPTION_INVALID")
        stored = [{"command": c["command"], "description": c["description"]} for c in commands]
        self._command_sets[self._commands_key(params)] = stored
        self.commands = stored
        return True

    async def _get_my_commands(self, params: JSON) -> list[JSON]:
        """getMyCommands for a scope and language."""
        return list(self._command_sets.get(self._commands_key(params), []))

    async def _delete_my_commands(self, params: JSON) -> bool:
        """deleteMyCommands for a scope and language."""
        self._command_sets.pop(self._commands_key(params), None)
        self.commands = []
        return True

    @staticmethod
    def _commands_key(params: JSON) -> str:
        """Commands are stored per (scope, language_code)."""
        scope = params.get("scope") or {"type": "default"}
        return json.dumps([scope, params.get("language_code", "")], sort_keys=True)

    # -- chats ---------------------------------------------------------------

    def _chat_state(self, chat_id: ChatId, chat: JSON | None = None) -> _Chat:
        """The state of a chat, created on first use; ``chat`` refreshes its Chat object."""
        state = self._chats.get(chat_id)
        if state is None:
            state = self._chats[chat_id] = _Chat(chat or _guess_chat(chat_id))
        elif chat is not None:
            state.chat = chat
        return state

    def messages(self, chat_id: ChatId) -> list[SentMessage]:
        """The bot's messages in a chat, oldest first."""
        state = self._chats.get(chat_id)
        return list(state.bot_messages.values()) if state else []

    def calls_to(self, method: str) -> list[JSON]:
        """Parameters of every call of one method, in order."""
        wanted = _CANONICAL.get(method.lower(), method)
        return [params for name, params in self.calls if name == wanted]

    @property
    def pending_updates(self) -> list[JSON]:
        """Updates not yet confirmed by the bot (via offset or a webhook 2xx)."""
        return list(self._updates)

    # -- playing users ---------------------------------------------------------

    def _user(
        self,
        chat_id: ChatId,
        user_id: int | None,
        chat_type: ChatType,
        first_name: str,
        language_code: str = "en",
    ) -> JSON:
        """The User object of the person acting; in a private chat user id == chat id."""
        if user_id is None:
            user_id = (
                chat_id
                if chat_type == "private" and isinstance(chat_id, int)
                else DEFAULT_GROUP_USER_ID
            )
        return {
            "id": user_id,
            "is_bot": False,
            "first_name": first_name,
            "language_code": language_code,
        }

    def _user_chat(
        self, chat_id: ChatId, chat_type: ChatType, first_name: str, chat_title: str | None
    ) -> _Chat:
        """Register the chat a user writes in and return its state."""
        chat: JSON = {"id": chat_id, "type": chat_type}
        if chat_type == "private":
            chat["first_name"] = first_name
        else:
            chat["title"] = chat_title or "Test group"
        return self._chat_state(chat_id, chat)

    def _new_user_message(
        self,
        chat_id: ChatId,
        *,
        user_id: int | None,
        chat_type: ChatType,
        first_name: str,
        chat_title: str | None,
        reply_to_message_id: int | None = None,
        language_code: str = "en",
    ) -> JSON:
        """A Message from a user, without content yet."""
        chat = self._user_chat(chat_id, chat_type, first_name, chat_title)
        message: JSON = {
            "message_id": chat.take_message_id(),
            "from": self._user(chat_id, user_id, chat_type, first_name, language_code),
            "chat": dict(chat.chat),
            "date": int(time.time()),
        }
        if reply_to_message_id is not None:
            target = chat.find(reply_to_message_id)
            if target is None:
                raise ValueError(f"no message {reply_to_message_id} in chat {chat_id} to reply to")
            message["reply_to_message"] = target
        return message

    def _enqueue(self, kind: str, payload: JSON) -> JSON:
        """Queue an update of one type and wake long polls."""
        return self.raw_update({kind: payload})

    def user_message(
        self,
        chat_id: ChatId,
        text: str,
        *,
        user_id: int | None = None,
        chat_type: ChatType = "private",
        first_name: str = "Ann",
        entities: list[JSON] | None = None,
        reply_to_message_id: int | None = None,
        chat_title: str | None = None,
        language_code: str = "en",
    ) -> JSON:
        """A user sends a text; mentions and /commands get entities unless ``entities`` is given."""
        message = self._new_user_message(
            chat_id,
            user_id=user_id,
            chat_type=chat_type,
            first_name=first_name,
            chat_title=chat_title,
            reply_to_message_id=reply_to_message_id,
            language_code=language_code,
        )
        message["text"] = text
        found = find_entities(text) if entities is None else entities
        if found:
            message["entities"] = [dict(entity) for entity in found]
        return self._enqueue("message", message)

    def user_sticker(
        self,
        chat_id: ChatId,
        *,
        emoji: str = "👍",
        user_id: int | None = None,
        chat_type: ChatType = "private",
        first_name: str = "Ann",
        chat_title: str | None = None,
    ) -> JSON:
        """A user sends a sticker (a message without text)."""
        message = self._new_user_message(
            chat_id,
            user_id=user_id,
            chat_type=chat_type,
            first_name=first_name,
            chat_title=chat_title,
        )
        unique = f"sticker{message['message_id']}"
        message["sticker"] = {
            "file_id": f"CAACAgIAAx{unique}",
            "file_unique_id": unique,
            "type": "regular",
            "width": 512,
            "height": 512,
            "is_animated": False,
            "is_video": False,
            "emoji": emoji,
        }
        return self._enqueue("message", message)

    def user_photo(
        self,
        chat_id: ChatId,
        *,
        caption: str | None = None,
        user_id: int | None = None,
        chat_type: ChatType = "private",
        first_name: str = "Ann",
        chat_title: str | None = None,
    ) -> JSON:
        """A user sends a photo, optionally with a caption."""
        message = self._new_user_message(
            chat_id,
            user_id=user_id,
            chat_type=chat_type,
            first_name=first_name,
            chat_title=chat_title,
        )
        unique = f"photo{message['message_id']}"
        message["photo"] = [
            _photo_size(f"{unique}s", 90, 60, 1500),
            _photo_size(f"{unique}m", 800, 533, 52000),
        ]
        if caption is not None:
            message["caption"] = caption
            if found := find_entities(caption):
                message["caption_entities"] = found
        return self._enqueue("message", message)

    def user_document(
        self,
        chat_id: ChatId,
        file_name: str,
        content: bytes,
        *,
        mime_type: str = "text/plain",
        user_id: int | None = None,
        chat_type: ChatType = "private",
        first_name: str = "Ann",
    ) -> JSON:
        """A user sends a file; the bot can fetch it with getFile and download it."""
        message = self._new_user_message(
            chat_id, user_id=user_id, chat_type=chat_type, first_name=first_name, chat_title=None
        )
        file_id = f"BQACAgIAAx{chat_id}doc{message['message_id']}"
        self.files[file_id] = (f"documents/file_{len(self.files)}{_suffix(file_name)}", content)
        message["document"] = {
            "file_id": file_id,
            "file_unique_id": file_id[-12:],
            "file_name": file_name,
            "mime_type": mime_type,
            "file_size": len(content),
        }
        return self._enqueue("message", message)

    def user_edits(self, chat_id: ChatId, message_id: int, text: str) -> JSON:
        """A user edits an earlier text message: an edited_message update."""
        state = self._chats.get(chat_id)
        original = state.user_messages.get(message_id) if state else None
        if original is None or "text" not in original:
            raise ValueError(f"no user text message {message_id} in chat {chat_id}")
        edited = {**original, "text": text, "edit_date": int(time.time())}
        edited.pop("entities", None)
        if found := find_entities(text):
            edited["entities"] = found
        return self._enqueue("edited_message", edited)

    def press_button(
        self,
        chat_id: ChatId,
        message_id: int,
        data: str,
        *,
        user_id: int | None = None,
        chat_type: ChatType = "private",
        first_name: str = "Ann",
    ) -> JSON:
        """A user presses an inline button of a bot message: a callback_query update."""
        state = self._chats.get(chat_id)
        message = state.bot_messages.get(message_id) if state else None
        if message is None:
            raise ValueError(f"no bot message {message_id} in chat {chat_id}")
        if data not in message.callback_data:
            # Telegram only delivers data of a button the message really has.
            raise ValueError(f"message {message_id} has no button with callback_data {data!r}")
        query_id = f"{self.bot_user['id']}{next(self._callback_ids):08d}"
        self._open_callbacks.add(query_id)
        query = {
            "id": query_id,
            "from": self._user(chat_id, user_id, chat_type, first_name),
            "message": message.to_api(),
            "chat_instance": str(8_000_000_000_000 + zlib.crc32(str(chat_id).encode())),
            "data": data,
        }
        return self._enqueue("callback_query", query)

    def raw_update(self, update: JSON) -> JSON:
        """Queue any update (an update_id is added if missing) and return it."""
        if "update_id" not in update:
            update = {"update_id": self._next_update_id, **update}
        self._next_update_id = max(self._next_update_id, int(update["update_id"])) + 1
        for kind in ("message", "edited_message"):
            message = update.get(kind)
            if isinstance(message, dict) and isinstance(message.get("chat"), dict):
                # Stored so the bot can reply to it and tests can edit it later.
                chat = self._chat_state(message["chat"]["id"], message["chat"])
                chat.user_messages[message["message_id"]] = message
                chat.next_message_id = max(chat.next_message_id, message["message_id"] + 1)
        self._updates.append(update)
        self._notify()
        return update

    # -- waiting -----------------------------------------------------------------

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:  # noqa: ASYNC109
        """Wait until ``predicate()`` is true; it is re-checked on every server event."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate():
            remaining = deadline - loop.time()
            if remaining <= 0:
                recent = [name for name, _ in self.calls[-10:]]
                raise TimeoutError(f"condition not met within {timeout}s; last calls: {recent}")
            await self._wait_change(remaining)

    async def wait_for_messages(
        self,
        chat_id: ChatId,
        count: int = 1,
        timeout: float = 5.0,  # noqa: ASYNC109
    ) -> list[SentMessage]:
        """Wait until the bot has sent ``count`` messages to the chat; returns all of them."""
        await self.wait_for(lambda: len(self.messages(chat_id)) >= count, timeout)
        return self.messages(chat_id)

    # -- fault injection -----------------------------------------------------------

    def _add_fault(self, method: str, fault: _Fault, times: int = 1) -> None:
        """Queue a fault for the next ``times`` calls of a method."""
        self._faults.setdefault(method.lower(), deque()).extend(fault for _ in range(times))

    def fail_next(
        self,
        method: str,
        *,
        status: int,
        description: str | None = None,
        retry_after: int | None = None,
        times: int = 1,
    ) -> None:
        """The next ``times`` calls of ``method`` fail with this Bot API error."""
        if description is None:
            description = (
                f"Too Many Requests: retry after {retry_after or 1}"
                if status == 429
                else _DEFAULT_DESCRIPTIONS.get(status, "Internal Server Error")
            )
        if status == 429 and retry_after is None:
            retry_after = 1  # Telegram always says how long to wait
        self._add_fault(method, _Fault("fail", status, description, retry_after), times)

    def delay_next(self, method: str, seconds: float, *, process: bool = True) -> None:
        """The next call of ``method`` hangs ``seconds`` first (to trigger client timeouts).

        With ``process=True`` the call then takes effect even if the client has
        given up, as a slow Telegram would; with False the connection is dropped.
        """
        self._add_fault(method, _Fault("delay", seconds=seconds, process=process))

    def drop_next(self, method: str) -> None:
        """The next call of ``method`` is closed without any answer (and has no effect)."""
        self._add_fault(method, _Fault("drop"))

    # -- webhook -------------------------------------------------------------------

    async def post_to_webhook(self, update: JSON, secret_token: str | None) -> int:
        """POST an update to the setWebhook URL as Telegram does; returns the HTTP status."""
        if not self.webhook_url:
            raise RuntimeError("no webhook is set; the bot must call setWebhook first")
        # PTB's webhook handler wants exactly "application/json", without a charset.
        headers = {"Content-Type": "application/json"}
        if secret_token is not None:
            headers[SECRET_HEADER] = secret_token
        body = json.dumps(update).encode("utf-8")
        async with (
            aiohttp.ClientSession() as session,
            session.post(self.webhook_url, data=body, headers=headers) as response,
        ):
            status = response.status
        if 200 <= status < 300:
            # A 2xx confirms the update, so it is no longer pending.
            self._updates = [
                u for u in self._updates if u.get("update_id") != update.get("update_id")
            ]
        self._notify()
        return status

    async def deliver_updates(self) -> list[int]:
        """POST every pending update to the webhook in order, with the secret the bot set, as
        Telegram does; returns the HTTP statuses."""
        return [
            await self.post_to_webhook(update, self.webhook_secret)
            for update in self.pending_updates
        ]
