"""Results expire: SPEECHQ_RESULT_TTL_HOURS after a job ends, its audio, transcript and
upload are deleted from the object store; a succeeded job's result is marked expired (its
content is then 410). Failed and canceled jobs lose their uploads the same way."""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import select

from speechq.domain import TERMINAL_STATUSES
from storage.audiobook_models import Audiobook, SegmentCacheEntry
from storage.db import session_scope
from storage.models import Job, utcnow
from storage.objects import ObjectStore, tenant_key

__all__ = ["expire_results", "expire_audiobooks"]

log = logging.getLogger(__name__)
BATCH = 200
_ENDED = [status.value for status in TERMINAL_STATUSES]


def expire_results(database_url: str, store: ObjectStore, *, limit: int = BATCH) -> int:
    """Delete the blobs of up to `limit` jobs past their expiry; returns how many."""
    with session_scope(database_url) as session:
        due = session.scalars(
            select(Job)
            .where(
                Job.status.in_(_ENDED),
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


def expire_audiobooks(
    database_url: str, store: ObjectStore, *, ttl_hours: int, limit: int = BATCH
) -> int:
    """Ended audiobooks past their expiry lose their M4B and chapter files (content is
    then 410); cached segment audio nobody used for the TTL is deleted with its entry."""
    now = utcnow()
    with session_scope(database_url) as session:
        due = session.scalars(
            select(Audiobook)
            .where(
                Audiobook.status.in_(_ENDED),
                Audiobook.expires_at.is_not(None),
                Audiobook.expires_at < now,
            )
            .order_by(Audiobook.expires_at)
            .limit(limit)
        ).all()
        for book in due:
            store.delete_prefix(tenant_key(book.tenant, "audiobooks", book.id) + "/")
            book.result = {**(book.result or {}), "expired": True}
            book.expires_at = None
        stale = session.scalars(
            select(SegmentCacheEntry)
            .where(SegmentCacheEntry.last_used_at < now - timedelta(hours=ttl_hours))
            .limit(limit)
        ).all()
        for entry in stale:
            store.delete(entry.object_key)
            session.delete(entry)
    if due or stale:
        log.info("expired %d audiobooks and %d cached segments", len(due), len(stale))
    return len(due)
