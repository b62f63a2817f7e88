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


def test_expired_audiobooks_and_unused_cached_segments_are_deleted(tmp_path: Path) -> None:
    from storage.audiobook_models import Audiobook, SegmentCacheEntry
    from worker.retention import expire_audiobooks

    url = f"sqlite:///{tmp_path}/retention.db"
    upgrade(url)
    store = LocalObjectStore(tmp_path / "blobs")
    now = utcnow()
    keys = {
        "old": "tenants/t1/audiobooks/book_old/round-0-run1/book.m4b",
        "old_chapter": "tenants/t1/audiobooks/book_old/chapter-0/v0-run1/chapter.mp3",
        "fresh": "tenants/t1/audiobooks/book_fresh/round-0-run1/book.m4b",
        "stale_segment": "tenants/t1/audiobook-segments/aaa.flac",
        "used_segment": "tenants/t1/audiobook-segments/bbb.flac",
    }
    for key in keys.values():
        store.put_bytes(key, b"audio")
    with get_sessionmaker(url)() as session:
        for book_id, expires_at in (
            ("book_old", now - timedelta(seconds=1)),
            ("book_fresh", now + timedelta(hours=1)),
        ):
            session.add(
                Audiobook(
                    id=book_id,
                    status="succeeded",
                    title="T",
                    model="m",
                    response_format="mp3",
                    speed=1.0,
                    options={},
                    tenant="t1",
                    estimated_cost_usd=0.0,
                    round=0,
                    assembly_runs=1,
                    result={"object_key": keys["old" if book_id == "book_old" else "fresh"]},
                    expires_at=expires_at,
                )
            )
        for cache_key, used in (("aaa", now - timedelta(hours=200)), ("bbb", now)):
            session.add(
                SegmentCacheEntry(
                    tenant="t1",
                    cache_key=cache_key,
                    object_key=f"tenants/t1/audiobook-segments/{cache_key}.flac",
                    sample_rate=24000,
                    duration_seconds=1.0,
                    last_used_at=used,
                )
            )
        session.commit()
    assert expire_audiobooks(url, store, ttl_hours=168) == 1
    assert not store.exists(keys["old"]) and not store.exists(keys["old_chapter"])
    assert store.exists(keys["fresh"])
    assert not store.exists(keys["stale_segment"]) and store.exists(keys["used_segment"])
    with get_sessionmaker(url)() as session:
        old = session.get(Audiobook, "book_old")
        assert old is not None and old.result is not None and old.result["expired"] is True
        assert session.get(SegmentCacheEntry, ("t1", "aaa")) is None
        assert session.get(SegmentCacheEntry, ("t1", "bbb")) is not None
