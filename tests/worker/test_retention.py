"""Retention deletes what a job left in storage once its time is up, whatever its end."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from storage import queries
from storage.db import get_sessionmaker
from storage.migrate import upgrade
from storage.models import Job, utcnow
from storage.objects import LocalObjectStore
from worker.retention import expire_results


def test_uploads_of_failed_and_canceled_jobs_are_deleted_too(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/retention.db"
    upgrade(url)
    store = LocalObjectStore(tmp_path / "blobs")
    past = utcnow() - timedelta(seconds=1)
    with get_sessionmaker(url)() as session:
        ids = {}
        for status in ("failed", "canceled", "succeeded", "queued"):
            key = f"tenants/admin/uploads/{status}/input"
            store.put_bytes(key, b"audio")
            job = queries.create_job(
                session,
                type="transcription",
                model="whisper-1",
                tenant="admin",
                key_id=None,
                team=None,
                user=None,
                metadata=None,
                webhook_url=None,
                request={"input_key": key},
            )
            job.status = status
            job.expires_at = past if status != "queued" else None
            if status == "succeeded":
                result_key = "tenants/admin/jobs/x/run-1/transcript.json"
                store.put_bytes(result_key, b"{}")
                job.result = {"object_key": result_key}
            ids[status] = job.id
        session.commit()
    assert expire_results(url, store) == 3
    for status in ("failed", "canceled", "succeeded"):
        assert not store.exists(f"tenants/admin/uploads/{status}/input")
    assert store.exists("tenants/admin/uploads/queued/input")
    assert not store.exists("tenants/admin/jobs/x/run-1/transcript.json")
    with get_sessionmaker(url)() as session:
        succeeded = session.get(Job, ids["succeeded"])
        failed = session.get(Job, ids["failed"])
        assert succeeded is not None and succeeded.result == {
            "object_key": "tenants/admin/jobs/x/run-1/transcript.json",
            "expired": True,
        }
        assert failed is not None and failed.result is None and failed.expires_at is None
    assert expire_results(url, store) == 0  # nothing is done twice
