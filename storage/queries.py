"""Keyword-only query functions. Tenant scoping is a `tenant` argument: None means the
admin, who sees everything; otherwise only rows with that tenant match."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from speechq.apikeys import (
    generate_api_key,
    generate_webhook_secret,
    hash_api_key,
    key_lookup_prefix,
    verify_api_key,
)
from speechq.domain import JobStatus
from speechq.ids import new_id
from storage.models import ApiKey, Job, ProviderAttempt, RouterCounter, UsageRecord, utcnow

__all__ = [
    "create_api_key",
    "find_api_key",
    "list_api_keys",
    "revoke_api_key",
    "create_job",
    "get_job",
    "list_jobs",
    "mark_enqueued",
    "claim_job",
    "record_attempt",
    "attempts_for_jobs",
    "complete_job",
    "fail_job",
    "cancel_job",
    "jobs_to_requeue",
    "reclaim_expired_leases",
    "delete_expired_router_counters",
    "usage_summary",
    "spent_usd",
]


# --- keys -------------------------------------------------------------------------------


def create_api_key(
    session: Session,
    *,
    name: str | None,
    team: str | None = None,
    budget_usd: float | None = None,
    rpm_limit: int | None = None,
    is_admin: bool = False,
    guardrails: list[str] | None = None,
) -> tuple[ApiKey, str]:
    """Returns the row and the plaintext key, which is not stored and not shown again."""
    plaintext = generate_api_key()
    row = ApiKey(
        id=new_id("key"),
        name=name,
        team=team,
        prefix=key_lookup_prefix(plaintext),
        key_hash=hash_api_key(plaintext),
        budget_usd=budget_usd,
        rpm_limit=rpm_limit,
        webhook_secret=generate_webhook_secret(),
        is_admin=is_admin,
        guardrails=guardrails,
        created_at=utcnow(),
    )
    session.add(row)
    session.flush()
    return row, plaintext


def find_api_key(session: Session, *, key: str) -> ApiKey | None:
    row = session.scalar(select(ApiKey).where(ApiKey.prefix == key_lookup_prefix(key)))
    if row is None or row.revoked_at is not None or not verify_api_key(key, row.key_hash):
        return None
    return row


def list_api_keys(session: Session) -> Sequence[ApiKey]:
    return session.scalars(select(ApiKey).order_by(ApiKey.id.desc())).all()


def revoke_api_key(session: Session, *, key_id: str) -> ApiKey | None:
    row = session.get(ApiKey, key_id)
    if row is not None and row.revoked_at is None:
        row.revoked_at = utcnow()
    return row


# --- jobs -------------------------------------------------------------------------------


def create_job(
    session: Session,
    *,
    job_id: str | None = None,
    type: str,
    model: str,
    tenant: str,
    key_id: str | None,
    team: str | None,
    user: str | None,
    metadata: dict[str, str] | None,
    webhook_url: str | None,
    request: dict[str, Any],
    idempotency_key: str | None = None,
    request_hash: str | None = None,
) -> Job:
    now = utcnow()
    job = Job(
        id=job_id or new_id("job"),
        type=type,
        status=JobStatus.queued.value,
        model=model,
        tenant=tenant,
        key_id=key_id,
        team=team,
        user=user,
        metadata_=metadata,
        webhook_url=webhook_url,
        request=request,
        idempotency_key=idempotency_key,
        request_hash=request_hash,
        runs=0,
        created_at=now,
        # Stamped now: the publish follows the commit, and the sweeper counts from here.
        enqueued_at=now,
    )
    session.add(job)
    session.flush()
    return job


def _scoped(stmt: Select[Any], tenant: str | None) -> Select[Any]:
    return stmt if tenant is None else stmt.where(Job.tenant == tenant)


def get_job(session: Session, *, job_id: str, tenant: str | None) -> Job | None:
    return session.scalar(_scoped(select(Job).where(Job.id == job_id), tenant))


def list_jobs(
    session: Session,
    *,
    tenant: str | None,
    status: str | None = None,
    type: str | None = None,
    limit: int = 20,
    after: str | None = None,
) -> tuple[Sequence[Job], bool]:
    """Newest first; `after` is the last id of the previous page. Returns (jobs, has_more)."""
    stmt = _scoped(select(Job), tenant)
    if status:
        stmt = stmt.where(Job.status == status)
    if type:
        stmt = stmt.where(Job.type == type)
    if after:
        stmt = stmt.where(Job.id < after)
    rows = session.scalars(stmt.order_by(Job.id.desc()).limit(limit + 1)).all()
    return rows[:limit], len(rows) > limit


def mark_enqueued(session: Session, *, job_id: str) -> None:
    session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.queued.value)
        .values(enqueued_at=utcnow())
    )


def claim_job(session: Session, *, job_id: str, lease_seconds: int) -> Job | None:
    """Compare-and-set queued -> running. None if another run has it or it has ended."""
    now = utcnow()
    return session.scalars(
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.queued.value)
        .values(
            status=JobStatus.running.value,
            started_at=now,
            lease_expires_at=now + timedelta(seconds=lease_seconds),
            runs=Job.runs + 1,
        )
        .returning(Job),
        execution_options={"populate_existing": True},
    ).one_or_none()


def record_attempt(
    session: Session,
    *,
    job_id: str,
    deployment: str,
    provider: str,
    model: str,
    ok: bool,
    latency_ms: int,
    error: str | None = None,
) -> None:
    session.add(
        ProviderAttempt(
            job_id=job_id,
            deployment=deployment,
            provider=provider,
            model=model,
            status="ok" if ok else "error",
            latency_ms=latency_ms,
            error=error,
            created_at=utcnow(),
        )
    )


def attempts_for_jobs(
    session: Session, *, job_ids: Sequence[str]
) -> dict[str, list[ProviderAttempt]]:
    out: dict[str, list[ProviderAttempt]] = {job_id: [] for job_id in job_ids}
    if not job_ids:
        return out
    rows = session.scalars(
        select(ProviderAttempt)
        .where(ProviderAttempt.job_id.in_(job_ids))
        .order_by(ProviderAttempt.id)
    )
    for row in rows:
        out[row.job_id].append(row)
    return out


def complete_job(
    session: Session,
    *,
    job_id: str,
    result: dict[str, Any],
    usage: Sequence[UsageRecord],
    expires_at: datetime | None,
    run: int | None = None,
) -> bool:
    """running -> succeeded with its usage rows, in one transaction. False if the job was
    canceled or taken back meanwhile (then nothing is billed). `run` is the claim's run
    number: a stalled run whose job was taken back and claimed again cannot complete it."""
    done = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.running.value, *_same_run(run))
        .values(
            status=JobStatus.succeeded.value,
            result=result,
            usage=_usage_summary(usage),
            finished_at=utcnow(),
            lease_expires_at=None,
            expires_at=expires_at,
        )
    )
    if done.rowcount != 1:  # type: ignore[attr-defined]
        return False
    for row in usage:
        session.add(row)
    try:
        session.flush()
    except IntegrityError:
        # The unique (job_id, call_key) says this call was billed already.
        session.rollback()
        return False
    return True


def _usage_summary(rows: Sequence[UsageRecord]) -> dict[str, Any] | None:
    if not rows:
        return None
    return {
        "provider": rows[-1].provider,
        "model": rows[-1].provider_model,
        "characters": sum(r.characters for r in rows),
        "audio_seconds": round(sum(r.audio_seconds for r in rows), 3),
        "cost_usd": round(sum(r.cost_usd for r in rows), 8),
    }


def _same_run(run: int | None) -> list[Any]:
    return [] if run is None else [Job.runs == run]


def fail_job(
    session: Session,
    *,
    job_id: str,
    code: str,
    message: str,
    run: int | None = None,
    expires_at: datetime | None = None,
) -> bool:
    done = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.running.value, *_same_run(run))
        .values(
            status=JobStatus.failed.value,
            error={"code": code, "message": message},
            finished_at=utcnow(),
            lease_expires_at=None,
            expires_at=expires_at,  # when its upload, if any, is deleted
        )
    )
    return done.rowcount == 1  # type: ignore[attr-defined]


def cancel_job(session: Session, *, job_id: str, expires_at: datetime | None = None) -> bool:
    """queued|running -> canceled. False if the job had already ended."""
    done = session.execute(
        update(Job)
        .where(
            Job.id == job_id,
            Job.status.in_([JobStatus.queued.value, JobStatus.running.value]),
        )
        .values(
            status=JobStatus.canceled.value,
            finished_at=utcnow(),
            lease_expires_at=None,
            expires_at=expires_at,
        )
    )
    return done.rowcount == 1  # type: ignore[attr-defined]


def jobs_to_requeue(session: Session, *, older_than_s: int, limit: int = 500) -> list[Job]:
    """Jobs still queued long after their last publish (a publish that was lost)."""
    cutoff = utcnow() - timedelta(seconds=older_than_s)
    stmt = (
        select(Job)
        .where(Job.status == JobStatus.queued.value)
        .where(func.coalesce(Job.enqueued_at, Job.created_at) < cutoff)
        .order_by(Job.id)
        .limit(limit)
    )
    return list(session.scalars(stmt))


def reclaim_expired_leases(session: Session, *, max_runs: int) -> tuple[list[str], list[str]]:
    """Running jobs whose worker died (lease passed) go back to queued; one that has
    already been run `max_runs` times fails instead of looping. Returns (requeued, failed)."""
    now = utcnow()
    expired = session.execute(
        select(Job.id, Job.runs).where(
            Job.status == JobStatus.running.value, Job.lease_expires_at < now
        )
    ).all()
    again = [job_id for job_id, runs in expired if runs < max_runs]
    exhausted = [job_id for job_id, runs in expired if runs >= max_runs]
    if again:
        session.execute(
            update(Job)
            .where(Job.id.in_(again), Job.status == JobStatus.running.value)
            .values(status=JobStatus.queued.value, lease_expires_at=None, enqueued_at=None)
        )
    if exhausted:
        session.execute(
            update(Job)
            .where(Job.id.in_(exhausted), Job.status == JobStatus.running.value)
            .values(
                status=JobStatus.failed.value,
                lease_expires_at=None,
                finished_at=now,
                error={
                    "code": "worker_lost",
                    "message": f"the job's worker stopped {max_runs} times while running it",
                },
            )
        )
    return again, exhausted


def delete_expired_router_counters(session: Session) -> int:
    result = session.execute(delete(RouterCounter).where(RouterCounter.expires_at <= utcnow()))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def spent_usd(
    session: Session,
    *,
    key_id: str | None = None,
    tenant: str | None = None,
    user: str | None = None,
) -> float:
    """Money spent so far by a key, or by an end user within a tenant."""
    stmt = select(func.coalesce(func.sum(UsageRecord.cost_usd), 0.0))
    if key_id is not None:
        stmt = stmt.where(UsageRecord.key_id == key_id)
    if user is not None:
        stmt = stmt.where(UsageRecord.tenant == tenant, UsageRecord.user == user)
    return float(session.scalar(stmt) or 0.0)


# --- usage ------------------------------------------------------------------------------

_GROUP_COLUMNS = {
    "model": UsageRecord.model,
    "provider": UsageRecord.provider,
    "user": UsageRecord.user,
    "key": UsageRecord.key_id,
}


def usage_summary(
    session: Session,
    *,
    tenant: str | None,
    start: datetime,
    end: datetime,
    group_by: str,
) -> list[dict[str, Any]]:
    """Rows of {group, requests, characters, audio_seconds, cost_usd} in [start, end)."""
    stmt = select(UsageRecord).where(UsageRecord.created_at >= start, UsageRecord.created_at < end)
    if tenant is not None:
        stmt = stmt.where(UsageRecord.tenant == tenant)
    if group_by == "day":
        # Grouped in Python: date functions differ between SQLite and PostgreSQL.
        groups: dict[str, dict[str, Any]] = {}
        for row in session.scalars(stmt):
            day = row.created_at.date().isoformat()
            _add(groups.setdefault(day, _empty(day)), row)
        return [groups[day] for day in sorted(groups)]
    column = _GROUP_COLUMNS[group_by]
    sub = stmt.subquery()
    grouped = select(
        sub.c[column.key],
        func.count(),
        func.coalesce(func.sum(sub.c.characters), 0),
        func.coalesce(func.sum(sub.c.audio_seconds), 0.0),
        func.coalesce(func.sum(sub.c.cost_usd), 0.0),
    ).group_by(sub.c[column.key])
    return [
        {
            "group": group,
            "requests": int(requests),
            "characters": int(chars),
            "audio_seconds": round(float(seconds), 3),
            "cost_usd": round(float(cost), 8),
        }
        for group, requests, chars, seconds, cost in session.execute(grouped)
    ]


def _empty(group: str) -> dict[str, Any]:
    return {"group": group, "requests": 0, "characters": 0, "audio_seconds": 0.0, "cost_usd": 0.0}


def _add(acc: dict[str, Any], row: UsageRecord) -> None:
    acc["requests"] += 1
    acc["characters"] += row.characters
    acc["audio_seconds"] = round(acc["audio_seconds"] + row.audio_seconds, 3)
    acc["cost_usd"] = round(acc["cost_usd"] + row.cost_usd, 8)
