"""Audiobook request and response schemas, and the public view of a stored book."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy.orm import Session

from api.schemas import JobErrorPublic, Metadata, unix
from speechq.text_checks import CheckedModel
from storage import audiobook_queries as books
from storage.audiobook_models import Audiobook, AudiobookChapter

__all__ = [
    "BookFormat",
    "ChapterCreate",
    "AudiobookOptions",
    "AudiobookCreate",
    "ChapterRerender",
    "AudiobookQuote",
    "AudiobookPublic",
    "AudiobooksPublic",
    "audiobook_public",
    "audiobooks_public",
    "MAX_BOOK_CHARACTERS",
    "MAX_CHAPTERS",
    "MAX_SEGMENTS",
]

BookFormat = Literal["mp3", "opus", "aac", "flac", "wav"]
# About 60 hours of audio: a long novel is ~1M characters. Counted on the planned text,
# and first on the decoded text of a `text` or a file, before its chapters are found.
MAX_BOOK_CHARACTERS = 5_000_000
# A book's chapters, however they come (JSON `chapters`, headings in `text` or a file, an
# EPUB's navigation); `include_chapters` and `chapter_voices` name at most as many.
MAX_CHAPTERS = 2000
# A book's segments (provider requests, stored rows): a 5M-character book of ordinary
# paragraphs has some 50,000; a million one-letter paragraphs are refused while planned.
MAX_SEGMENTS = 100_000
VoiceName = Annotated[str, Field(max_length=200)]


class ChapterCreate(CheckedModel):
    model_config = ConfigDict(extra="ignore")

    title: str = Field(default="", max_length=500)
    text: str = Field(min_length=1)
    voice: VoiceName | None = None


class AudiobookOptions(CheckedModel):
    """Everything but the book's text: shared by the JSON body and the multipart form."""

    model_config = ConfigDict(extra="ignore")

    title: str | None = Field(default=None, max_length=500)
    model: str = Field(min_length=1, max_length=200)
    voice: VoiceName | None = None
    response_format: BookFormat = "mp3"
    speed: float = Field(default=1.0, ge=0.25, le=4.0)
    read_titles: bool = True
    paragraph_pause_ms: int = Field(default=600, ge=0, le=10_000)
    chapter_pause_ms: int = Field(default=2000, ge=0, le=10_000)
    # Which chapters to make (0-based, in the book's order); all when absent.
    include_chapters: list[int] | None = Field(default=None, max_length=MAX_CHAPTERS)
    # A voice per chapter, by index ("2": "nova"); a chapter's own `voice` wins.
    chapter_voices: dict[Annotated[str, Field(max_length=12)], VoiceName] | None = Field(
        default=None, max_length=MAX_CHAPTERS
    )
    user: str | None = Field(default=None, max_length=256)
    webhook_url: str | None = Field(default=None, max_length=2048)
    metadata: Metadata | None = None
    max_cost_usd: float | None = Field(default=None, ge=0)


class AudiobookCreate(AudiobookOptions):
    chapters: list[ChapterCreate] | None = Field(
        default=None, min_length=1, max_length=MAX_CHAPTERS
    )
    text: str | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _one_source(self) -> AudiobookCreate:
        if (self.chapters is None) == (self.text is None):
            raise ValueError("give either 'chapters' or 'text' (or upload a 'file')")
        return self


class ChapterRerender(CheckedModel):
    model_config = ConfigDict(extra="ignore")

    text: str | None = Field(default=None, min_length=1, max_length=MAX_BOOK_CHARACTERS)
    title: str | None = Field(default=None, max_length=500)
    voice: VoiceName | None = None


class AudiobookQuote(BaseModel):
    object: Literal["audiobook.quote"] = "audiobook.quote"
    chapters: int
    segments: int
    characters: int
    estimated_cost_usd: float
    estimated_audio_seconds: float


class ProgressPublic(BaseModel):
    chapters_total: int
    chapters_done: int
    segments_total: int
    segments_done: int
    segments_failed: int


class ChapterPublic(BaseModel):
    index: int
    title: str
    status: str
    characters: int
    duration_seconds: float | None
    content_url: str | None
    voice: str | None = None


class AudiobookResultPublic(BaseModel):
    content_url: str
    content_type: str
    bytes: int
    duration_seconds: float


class AudiobookUsagePublic(BaseModel):
    characters: int
    cost_usd: float


class AudiobookPublic(BaseModel):
    id: str
    object: Literal["audiobook"] = "audiobook"
    title: str
    status: Literal["queued", "running", "succeeded", "failed", "canceled"]
    model: str
    voice: str | None
    response_format: str
    progress: ProgressPublic
    chapters: list[ChapterPublic]
    result: AudiobookResultPublic | None
    usage: AudiobookUsagePublic | None
    error: JobErrorPublic | None
    estimated_cost_usd: float
    user: str | None
    metadata: dict[str, str] | None
    webhook_url: str | None
    created_at: int
    started_at: int | None
    finished_at: int | None


class AudiobooksPublic(BaseModel):
    object: Literal["list"] = "list"
    data: list[AudiobookPublic]
    has_more: bool
    next_after: str | None


def audiobook_public(session: Session, book: Audiobook) -> AudiobookPublic:
    return audiobooks_public(session, [book])[0]


def audiobooks_public(session: Session, rows: Sequence[Audiobook]) -> list[AudiobookPublic]:
    """The public objects of a page of books: four queries, however many books."""
    ids = [book.id for book in rows]
    progress = books.progress_of_books(session, book_ids=ids)
    chapters = books.chapters_of_books(session, book_ids=ids)
    usage = books.usage_of_books(session, book_ids=ids)
    return [_public(book, progress[book.id], chapters[book.id], usage[book.id]) for book in rows]


def _public(
    book: Audiobook,
    progress: books.Progress,
    chapters: list[AudiobookChapter],
    usage: dict[str, Any] | None,
) -> AudiobookPublic:
    result: dict[str, Any] | None = None
    if book.status == books.SUCCEEDED and book.result:
        result = {
            "content_url": f"/v1/audiobooks/{book.id}/content",
            **{k: v for k, v in book.result.items() if k in AudiobookResultPublic.model_fields},
        }
    return AudiobookPublic(
        id=book.id,
        title=book.title,
        status=book.status,  # type: ignore[arg-type]
        model=book.model,
        voice=book.voice,
        response_format=book.response_format,
        progress=ProgressPublic(**vars(progress)),
        chapters=[
            ChapterPublic(
                index=c.index,
                title=c.title,
                status=c.status,
                characters=c.characters,
                duration_seconds=c.duration_seconds,
                voice=c.voice,
                content_url=(
                    f"/v1/audiobooks/{book.id}/chapters/{c.index}/content"
                    if c.content_key and c.status == books.SUCCEEDED
                    else None
                ),
            )
            for c in chapters
        ],
        result=AudiobookResultPublic(**result) if result else None,
        usage=AudiobookUsagePublic(**usage) if usage else None,
        error=JobErrorPublic(**book.error) if book.error else None,
        estimated_cost_usd=book.estimated_cost_usd,
        user=book.user,
        metadata=book.metadata_,
        webhook_url=book.webhook_url,
        created_at=unix(book.created_at) or 0,
        started_at=unix(book.started_at),
        finished_at=unix(book.finished_at),
    )
