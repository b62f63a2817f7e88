"""SQLAlchemy 2 models. The schema itself is created only by the Alembic migrations."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = ["Base", "ApiKey", "Job", "ProviderAttempt", "UsageRecord", "RouterCounter", "utcnow"]


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, datetime: DateTime(timezone=True)}


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str | None] = mapped_column(String(200))
    team: Mapped[str | None] = mapped_column(String(200), index=True)
    # Lookup by a non-secret prefix, then a constant-time compare of the hash.
    prefix: Mapped[str] = mapped_column(String(32), unique=True)
    key_hash: Mapped[str] = mapped_column(String(128))
    budget_usd: Mapped[float | None] = mapped_column(Float)
    rpm_limit: Mapped[int | None] = mapped_column(Integer)
    # Kept as given: the worker needs it to sign webhooks.
    webhook_secret: Mapped[str] = mapped_column(String(100))
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    # Names of config guardrails this key opts into, beyond those on by default.
    guardrails: Mapped[list[str] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None]


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_tenant_id", "tenant", "id"),
        Index("ix_jobs_status_enqueued_at", "status", "enqueued_at"),
        UniqueConstraint("tenant", "idempotency_key", name="uq_jobs_tenant_idempotency_key"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    type: Mapped[str] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(20), index=True)
    model: Mapped[str] = mapped_column(String(200))
    # The owner: the key id, "team_<name>", or "admin" (the master key).
    tenant: Mapped[str] = mapped_column(String(250))
    key_id: Mapped[str | None] = mapped_column(String(40))
    team: Mapped[str | None] = mapped_column(String(200))
    user: Mapped[str | None] = mapped_column(String(256))
    metadata_: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSON)
    webhook_url: Mapped[str | None] = mapped_column(Text)
    # What the worker needs: speech input/voice/format/speed or the upload's key and options.
    request: Mapped[dict[str, Any]] = mapped_column(JSON)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    usage: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    request_hash: Mapped[str | None] = mapped_column(String(64))
    runs: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    enqueued_at: Mapped[datetime | None]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    lease_expires_at: Mapped[datetime | None]
    expires_at: Mapped[datetime | None]


class ProviderAttempt(Base):
    __tablename__ = "provider_attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    deployment: Mapped[str] = mapped_column(String(200))
    provider: Mapped[str] = mapped_column(String(50))
    model: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(10))  # "ok" | "error"
    latency_ms: Mapped[int] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class UsageRecord(Base):
    __tablename__ = "usage_records"
    # One row per billable call: a re-run after a crash cannot bill the same call twice.
    __table_args__ = (
        UniqueConstraint("job_id", "call_key", name="uq_usage_job_call"),
        UniqueConstraint("audiobook_id", "call_key", name="uq_usage_audiobook_call"),
        Index("ix_usage_tenant_created", "tenant", "created_at"),
        # Budgets sum spend per key and per end user.
        Index("ix_usage_key_id", "key_id"),
        Index("ix_usage_tenant_user", "tenant", "user"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    # A job's call, or an audiobook segment's (exactly one of the two is set).
    job_id: Mapped[str | None] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    audiobook_id: Mapped[str | None] = mapped_column(
        ForeignKey("audiobooks.id", ondelete="CASCADE", name="fk_usage_records_audiobook_id")
    )
    call_key: Mapped[str] = mapped_column(String(100))
    tenant: Mapped[str] = mapped_column(String(250))
    key_id: Mapped[str | None] = mapped_column(String(40))
    team: Mapped[str | None] = mapped_column(String(200))
    user: Mapped[str | None] = mapped_column(String(256))
    provider: Mapped[str] = mapped_column(String(50))
    deployment: Mapped[str] = mapped_column(String(200))
    model: Mapped[str] = mapped_column(String(200))
    provider_model: Mapped[str] = mapped_column(String(200))
    characters: Mapped[int] = mapped_column(Integer, default=0)
    audio_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    cost_usd: Mapped[float] = mapped_column(Float, default=0.0)
    latency_ms: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class RouterCounter(Base):
    """Router state shared by every worker process on the embedded default (Redis holds it
    in production): cooldowns, failure counts, in-flight calls, latencies, rpm windows."""

    __tablename__ = "router_counters"

    key: Mapped[str] = mapped_column(String(300), primary_key=True)
    value: Mapped[float] = mapped_column(Float, default=0.0)
    expires_at: Mapped[datetime] = mapped_column(index=True)


# Last, so the webhook tables join this metadata (their module imports Base from here).
from storage import audiobook_models, webhook_models  # noqa: E402, F401
