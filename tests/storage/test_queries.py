"""Job state changes are compare-and-set, and billing is once per call, on both databases."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from storage import queries
from storage.db import get_sessionmaker
from storage.migrate import upgrade
from storage.models import Job, UsageRecord, utcnow
from tests.services import temporary_postgres_database


@pytest.fixture(params=["sqlite", "postgresql"])
def session(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Session]:
    def open_session(url: str) -> Iterator[Session]:
        upgrade(url)
        with get_sessionmaker(url)() as session:
            yield session

    if request.param == "sqlite":
        yield from open_session(f"sqlite:///{tmp_path}/queries.db")
    else:
        with temporary_postgres_database() as url:
            yield from open_session(url)
            get_sessionmaker(url).kw["bind"].dispose()


def _job(session: Session, tenant: str = "admin") -> Job:
    job = queries.create_job(
        session,
        type="speech",
        model="tts-1",
        tenant=tenant,
        key_id=None,
        team=None,
        user=None,
        metadata=None,
        webhook_url=None,
        request={"input": "hi"},
    )
    session.commit()
    return job


def _usage(job_id: str) -> UsageRecord:
    return UsageRecord(
        job_id=job_id,
        call_key="main",
        tenant="admin",
        provider="openai",
        deployment="tts#0",
        model="tts-1",
        provider_model="tts-1",
        characters=2,
        audio_seconds=1.0,
        cost_usd=0.5,
        latency_ms=10,
        created_at=utcnow(),
    )


def test_claim_is_compare_and_set(session: Session) -> None:
    job = _job(session)
    claimed = queries.claim_job(session, job_id=job.id, lease_seconds=60)
    session.commit()
    assert claimed is not None and claimed.status == "running" and claimed.runs == 1
    assert queries.claim_job(session, job_id=job.id, lease_seconds=60) is None


def test_complete_bills_once_and_not_after_cancel(session: Session) -> None:
    job = _job(session)
    queries.claim_job(session, job_id=job.id, lease_seconds=60)
    assert queries.complete_job(
        session, job_id=job.id, result={"bytes": 1}, usage=[_usage(job.id)], expires_at=None
    )
    session.commit()
    # A second completion (a re-run) changes nothing and bills nothing.
    assert not queries.complete_job(
        session, job_id=job.id, result={"bytes": 2}, usage=[_usage(job.id)], expires_at=None
    )
    session.commit()
    count = session.scalar(select(func.count()).where(UsageRecord.job_id == job.id))
    assert count == 1

    canceled = _job(session)
    queries.claim_job(session, job_id=canceled.id, lease_seconds=60)
    assert queries.cancel_job(session, job_id=canceled.id)
    assert not queries.complete_job(
        session, job_id=canceled.id, result={}, usage=[_usage(canceled.id)], expires_at=None
    )
    session.commit()
    assert session.scalar(select(func.count()).where(UsageRecord.job_id == canceled.id)) == 0
    assert not queries.cancel_job(session, job_id=canceled.id)


def test_usage_row_is_unique_per_call(session: Session) -> None:
    from sqlalchemy.exc import IntegrityError

    job = _job(session)
    session.add(_usage(job.id))
    session.commit()
    session.add(_usage(job.id))
    with pytest.raises(IntegrityError):
        session.commit()
    session.rollback()


def test_requeue_and_reclaim(session: Session) -> None:
    stale = _job(session)
    assert [j.id for j in queries.jobs_to_requeue(session, older_than_s=0)] == [stale.id]
    queries.mark_enqueued(session, job_id=stale.id)
    session.commit()
    assert queries.jobs_to_requeue(session, older_than_s=3600) == []

    running = _job(session)
    queries.claim_job(session, job_id=running.id, lease_seconds=-1)  # lease already over
    session.commit()
    assert queries.reclaim_expired_leases(session, max_runs=2) == ([running.id], [])
    session.commit()
    session.refresh(running)
    assert running.status == "queued"
    # Taken back again and again: the second lost run fails it instead of looping.
    queries.claim_job(session, job_id=running.id, lease_seconds=-1)
    session.commit()
    assert queries.reclaim_expired_leases(session, max_runs=2) == ([], [running.id])
    session.commit()
    session.refresh(running)
    assert running.status == "failed"
    assert running.error == {
        "code": "worker_lost",
        "message": "the job's worker stopped 2 times while running it",
    }


def test_scoped_reads(session: Session) -> None:
    mine = _job(session, tenant="key_a")
    assert queries.get_job(session, job_id=mine.id, tenant="key_a") is not None
    assert queries.get_job(session, job_id=mine.id, tenant="key_b") is None
    assert queries.get_job(session, job_id=mine.id, tenant=None) is not None


def test_a_stalled_run_cannot_end_a_job_claimed_again(session: Session) -> None:
    job = _job(session)
    first = queries.claim_job(session, job_id=job.id, lease_seconds=-1)
    session.commit()
    assert first is not None and first.runs == 1
    queries.reclaim_expired_leases(session, max_runs=5)  # its worker looked dead
    second = queries.claim_job(session, job_id=job.id, lease_seconds=60)
    session.commit()
    assert second is not None and second.runs == 2
    # The first run wakes up: it can neither complete nor fail the job.
    assert not queries.complete_job(
        session, job_id=job.id, result={}, usage=[_usage(job.id)], expires_at=None, run=1
    )
    assert not queries.fail_job(session, job_id=job.id, code="x", message="y", run=1)
    assert queries.complete_job(
        session, job_id=job.id, result={}, usage=[_usage(job.id)], expires_at=None, run=2
    )
    session.commit()
