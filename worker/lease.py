"""Leases of running work (a job, an audiobook segment or assembly): pushed forward by a heartbeat
while its worker lives, so work whose worker died (SIGKILL, OOM, a lost machine) is taken
back by the sweeper within one lease, and live work, however long, never is."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from types import TracebackType

from sqlalchemy import update
from sqlalchemy.orm import Session

from speechq.domain import JobStatus
from storage import audiobook_queries as books
from storage.db import session_scope
from storage.models import Job, utcnow

__all__ = ["Heartbeat", "LeaseKeeper", "SegmentLease", "ChapterAssemblyLease", "BookAssemblyLease"]

log = logging.getLogger(__name__)


class Heartbeat:
    """Calls `extend(session, new_expiry)` three times a lease until the block exits."""

    def __init__(
        self,
        database_url: str,
        name: str,
        lease_seconds: float,
        extend: Callable[[Session, datetime], None],
    ) -> None:
        self.database_url = database_url
        self.name = name
        self.lease_seconds = lease_seconds
        self.extend = extend
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"lease-{name}", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def beat(self) -> None:
        """Push the lease one lease length past now (the thread does this; tests call it)."""
        with session_scope(self.database_url) as session:
            self.extend(session, utcnow() + timedelta(seconds=self.lease_seconds))

    def _beat(self) -> None:
        # Three beats a lease: one slow database answer does not lose the work.
        while not self._stop.wait(self.lease_seconds / 3):
            try:
                self.beat()
            except Exception:
                log.warning("could not extend the lease of %s", self.name, exc_info=True)


class LeaseKeeper(Heartbeat):
    """A running job's lease; a stalled run must not renew the lease of a later run."""

    def __init__(self, database_url: str, job_id: str, run: int, lease_seconds: float) -> None:
        def extend(session: Session, expires_at: datetime) -> None:
            session.execute(
                update(Job)
                .where(Job.id == job_id, Job.status == JobStatus.running.value, Job.runs == run)
                .values(lease_expires_at=expires_at)
            )

        super().__init__(database_url, job_id, lease_seconds, extend)


class SegmentLease(Heartbeat):
    """A running audiobook segment's lease, for this run only."""

    def __init__(self, database_url: str, segment_id: int, run: int, lease_seconds: float) -> None:
        def extend(session: Session, expires_at: datetime) -> None:
            books.extend_segment_lease(session, segment_id=segment_id, run=run, until=expires_at)

        super().__init__(database_url, f"segment-{segment_id}", lease_seconds, extend)


class ChapterAssemblyLease(Heartbeat):
    """The lease of one run assembling one chapter version."""

    def __init__(
        self,
        database_url: str,
        *,
        book_id: str,
        index: int,
        version: int,
        run: int,
        lease_seconds: float,
    ) -> None:
        def extend(session: Session, expires_at: datetime) -> None:
            books.extend_chapter_assembly(
                session, book_id=book_id, index=index, version=version, run=run, until=expires_at
            )

        super().__init__(database_url, f"{book_id}-chapter-{index}", lease_seconds, extend)


class BookAssemblyLease(Heartbeat):
    """The lease of one run building a book's M4B in one round."""

    def __init__(
        self, database_url: str, *, book_id: str, round: int, run: int, lease_seconds: float
    ) -> None:
        def extend(session: Session, expires_at: datetime) -> None:
            books.extend_book_assembly(
                session, book_id=book_id, round=round, run=run, until=expires_at
            )

        super().__init__(database_url, f"{book_id}-m4b", lease_seconds, extend)
