"""Whitespace rewriting of a whole book in bounded memory.

`pattern.sub` on a 5-million-character text with a million matches builds a million
pieces before it joins them (some 70 MB); done a chunk at a time it holds one chunk's
pieces, whatever the text.
"""

from __future__ import annotations

import re
from collections.abc import Callable

__all__ = ["sub_whitespace"]

CHUNK_CHARACTERS = 1 << 16
_NON_SPACE = re.compile(r"\S")


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
