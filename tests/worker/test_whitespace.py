"""Whitespace rewriting in bounded memory: the same result as `pattern.sub`, without a
piece per match held at once."""

from __future__ import annotations

import re
import tracemalloc

from hypothesis import given, settings
from hypothesis import strategies as st

from worker.audiobook import whitespace
from worker.audiobook.whitespace import sub_whitespace

SPACE = re.compile(r"\s+")
BLANK_LINES = re.compile(r"\n[ \t]*\n")


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(["a", "b", " ", "\t", "\n", "\r", "\u3000", "."])))
def test_sub_whitespace_is_pattern_sub(text: str) -> None:
    whitespace.CHUNK_CHARACTERS, saved = 7, whitespace.CHUNK_CHARACTERS  # many chunks
    try:
        for pattern, repl in ((SPACE, " "), (BLANK_LINES, "\x00")):
            assert sub_whitespace(pattern, repl, text) == pattern.sub(repl, text)
    finally:
        whitespace.CHUNK_CHARACTERS = saved


def test_a_million_matches_hold_no_million_pieces() -> None:
    text = "ab " * 1_000_000  # 3 MB, a million matches
    tracemalloc.start()
    try:
        collapsed = sub_whitespace(SPACE, " ", text)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert collapsed == text
    # The result and the chunks that make it, not ~60 bytes a match as `pattern.sub` needs.
    assert peak < 3 * len(text), peak
