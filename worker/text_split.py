"""Split long text into pieces a provider accepts, on sentence boundaries (pysbd).

A piece ends at the last sentence end that keeps it within the limit. Only the text just
before each cut is read by pysbd (`LOOKBACK_CHARACTERS`, with `LOOKAHEAD_CHARACTERS` after
it for context), so the work grows with the number of pieces, not with the text: pysbd
costs some microseconds per character, and much more on a window of thousands of tiny
sentences. A sentence longer than the window is looked for further back, window by
window. A piece with no sentence end in it is cut at a clause break (`, ; : —`), then at a
space, then at the limit.

A `SentenceBudget` caps how many characters pysbd may read for one request (a book's
plan): past it, sentence ends are found by a regular expression that knows pysbd's
English abbreviations. Ordinary text never comes near it; it keeps a hostile one (a book
that is one 5-million-character paragraph) linear and cheap.
"""

from __future__ import annotations

import re
from functools import lru_cache

import pysbd
from pysbd.lang.english import English

__all__ = [
    "DEFAULT_SENTENCE_BUDGET",
    "LOOKAHEAD_CHARACTERS",
    "LOOKBACK_CHARACTERS",
    "WINDOW_CHARACTERS",
    "SentenceBudget",
    "split_sentences",
    "split_text",
]

# The most `split_sentences` hands pysbd at once: its time per character grows with the
# window (3 us per character at 1,000, 7 at 5,000, 40 at 50,000).
WINDOW_CHARACTERS = 2000
# How far before a cut pysbd reads to find the last sentence end, and after it, so that a
# sentence end right at the cut is judged with what follows ("3 p.m. and ..." is not one).
LOOKBACK_CHARACTERS = 500
LOOKAHEAD_CHARACTERS = 100
# Sentence ends this close to a window's start are not trusted (pysbd did not see the
# text before them); the next window back reads them again with their context.
WINDOW_MARGIN_CHARACTERS = 100
# How far before a cut sentence ends are guessed once the budget is spent (in one pass).
GUESS_LOOKBACK_CHARACTERS = 1000
# How much further a window may reach to close a quotation opened in it.
QUOTE_REACH_CHARACTERS = 2000
# What pysbd may read for one request when the caller gives no budget: about 0.4 s of
# CPU; with a window of about 600 characters before each cut, enough for some 200 cuts.
DEFAULT_SENTENCE_BUDGET = 150_000
# pysbd's time is about 2 us a character plus some 15 us for each period, "!" or "?" it
# weighs (thousands of "a. a. a." or "Mr. Mr." are its worst): each costs the budget as
# much as this many characters.
PUNCTUATION_COST_CHARACTERS = 7

_BREAK_WINDOW_CHARACTERS = 200
_CLAUSE_BREAK = re.compile(r"(?<=[,;:\u2014])\s+")
_SPACE = re.compile(r"\s+")
# A guessed sentence end: terminal punctuation, closing quotes or brackets, then space;
# tried only where a run of punctuation starts, so that a run of dots stays linear. A
# period after a one-character word ("J.", "a.", "1.") is an initial or a list number.
_GUESSED_END = re.compile(
    r"(?<![.!?\u2026])(?:[!?\u2026]|(?<!\b\w)\.)[.!?\u2026]*[\"'\u201d\u2019)\]]*\s+"
)
_WORD_BEFORE_PERIOD = re.compile(r"([\w.]+)\.$")
_MOST_GUESSES = 20
_ABBREVIATIONS = frozenset(English.Abbreviation.ABBREVIATIONS)
_PAIRS = (("\u201c", "\u201d"), ("(", ")"), ("[", "]"), ("\u00ab", "\u00bb"))


class SentenceBudget:
    """How many more characters pysbd may read; once spent, sentence ends are guessed.

    Deterministic: the same text planned with the same budget is cut the same way.
    """

    def __init__(self, characters: int = DEFAULT_SENTENCE_BUDGET) -> None:
        self.left = characters

    def take(self, characters: int) -> bool:
        """Whether pysbd may read `characters` more; False from the first refusal on."""
        if characters > self.left:
            self.left = 0
            return False
        self.left -= characters
        return True


