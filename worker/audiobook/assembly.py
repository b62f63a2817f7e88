"""Putting a book together: each chapter once its segments are done, then the M4B.

Both steps stream: a chapter reads its segments one at a time from storage and encodes its
part of the book as well as its own file; the book copies its chapters' parts, one at a
time, into the M4B without encoding anything, so memory does not grow with the book and
the step after the last chapter takes seconds, not the minutes an 18-hour encode would. Each step is
claimed with a lease that a heartbeat renews while its worker lives (`worker/lease.py`) and
ends with a compare-and-set on its run number; a step whose worker died is claimed again
once its lease has passed (the sweeper publishes it again).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import timedelta
from pathlib import Path

from speechq.job_events import JobEventPublisher
from speechq.settings import Settings
from storage import audiobook_queries as books
from storage.audiobook_models import AudiobookChapter
from storage.db import session_scope
from storage.models import utcnow
from storage.objects import ObjectStore, tenant_key
from worker import webhooks
from worker.lease import BookAssemblyLease, ChapterAssemblyLease

from .assemble import (
    BookPart,
    M4bInfo,
    SegmentAudio,
    assemble_chapter,
    build_m4b,
    normalization_gain_db,
    render_book_part,
    render_chapter,
)
from .plan import DEFAULT_CHAPTER_PAUSE_MS
from .progress import advance, end_book_event

__all__ = ["BookAssembler", "M4B_CONTENT_TYPE"]

log = logging.getLogger(__name__)

M4B_CONTENT_TYPE = "audio/mp4"


class BookAssembler:
    def __init__(self, settings: Settings, store: ObjectStore, events: JobEventPublisher) -> None:
        self.settings = settings
        self.store = store
        self.events = events
        self.db_url = settings.resolved_database_url
        # Renewed by a heartbeat: a dead assembler's step is taken back within a lease.
        self.lease_s = settings.job_lease_seconds

    # --- one chapter ------------------------------------------------------------------

    def chapter(self, book_id: str, index: int, version: int) -> str | None:
        """Assemble one chapter version; None if it was not ours to assemble."""
        with session_scope(self.db_url) as session:
            run = books.claim_chapter_assembly(
                session, book_id=book_id, index=index, version=version, lease_seconds=self.lease_s
            )
        if run is None:
            return None
        lease = ChapterAssemblyLease(
            self.db_url,
            book_id=book_id,
            index=index,
            version=version,
            run=run,
            lease_seconds=self.lease_s,
        )
        with lease:
            return self._assemble_chapter(book_id, index, version, run)

    def _assemble_chapter(self, book_id: str, index: int, version: int, run: int) -> str | None:
        with session_scope(self.db_url) as session:
            book = books.get_book(session, book_id=book_id, tenant=None)
            assert book is not None
            tenant, fmt = book.tenant, book.response_format
            segments = books.segments_of_chapter(
                session, book_id=book_id, index=index, version=version
            )
            sources: list[tuple[str, int]] = []
            for segment in segments:
                entry = books.cached_segment(session, tenant=tenant, cache_key=segment.cache_key)
                if entry is None:
                    break
                sources.append((entry.object_key, segment.pause_after_ms))
            chapter = session.get(AudiobookChapter, (book_id, index))
            assert chapter is not None
            old_keys = [k for k in (chapter.part_key, chapter.content_key) if k]
            # Every chapter but the last carries the pause that follows it in the book.
            last = max(c.index for c in books.chapters_of(session, book_id=book_id))
            pause_after_ms = (
                0
                if index == last
                else int(book.options.get("chapter_pause_ms", DEFAULT_CHAPTER_PAUSE_MS))
            )
        if len(sources) != len(segments) or not segments:
            return self._give_up(book_id, index, version, "a segment's audio is missing")
        prefix = ("audiobooks", book_id, f"chapter-{index}", f"v{version}-run{run}")
        part_key = tenant_key(tenant, *prefix, "part.m4a")
        content_key = tenant_key(tenant, *prefix, f"chapter.{fmt}")
        try:
            with tempfile.TemporaryDirectory(prefix="speechq-chapter-") as tmp:
                folder = Path(tmp)
                master = assemble_chapter(
                    self._segment_files(sources, folder), folder / "master.flac"
                )
                gain = normalization_gain_db(master)
                rendered = render_chapter(master, gain, fmt, folder / f"chapter.{fmt}")
                part = render_book_part(
                    master, gain, folder / "part.m4a", pause_after_ms=pause_after_ms
                )
                with part.path.open("rb") as fh:
                    self.store.put_file(part_key, fh)
                with rendered.path.open("rb") as fh:
                    self.store.put_file(content_key, fh)
        except Exception:
            log.exception("chapter %s of %s could not be assembled", index, book_id)
            return self._give_up(book_id, index, version, "internal error")
        with session_scope(self.db_url) as session:
            done = books.complete_chapter(
                session,
                book_id=book_id,
                index=index,
                version=version,
                run=run,
                values={
                    "duration_seconds": round(rendered.duration_seconds, 3),
                    "loudness_lufs": master.loudness_lufs,
                    "gain_db": round(gain, 3),
                    "part_key": part_key,
                    "content_key": content_key,
                    "content_bytes": rendered.bytes,
                },
            )
        # The version (and run) this step did not end keeps nothing; the one it replaced
        # is deleted once the new one is in place.
        for key in old_keys if done else [part_key, content_key]:
            self.store.delete(key)
        advance(self.settings, self.events, book_id)
        return books.SUCCEEDED if done else None

    def _segment_files(
        self, sources: list[tuple[str, int]], folder: Path
    ) -> Iterator[SegmentAudio]:
        """Each segment's audio downloaded just before it is needed, deleted after."""
        for number, (object_key, pause_after_ms) in enumerate(sources):
            path = folder / f"segment-{number}.flac"
            self.store.download_to(object_key, path)
            try:
                yield SegmentAudio(path=path, pause_after_ms=pause_after_ms)
            finally:
                path.unlink(missing_ok=True)

    def _give_up(self, book_id: str, index: int, version: int, why: str) -> str:
        log.warning("chapter %s of %s failed: %s", index, book_id, why)
        with session_scope(self.db_url) as session:
            books.fail_chapter(session, book_id=book_id, index=index, version=version)
        advance(self.settings, self.events, book_id)
        return books.FAILED

    # --- the book ---------------------------------------------------------------------

    def book(self, book_id: str, book_round: int) -> str | None:
        """Build the M4B from the chapters' parts; None if it was not ours to build."""
        with session_scope(self.db_url) as session:
            run = books.claim_book_assembly(
                session, book_id=book_id, round=book_round, lease_seconds=self.lease_s
            )
            if run is None:
                return None
            book = books.get_book(session, book_id=book_id, tenant=None)
            assert book is not None
            chapters = books.chapters_of(session, book_id=book_id)
            if any(c.status != books.SUCCEEDED or not c.part_key for c in chapters):
                # A chapter is being redone; its end starts this again, unhindered.
                book.lease_expires_at = None
                return None
            tenant, title = book.tenant, book.title
            old_key = (book.result or {}).get("object_key")
            parts = [(c.title, c.part_key or "") for c in chapters]
        lease = BookAssemblyLease(
            self.db_url, book_id=book_id, round=book_round, run=run, lease_seconds=self.lease_s
        )
        with lease:
            return self._build_book(
                book_id, book_round, run, tenant=tenant, title=title, parts=parts, old_key=old_key
            )

    def _build_book(
        self,
        book_id: str,
        book_round: int,
        run: int,
        *,
        tenant: str,
        title: str,
        parts: list[tuple[str, str]],
        old_key: str | None,
    ) -> str | None:
        key = tenant_key(tenant, "audiobooks", book_id, f"round-{book_round}-run{run}", "book.m4b")
        try:
            info = self._build(parts, key, title=title)
        except Exception:
            log.exception("audiobook %s could not be assembled", book_id)
            self.store.delete(key)
            return self._fail_book(book_id, book_round)
        result = {
            "object_key": key,
            "content_type": M4B_CONTENT_TYPE,
            "bytes": info.bytes,
            "duration_seconds": round(info.duration_seconds, 3),
            "chapter_starts": [round(s, 3) for s in info.chapter_starts],
        }
        with session_scope(self.db_url) as session:
            done = books.complete_book(
                session,
                book_id=book_id,
                round=book_round,
                run=run,
                result=result,
                expires_at=utcnow() + timedelta(hours=self.settings.result_ttl_hours),
            )
            event = end_book_event(session, book_id) if done else None
        if not done:
            self.store.delete(key)
            return None
        if old_key and old_key != key:
            self.store.delete(old_key)
        self.events.job_ended(book_id)
        webhooks.publish_delivery(event)
        return books.SUCCEEDED

    def _build(self, parts: list[tuple[str, str]], key: str, *, title: str) -> M4bInfo:
        with tempfile.TemporaryDirectory(prefix="speechq-book-") as tmp:
            folder = Path(tmp)
            info = build_m4b(
                [
                    BookPart(
                        title=chapter_title or f"Chapter {number + 1}",
                        open_part=self._part_opener(part_key, folder),
                    )
                    for number, (chapter_title, part_key) in enumerate(parts)
                ],
                folder / "book.m4b",
                title=title,
            )
            with info.path.open("rb") as fh:
                self.store.put_file(key, fh)
        return info

    def _fail_book(self, book_id: str, book_round: int) -> str:
        with session_scope(self.db_url) as session:
            ended = books.fail_book(
                session,
                book_id=book_id,
                round=book_round,
                code="internal_error",
                message=f"the M4B could not be built; POST /v1/audiobooks/{book_id}/retry "
                "tries again",
                expires_at=utcnow() + timedelta(hours=self.settings.result_ttl_hours),
            )
            event = end_book_event(session, book_id) if ended else None
        if ended:
            self.events.job_ended(book_id)
            webhooks.publish_delivery(event)
        return books.FAILED

    def _part_opener(
        self, part_key: str, folder: Path
    ) -> Callable[[], AbstractContextManager[Path]]:
        @contextmanager
        def open_part() -> Iterator[Path]:
            path = folder / "chapter-part.m4a"
            self.store.download_to(part_key, path)
            try:
                yield path
            finally:
                path.unlink(missing_ok=True)

        return open_part
