"""The sentence splitter on hostile input: pysbd reads bounded windows, and a bounded total
per request; the pieces never pass the limit nor lose text; ordinary prose is cut exactly
where pysbd, reading the whole text, would cut it."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pysbd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pysbd import segmenter

from worker import text_split
from worker.text_split import (
    DEFAULT_SENTENCE_BUDGET,
    LOOKAHEAD_CHARACTERS,
    LOOKBACK_CHARACTERS,
    SentenceBudget,
    split_sentences,
    split_text,
)


@pytest.fixture
def pysbd_reads(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """The length of every text pysbd is given (whichever of its entry points is used)."""
    lengths: list[int] = []
    original = segmenter.Processor

    class Counting(original):  # type: ignore[misc, valid-type]
        def __init__(self, text: str, *args: object, **kwargs: object) -> None:
            lengths.append(len(text))
            super().__init__(text, *args, **kwargs)

    monkeypatch.setattr(segmenter, "Processor", Counting)
    yield lengths


def prose(rng: random.Random, characters: int, *, quotes: bool = False) -> str:
    words = "the quick brown fox jumps over a lazy dog and then runs away beyond hills".split()
    extras = ["Mr. Smith", "Dr. Jones", "e.g.", "the U.S.", "3.5", "at 5 p.m.", "etc.", "i.e."]
    extras += ["J. R. Tolkien", "No. 5", "St. Paul", "Acme Inc.", "Washington, D.C.", "—"]
    sentences: list[str] = []
    size = 0
    while size < characters:
        picked = [
            rng.choice(words) if rng.random() > 0.12 else rng.choice(extras)
            for _ in range(rng.randint(3, 40))
        ]
        sentence = " ".join(picked)
        sentence = sentence[0].upper() + sentence[1:] + rng.choice([".", ".", "!", "?", "..."])
        if quotes and rng.random() < 0.2:
            sentence = rng.choice(['"{}" he said.', "\u201c{}\u201d", "{} (see below.)"]).format(
                sentence
            )
        sentences.append(sentence)
        size += len(sentence) + 1
    return " ".join(sentences)


def whole_text_split(text: str, limit: int) -> list[str]:
    """The reference: pysbd reading the whole text at once, sentences packed greedily."""
    sentences = pysbd.Segmenter(language="en", clean=False).segment(text)
    pieces: list[str] = []
    current = ""
    for sentence in sentences:
        assert len(sentence) <= limit  # the reference handles whole sentences only
        if current and len(current) + len(sentence) > limit:
            pieces.append(current)
            current = ""
        current += sentence
    return [*pieces, current]


def test_giant_paragraph_pysbd_reads_bounded_windows_and_total(pysbd_reads: list[int]) -> None:
    text = "a. " * 400_000  # 1.2M characters of tiny sentences, pysbd's worst case
    pieces = split_text(text, 1500)
    assert "".join(pieces) == text
    assert all(len(piece) <= 1500 for piece in pieces)
    assert all(piece.endswith("a. ") for piece in pieces)  # still cut at sentence ends
    assert max(pysbd_reads) <= LOOKBACK_CHARACTERS + LOOKAHEAD_CHARACTERS
    assert sum(pysbd_reads) <= DEFAULT_SENTENCE_BUDGET


def test_pysbd_work_grows_with_pieces_not_characters(pysbd_reads: list[int]) -> None:
    text = prose(random.Random(1), 200_000)
    pieces = split_text(text, 4096, budget=SentenceBudget(10**9))
    assert "".join(pieces) == text
    # About one window before each cut: a fraction of the text, not all of it.
    assert sum(pysbd_reads) < len(text) / 4
    assert len(pysbd_reads) < 2 * len(pieces)


def test_budget_spent_then_sentence_ends_are_guessed(pysbd_reads: list[int]) -> None:
    text = prose(random.Random(2), 100_000)
    budget = SentenceBudget(5000)
    pieces = split_text(text, 1000, budget=budget)
    assert budget.left == 0
    assert sum(pysbd_reads) <= 5000
    assert "".join(pieces) == text
    assert all(len(piece) <= 1000 for piece in pieces)
    # Guessed ends are still sentence ends, and never right after an abbreviation.
    for piece in pieces[:-1]:
        assert piece.rstrip()[-1] in ".!?"
        assert not piece.rstrip().endswith(("Mr.", "Dr.", "St.", "e.g.", "i.e.", " J.", " R."))


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("limit", [700, 1500, 4096])
def test_ordinary_prose_cut_where_whole_text_pysbd_cuts(seed: int, limit: int) -> None:
    text = prose(random.Random(seed), 12_000)
    assert split_text(text, limit) == whole_text_split(text, limit)


@pytest.mark.parametrize("seed", range(4))
def test_dialogue_cut_where_whole_text_pysbd_cuts(seed: int) -> None:
    # pysbd pairs quotes over any distance; windows start and end outside quotations.
    text = prose(random.Random(seed), 12_000, quotes=True)
    assert split_text(text, 1500) == whole_text_split(text, 1500)


def test_split_sentences_bounded_windows(pysbd_reads: list[int]) -> None:
    text = "Dr. Smith went to Washington. He arrived at 3 p.m. and left. " * 2000
    sentences = split_sentences(text)
    assert "".join(sentences) == text
    assert sentences[:2] == ["Dr. Smith went to Washington. ", "He arrived at 3 p.m. and left. "]
    assert max(pysbd_reads) <= text_split.WINDOW_CHARACTERS


TEXT_ALPHABET = st.sampled_from(
    list("ab .,;:!?\n\t\"'()[]\u201c\u201d\u2014\u2026") + ["Mr.", "e.g."]
)


def non_space(text: str) -> str:
    return "".join(text.split())


@settings(max_examples=150, deadline=None)
@given(
    st.lists(TEXT_ALPHABET, max_size=600).map("".join),
    st.integers(min_value=1, max_value=120),
    st.integers(min_value=0, max_value=3000),
)
def test_split_text_never_passes_the_limit_nor_loses_text(
    text: str, limit: int, budget: int
) -> None:
    pieces = split_text(text, limit, budget=SentenceBudget(budget))
    assert all(len(piece) <= limit for piece in pieces)
    assert non_space("".join(pieces)) == non_space(text)
    position = 0
    for piece in pieces:  # slices of the text, in order
        found = text.find(piece, position)
        assert found >= 0
        position = found + len(piece)
