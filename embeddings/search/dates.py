"""Dates in questions: the window a question's date phrase names ("last week", "in July 2023",
"since March"), and the preference it gives passages dated inside it over the rest."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

_MONTHS = {
    name: number
    for number, names in enumerate(
        [
            ("january", "jan"), ("february", "feb"), ("march", "mar"), ("april", "apr"),
            ("may",), ("june", "jun"), ("july", "jul"), ("august", "aug"),
            ("september", "sep", "sept"), ("october", "oct"), ("november", "nov"),
            ("december", "dec"),
        ],
        start=1,
    )
    for name in names
}  # fmt: skip
_MONTH = "(" + "|".join(sorted(_MONTHS, key=len, reverse=True)) + r")\.?"
_DATE_PHRASES = [
    ("relative", re.compile(r"\b(today|yesterday|this week|last week|past week|this month|"
                            r"last month|past month|this year|last year|past year)\b")),
    ("since", re.compile(rf"\bsince (?:{_MONTH}(?: (\d{{4}}))?|(\d{{4}}))\b")),
    ("month", re.compile(rf"\b(?:in|during|of) {_MONTH}(?: (\d{{4}}))?\b")),
    ("year", re.compile(r"\b(?:in|during|of) (\d{4})\b")),
]  # fmt: skip


@dataclass(frozen=True)
class DateWindow:
    """The dates a question asks about, both ends included; None is open."""

    start: dt.date | None
    end: dt.date | None
    phrase: str

    def contains(self, day: dt.date | None) -> bool:
        """True for a date inside the window; an undated passage is never inside."""
        if day is None:
            return False
        return (self.start is None or day >= self.start) and (self.end is None or day <= self.end)


def date_window(question: str, today: dt.date) -> DateWindow | None:
    """The window a question's date phrase names ("last week", "in July 2023", "since March").

    A month without a year is the latest such month not after `today`.
    """
    text = question.lower()
    for kind, pattern in _DATE_PHRASES:
        match = pattern.search(text)
        if match:
            return _window(kind, match, today)
    return None


def _window(kind: str, match: re.Match[str], today: dt.date) -> DateWindow | None:
    phrase = match.group(0)
    if kind == "relative":
        return _relative(phrase, today)
    if kind == "year":
        year = int(match.group(1))
        return DateWindow(dt.date(year, 1, 1), dt.date(year, 12, 31), phrase)
    if kind == "since" and match.group(3):
        return DateWindow(dt.date(int(match.group(3)), 1, 1), None, phrase)
    month = _MONTHS[match.group(1).rstrip(".")]
    year = int(match.group(2)) if match.group(2) else _latest_year(month, today)
    first = dt.date(year, month, 1)
    if kind == "since":
        return DateWindow(first, None, phrase)
    return DateWindow(first, _month_end(first), phrase)


def _relative(phrase: str, today: dt.date) -> DateWindow:
    word = phrase.split()[-1]
    if phrase == "today":
        return DateWindow(today, today, phrase)
    if phrase == "yesterday":
        day = today - dt.timedelta(days=1)
        return DateWindow(day, day, phrase)
    if phrase.startswith("this"):
        starts = {
            "week": today - dt.timedelta(days=today.weekday()),
            "month": today.replace(day=1),
            "year": today.replace(month=1, day=1),
        }
        return DateWindow(starts[word], today, phrase)
    if phrase.startswith("past"):
        days = {"week": 7, "month": 31, "year": 366}[word]
        return DateWindow(today - dt.timedelta(days=days), today, phrase)
    if word == "week":  # last week: the previous Monday to Sunday
        monday = today - dt.timedelta(days=today.weekday() + 7)
        return DateWindow(monday, monday + dt.timedelta(days=6), phrase)
    if word == "month":
        end = today.replace(day=1) - dt.timedelta(days=1)
        return DateWindow(end.replace(day=1), end, phrase)
    return DateWindow(dt.date(today.year - 1, 1, 1), dt.date(today.year - 1, 12, 31), phrase)


def _latest_year(month: int, today: dt.date) -> int:
    return today.year if month <= today.month else today.year - 1


def _month_end(first: dt.date) -> dt.date:
    following = (first.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
    return following - dt.timedelta(days=1)


def date_preference(
    window: DateWindow | None, dates: Sequence[dt.date | None], penalty: float = 1.0
) -> npt.NDArray[np.float64]:
    """0 for passages dated inside the window, `-penalty` outside (and undated); all 0 when
    the question names no dates. Added to the scores, it works as a filter that still falls
    back to the best undated passages when nothing is dated inside."""
    if window is None:
        return np.zeros(len(dates))
    return np.array([0.0 if window.contains(day) else -penalty for day in dates])
