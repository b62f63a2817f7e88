"""Leases of running work (a job, an audiobook segment): pushed forward by a heartbeat
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
from storage.audiobook_models import AudiobookSegment
from storage.db import session_scope
from storage.models import Job, utcnow

__all__ = ["Heartbeat", "LeaseKeeper", "SegmentLease"]

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

    def _beat(self) -> None:
        # Three beats a lease: one slow database answer does not lose the work.
        while not self._stop.wait(self.lease_seconds / 3):
            try:
                with session_scope(self.database_url) as session:
                    self.extend(session, utcnow() + timedelta(seconds=self.lease_seconds))
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
            session.execute(
                update(AudiobookSegment)
                .where(
                    AudiobookSegment.id == segment_id,
                    AudiobookSegment.status == JobStatus.running.value,
                    AudiobookSegment.runs == run,
                )
                .values(lease_expires_at=expires_at)
            )

        super().__init__(database_url, f"segment-{segment_id}", lease_seconds, extend)
