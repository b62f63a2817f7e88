"""Audiobook queries: keyword-only, tenant scoped like storage/queries.py (None = admin).

Every state change is a compare-and-set on the row's status (and, for work a run owns,
its run number), so a task that runs twice, or late, changes nothing the second time.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, delete, func, insert, or_, select, tuple_, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from speechq.domain import JobStatus
from storage.audiobook_models import (
    Audiobook,
    AudiobookChapter,
    AudiobookSegment,
    DispatchLock,
    SegmentCacheEntry,
)
from storage.models import UsageRecord, utcnow

__all__ = [
    "Progress",
    "NewSegment",
    "create_book",
    "add_segments",
    "get_book",
    "list_books",
    "chapters_of",
    "chapters_of_books",
    "progress_of",
    "progress_of_books",
    "chapter_progress",
    "lock_dispatch",
    "in_flight_count",
    "take_pending",
    "claim_segment",
    "extend_segment_lease",
    "segment_back_to_pending",
    "defer_segment",
    "finish_segment",
    "fail_segment",
    "segments_of_chapter",
    "cached_segment",
    "remember_segment",
    "start_chapter_assembly",
    "claim_chapter_assembly",
    "extend_chapter_assembly",
    "complete_chapter",
    "fail_chapter",
    "claim_book_assembly",
    "extend_book_assembly",
    "complete_book",
    "fail_book",
    "cancel_book",
    "retry_book",
    "rerender_chapter",
    "usage_of_books",
    "books_in_progress",
    "segments_to_republish",
    "reclaim_segments",
    "models_with_pending",
    "cancel_running_segment",
    "take_slot",
    "release_slot",
    "segment_still_running",
    "first_segment_error",
]

RUNNING = JobStatus.running.value
QUEUED = JobStatus.queued.value
SUCCEEDED = JobStatus.succeeded.value
FAILED = JobStatus.failed.value
CANCELED = JobStatus.canceled.value
PENDING = "pending"  # a segment waiting for capacity (not yet published)
ASSEMBLING = "assembling"  # a chapter whose audio is being put together
OPEN_BOOK = (QUEUED, RUNNING)
IN_FLIGHT = (QUEUED, RUNNING)
OPEN_CHAPTER = (QUEUED, RUNNING)  # a chapter whose segments are still being made


@dataclass(frozen=True)
class NewSegment:
    chapter_index: int
    index: int
    text: str
    voice: str | None
    is_title: bool
    pause_after_ms: int
    cache_key: str


@dataclass(frozen=True)
class Progress:
    chapters_total: int
    chapters_done: int
    segments_total: int
    segments_done: int
    segments_failed: int


# --- creating and reading -----------------------------------------------------------------


def create_book(
    session: Session,
    *,
    book: Audiobook,
    chapters: Sequence[AudiobookChapter],
    segments: Sequence[NewSegment],
) -> None:
    """The book, its chapters and its segments (pending), in the caller's transaction."""
    session.add(book)
    session.add_all(chapters)
    session.flush()
    add_segments(session, book_id=book.id, model=book.model, version=0, segments=segments)


def add_segments(
    session: Session,
    *,
    book_id: str,
    model: str,
    version: int,
    segments: Iterable[NewSegment],
) -> None:
    rows = [
        {
            "book_id": book_id,
            "chapter_index": s.chapter_index,
            "version": version,
            "index": s.index,
            "model": model,
            "text": s.text,
            "voice": s.voice,
            "is_title": s.is_title,
            "pause_after_ms": s.pause_after_ms,
            "cache_key": s.cache_key,
            "status": PENDING,
            "runs": 0,
            "cached": False,
            "cost_usd": 0.0,
        }
        for s in segments
    ]
    if rows:
        # One executemany: a million-character book is thousands of rows.
        session.execute(insert(AudiobookSegment), rows)


def _scoped(stmt: Select[Any], tenant: str | None) -> Select[Any]:
    return stmt if tenant is None else stmt.where(Audiobook.tenant == tenant)


def get_book(session: Session, *, book_id: str, tenant: str | None) -> Audiobook | None:
    return session.scalar(
        _scoped(select(Audiobook).where(Audiobook.id == book_id), tenant).execution_options(
            populate_existing=True
        )
    )


