"""Planning a book's synthesis: chapters into segments with their pauses."""

from __future__ import annotations

import random
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker import text_split
from worker.audiobook.plan import (
    CHARACTERS_PER_SECOND,
    DEFAULT_CHAPTER_PAUSE_MS,
    DEFAULT_PARAGRAPH_PAUSE_MS,
    DEFAULT_SEGMENT_LIMIT,
    SENTENCE_PAUSE_MS,
    TITLE_PAUSE_MS,
    BookPlan,
    ChapterInput,
    PlannedSegment,
    plan_book,
    plan_chapter,
)
from worker.text_split import DEFAULT_SENTENCE_BUDGET

P = DEFAULT_PARAGRAPH_PAUSE_MS
S = SENTENCE_PAUSE_MS
T = TITLE_PAUSE_MS
LONG = "One two three. Four five six. Seven eight nine."  # 47 characters, three sentences


def shape(chapter_text: str, title: str = "Title", **options: object) -> list[tuple]:
    """(text, pause_after_ms, is_title) of each segment of a one-chapter plan."""
    options.setdefault("limit", None)
    plan = plan_chapter(0, ChapterInput(title, chapter_text), **options)  # type: ignore[arg-type]
    assert [segment.index for segment in plan.segments] == list(range(len(plan.segments)))
    return [(s.text, s.pause_after_ms, s.is_title) for s in plan.segments]


@pytest.mark.parametrize(
    ("text", "title", "options", "expected"),
    [
        pytest.param(
            "First.\n\nSecond.",
            "Title",
            {},
            [("Title", T, True), ("First.", P, False), ("Second.", 0, False)],
            id="title-then-paragraphs",
        ),
        pytest.param(
            "First.\n\nSecond.",
            "Title",
            {"read_titles": False},
            [("First.", P, False), ("Second.", 0, False)],
            id="titles-not-read",
        ),
        pytest.param("First.", " \t ", {}, [("First.", 0, False)], id="blank-title-is-not-read"),
        pytest.param(
            "Only.", "Title", {}, [("Title", T, True), ("Only.", 0, False)], id="one-paragraph"
        ),
        pytest.param(
            "First.\n\nSecond.",
            "Title",
            {"paragraph_pause_ms": 900},
            [("Title", T, True), ("First.", 900, False), ("Second.", 0, False)],
            id="paragraph-pause",
        ),
        pytest.param(
            "  One   two\n three.\r\n\r\n\n\n\tFour\t five.  \n",
            "  The\n  Title ",
            {},
            [("The Title", T, True), ("One two three.", P, False), ("Four five.", 0, False)],
            id="whitespace-collapsed",
        ),
        pytest.param(
            f"{LONG}\n\nShort.",
            "",
            {"limit": 30},
            [
                ("One two three. Four five six.", S, False),
                ("Seven eight nine.", P, False),
                ("Short.", 0, False),
            ],
            id="long-paragraph-split-at-sentences",
        ),
        pytest.param(
            f"Short.\n\n{LONG}",
            "",
            {"limit": 15},
            [
                ("Short.", P, False),
                ("One two three.", S, False),
                ("Four five six.", S, False),
                ("Seven eight", S, False),
                ("nine.", 0, False),
            ],
            id="sentence-longer-than-limit-split-at-words",
        ),
        pytest.param(
            "A.\n\nB.",
            "A very long title indeed",
            {"limit": 12},
            [
                ("A very long", S, True),
                ("title indeed", T, True),
                ("A.", P, False),
                ("B.", 0, False),
            ],
            id="title-longer-than-limit",
        ),
        pytest.param(
            "Short. Sentences. Never. Packed. Across.\n\nParagraphs.",
            "",
            {"limit": 1000},
            [("Short. Sentences. Never. Packed. Across.", P, False), ("Paragraphs.", 0, False)],
            id="paragraphs-never-joined",
        ),
    ],
)
def test_plan_chapter_rules(
    text: str, title: str, options: dict[str, object], expected: list[tuple]
) -> None:
    assert shape(text, title, **options) == expected


@pytest.mark.parametrize(
    ("length", "segments"),
    [(DEFAULT_SEGMENT_LIMIT, 1), (DEFAULT_SEGMENT_LIMIT + 1, 2)],
    ids=["at-default-limit", "over-default-limit"],
)
def test_limit_none_is_the_default_limit(length: int, segments: int) -> None:
    words = ("word " * length)[: length - 1] + "."
    plan = plan_chapter(0, ChapterInput("", words), limit=None)
    assert len(plan.segments) == segments
    assert all(len(s.text) <= DEFAULT_SEGMENT_LIMIT for s in plan.segments)


