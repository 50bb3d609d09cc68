"""Guessing a question's language from its script and common words: cheap, no model needed.

The answer decides which passage matrix serves a question (English questions use the main
model; others the multilingual one) and which language the bot's own sentences are in.
"""

from __future__ import annotations

import re
import unicodedata

ENGLISH = "en"

# Script name (the first word of a character's Unicode name) -> language code.
_SCRIPTS = {
    "CJK": "zh", "HIRAGANA": "ja", "KATAKANA": "ja", "HANGUL": "ko", "CYRILLIC": "ru",
    "ARABIC": "ar", "HEBREW": "he", "GREEK": "el", "DEVANAGARI": "hi", "THAI": "th",
    "ARMENIAN": "hy", "GEORGIAN": "ka", "BENGALI": "bn", "TAMIL": "ta",
}  # fmt: skip
# Function words that give a Latin-script language away.
_WORDS = {
    "en": "the of and to in is was what who when where why how did does do which are for on with",
    "es": "el la los las de que qué y en es por para con cómo quién cuándo dónde del una",
    "fr": "le la les de des et est que qui quoi quand où pourquoi comment une du dans pour",
    "de": "der die das und ist was wer wann wo warum wie ein eine mit von zu den im",
    "pt": "o a os as de que e é quem quando onde por como para com uma do da",
    "it": "il lo la gli le di che e è chi quando dove perché come per con una del",
}
_WORD_SETS = {language: frozenset(words.split()) for language, words in _WORDS.items()}
_TOKEN = re.compile(r"\w+", re.UNICODE)


def detect_language(text: str) -> str:
    """An ISO 639-1 code for `text`: by script first, then by function words for Latin script."""
    scripts: dict[str, int] = {}
    for char in text:
        if char.isalpha():
            script = unicodedata.name(char, "UNKNOWN").split()[0]
            scripts[script] = scripts.get(script, 0) + 1
    if not scripts:
        return ENGLISH
    script = max(scripts, key=lambda s: scripts[s])
    if script in _SCRIPTS:
        kana = scripts.get("HIRAGANA", 0) + scripts.get("KATAKANA", 0)
        return "ja" if script == "CJK" and kana else _SCRIPTS[script]
    return _latin_language(text)


def _latin_language(text: str) -> str:
    """The Latin-script language whose function words the text uses most (English on a tie)."""
    words = [w.lower() for w in _TOKEN.findall(text)]
    counts = {
        language: sum(w in vocabulary for w in words) for language, vocabulary in _WORD_SETS.items()
    }
    best = max(counts, key=lambda language: (counts[language], language == ENGLISH))
    return best if counts[best] > counts[ENGLISH] else ENGLISH


def is_english(text: str) -> bool:
    """True when the main (English) model should serve `text`."""
    return detect_language(text) == ENGLISH