def list_books(
    session: Session,
    *,
    tenant: str | None,
    status: str | None = None,
    limit: int = 20,
    after: str | None = None,
) -> tuple[list[Audiobook], bool]:
    stmt = _scoped(select(Audiobook), tenant)
    if status:
        stmt = stmt.where(Audiobook.status == status)
    if after:
        stmt = stmt.where(Audiobook.id < after)
    rows = list(session.scalars(stmt.order_by(Audiobook.id.desc()).limit(limit + 1)))
    return rows[:limit], len(rows) > limit


def chapters_of(session: Session, *, book_id: str) -> list[AudiobookChapter]:
    return chapters_of_books(session, book_ids=[book_id])[book_id]


def chapters_of_books(
    session: Session, *, book_ids: Sequence[str]
) -> dict[str, list[AudiobookChapter]]:
    """Each book's chapters in order, in one query for a page of books."""
    found: dict[str, list[AudiobookChapter]] = {book_id: [] for book_id in book_ids}
    rows = session.scalars(
        select(AudiobookChapter)
        .where(AudiobookChapter.book_id.in_(book_ids))
        .order_by(AudiobookChapter.book_id, AudiobookChapter.index)
        .execution_options(populate_existing=True)
    )
    for chapter in rows:
        found[chapter.book_id].append(chapter)
    return found


def progress_of(session: Session, *, book_id: str) -> Progress:
    return progress_of_books(session, book_ids=[book_id])[book_id]


def progress_of_books(session: Session, *, book_ids: Sequence[str]) -> dict[str, Progress]:
    """Chapter and segment counts of each book (a re-render's superseded segments left
    out), in two queries for a page of books."""
    segments: dict[str, dict[str, int]] = {book_id: {} for book_id in book_ids}
    for book_id, status, count in session.execute(
        select(AudiobookSegment.book_id, AudiobookSegment.status, func.count())
        .join(
            AudiobookChapter,
            (AudiobookChapter.book_id == AudiobookSegment.book_id)
            & (AudiobookChapter.index == AudiobookSegment.chapter_index)
            & (AudiobookChapter.version == AudiobookSegment.version),
        )
        .where(AudiobookSegment.book_id.in_(book_ids))
        .group_by(AudiobookSegment.book_id, AudiobookSegment.status)
    ):
        segments[book_id][status] = count
    chapters: dict[str, dict[str, int]] = {book_id: {} for book_id in book_ids}
    for book_id, status, count in session.execute(
        select(AudiobookChapter.book_id, AudiobookChapter.status, func.count())
        .where(AudiobookChapter.book_id.in_(book_ids))
        .group_by(AudiobookChapter.book_id, AudiobookChapter.status)
    ):
        chapters[book_id][status] = count
    return {
        book_id: Progress(
            chapters_total=sum(chapters[book_id].values()),
            chapters_done=chapters[book_id].get(SUCCEEDED, 0),
            segments_total=sum(segments[book_id].values()),
            segments_done=segments[book_id].get(SUCCEEDED, 0),
            segments_failed=segments[book_id].get(FAILED, 0),
        )
        for book_id in book_ids
    }


def _chapter_version(book_id: str, index: int, version: int) -> list[Any]:
    return [
        AudiobookChapter.book_id == book_id,
        AudiobookChapter.index == index,
        AudiobookChapter.version == version,
    ]


def _segments_of(book_id: str, index: int, version: int) -> list[Any]:
    """The segments of one chapter version."""
    return [
        AudiobookSegment.book_id == book_id,
        AudiobookSegment.chapter_index == index,
        AudiobookSegment.version == version,
    ]


def chapter_progress(session: Session, *, book_id: str, index: int, version: int) -> dict[str, int]:
    """Segment counts by status for one chapter version."""
    return dict(
        session.execute(
            select(AudiobookSegment.status, func.count())
            .where(
                *_segments_of(book_id, index, version),
            )
            .group_by(AudiobookSegment.status)
        ).all()
    )


# --- dispatch -----------------------------------------------------------------------------


def lock_dispatch(session: Session, *, model: str) -> None:
    """Serialize dispatchers of one model until the caller's transaction ends."""
    updated = session.execute(
        update(DispatchLock).where(DispatchLock.model == model).values(touched_at=utcnow())
    ).rowcount
    if updated:
        return
    try:
        with session.begin_nested():
            session.add(DispatchLock(model=model, touched_at=utcnow()))
    except IntegrityError:
        # Another dispatcher made the row first; now lock it.
        session.execute(
            update(DispatchLock).where(DispatchLock.model == model).values(touched_at=utcnow())
        )


