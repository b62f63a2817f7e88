"""Webhook deliveries: one row per event (its id is the `webhook-id`), one per attempt.

Registered on `storage.models.Base.metadata` by the import at the end of storage/models.py.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from storage.models import Base, utcnow

__all__ = ["WebhookDelivery", "WebhookAttempt", "DELIVERY_STATUSES"]

DELIVERY_STATUSES = ("pending", "delivered", "failed", "gone")


class WebhookDelivery(Base):
    """One event for one job, sent until a 2xx (delivered), a 410 (gone) or the end of
    the retry schedule (failed)."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        # One event per terminal state: enqueueing the same event twice is a conflict.
        UniqueConstraint("job_id", "type", name="uq_webhook_deliveries_job_type"),
        # An audiobook ends once per round (a retry or a re-render starts a new one).
        UniqueConstraint(
            "audiobook_id", "round", "type", name="uq_webhook_deliveries_audiobook_round_type"
        ),
        # The sweeper looks for pending deliveries that are due.
        Index("ix_webhook_deliveries_status_next", "status", "next_attempt_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)  # msg_…, the webhook-id
    # The job's event, or the audiobook's (exactly one of the two is set).
    job_id: Mapped[str | None] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    audiobook_id: Mapped[str | None] = mapped_column(
        ForeignKey("audiobooks.id", ondelete="CASCADE", name="fk_webhook_deliveries_audiobook_id")
    )
    round: Mapped[int] = mapped_column(Integer, default=0)
    tenant: Mapped[str] = mapped_column(String(250))
    type: Mapped[str] = mapped_column(String(40))  # job.succeeded | job.failed | job.canceled
    url: Mapped[str] = mapped_column(Text)
    # The body as sent: {"type", "timestamp", "data": <the job as GET returned it then>}.
    payload: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(20))  # one of DELIVERY_STATUSES
    # Attempts begun in all (the next attempt's number is this plus one).
    attempt_count: Mapped[int] = mapped_column(Integer, default=0)
    # Attempts since the delivery was (re)started; indexes the retry schedule.
    round_attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None]
    # When the last published message is due to run; None when no message covers the
    # next attempt (a long delay left to the sweeper).
    message_due_at: Mapped[datetime | None]
    # Held by the worker sending an attempt; two workers never send at once.
    locked_until: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    delivered_at: Mapped[datetime | None]


class WebhookAttempt(Base):
    __tablename__ = "webhook_attempts"
    __table_args__ = (
        UniqueConstraint("delivery_id", "attempt", name="uq_webhook_attempts_delivery_attempt"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    delivery_id: Mapped[str] = mapped_column(
        ForeignKey("webhook_deliveries.id", ondelete="CASCADE")
    )
    attempt: Mapped[int] = mapped_column(Integer)
    status_code: Mapped[int | None] = mapped_column(Integer)  # None: no answer arrived
    error: Mapped[str | None] = mapped_column(Text)
    latency_ms: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
