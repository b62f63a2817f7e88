"""Keyword-only queries for webhook deliveries. Every state change is a compare-and-set,
so a redelivered message or a second worker never sends the same attempt twice."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from speechq.ids import new_id
from storage.audiobook_models import Audiobook
from storage.models import ApiKey, Job, utcnow
from storage.webhook_models import WebhookAttempt, WebhookDelivery

__all__ = [
    "create_delivery",
    "get_delivery",
    "delivery_for_event",
    "deliveries_for_job",
    "attempts_for_deliveries",
    "claim_delivery",
    "record_webhook_attempt",
    "finish_delivery_attempt",
    "restart_delivery",
    "deliveries_to_publish",
    "mark_delivery_published",
    "signing_key_of_job",
    "deliveries_for_audiobook",
    "delivery_for_audiobook_event",
]

# A message may run this much before its attempt is due (clocks of two hosts differ).
_EARLY_TOLERANCE = timedelta(seconds=1)
# Updates here name their rows by id; the caller refreshes what it holds. (Evaluating the
# criteria in Python would compare SQLite's naive datetimes with aware ones.)
_NO_SYNC: dict[str, Any] = {"synchronize_session": False}


def create_delivery(
    session: Session,
    *,
    job_id: str | None,
    tenant: str,
    type: str,
    url: str,
    payload: dict[str, Any],
    audiobook_id: str | None = None,
    round: int = 0,
) -> WebhookDelivery:
    """A pending delivery, due now and covered by the message its caller publishes next."""
    now = utcnow()
    row = WebhookDelivery(
        id=new_id("msg"),
        job_id=job_id,
        audiobook_id=audiobook_id,
        round=round,
        tenant=tenant,
        type=type,
        url=url,
        payload=payload,
        status="pending",
        attempt_count=0,
        round_attempts=0,
        next_attempt_at=now,
        message_due_at=now,
        created_at=now,
    )
    session.add(row)
    session.flush()
    return row


def get_delivery(session: Session, *, delivery_id: str) -> WebhookDelivery | None:
    return session.get(WebhookDelivery, delivery_id)


def delivery_for_event(session: Session, *, job_id: str, type: str) -> WebhookDelivery | None:
    return session.scalar(
        select(WebhookDelivery).where(
            WebhookDelivery.job_id == job_id, WebhookDelivery.type == type
        )
    )


def deliveries_for_job(session: Session, *, job_id: str) -> Sequence[WebhookDelivery]:
    return session.scalars(
        select(WebhookDelivery)
        .where(WebhookDelivery.job_id == job_id)
        .order_by(WebhookDelivery.created_at, WebhookDelivery.id)
    ).all()


def deliveries_for_audiobook(session: Session, *, audiobook_id: str) -> Sequence[WebhookDelivery]:
    return session.scalars(
        select(WebhookDelivery)
        .where(WebhookDelivery.audiobook_id == audiobook_id)
        .order_by(WebhookDelivery.created_at, WebhookDelivery.id)
    ).all()


def attempts_for_deliveries(
    session: Session, *, delivery_ids: Sequence[str]
) -> dict[str, list[WebhookAttempt]]:
    out: dict[str, list[WebhookAttempt]] = {delivery_id: [] for delivery_id in delivery_ids}
    if not delivery_ids:
        return out
    rows = session.scalars(
        select(WebhookAttempt)
        .where(WebhookAttempt.delivery_id.in_(delivery_ids))
        .order_by(WebhookAttempt.delivery_id, WebhookAttempt.attempt)
    )
    for row in rows:
        out[row.delivery_id].append(row)
    return out


def claim_delivery(
    session: Session, *, delivery_id: str, lease_seconds: float
) -> WebhookDelivery | None:
    """Take the next attempt: a compare-and-set on a pending, due, unlocked delivery that
    locks it for `lease_seconds` and counts the attempt. None if it is not ours to send
    (already delivered, gone or failed; not yet due; another worker sending it)."""
    now = utcnow()
    return session.scalars(
        update(WebhookDelivery)
        .where(
            WebhookDelivery.id == delivery_id,
            WebhookDelivery.status == "pending",
            WebhookDelivery.next_attempt_at <= now + _EARLY_TOLERANCE,
            or_(WebhookDelivery.locked_until.is_(None), WebhookDelivery.locked_until < now),
        )
        .values(
            locked_until=now + timedelta(seconds=lease_seconds),
            attempt_count=WebhookDelivery.attempt_count + 1,
            round_attempts=WebhookDelivery.round_attempts + 1,
        )
        .returning(WebhookDelivery),
        execution_options=_NO_SYNC | {"populate_existing": True},
    ).one_or_none()


def record_webhook_attempt(
    session: Session,
    *,
    delivery_id: str,
    attempt: int,
    status_code: int | None,
    error: str | None,
    latency_ms: int,
    created_at: datetime | None = None,
) -> None:
    session.add(
        WebhookAttempt(
            delivery_id=delivery_id,
            attempt=attempt,
            status_code=status_code,
            error=error,
            latency_ms=latency_ms,
            created_at=created_at or utcnow(),
        )
    )


def finish_delivery_attempt(
    session: Session,
    *,
    delivery_id: str,
    attempt: int,
    round_attempts: int,
    status: str,
    next_attempt_at: datetime | None = None,
    message_due_at: datetime | None = None,
) -> bool:
    """Record where attempt `attempt` left the delivery and release the lock. False if a
    redelivery restarted the delivery meanwhile (or a later attempt took it): then only
    the lock is released, and the restarted delivery keeps its own state."""
    values: dict[str, Any] = {
        "status": status,
        "next_attempt_at": next_attempt_at,
        "message_due_at": message_due_at,
        "locked_until": None,
    }
    if status == "delivered":
        values["delivered_at"] = utcnow()
    done = session.execute(
        update(WebhookDelivery)
        .where(
            WebhookDelivery.id == delivery_id,
            WebhookDelivery.status == "pending",
            WebhookDelivery.attempt_count == attempt,
            WebhookDelivery.round_attempts == round_attempts,
        )
        .values(**values),
        execution_options=_NO_SYNC,
    )
    if done.rowcount == 1:  # type: ignore[attr-defined]
        return True
    session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.id == delivery_id, WebhookDelivery.attempt_count == attempt)
        .values(locked_until=None),
        execution_options=_NO_SYNC,
    )
    return False


def restart_delivery(session: Session, *, delivery_id: str) -> None:
    """Send the event again from the start of the retry schedule, now. The id (the
    webhook-id), the payload and the attempts so far are kept."""
    now = utcnow()
    session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.id == delivery_id)
        .values(
            status="pending",
            round_attempts=0,
            next_attempt_at=now,
            message_due_at=now,
        ),
        execution_options=_NO_SYNC,
    )


def deliveries_to_publish(session: Session, *, grace_seconds: float, limit: int = 500) -> list[str]:
    """Pending deliveries that are due and not covered by a message: none was published
    for this attempt (a long delay), or the one published is `grace_seconds` overdue
    (lost). A delivery being sent (locked) is skipped."""
    now = utcnow()
    cutoff = now - timedelta(seconds=grace_seconds)
    stmt = (
        select(WebhookDelivery.id)
        .where(
            WebhookDelivery.status == "pending",
            WebhookDelivery.next_attempt_at <= now,
            or_(WebhookDelivery.message_due_at.is_(None), WebhookDelivery.message_due_at < cutoff),
            or_(WebhookDelivery.locked_until.is_(None), WebhookDelivery.locked_until < now),
        )
        .order_by(WebhookDelivery.next_attempt_at)
        .limit(limit)
    )
    return list(session.scalars(stmt))


def mark_delivery_published(session: Session, *, delivery_id: str, due_at: datetime) -> None:
    session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.id == delivery_id, WebhookDelivery.status == "pending")
        .values(message_due_at=due_at),
        execution_options=_NO_SYNC,
    )


def signing_key_of_job(
    session: Session, *, job_id: str | None, audiobook_id: str | None = None
) -> tuple[bool, str | None]:
    """(made_with_a_key, that key's webhook_secret) for a job's or an audiobook's event.
    (False, None) when it was made with the master key; (True, None) if the key row no
    longer exists."""
    if job_id is not None:
        key_id = session.scalar(select(Job.key_id).where(Job.id == job_id))
    else:
        key_id = session.scalar(select(Audiobook.key_id).where(Audiobook.id == audiobook_id))
    if key_id is None:
        return False, None
    return True, session.scalar(select(ApiKey.webhook_secret).where(ApiKey.id == key_id))


def delivery_for_audiobook_event(
    session: Session, *, audiobook_id: str, round: int, type: str
) -> WebhookDelivery | None:
    return session.scalar(
        select(WebhookDelivery).where(
            WebhookDelivery.audiobook_id == audiobook_id,
            WebhookDelivery.round == round,
            WebhookDelivery.type == type,
        )
    )