@lru_cache(maxsize=1)
def _segmenter() -> pysbd.Segmenter:
    return pysbd.Segmenter(language="en", clean=False)


def _pysbd_sentences(window: str) -> list[str]:
    """pysbd's sentences of `window`, stripped. `Segmenter.segment` would also look each
    one up in the whole window with a regex, which is quadratic in the number of
    sentences; `_sentence_starts` finds them in one pass instead."""
    return [s for s in _segmenter().processor(window).process() or [] if s]


def _pysbd_cost(text: str, start: int, end: int) -> int:
    """What reading `text[start:end]` costs the budget, in characters."""
    marks = sum(text.count(mark, start, end) for mark in ".!?")
    return end - start + marks * PUNCTUATION_COST_CHARACTERS


def _sentence_starts(text: str, start: int, end: int) -> list[int]:
    """Where pysbd's sentences of `text[start:end]` start, as indexes into `text`."""
    starts: list[int] = []
    position = start
    for sentence in _pysbd_sentences(text[start:end]):
        found = text.find(sentence, position, end)
        if found < 0:  # pysbd changed this sentence: its text joins the one before
            continue
        starts.append(found)
        position = found + len(sentence)
    return starts


def _last_guessed_start(text: str, start: int, end: int, high: int) -> int | None:
    """The last sentence start in (start, high] found from punctuation alone in
    `text[start:end]`, but not after an abbreviation pysbd knows ("Mr.", "e.g.")."""
    matches = [m for m in _GUESSED_END.finditer(text, start, end) if start < m.end() <= high]
    # The last few only: past them, a run of abbreviations is no sentence to look for.
    for match in reversed(matches[-_MOST_GUESSES:]):
        if text[match.start()] == ".":
            word = _WORD_BEFORE_PERIOD.search(text, max(0, match.start() - 12), match.start() + 1)
            if word is not None and word[1].lower() in _ABBREVIATIONS:
                continue
        return match.end()
    return None


def split_sentences(text: str) -> list[str]:
    """Sentences with their trailing whitespace; joined they give `text` back (less any
    leading whitespace). pysbd reads `WINDOW_CHARACTERS` at a time; a window's last
    sentence may be cut by the window's edge, so the next window reads it again."""
    sentences: list[str] = []
    position = len(text) - len(text.lstrip())
    while position < len(text):
        end = min(len(text), position + WINDOW_CHARACTERS)
        # The window's last sentence may go on past its edge: it starts the next window.
        starts = [s for s in _sentence_starts(text, position, end) if s > position]
        if end == len(text) or not starts:
            # The last window, or one sentence filling the window: taken as it is.
            starts.append(end)
        for start in starts:
            sentences.append(text[position:start])
            position = start
    return sentences


def split_text(text: str, limit: int, *, budget: SentenceBudget | None = None) -> list[str]:
    """Pieces of at most `limit` characters, each a run of whole sentences where possible;
    a sentence longer than `limit` is cut at clause breaks, then at spaces, then anywhere.

    Joined, the pieces give `text` back less its leading whitespace (whitespace-only
    pieces are left out). `budget` None allows `DEFAULT_SENTENCE_BUDGET` for this call.
    """
    if limit <= 0:
        raise ValueError("limit must be positive")
    if len(text) <= limit:
        return [text]
    cutter = _Cutter(text, budget if budget is not None else SentenceBudget())
    pieces: list[str] = []
    position = len(text) - len(text.lstrip())
    while len(text) - position > limit:
        end = position + limit
        cut = cutter.last_sentence_start(position, end)
        if cut is None:
            cut = _last_break(text, position, end)
        pieces.append(text[position:cut])
        position = cut
    pieces.append(text[position:])
    return [piece for piece in pieces if piece.strip()]


