"""Audiobooks: the book, its chapters, the segments sent to providers, and the segment cache.

Registered on `storage.models.Base.metadata` by the import at the end of storage/models.py.
The database is the truth here as for jobs: every task re-reads the row it works on and
moves it on with a compare-and-set, so a redelivered message or a re-run is harmless.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from storage.models import Base, utcnow

__all__ = [
    "Audiobook",
    "AudiobookChapter",
    "AudiobookSegment",
    "SegmentCacheEntry",
    "DispatchLock",
]


class Audiobook(Base):
    __tablename__ = "audiobooks"
    __table_args__ = (
        Index("ix_audiobooks_tenant_id", "tenant", "id"),
        UniqueConstraint("tenant", "idempotency_key", name="uq_audiobooks_tenant_idempotency_key"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    status: Mapped[str] = mapped_column(String(20), index=True)
    title: Mapped[str] = mapped_column(Text)
    model: Mapped[str] = mapped_column(String(200))
    voice: Mapped[str | None] = mapped_column(String(200))
    response_format: Mapped[str] = mapped_column(String(10))
    speed: Mapped[float] = mapped_column(Float, default=1.0)
    # read_titles, paragraph_pause_ms, chapter_pause_ms.
    options: Mapped[dict[str, Any]]
    tenant: Mapped[str] = mapped_column(String(250))
    key_id: Mapped[str | None] = mapped_column(String(40))
    team: Mapped[str | None] = mapped_column(String(200))
    user: Mapped[str | None] = mapped_column(String(256))
    metadata_: Mapped[dict[str, Any] | None] = mapped_column("metadata")
    webhook_url: Mapped[str | None] = mapped_column(Text)
    max_cost_usd: Mapped[float | None] = mapped_column(Float)
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    request_hash: Mapped[str | None] = mapped_column(String(64))
    estimated_cost_usd: Mapped[float] = mapped_column(Float, default=0.0)
    # Bumped by retry and re-render: the book ends once per round, with one webhook each.
    round: Mapped[int] = mapped_column(Integer, default=0)
    result: Mapped[dict[str, Any] | None]
    error: Mapped[dict[str, Any] | None]
    # The final assembly's lease and run number (a fencing token, as for jobs).
    assembly_runs: Mapped[int] = mapped_column(Integer, default=0)
    lease_expires_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    expires_at: Mapped[datetime | None]


class AudiobookChapter(Base):
    __tablename__ = "audiobook_chapters"

    book_id: Mapped[str] = mapped_column(
        ForeignKey("audiobooks.id", ondelete="CASCADE"), primary_key=True
    )
    index: Mapped[int] = mapped_column(Integer, primary_key=True)
    title: Mapped[str] = mapped_column(Text)
    # The chapter's text as planned (after guardrails): a re-render with a new voice or
    # title plans it again.
    text: Mapped[str] = mapped_column(Text, default="")
    voice: Mapped[str | None] = mapped_column(String(200))
    # queued | running | assembling | succeeded | failed | canceled
    status: Mapped[str] = mapped_column(String(20))
    characters: Mapped[int] = mapped_column(Integer, default=0)
    # Bumped by a re-render; segments and stored audio belong to one version.
    version: Mapped[int] = mapped_column(Integer, default=0)
    assembly_runs: Mapped[int] = mapped_column(Integer, default=0)
    lease_expires_at: Mapped[datetime | None]
    duration_seconds: Mapped[float | None] = mapped_column(Float)
    loudness_lufs: Mapped[float | None] = mapped_column(Float)
    gain_db: Mapped[float | None] = mapped_column(Float)
    # The chapter in the book: AAC at the book's settings with the pause after it, so the
    # M4B is a remux of the parts (worker/audiobook/assemble.py, render_book_part).
    part_key: Mapped[str | None] = mapped_column(Text)
    content_key: Mapped[str | None] = mapped_column(Text)
    content_bytes: Mapped[int | None] = mapped_column(Integer)


class AudiobookSegment(Base):
    __tablename__ = "audiobook_segments"
    __table_args__ = (
        ForeignKeyConstraint(
            ["book_id", "chapter_index"],
            ["audiobook_chapters.book_id", "audiobook_chapters.index"],
            ondelete="CASCADE",
        ),
        Index("ix_audiobook_segments_chapter", "book_id", "chapter_index", "version", "index"),
        # Dispatch counts what is in flight per model and takes the oldest pending.
        Index("ix_audiobook_segments_status_model", "status", "model", "id"),
        # Slots: running segments per deployment.
        Index("ix_audiobook_segments_deployment_status", "deployment", "status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    book_id: Mapped[str] = mapped_column(String(40))
    chapter_index: Mapped[int] = mapped_column(Integer)
    version: Mapped[int] = mapped_column(Integer, default=0)
    index: Mapped[int] = mapped_column(Integer)
    model: Mapped[str] = mapped_column(String(200))
    text: Mapped[str] = mapped_column(Text)
    voice: Mapped[str | None] = mapped_column(String(200))
    is_title: Mapped[bool] = mapped_column(Boolean, default=False)
    pause_after_ms: Mapped[int] = mapped_column(Integer, default=0)
    # sha256 of (model, voice, format, speed, text): the segment cache's key.
    cache_key: Mapped[str] = mapped_column(String(64))
    # pending (waiting for capacity) | queued (published) | running | succeeded | failed
    # | canceled
    status: Mapped[str] = mapped_column(String(20))
    # Bumped by every claim: the run number that fences a stalled worker out.
    runs: Mapped[int] = mapped_column(Integer, default=0)
    # Runs whose worker died (taken back by the sweeper): `worker_lost` at the limit.
    losses: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # Runs the provider rate-limited past the router's retries: the segment waited and
    # went again; failed at the limit. `retry` starts the count again.
    deferrals: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # The deployment whose concurrency slot this running segment holds, if any.
    deployment: Mapped[str | None] = mapped_column(String(200))
    lease_expires_at: Mapped[datetime | None]
    queued_at: Mapped[datetime | None]
    # True when the audio came from the cache: nothing was billed for it.
    cached: Mapped[bool] = mapped_column(Boolean, default=False)
    cost_usd: Mapped[float] = mapped_column(Float, default=0.0)
    error: Mapped[dict[str, Any] | None]


class SegmentCacheEntry(Base):
    """Audio already paid for, per tenant: a retry, a resume or a re-render reuses it."""

    __tablename__ = "audiobook_segment_cache"

    tenant: Mapped[str] = mapped_column(String(250), primary_key=True)
    cache_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    object_key: Mapped[str] = mapped_column(Text)
    sample_rate: Mapped[int] = mapped_column(Integer)
    duration_seconds: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class DispatchLock(Base):
    """One row per model, updated first by whoever dispatches segments of that model, so
    two dispatchers never both count the same free capacity (a row lock on PostgreSQL,
    the write lock on SQLite)."""

    __tablename__ = "audiobook_dispatch_locks"

    model: Mapped[str] = mapped_column(String(200), primary_key=True)
    touched_at: Mapped[datetime] = mapped_column(default=utcnow)
