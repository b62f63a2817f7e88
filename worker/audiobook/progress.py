"""Moving a book on: after each segment, chapter or sweep, look at where the book stands
and start what is due next. Every step is a compare-and-set, so two workers looking at
the same moment start each thing once."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from speechq.job_events import JobEventPublisher
from speechq.settings import Settings
from storage import audiobook_queries as books
from storage.db import session_scope
from storage.models import utcnow
from worker import webhooks

from .dispatch import publish_book, publish_chapter

__all__ = ["advance", "end_book_event"]

log = logging.getLogger(__name__)


def advance(
    settings: Settings,
    events: JobEventPublisher,
    book_id: str,
    *,
    chapter: int | None = None,
    republish: bool = False,
) -> None:
    """Start the assembly of chapters whose segments are all done, fail chapters that
    cannot finish, then assemble the book or end it failed. `chapter` limits the look at
    segments to the one chapter that just changed (after a segment); `republish` (the
    sweeper) publishes again assemblies whose message or worker may be lost."""
    db_url = settings.resolved_database_url
    chapters_to_publish: list[tuple[int, int]] = []
    book_round: int | None = None
    event: str | None = None
    ended = False
    with session_scope(db_url) as session:
        book = books.get_book(session, book_id=book_id, tenant=None)
        if book is None or book.status != books.RUNNING:
            return
        now = utcnow()
        chapters = books.chapters_of(session, book_id=book_id)
        for row in chapters:
            if row.status in books.OPEN_CHAPTER and chapter in (None, row.index):
                counts = books.chapter_progress(
                    session, book_id=book_id, index=row.index, version=row.version
                )
                unfinished = sum(counts.get(s, 0) for s in (books.PENDING, *books.IN_FLIGHT))
                if books.start_chapter_assembly(
                    session, book_id=book_id, index=row.index, version=row.version, counts=counts
                ):
                    row.status = books.ASSEMBLING
                    chapters_to_publish.append((row.index, row.version))
                elif not unfinished and counts.get(books.FAILED):
                    books.fail_chapter(
                        session, book_id=book_id, index=row.index, version=row.version
                    )
                    row.status = books.FAILED
            elif (
                row.status == books.ASSEMBLING and republish and _lapsed(row.lease_expires_at, now)
            ):
                chapters_to_publish.append((row.index, row.version))
        statuses = {row.status for row in chapters}
        if statuses == {books.SUCCEEDED}:
            if _lapsed(book.lease_expires_at, now):
                book_round = book.round
        elif books.FAILED in statuses and not statuses & {*books.OPEN_CHAPTER, books.ASSEMBLING}:
            progress = books.progress_of(session, book_id=book_id)
            ended = books.fail_book(
                session,
                book_id=book_id,
                round=book.round,
                code="provider_error" if progress.segments_failed else "internal_error",
                message=_failure_message(session, book_id, progress),
                expires_at=now + timedelta(hours=settings.result_ttl_hours),
            )
            if ended:
                event = end_book_event(session, book_id)
    for index, version in chapters_to_publish:
        publish_chapter(book_id, index, version)
    if book_round is not None:
        publish_book(book_id, book_round)
    if ended:
        events.job_ended(book_id)
        webhooks.publish_delivery(event)


def _lapsed(lease_expires_at: datetime | None, now: datetime) -> bool:
    """No run holds the lease (SQLite hands back naive UTC)."""
    return lease_expires_at is None or lease_expires_at.replace(tzinfo=now.tzinfo) < now


def end_book_event(session: Session, book_id: str) -> str | None:
    """The webhook event of a book that just ended, in the caller's transaction."""
    return webhooks.enqueue_audiobook_event(session, book_id=book_id)


def _failure_message(session: Session, book_id: str, progress: books.Progress) -> str:
    if not progress.segments_failed:
        return "a chapter could not be assembled; POST .../retry tries again"
    first = books.first_segment_error(session, book_id=book_id)
    detail = f" (first: {first['message']})" if first else ""
    return (
        f"{progress.segments_failed} of {progress.segments_total} segments failed{detail}; "
        f"POST /v1/audiobooks/{book_id}/retry runs them again, keeping the audio already made"
    )
