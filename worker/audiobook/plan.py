"""Plan a book's synthesis: its chapters cut into the segments sent to a TTS provider.

A segment is a run of whole sentences from one paragraph, at most `limit` characters. No
segment crosses a paragraph boundary, so the pause after a paragraph is exact wherever
the provider would have put its own; a paragraph that fits is one segment, a longer one
is cut by `worker.text_split.split_text`. Each segment carries the silence that follows
it: `SENTENCE_PAUSE_MS` inside a paragraph, the paragraph pause at a paragraph's end,
`TITLE_PAUSE_MS` after a chapter title read aloud, and nothing after a chapter's last
segment (the caller puts the chapter pause between chapters).

Only paragraphs longer than `limit` go through the sentence splitter, which reads a few
hundred characters before each cut with pysbd; one `SentenceBudget` per plan bounds what
pysbd reads for the whole book (past it, sentence ends are guessed from punctuation), so
planning stays linear in the book's length whatever its paragraphs look like.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from worker.audiobook.whitespace import collapse, split_paragraphs
from worker.text_split import SentenceBudget, split_text

__all__ = [
    "CHARACTERS_PER_SECOND",
    "DEFAULT_CHAPTER_PAUSE_MS",
    "DEFAULT_PARAGRAPH_PAUSE_MS",
    "DEFAULT_SEGMENT_LIMIT",
    "SENTENCE_PAUSE_MS",
    "TITLE_PAUSE_MS",
    "BookPlan",
    "ChapterInput",
    "ChapterPlan",
    "PlannedSegment",
    "TooManySegments",
    "plan_book",
    "plan_chapter",
]

DEFAULT_SEGMENT_LIMIT = 4096  # when no deployment states a per-request limit
SENTENCE_PAUSE_MS = 250  # between two segments of one paragraph
DEFAULT_PARAGRAPH_PAUSE_MS = 600
DEFAULT_CHAPTER_PAUSE_MS = 2000  # put by the caller between chapters
TITLE_PAUSE_MS = 1000  # after a chapter title read aloud
CHARACTERS_PER_SECOND = 15.0  # read speech at speed 1.0 (~150-160 words a minute)


class TooManySegments(ValueError):
    """The plan passed `max_segments`: planning stopped there."""

    def __init__(self, max_segments: int) -> None:
        super().__init__(
            f"The book would take more than {max_segments:,} segments (a request to the "
            f"provider for each paragraph, more for a long one); at most {max_segments:,} "
            "are accepted. Join its short paragraphs or split it into volumes."
        )
        self.max_segments = max_segments

    def __reduce__(self) -> tuple[type, tuple[int]]:  # crosses a process boundary
        return type(self), (self.max_segments,)


@dataclass(frozen=True)
class ChapterInput:
    """A chapter to plan: paragraphs separated by blank lines, optionally its own voice."""

    title: str
    text: str
    voice: str | None = None  # a voice for this chapter only


@dataclass(frozen=True)
class PlannedSegment:
    """One provider request: its text and the silence after its audio."""

    index: int  # position within its chapter, from 0
    text: str
    pause_after_ms: int
    is_title: bool = False
    # Whether the segment ends a paragraph (False for titles), so that an estimate can
    # price another paragraph pause without planning again.
    ends_paragraph: bool = False


@dataclass(frozen=True)
class ChapterPlan:
    """A chapter's segments; `index` is the chapter's place in the whole book, from 0."""

    index: int
    title: str  # whitespace collapsed
    voice: str | None
    characters: int  # characters that will be synthesized, the title's included if read
    segments: tuple[PlannedSegment, ...]


@dataclass(frozen=True)
class BookPlan:
    """The planned chapters in book order (a subset when `plan_book(only=...)` was used)."""

    chapters: tuple[ChapterPlan, ...]

    @property
    def characters(self) -> int:
        """Characters that will be synthesized, over all planned chapters."""
        return sum(chapter.characters for chapter in self.chapters)

    @property
    def segments(self) -> int:
        """The number of segments (provider requests), over all planned chapters."""
        return sum(len(chapter.segments) for chapter in self.chapters)

    def estimated_audio_seconds(
        self,
        *,
        speed: float = 1.0,
        paragraph_pause_ms: int | None = None,
        chapter_pause_ms: int = DEFAULT_CHAPTER_PAUSE_MS,
    ) -> float:
        """Speech at `CHARACTERS_PER_SECOND` x `speed`, plus every pause.

        `paragraph_pause_ms` None keeps the paragraph pause the plan was made with; a
        value prices another one. `chapter_pause_ms` is counted between chapters.
        """
        if speed <= 0:
            raise ValueError("speed must be positive")
        pause_ms = 0
        for chapter in self.chapters:
            last = len(chapter.segments) - 1
            for segment in chapter.segments:
                if paragraph_pause_ms is not None and segment.ends_paragraph:
                    pause_ms += paragraph_pause_ms if segment.index != last else 0
                else:
                    pause_ms += segment.pause_after_ms
        pause_ms += chapter_pause_ms * max(len(self.chapters) - 1, 0)
        return self.characters / CHARACTERS_PER_SECOND / speed + pause_ms / 1000


def _pieces(text: str, limit: int, budget: SentenceBudget) -> list[str]:
    """`text` (whitespace already collapsed) in pieces of at most `limit` characters."""
    if len(text) <= limit:
        return [text]
    # split_text keeps each sentence's trailing space; pieces are re-joined with pauses.
    pieces = split_text(text, limit, budget=budget)
    return [piece.strip() for piece in pieces if piece.strip()]


def _check_options(limit: int | None, paragraph_pause_ms: int) -> int:
    """The limit to cut at, once the options are known to be usable."""
    if paragraph_pause_ms < 0:
        raise ValueError(f"paragraph_pause_ms must not be negative, not {paragraph_pause_ms}")
    if limit is None:
        return DEFAULT_SEGMENT_LIMIT
    if limit <= 0:
        raise ValueError(f"limit must be positive, not {limit}")
    return limit


def plan_chapter(
    index: int,
    chapter: ChapterInput,
    *,
    limit: int | None,
    read_titles: bool = True,
    paragraph_pause_ms: int = DEFAULT_PARAGRAPH_PAUSE_MS,
    budget: SentenceBudget | None = None,
    max_segments: int | None = None,
) -> ChapterPlan:
    """Cut one chapter into segments; `index` is its place in the book, for messages.

    `budget` is what pysbd may still read (shared by a book's chapters); None gives this
    chapter a budget of its own. Raises ValueError when the chapter has no text once
    whitespace is collapsed, TooManySegments as soon as it passes `max_segments`.
    """
    limit = _check_options(limit, paragraph_pause_ms)
    budget = budget if budget is not None else SentenceBudget()
    paragraphs = split_paragraphs(chapter.text)
    if not paragraphs:
        raise ValueError(f"chapter {index} has no text")
    title = collapse(chapter.title)

    # (text, pause after, is a title, ends a paragraph); the last pause is zeroed below.
    pieces: list[tuple[str, int, bool, bool]] = []
    if read_titles and title:
        parts = _pieces(title, limit, budget)
        for n, part in enumerate(parts):
            last = n == len(parts) - 1
            pieces.append((part, TITLE_PAUSE_MS if last else SENTENCE_PAUSE_MS, True, False))
    for paragraph in paragraphs:
        parts = _pieces(paragraph, limit, budget)
        for n, part in enumerate(parts):
            last = n == len(parts) - 1
            pieces.append((part, paragraph_pause_ms if last else SENTENCE_PAUSE_MS, False, last))
        if max_segments is not None and len(pieces) > max_segments:
            raise TooManySegments(max_segments)

    end = len(pieces) - 1
    segments = tuple(
        PlannedSegment(
            index=n,
            text=text,
            pause_after_ms=0 if n == end else pause,
            is_title=is_title,
            ends_paragraph=ends_paragraph,
        )
        for n, (text, pause, is_title, ends_paragraph) in enumerate(pieces)
    )
    return ChapterPlan(
        index=index,
        title=title,
        voice=chapter.voice,
        characters=sum(len(segment.text) for segment in segments),
        segments=segments,
    )


def plan_book(
    chapters: Sequence[ChapterInput],
    *,
    limit: int | None,
    read_titles: bool = True,
    paragraph_pause_ms: int = DEFAULT_PARAGRAPH_PAUSE_MS,
    only: Collection[int] | None = None,
    max_segments: int | None = None,
) -> BookPlan:
    """Plan every chapter, or those whose 0-based indexes are in `only`.

    Chapters keep their index in the whole book when `only` picks some. `limit` None is
    `DEFAULT_SEGMENT_LIMIT`. Raises ValueError for an index of `only` out of range, an
    empty selection, and a planned chapter with no text; TooManySegments (a ValueError)
    as soon as the planned chapters pass `max_segments` together.
    """
    _check_options(limit, paragraph_pause_ms)
    if not chapters:
        raise ValueError("the book has no chapters")
    selected: list[int] = list(range(len(chapters)))
    if only is not None:
        for index in only:
            if not 0 <= index < len(chapters):
                raise ValueError(
                    f"chapter {index} does not exist: the book has {len(chapters)} "
                    f"chapters, numbered 0 to {len(chapters) - 1}"
                )
        if not only:
            raise ValueError("no chapters selected")
        selected = sorted(set(only))
    budget = SentenceBudget()  # one for the whole book, so its cost stays bounded
    planned: list[ChapterPlan] = []
    segments = 0
    for index in selected:
        chapter = plan_chapter(
            index,
            chapters[index],
            limit=limit,
            read_titles=read_titles,
            paragraph_pause_ms=paragraph_pause_ms,
            budget=budget,
            max_segments=None if max_segments is None else max_segments - segments,
        )
        segments += len(chapter.segments)
        planned.append(chapter)
    return BookPlan(chapters=tuple(planned))