def in_flight_count(session: Session, *, model: str) -> int:
    return int(
        session.scalar(
            select(func.count()).where(
                AudiobookSegment.model == model, AudiobookSegment.status.in_(IN_FLIGHT)
            )
        )
        or 0
    )


def take_pending(session: Session, *, model: str, limit: int) -> list[int]:
    """Mark up to `limit` of the oldest pending segments of open books queued."""
    if limit <= 0:
        return []
    ids = list(
        session.scalars(
            select(AudiobookSegment.id)
            .join(Audiobook, Audiobook.id == AudiobookSegment.book_id)
            .where(
                AudiobookSegment.model == model,
                AudiobookSegment.status == PENDING,
                Audiobook.status.in_(OPEN_BOOK),
            )
            .order_by(AudiobookSegment.id)
            .limit(limit)
        )
    )
    if not ids:
        return []
    now = utcnow()
    session.execute(
        update(AudiobookSegment)
        .where(AudiobookSegment.id.in_(ids), AudiobookSegment.status == PENDING)
        .values(status=QUEUED, queued_at=now)
    )
    started = session.execute(
        select(AudiobookSegment.book_id, AudiobookSegment.chapter_index)
        .where(AudiobookSegment.id.in_(ids))
        .distinct()
    ).all()
    book_ids = {row.book_id for row in started}
    session.execute(
        update(AudiobookChapter)
        .where(
            tuple_(AudiobookChapter.book_id, AudiobookChapter.index).in_(
                [(row.book_id, row.chapter_index) for row in started]
            ),
            AudiobookChapter.status == QUEUED,
        )
        .values(status=RUNNING)
        .execution_options(synchronize_session=False)
    )
    session.execute(
        update(Audiobook)
        .where(Audiobook.id.in_(book_ids), Audiobook.status == QUEUED)
        .values(status=RUNNING, started_at=now)
    )
    return ids


def models_with_pending(session: Session) -> list[str]:
    return list(
        session.scalars(
            select(AudiobookSegment.model).where(AudiobookSegment.status == PENDING).distinct()
        )
    )


# --- segments -----------------------------------------------------------------------------


def claim_segment(
    session: Session, *, segment_id: int, lease_seconds: float
) -> AudiobookSegment | None:
    """queued -> running, with a lease and a new run number; None if not ours to run."""
    claimed = session.execute(
        update(AudiobookSegment)
        .where(AudiobookSegment.id == segment_id, AudiobookSegment.status == QUEUED)
        .values(
            status=RUNNING,
            runs=AudiobookSegment.runs + 1,
            lease_expires_at=utcnow() + timedelta(seconds=lease_seconds),
        )
    ).rowcount
    if not claimed:
        return None
    return session.get(AudiobookSegment, segment_id, populate_existing=True)


def _this_run(segment_id: int, run: int) -> list[Any]:
    return [
        AudiobookSegment.id == segment_id,
        AudiobookSegment.status == RUNNING,
        AudiobookSegment.runs == run,
    ]


def extend_segment_lease(session: Session, *, segment_id: int, run: int, until: datetime) -> None:
    session.execute(
        update(AudiobookSegment).where(*_this_run(segment_id, run)).values(lease_expires_at=until)
    )


def segment_back_to_pending(session: Session, *, segment_id: int, run: int) -> bool:
    """No deployment had a free slot: wait for the next dispatch."""
    return bool(
        session.execute(
            update(AudiobookSegment)
            .where(*_this_run(segment_id, run))
            .values(status=PENDING, queued_at=None, lease_expires_at=None)
        ).rowcount
    )


def defer_segment(session: Session, *, segment_id: int, run: int, until: datetime) -> bool:
    """The provider is rate limiting: this run ends, the segment stays queued (keeping its
    place in the model's capacity, so no other segment is sent to be refused meanwhile)
    and is published again for `until`; the sweeper republishes it if that message is lost
    (`queued_at` is `until`)."""
    return bool(
        session.execute(
            update(AudiobookSegment)
            .where(*_this_run(segment_id, run))
            .values(
                status=QUEUED,
                queued_at=until,
                lease_expires_at=None,
                deployment=None,
                deferrals=AudiobookSegment.deferrals + 1,
            )
        ).rowcount
    )