def test_chapter_plan_fields() -> None:
    plan = plan_chapter(4, ChapterInput(" Ch\n 1 ", "Hello there.", voice="alloy"), limit=None)
    assert plan.index == 4
    assert plan.title == "Ch 1"
    assert plan.voice == "alloy"
    assert plan.characters == len("Ch 1") + len("Hello there.")
    untitled = plan_chapter(0, ChapterInput("Ch 1", "Hello there."), limit=None, read_titles=False)
    assert untitled.characters == len("Hello there.")
    assert untitled.voice is None


@pytest.mark.parametrize(
    ("only", "indexes"),
    [(None, [0, 1, 2, 3]), ({2}, [2]), ([3, 1], [1, 3]), ((1, 1, 0), [0, 1])],
    ids=["all", "one", "unordered", "repeated"],
)
def test_plan_book_only_keeps_original_indexes(only: list[int] | None, indexes: list[int]) -> None:
    chapters = [ChapterInput(f"C{n}", f"Text {n}.") for n in range(4)]
    plan = plan_book(chapters, limit=None, only=only)
    assert [chapter.index for chapter in plan.chapters] == indexes
    assert [chapter.title for chapter in plan.chapters] == [f"C{n}" for n in indexes]
    assert [chapter.segments[-1].text for chapter in plan.chapters] == [
        f"Text {n}." for n in indexes
    ]


@pytest.mark.parametrize(
    ("chapters", "options", "message"),
    [
        (3, {"only": [1, 3]}, "chapter 3 does not exist"),
        (3, {"only": [-1]}, "chapter -1 does not exist"),
        (3, {"only": []}, "no chapters selected"),
        (0, {}, "no chapters"),
        (3, {"limit": 0}, "limit must be positive"),
        (3, {"paragraph_pause_ms": -1}, "must not be negative"),
    ],
    ids=["past-the-end", "negative", "empty-selection", "empty-book", "limit", "pause"],
)
def test_plan_book_bad_options(chapters: int, options: dict[str, object], message: str) -> None:
    book = [ChapterInput(f"C{n}", "Text.") for n in range(chapters)]
    options.setdefault("limit", None)
    with pytest.raises(ValueError, match=message):
        plan_book(book, **options)  # type: ignore[arg-type]


@pytest.mark.parametrize("text", ["", "  \n\n\t \r\n  "], ids=["empty", "whitespace"])
def test_chapter_without_text_fails_naming_it(text: str) -> None:
    book = [ChapterInput(f"C{n}", "Text.") for n in range(3)] + [ChapterInput("Four", text)]
    with pytest.raises(ValueError, match="^chapter 3 has no text"):
        plan_book(book, limit=None)
    # Left out by `only`, it is not planned and so not checked.
    assert len(plan_book(book, limit=None, only=[0, 2]).chapters) == 2


def test_book_totals_and_estimate() -> None:
    book = [
        ChapterInput("One", "First paragraph.\n\nSecond paragraph."),
        ChapterInput("Two", LONG),
    ]
    plan = plan_book(book, limit=30)
    assert isinstance(plan, BookPlan)
    assert plan.segments == 3 + 3
    assert plan.characters == sum(len(s.text) for c in plan.chapters for s in c.segments)
    speech = plan.characters / CHARACTERS_PER_SECOND
    # Chapter one: title, paragraph; chapter two: title, a sentence break.
    pauses = (T + P) + (T + S)
    assert plan.estimated_audio_seconds() == pytest.approx(
        speech + (pauses + DEFAULT_CHAPTER_PAUSE_MS) / 1000
    )
    assert plan.estimated_audio_seconds(speed=2.0, chapter_pause_ms=0) == pytest.approx(
        speech / 2 + pauses / 1000
    )
    # Another paragraph pause re-prices paragraph ends only, never the chapter's last.
    assert plan.estimated_audio_seconds(
        paragraph_pause_ms=100, chapter_pause_ms=0
    ) == pytest.approx(speech + ((T + 100) + (T + S)) / 1000)
    single = plan_book(book, limit=None, only=[1], read_titles=False)
    assert single.estimated_audio_seconds() == pytest.approx(len(LONG) / CHARACTERS_PER_SECOND)
    with pytest.raises(ValueError, match="speed"):
        plan.estimated_audio_seconds(speed=0)


