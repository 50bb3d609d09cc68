"""Splitting text into sentences, for passage sizing and for the highlighted answer sentence."""

from __future__ import annotations

import re

# Words ending in a full stop that do not end a sentence.
_ABBREVIATIONS = frozenset(
    {
        "mr",
        "mrs",
        "ms",
        "dr",
        "prof",
        "sr",
        "jr",
        "st",
        "mt",
        "gen",
        "col",
        "lt",
        "sgt",
        "capt",
        "gov",
        "sen",
        "rep",
        "rev",
        "hon",
        "no",
        "vs",
        "etc",
        "inc",
        "ltd",
        "co",
        "corp",
        "dept",
        "univ",
        "jan",
        "feb",
        "mar",
        "apr",
        "jun",
        "jul",
        "aug",
        "sep",
        "sept",
        "oct",
        "nov",
        "dec",
        "fig",
        "al",
        "approx",
        "est",
    }
)
# A sentence ends at . ! ? or … (plus closing quotes/brackets) followed by space and a capital,
# digit or opening quote; CJK full stops end a sentence with or without a space.
_BOUNDARY = re.compile(
    "(?<=[.!?\u2026])[\"'\u201d\u2019)\\]]*\\s+(?=[\"'\u201c\u2018(\\[]?[A-Z0-9\u00c0-\u00d6\u00d8-\u00de\u0400-\u042f])"
    "|(?<=[\u3002\uff01\uff1f])\\s*"
)


def split_sentences(text: str) -> list[str]:
    """The sentences of `text`, in order; joining them with single spaces gives the text back."""
    sentences: list[str] = []
    start = 0
    for match in _BOUNDARY.finditer(text):
        if _ends_with_abbreviation(_last_word(text, start, match.start())):
            continue
        end = match.start() + len(match.group(0).rstrip())
        sentences.append(text[start:end].strip())
        start = match.end()
    tail = text[start:].strip()
    if tail:
        sentences.append(tail)
    return [s for s in sentences if s]


def _last_word(text: str, start: int, end: int) -> str:
    """The word ending at `end`, not reaching back past `start`.

    Only this word decides an abbreviation; looking at it alone (not at all the text since
    `start`) keeps long runs of initials such as "A. B. C. ..." linear instead of quadratic.
    """
    begin = end
    while begin > start and not text[begin - 1].isspace():
        begin -= 1
    return text[begin:end]


def _ends_with_abbreviation(candidate: str) -> bool:
    """True when the text ends in `Dr.`-like abbreviations or initials such as `U.S.`."""
    words = candidate.rstrip("\"'\u201d\u2019)]").split()
    if not words:
        return True
    last = words[-1].rstrip(".").lower()
    return last in _ABBREVIATIONS or (len(last) <= 2 and "." in words[-1][:-1]) or len(last) == 1


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """Character spans of the sentences of `text` (the whole text if it has no sentence)."""
    spans, position = [], 0
    for sentence in split_sentences(text):
        start = text.find(sentence, position)
        spans.append((start, start + len(sentence)))
        position = start + len(sentence)
    return spans or [(0, len(text))]