def finish_segment(
    session: Session,
    *,
    segment_id: int,
    run: int,
    cached: bool,
    usage: UsageRecord | None,
) -> bool:
    """running -> succeeded for this run only; bills `usage` in the same transaction."""
    done = session.execute(
        update(AudiobookSegment)
        .where(*_this_run(segment_id, run))
        .values(
            status=SUCCEEDED,
            cached=cached,
            cost_usd=usage.cost_usd if usage else 0.0,
            lease_expires_at=None,
            error=None,
        )
    ).rowcount
    if done and usage is not None:
        session.add(usage)
    return bool(done)


def fail_segment(session: Session, *, segment_id: int, run: int, code: str, message: str) -> bool:
    return bool(
        session.execute(
            update(AudiobookSegment)
            .where(*_this_run(segment_id, run))
            .values(status=FAILED, lease_expires_at=None, error={"code": code, "message": message})
        ).rowcount
    )


def cancel_running_segment(session: Session, *, segment_id: int, run: int) -> bool:
    return bool(
        session.execute(
            update(AudiobookSegment)
            .where(*_this_run(segment_id, run))
            .values(status=CANCELED, lease_expires_at=None)
        ).rowcount
    )


def segments_of_chapter(
    session: Session, *, book_id: str, index: int, version: int
) -> list[AudiobookSegment]:
    return list(
        session.scalars(
            select(AudiobookSegment)
            .where(
                *_segments_of(book_id, index, version),
            )
            .order_by(AudiobookSegment.index)
        )
    )


def cached_segment(session: Session, *, tenant: str, cache_key: str) -> SegmentCacheEntry | None:
    entry = session.get(SegmentCacheEntry, (tenant, cache_key))
    if entry is not None:
        entry.last_used_at = utcnow()
    return entry


def remember_segment(
    session: Session,
    *,
    tenant: str,
    cache_key: str,
    object_key: str,
    sample_rate: int,
    duration_seconds: float,
) -> None:
    """Add to the cache; an entry already there (an identical segment) is kept."""
    try:
        with session.begin_nested():
            session.add(
                SegmentCacheEntry(
                    tenant=tenant,
                    cache_key=cache_key,
                    object_key=object_key,
                    sample_rate=sample_rate,
                    duration_seconds=duration_seconds,
                    created_at=utcnow(),
                    last_used_at=utcnow(),
                )
            )
    except IntegrityError:
        pass


# --- chapters -----------------------------------------------------------------------------


def start_chapter_assembly(
    session: Session,
    *,
    book_id: str,
    index: int,
    version: int,
    counts: dict[str, int] | None = None,
) -> bool:
    """running -> assembling once every segment of this version succeeded (`counts`: the
    chapter's segment counts, if the caller has just read them)."""
    if counts is None:
        counts = chapter_progress(session, book_id=book_id, index=index, version=version)
    if not counts or set(counts) != {SUCCEEDED}:
        return False
    return bool(
        session.execute(
            update(AudiobookChapter)
            .where(
                *_chapter_version(book_id, index, version),
                AudiobookChapter.status.in_(OPEN_CHAPTER),
            )
            .values(status=ASSEMBLING, lease_expires_at=None)
        ).rowcount
    )


def claim_chapter_assembly(
    session: Session, *, book_id: str, index: int, version: int, lease_seconds: float
) -> int | None:
    """Take the assembly of one chapter version if no live run holds it; its run number."""
    now = utcnow()
    claimed = session.execute(
        update(AudiobookChapter)
        .where(
            *_chapter_version(book_id, index, version),
            AudiobookChapter.status == ASSEMBLING,
            or_(
                AudiobookChapter.lease_expires_at.is_(None), AudiobookChapter.lease_expires_at < now
            ),
        )
        .values(
            assembly_runs=AudiobookChapter.assembly_runs + 1,
            lease_expires_at=now + timedelta(seconds=lease_seconds),
        )
    ).rowcount
    if not claimed:
        return None
    return session.scalar(
        select(AudiobookChapter.assembly_runs).where(
            AudiobookChapter.book_id == book_id, AudiobookChapter.index == index
        )
    )