def test_segment_defaults() -> None:
    segment = PlannedSegment(index=0, text="Hi.", pause_after_ms=0)
    assert not segment.is_title
    assert not segment.ends_paragraph


def _sentence(rng: random.Random) -> str:
    words = ["the", "storm", "Mr.", "Dursley", "said", "rain", "night", "house", "and", "of"]
    text = " ".join(rng.choice(words) for _ in range(rng.randint(2, 40)))
    return text[0].upper() + text[1:] + rng.choice([".", "!", "?", "\u201d"])


def test_million_character_book_loses_nothing() -> None:
    rng = random.Random(7)
    limit = 2000
    chapters: list[ChapterInput] = []
    paragraphs: list[list[str]] = []
    total = 0
    while total < 1_000_000:
        chapter: list[str] = []
        for _ in range(rng.randint(20, 80)):
            # Most paragraphs fit; about one in a hundred is cut into several segments.
            count = rng.randint(30, 60) if rng.random() < 0.01 else rng.randint(1, 8)
            paragraph = " ".join(_sentence(rng) for _ in range(count))
            chapter.append(paragraph)
            total += len(paragraph)
        paragraphs.append(chapter)
        # Hard-wrapped, as text files are: the planner collapses the line breaks.
        wrapped = [re.sub(r"(\S{1,60}) ", "\\1\n", p, count=3) for p in chapter]
        chapters.append(ChapterInput(f"Chapter {len(chapters) + 1}", "\n\n".join(wrapped)))

    plan = plan_book(chapters, limit=limit)

    assert plan.characters >= 1_000_000
    assert len(plan.chapters) == len(chapters)
    split = 0
    for chapter_plan, expected in zip(plan.chapters, paragraphs, strict=True):
        segments = chapter_plan.segments
        assert segments[0].is_title and segments[0].text == chapter_plan.title
        assert all(s.text and s.text == s.text.strip() and len(s.text) <= limit for s in segments)
        assert segments[-1].pause_after_ms == 0
        # Re-join each paragraph's segments: the paragraph comes back exactly.
        rebuilt: list[str] = []
        current: list[str] = []
        for segment in segments[1:]:
            current.append(segment.text)
            if segment.ends_paragraph:
                split += len(current) > 1
                rebuilt.append(" ".join(current))
                current = []
        assert not current
        assert rebuilt == expected
    assert split > 0  # some paragraphs did go through the sentence splitter


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.sampled_from(list('ab .,;!?\n\n\r\t"()\u201c\u201d\u2026') + ["Mr.", "\n\n"]),
        max_size=500,
    ).map("".join),
    st.integers(min_value=1, max_value=200),
)
def test_plan_chapter_random_text_keeps_every_character_within_the_limit(
    text: str, limit: int
) -> None:
    if not text.strip():
        with pytest.raises(ValueError, match="no text"):
            plan_chapter(0, ChapterInput("", text), limit=limit)
        return
    plan = plan_chapter(0, ChapterInput("", text), limit=limit, read_titles=False)
    assert all(0 < len(s.text) <= limit for s in plan.segments)
    planned = "".join(s.text for s in plan.segments)
    assert "".join(planned.split()) == "".join(text.split())
    assert plan.segments[-1].ends_paragraph


def test_plan_book_one_giant_paragraph_stays_within_pysbd_budget(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    read: list[int] = []
    original = text_split._pysbd_sentences

    def counting(window: str) -> list[str]:
        read.append(len(window))
        return original(window)

    monkeypatch.setattr(text_split, "_pysbd_sentences", counting)
    paragraph = " ".join(_sentence(random.Random(3)) for _ in range(40_000))  # ~1M characters
    chapters = [ChapterInput("One", paragraph), ChapterInput("Two", paragraph)]
    plan = plan_book(chapters, limit=1500)
    # One budget for the whole book: the second chapter does not get another.
    assert sum(read) <= DEFAULT_SENTENCE_BUDGET
    for chapter in plan.chapters:
        body = [s.text for s in chapter.segments if not s.is_title]
        assert " ".join(body) == paragraph
        assert all(len(text) <= 1500 for text in body)
