"""A running job's lease: pushed forward by a heartbeat while its worker lives, so a job
whose worker died (SIGKILL, OOM, a lost machine) is taken back by the sweeper within one
lease, and a live job, however long, never is."""

from __future__ import annotations

import logging
import threading
from datetime import timedelta
from types import TracebackType

from sqlalchemy import update

from speechq.domain import JobStatus
from storage.db import session_scope
from storage.models import Job, utcnow

__all__ = ["LeaseKeeper"]

log = logging.getLogger(__name__)


class LeaseKeeper:
    def __init__(self, database_url: str, job_id: str, run: int, lease_seconds: float) -> None:
        self.database_url = database_url
        self.job_id = job_id
        self.run = run  # a stalled run must not renew the lease of a later run
        self.lease_seconds = lease_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"lease-{job_id}", daemon=True)

    def __enter__(self) -> LeaseKeeper:
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
        # Three beats a lease: one slow database answer does not lose the job.
        while not self._stop.wait(self.lease_seconds / 3):
            try:
                with session_scope(self.database_url) as session:
                    session.execute(
                        update(Job)
                        .where(
                            Job.id == self.job_id,
                            Job.status == JobStatus.running.value,
                            Job.runs == self.run,
                        )
                        .values(lease_expires_at=utcnow() + timedelta(seconds=self.lease_seconds))
                    )
            except Exception:
                log.warning("could not extend the lease of %s", self.job_id, exc_info=True)