def _assembling_run(book_id: str, index: int, version: int, run: int) -> list[Any]:
    """The chapter version while this assembly run holds it."""
    return [
        *_chapter_version(book_id, index, version),
        AudiobookChapter.status == ASSEMBLING,
        AudiobookChapter.assembly_runs == run,
    ]


def extend_chapter_assembly(
    session: Session, *, book_id: str, index: int, version: int, run: int, until: datetime
) -> None:
    session.execute(
        update(AudiobookChapter)
        .where(*_assembling_run(book_id, index, version, run))
        .values(lease_expires_at=until)
    )


def complete_chapter(
    session: Session,
    *,
    book_id: str,
    index: int,
    version: int,
    run: int,
    values: dict[str, Any],
) -> bool:
    return bool(
        session.execute(
            update(AudiobookChapter)
            .where(*_assembling_run(book_id, index, version, run))
            .values(status=SUCCEEDED, lease_expires_at=None, **values)
        ).rowcount
    )


def fail_chapter(session: Session, *, book_id: str, index: int, version: int) -> bool:
    return bool(
        session.execute(
            update(AudiobookChapter)
            .where(
                *_chapter_version(book_id, index, version),
                AudiobookChapter.status.in_((*OPEN_CHAPTER, ASSEMBLING)),
            )
            .values(status=FAILED, lease_expires_at=None)
        ).rowcount
    )


# --- the book -----------------------------------------------------------------------------


def claim_book_assembly(
    session: Session, *, book_id: str, round: int, lease_seconds: float
) -> int | None:
    now = utcnow()
    claimed = session.execute(
        update(Audiobook)
        .where(
            Audiobook.id == book_id,
            Audiobook.status == RUNNING,
            Audiobook.round == round,
            or_(Audiobook.lease_expires_at.is_(None), Audiobook.lease_expires_at < now),
        )
        .values(
            assembly_runs=Audiobook.assembly_runs + 1,
            lease_expires_at=now + timedelta(seconds=lease_seconds),
        )
    ).rowcount
    if not claimed:
        return None
    return session.scalar(select(Audiobook.assembly_runs).where(Audiobook.id == book_id))


def _building_run(book_id: str, round: int, run: int) -> list[Any]:
    """The book in this round while this M4B run holds it."""
    return [
        Audiobook.id == book_id,
        Audiobook.status == RUNNING,
        Audiobook.round == round,
        Audiobook.assembly_runs == run,
    ]


def extend_book_assembly(
    session: Session, *, book_id: str, round: int, run: int, until: datetime
) -> None:
    session.execute(
        update(Audiobook).where(*_building_run(book_id, round, run)).values(lease_expires_at=until)
    )


def complete_book(
    session: Session,
    *,
    book_id: str,
    round: int,
    run: int,
    result: dict[str, Any],
    expires_at: datetime,
) -> bool:
    return bool(
        session.execute(
            update(Audiobook)
            .where(*_building_run(book_id, round, run))
            .values(
                status=SUCCEEDED,
                result=result,
                error=None,
                lease_expires_at=None,
                finished_at=utcnow(),
                expires_at=expires_at,
            )
        ).rowcount
    )


def fail_book(
    session: Session, *, book_id: str, round: int, code: str, message: str, expires_at: datetime
) -> bool:
    return bool(
        session.execute(
            update(Audiobook)
            .where(
                Audiobook.id == book_id, Audiobook.status.in_(OPEN_BOOK), Audiobook.round == round
            )
            .values(
                status=FAILED,
                error={"code": code, "message": message},
                lease_expires_at=None,
                finished_at=utcnow(),
                expires_at=expires_at,
            )
        ).rowcount
    )


def cancel_book(session: Session, *, book_id: str, expires_at: datetime) -> bool:
    """queued/running -> canceled; segments not yet running are canceled with it, and a
    running one stops at its next safe point."""
    canceled = session.execute(
        update(Audiobook)
        .where(Audiobook.id == book_id, Audiobook.status.in_(OPEN_BOOK))
        .values(status=CANCELED, lease_expires_at=None, finished_at=utcnow(), expires_at=expires_at)
    ).rowcount
    if not canceled:
        return False
    session.execute(
        update(AudiobookSegment)
        .where(AudiobookSegment.book_id == book_id, AudiobookSegment.status.in_((PENDING, QUEUED)))
        .values(status=CANCELED)
    )
    session.execute(
        update(AudiobookChapter)
        .where(
            AudiobookChapter.book_id == book_id,
            AudiobookChapter.status.in_((*OPEN_CHAPTER, ASSEMBLING)),
        )
        .values(status=CANCELED)
    )
    return True


