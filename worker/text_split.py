"""Split long text into pieces a provider accepts, on sentence boundaries (pysbd).

pysbd's time grows faster than linearly with its input, so it reads the text in windows
of a few thousand characters; a window's last sentence may be cut by the window's edge,
so it is left for the next window to read again.
"""

from __future__ import annotations

import re
from functools import lru_cache

import pysbd

__all__ = ["split_sentences", "split_text"]

WINDOW_CHARACTERS = 5000
_CLAUSE_BREAK = re.compile(r"(?<=[,;:\u2014])\s+")
_SPACE = re.compile(r"\s+")


@lru_cache(maxsize=1)
def _segmenter() -> pysbd.Segmenter:
    return pysbd.Segmenter(language="en", clean=False)


def split_sentences(text: str) -> list[str]:
    """Sentences with their trailing whitespace; joined they give `text` back (less any
    leading whitespace)."""
    sentences: list[str] = []
    position = len(text) - len(text.lstrip())
    while position < len(text):
        window = text[position : position + WINDOW_CHARACTERS]
        found = [s for s in _segmenter().segment(window) if s]
        last_window = position + len(window) >= len(text)
        # One sentence filling the whole window is taken as it is (cut at the edge).
        keep = found if last_window or len(found) == 1 else found[:-1]
        for sentence in keep:
            start = text.find(sentence, position)
            if start < 0:  # pysbd changed the text: keep the rest as one piece
                sentences.append(text[position:])
                return sentences
            skipped = text[position:start]  # whitespace pysbd left out
            if sentences:
                sentences[-1] += skipped
            else:
                sentence = skipped + sentence
            sentences.append(sentence)
            position = start + len(sentence) - (len(skipped) if len(sentences) == 1 else 0)
    return sentences


def split_text(text: str, limit: int) -> list[str]:
    """Pieces of at most `limit` characters, each a run of whole sentences where possible;
    a sentence longer than `limit` is cut at clause breaks, then at spaces, then anywhere."""
    if limit <= 0:
        raise ValueError("limit must be positive")
    if len(text) <= limit:
        return [text]
    pieces: list[str] = []
    current = ""
    for sentence in split_sentences(text):
        for part in _fit(sentence, limit):
            if current and len(current) + len(part) > limit:
                pieces.append(current)
                current = ""
            current += part
    if current.strip():
        pieces.append(current)
    return [piece for piece in pieces if piece.strip()]


def _fit(sentence: str, limit: int) -> list[str]:
    if len(sentence) <= limit:
        return [sentence]
    for pattern in (_CLAUSE_BREAK, _SPACE):
        parts = _pack(_split_keeping(sentence, pattern), limit)
        if all(len(p) <= limit for p in parts):
            return parts
    return [sentence[i : i + limit] for i in range(0, len(sentence), limit)]


def _split_keeping(text: str, pattern: re.Pattern[str]) -> list[str]:
    """Split after each match, keeping the separator with the part before it."""
    parts: list[str] = []
    start = 0
    for match in pattern.finditer(text):
        parts.append(text[start : match.end()])
        start = match.end()
    parts.append(text[start:])
    return [p for p in parts if p]


def _pack(parts: list[str], limit: int) -> list[str]:
    packed: list[str] = []
    current = ""
    for part in parts:
        if current and len(current) + len(part) > limit:
            packed.append(current)
            current = ""
        current += part
    if current:
        packed.append(current)
    return packed