class _Cutter:
    """Finds sentence starts in windows of one text, reading the text before each cut."""

    def __init__(self, text: str, budget: SentenceBudget) -> None:
        self.text = text
        self.budget = budget
        # Straight double quotes in text[:quotes_at]: counted from the last place asked,
        # as cuts move forward, so that each character is counted about once.
        self.quotes_at = 0
        self.quotes = 0

    def last_sentence_start(self, start: int, end: int) -> int | None:
        """The last place in (start, end] where a sentence starts, or None: windows of
        `LOOKBACK_CHARACTERS` read backwards from `end` until one holds a sentence start.
        Once the budget is spent, one window of guesses from punctuation instead
        (`GUESS_LOOKBACK_CHARACTERS`)."""
        text = self.text
        high = end
        while True:
            low = max(start, high - LOOKBACK_CHARACTERS)
            trusted = start if low == start else low + WINDOW_MARGIN_CHARACTERS
            low = self._outside_quotes(low)
            window_end = self._quotes_closed(min(len(text), high + LOOKAHEAD_CHARACTERS))
            if not self.budget.take(_pysbd_cost(text, low, window_end)):
                window_start = max(start, end - GUESS_LOOKBACK_CHARACTERS)
                window_end = min(len(text), end + LOOKAHEAD_CHARACTERS)
                return _last_guessed_start(text, window_start, window_end, end)
            found = [
                s
                for s in _sentence_starts(text, low, window_end)
                if max(start, trusted - 1) < s <= high
            ]
            if found:
                return found[-1]
            if trusted == start:
                return None
            high = trusted

    def _quotes_before(self, position: int) -> int:
        if position >= self.quotes_at:
            self.quotes += self.text.count('"', self.quotes_at, position)
        else:
            self.quotes -= self.text.count('"', position, self.quotes_at)
        self.quotes_at = position
        return self.quotes

    def _outside_quotes(self, low: int) -> int:
        """`low`, or an earlier place, so that a window starting there does not open
        inside a quotation or brackets. pysbd pairs quotes and brackets over any distance
        and keeps sentence ends inside them; a window opening mid-quotation would pair the
        quotes the other way round."""
        text = self.text
        reach = max(0, low - QUOTE_REACH_CHARACTERS)
        moved = low
        if self._quotes_before(low) % 2 and (found := text.rfind('"', reach, low)) >= 0:
            moved = found
        for opening, closing in _PAIRS:
            if (found := text.rfind(opening, reach, low)) > text.rfind(closing, reach, low):
                moved = min(moved, found)
        return moved

    def _quotes_closed(self, high: int) -> int:
        """`high`, or a later place, so that a window ending there closes the quotations
        and brackets open at `high`: pysbd judges the text inside a quotation differently
        ("Mrs. Smith" is cut after "Mrs." in an unclosed one)."""
        text = self.text
        reach = min(len(text), high + QUOTE_REACH_CHARACTERS)
        moved = high
        if self._quotes_before(high) % 2 and (found := text.find('"', high, reach)) >= 0:
            moved = found + 1
        back = max(0, high - QUOTE_REACH_CHARACTERS)
        for opening, closing in _PAIRS:
            if (
                text.rfind(opening, back, high) > text.rfind(closing, back, high)
                and (found := text.find(closing, high, reach)) >= 0
            ):
                moved = max(moved, found + 1)
        return moved


def _last_break(text: str, start: int, end: int) -> int:
    """Where to cut a piece with no sentence end: after the last clause break's spaces,
    else after the last spaces, else at `end`. Searched backwards from `end` a window at
    a time, so that thousands of spaces cost no more than the last few."""
    for pattern in (_CLAUSE_BREAK, _SPACE):
        high = end
        while high > start:
            low = max(start, high - _BREAK_WINDOW_CHARACTERS)
            last = None
            for match in pattern.finditer(text, low, high):
                last = match
            if last is not None and last.end() > start:
                return last.end()
            high = low
    return end