def _reopen(session: Session, *, book_id: str, ended: tuple[str, ...]) -> bool:
    """An ended book runs again, in a new round (its own assembly and webhook). Its result
    stays until the new round replaces it (the old M4B is deleted then)."""
    return bool(
        session.execute(
            update(Audiobook)
            .where(Audiobook.id == book_id, Audiobook.status.in_(ended))
            .values(
                status=RUNNING,
                round=Audiobook.round + 1,
                error=None,
                finished_at=None,
                expires_at=None,
                lease_expires_at=None,
            )
        ).rowcount
    )


def retry_book(session: Session, *, book_id: str) -> bool:
    """failed -> running: failed segments (and chapters, and those a cancel stopped) go
    back to pending; everything that succeeded is kept."""
    if not _reopen(session, book_id=book_id, ended=(FAILED, CANCELED)):
        return False
    session.execute(
        update(AudiobookSegment)
        .where(
            AudiobookSegment.book_id == book_id,
            AudiobookSegment.status.in_((FAILED, CANCELED)),
        )
        .values(
            status=PENDING,
            error=None,
            queued_at=None,
            lease_expires_at=None,
            # A retry is a fresh start: it gets the whole allowance of both again.
            losses=0,
            deferrals=0,
        )
    )
    session.execute(
        update(AudiobookChapter)
        .where(
            AudiobookChapter.book_id == book_id,
            AudiobookChapter.status.in_((FAILED, CANCELED)),
        )
        .values(status=RUNNING, lease_expires_at=None)
    )
    return True


def rerender_chapter(
    session: Session,
    *,
    book: Audiobook,
    index: int,
    title: str | None,
    voice: str | None,
    characters: int,
    segments: Sequence[NewSegment] | None,
    text: str | None = None,
) -> bool:
    """Start a new version of one chapter of an ended book; the book runs again.
    `segments` None keeps the text: the current version's segments are copied."""
    chapter = session.get(AudiobookChapter, (book.id, index), populate_existing=True)
    if chapter is None:
        return False
    if not _reopen(session, book_id=book.id, ended=(SUCCEEDED, FAILED)):
        return False
    new_version = chapter.version + 1
    if segments is None:
        segments = [
            NewSegment(
                chapter_index=index,
                index=s.index,
                text=s.text,
                voice=s.voice,
                is_title=s.is_title,
                pause_after_ms=s.pause_after_ms,
                cache_key=s.cache_key,
            )
            for s in segments_of_chapter(
                session, book_id=book.id, index=index, version=chapter.version
            )
        ]
    chapter.version = new_version
    chapter.status = RUNNING
    chapter.lease_expires_at = None
    chapter.characters = characters
    if title is not None:
        chapter.title = title
    if voice is not None:
        chapter.voice = voice
    if text is not None:
        chapter.text = text
    session.flush()
    add_segments(session, book_id=book.id, model=book.model, version=new_version, segments=segments)
    # Older versions' segments are history: their audio lives on in the cache.
    session.execute(
        delete(AudiobookSegment).where(
            AudiobookSegment.book_id == book.id,
            AudiobookSegment.chapter_index == index,
            AudiobookSegment.version < new_version,
        )
    )
    return True


def usage_of_books(
    session: Session, *, book_ids: Sequence[str]
) -> dict[str, dict[str, Any] | None]:
    """What each book's provider calls cost (None before the first), in one query."""
    found: dict[str, dict[str, Any] | None] = dict.fromkeys(book_ids)
    for book_id, characters, cost in session.execute(
        select(
            UsageRecord.audiobook_id,
            func.coalesce(func.sum(UsageRecord.characters), 0),
            func.coalesce(func.sum(UsageRecord.cost_usd), 0.0),
        )
        .where(UsageRecord.audiobook_id.in_(book_ids))
        .group_by(UsageRecord.audiobook_id)
    ):
        found[book_id] = {"characters": int(characters), "cost_usd": round(float(cost), 6)}
    return found


