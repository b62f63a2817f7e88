"""Whitespace rewriting of a whole book in bounded memory.

`pattern.sub` on a 5-million-character text with a million matches builds a million
pieces before it joins them (some 70 MB); done a chunk at a time it holds one chunk's
pieces, whatever the text.
"""

from __future__ import annotations

import re
from collections.abc import Callable

__all__ = ["collapse", "split_paragraphs", "sub_whitespace"]

CHUNK_CHARACTERS = 1 << 16
_NON_SPACE = re.compile(r"\S")
_SPACE = re.compile(r"\s+")
_BLANK_LINES = re.compile(r"\n[ \t]*\n")


def sub_whitespace(
    pattern: re.Pattern[str], repl: str | Callable[[re.Match[str]], str], text: str
) -> str:
    """`pattern.sub(repl, text)` for a pattern whose matches are whitespace only (`\\s+`, a
    blank line), done a chunk at a time. Each chunk ends just before a character that is
    not whitespace, so no match is ever cut in two."""
    if len(text) <= CHUNK_CHARACTERS:
        return pattern.sub(repl, text)
    chunks: list[str] = []
    start = 0
    while start < len(text):
        found = _NON_SPACE.search(text, start + CHUNK_CHARACTERS)
        end = len(text) if found is None else found.start()
        chunks.append(pattern.sub(repl, text[start:end]))
        start = end
    return "".join(chunks)


def collapse(text: str) -> str:
    """`text` with each run of whitespace made one space, and stripped."""
    return sub_whitespace(_SPACE, " ", text).strip()


def split_paragraphs(text: str) -> list[str]:
    """Blank-line separated paragraphs, whitespace collapsed, empty ones dropped.

    Done on the whole text at once, a NUL marking the breaks (a text holding one, which
    no request lets in, is done block by block), so that a million short paragraphs cost
    no million regex calls.
    """
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if "\x00" in text:
        blocks = (_SPACE.sub(" ", block) for block in _BLANK_LINES.split(text))
    else:
        marked = sub_whitespace(_SPACE, " ", sub_whitespace(_BLANK_LINES, "\x00", text))
        blocks = iter(marked.split("\x00"))
    return [paragraph for paragraph in (block.strip() for block in blocks) if paragraph]
