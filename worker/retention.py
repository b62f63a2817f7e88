"""Results expire: SPEECHQ_RESULT_TTL_HOURS after a job ends, its audio, transcript and
upload are deleted from the object store; a succeeded job's result is marked expired (its
content is then 410). Failed and canceled jobs lose their uploads the same way."""

from __future__ import annotations

import logging

from sqlalchemy import select

from speechq.domain import JobStatus
from storage.db import session_scope
from storage.models import Job, utcnow
from storage.objects import ObjectStore

__all__ = ["expire_results"]

log = logging.getLogger(__name__)
BATCH = 200


def expire_results(database_url: str, store: ObjectStore, *, limit: int = BATCH) -> int:
    """Delete the blobs of up to `limit` jobs past their expiry; returns how many."""
    with session_scope(database_url) as session:
        due = session.scalars(
            select(Job)
            .where(
                Job.status.in_(
                    [JobStatus.succeeded.value, JobStatus.failed.value, JobStatus.canceled.value]
                ),
                Job.expires_at.is_not(None),
                Job.expires_at < utcnow(),
            )
            .order_by(Job.expires_at)
            .limit(limit)
        ).all()
        expired = 0
        for job in due:
            keys = [job.result.get("object_key") if job.result else None]
            keys.append(job.request.get("input_key"))
            for key in filter(None, keys):
                store.delete(key)
            # Deleted first, marked after: a crash in between deletes again, harmlessly.
            if job.result is not None:
                job.result = {**job.result, "expired": True}
            job.expires_at = None
            expired += 1
    if expired:
        log.info("expired the results of %d jobs", expired)
    return expired