# --- the sweeper --------------------------------------------------------------------------


def books_in_progress(session: Session, *, limit: int = 200) -> list[str]:
    return list(
        session.scalars(
            select(Audiobook.id)
            .where(Audiobook.status == RUNNING)
            .order_by(Audiobook.id)
            .limit(limit)
        )
    )


def segments_to_republish(session: Session, *, older_than_s: float, limit: int = 500) -> list[int]:
    """Queued segments whose message may be lost (published long ago, never claimed)."""
    cutoff = utcnow() - timedelta(seconds=older_than_s)
    ids = list(
        session.scalars(
            select(AudiobookSegment.id)
            .where(AudiobookSegment.status == QUEUED, AudiobookSegment.queued_at < cutoff)
            .order_by(AudiobookSegment.id)
            .limit(limit)
        )
    )
    if ids:
        session.execute(
            update(AudiobookSegment)
            .where(AudiobookSegment.id.in_(ids), AudiobookSegment.status == QUEUED)
            .values(queued_at=utcnow())
        )
    return ids


def reclaim_segments(session: Session, *, max_runs: int) -> tuple[list[int], list[int]]:
    """Running segments whose lease expired (their worker died): queued again, or failed
    with `worker_lost` when this is their `max_runs`-th lost run (runs that found no slot
    or were deferred do not count). Returns (requeued, failed)."""
    now = utcnow()
    rows = session.execute(
        select(AudiobookSegment.id, AudiobookSegment.losses).where(
            AudiobookSegment.status == RUNNING, AudiobookSegment.lease_expires_at < now
        )
    ).all()
    requeued = [row.id for row in rows if row.losses + 1 < max_runs]
    lost = [row.id for row in rows if row.losses + 1 >= max_runs]
    if requeued:
        session.execute(
            update(AudiobookSegment)
            .where(AudiobookSegment.id.in_(requeued), AudiobookSegment.status == RUNNING)
            .values(
                status=QUEUED,
                queued_at=now,
                lease_expires_at=None,
                deployment=None,
                losses=AudiobookSegment.losses + 1,
            )
        )
    if lost:
        session.execute(
            update(AudiobookSegment)
            .where(AudiobookSegment.id.in_(lost), AudiobookSegment.status == RUNNING)
            .values(
                status=FAILED,
                lease_expires_at=None,
                deployment=None,
                losses=AudiobookSegment.losses + 1,
                error={
                    "code": "worker_lost",
                    "message": f"the worker running this segment was lost {max_runs} times",
                },
            )
        )
    return requeued, lost


# --- per-deployment slots -----------------------------------------------------------------


def take_slot(session: Session, *, segment_id: int, run: int, deployment: str, cap: int) -> bool:
    """Hold one of `deployment`'s `cap` slots for this running segment, if one is free.
    Slots are the running segments themselves, so a dead worker's slot is freed when the
    sweeper takes its segment back: nothing leaks."""
    busy = (
        select(func.count())
        .where(AudiobookSegment.deployment == deployment, AudiobookSegment.status == RUNNING)
        .scalar_subquery()
    )
    return bool(
        session.execute(
            update(AudiobookSegment)
            .where(*_this_run(segment_id, run), busy < cap)
            .values(deployment=deployment)
            .execution_options(synchronize_session=False)
        ).rowcount
    )


def release_slot(session: Session, *, segment_id: int) -> None:
    session.execute(
        update(AudiobookSegment)
        .where(AudiobookSegment.id == segment_id)
        .values(deployment=None)
        .execution_options(synchronize_session=False)
    )


def segment_still_running(session: Session, *, segment_id: int, run: int) -> bool:
    """This run still owns the segment and its book is still open (not canceled)."""
    return (
        session.scalar(
            select(func.count())
            .select_from(AudiobookSegment)
            .join(Audiobook, Audiobook.id == AudiobookSegment.book_id)
            .where(*_this_run(segment_id, run), Audiobook.status.in_(OPEN_BOOK))
        )
        or 0
    ) > 0


def first_segment_error(session: Session, *, book_id: str) -> dict[str, Any] | None:
    return session.scalar(
        select(AudiobookSegment.error)
        .where(AudiobookSegment.book_id == book_id, AudiobookSegment.status == FAILED)
        .order_by(AudiobookSegment.id)
        .limit(1)
    )
