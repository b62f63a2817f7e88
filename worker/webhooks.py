"""Webhooks (Standard Webhooks): one event per terminal state of a job, sent by the
`speechq.deliver_webhook` task on its own `webhooks` queue.

- The event is written in the transaction that ends the job (`enqueue_job_event`): a
  `webhook_deliveries` row whose id is the `webhook-id` and whose payload is frozen then.
  The message "send delivery X" is published after the commit (`publish_delivery`).
- Each attempt claims the delivery with a compare-and-set that locks it and counts the
  attempt, so a redelivered message or a second worker never sends the same attempt, and
  a delivered, gone or failed delivery is never sent again by an old message.
- Attempts are signed afresh (`webhook-timestamp` is the send time), go only to the
  addresses `resolve_safe` checked (no DNS rebinding, no redirects), time out after 10 s.
- 2xx: delivered. 410: gone, stop. Anything else, a timeout, a connection error or an
  unresolvable host: retried after the next delay of SPEECHQ_WEBHOOK_RETRY_SCHEDULE, or
  Retry-After when it asks for longer; failed once the schedule is spent. A URL that now
  resolves to a refused address fails at once.
- Short delays are published with a countdown; longer ones (over MAX_COUNTDOWN_S) only
  set `next_attempt_at`, and the sweeper publishes them when due (a message held for
  hours by a worker would outlive the Redis visibility timeout). The sweeper also
  publishes again a due delivery whose message was lost (`requeue_due_deliveries`).

Jobs made with the master key are signed with a secret derived from it:
`whsec_` + base64(HMAC-SHA256(SPEECHQ_MASTER_KEY, "speechq-webhooks")).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from http import HTTPStatus
from typing import Any

import httpx
from celery import Celery
from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.schemas import job_public
from speechq import __version__
from speechq.domain import JobStatus
from speechq.net_guard import HostUnresolvable, Resolver, UnsafeURL, pinned_client, resolve_safe
from speechq.settings import Settings, get_settings
from storage import audiobook_queries, queries, webhook_queries
from storage.audiobook_models import Audiobook
from storage.db import session_scope
from storage.models import Job, utcnow
from storage.webhook_models import WebhookDelivery
from worker.celery_app import celery_app

__all__ = [
    "DELIVER_TASK",
    "WEBHOOKS_QUEUE",
    "EVENT_TYPES",
    "AttemptOutcome",
    "enqueue_job_event",
    "enqueue_audiobook_event",
    "redeliver_job_event",
    "redeliver_audiobook_event",
    "publish_delivery",
    "requeue_due_deliveries",
    "deliver",
    "deliver_webhook",
    "send_event",
    "sign",
    "signed_headers",
    "master_webhook_secret",
    "parse_retry_schedule",
    "parse_retry_after",
    "retry_delay_s",
    "encode_body",
]

log = logging.getLogger(__name__)

DELIVER_TASK = "speechq.deliver_webhook"
WEBHOOKS_QUEUE = "webhooks"
EVENT_TYPES = {
    JobStatus.succeeded.value: "job.succeeded",
    JobStatus.failed.value: "job.failed",
    JobStatus.canceled.value: "job.canceled",
}
TIMEOUT_S = 10.0
# The task's hard time limit, and a lock held longer than it: a worker killed mid-attempt
# frees the delivery for the sweeper once the lock has passed.
TASK_TIME_LIMIT_S = 45
LEASE_S = 60.0
# Retries due later than this are left to the sweeper rather than held in a worker.
MAX_COUNTDOWN_S = 600.0
# A Retry-After longer than this is read as this.
MAX_RETRY_AFTER_S = 86_400.0
MASTER_SECRET_LABEL = b"speechq-webhooks"
_SECRET_PREFIX = "whsec_"


# --- events ---------------------------------------------------------------------------


def enqueue_job_event(session: Session, *, job_id: str) -> str | None:
    """Write the event for a job that has just ended, in the caller's transaction. Returns
    the delivery id to publish after the commit, or None: no webhook_url, not ended, or
    the event exists already."""
    job = session.scalars(
        select(Job).where(Job.id == job_id).execution_options(populate_existing=True)
    ).one_or_none()
    if job is None or not job.webhook_url or job.status not in EVENT_TYPES:
        return None
    type = EVENT_TYPES[job.status]
    if webhook_queries.delivery_for_event(session, job_id=job.id, type=type) is not None:
        return None
    attempts = queries.attempts_for_jobs(session, job_ids=[job.id])[job.id]
    payload = {
        "type": type,
        "timestamp": _iso(job.finished_at or utcnow()),
        "data": job_public(job, attempts).model_dump(mode="json"),
    }
    row = webhook_queries.create_delivery(
        session, job_id=job.id, tenant=job.tenant, type=type, url=job.webhook_url, payload=payload
    )
    return row.id


def enqueue_audiobook_event(session: Session, *, book_id: str) -> str | None:
    """Like `enqueue_job_event`, for an audiobook that has just ended this round."""
    # Imported here: the API's schema module imports this one's neighbours.
    from api.audiobook_schemas import audiobook_public

    book = audiobook_queries.get_book(session, book_id=book_id, tenant=None)
    if book is None or not book.webhook_url or book.status not in EVENT_TYPES:
        return None
    type = "audiobook." + book.status
    if webhook_queries.delivery_for_audiobook_event(
        session, audiobook_id=book.id, round=book.round, type=type
    ):
        return None
    payload = {
        "type": type,
        "timestamp": _iso(book.finished_at or utcnow()),
        "data": audiobook_public(session, book).model_dump(mode="json"),
    }
    row = webhook_queries.create_delivery(
        session,
        job_id=None,
        audiobook_id=book.id,
        round=book.round,
        tenant=book.tenant,
        type=type,
        url=book.webhook_url,
        payload=payload,
    )
    return row.id


def redeliver_audiobook_event(session: Session, *, book: Audiobook) -> WebhookDelivery | None:
    """Send the event of the book's latest end again (see `redeliver_job_event`)."""
    if book.status not in EVENT_TYPES or not book.webhook_url:
        return None
    row = webhook_queries.delivery_for_audiobook_event(
        session, audiobook_id=book.id, round=book.round, type="audiobook." + book.status
    )
    if row is None:
        delivery_id = enqueue_audiobook_event(session, book_id=book.id)
        return webhook_queries.get_delivery(session, delivery_id=delivery_id or "")
    webhook_queries.restart_delivery(session, delivery_id=row.id)
    session.refresh(row)
    return row


def redeliver_job_event(session: Session, *, job: Job) -> WebhookDelivery | None:
    """Send the job's terminal event again: the same event (same webhook-id, same payload),
    from the start of the retry schedule. Creates it if it was never written. None if the
    job has not ended or has no webhook_url."""
    type = EVENT_TYPES.get(job.status)
    if type is None or not job.webhook_url:
        return None
    row = webhook_queries.delivery_for_event(session, job_id=job.id, type=type)
    if row is None:
        delivery_id = enqueue_job_event(session, job_id=job.id)
        return webhook_queries.get_delivery(session, delivery_id=delivery_id or "")
    webhook_queries.restart_delivery(session, delivery_id=row.id)
    session.refresh(row)
    return row


def publish_delivery(
    delivery_id: str | None, *, app: Celery | None = None, countdown_s: float | None = None
) -> bool:
    """Publish "send delivery X" (None: nothing to do). Never raises: a failed publish is
    logged, and the sweeper publishes the due delivery later."""
    if delivery_id is None:
        return False
    try:
        (app or celery_app).send_task(
            DELIVER_TASK,
            args=[delivery_id],
            queue=WEBHOOKS_QUEUE,
            countdown=countdown_s or None,
            retry=True,
            retry_policy={"max_retries": 2, "interval_start": 0, "interval_step": 0.2},
        )
    except Exception:
        log.warning("could not publish webhook delivery %s; the sweeper will", delivery_id)
        return False
    return True


def requeue_due_deliveries(
    database_url: str, *, grace_s: float, app: Celery | None = None, limit: int = 500
) -> int:
    """For the beat sweep: publish due deliveries that no message covers (a long retry
    delay, or a message lost `grace_s` ago). Returns how many were published."""
    with session_scope(database_url) as session:
        due = webhook_queries.deliveries_to_publish(session, grace_seconds=grace_s, limit=limit)
    published = 0
    for delivery_id in due:
        # Marked first: a fast worker must not see its fresh state overwritten afterwards.
        with session_scope(database_url) as session:
            webhook_queries.mark_delivery_published(
                session, delivery_id=delivery_id, due_at=utcnow()
            )
        published += publish_delivery(delivery_id, app=app)
    return published


# --- one attempt ----------------------------------------------------------------------


@dataclass(frozen=True)
class AttemptOutcome:
    """What one POST came to. `final` is delivered, gone or failed when no retry follows;
    None means retry (after `retry_after_s` at least, if the receiver asked)."""

    status_code: int | None
    error: str | None
    latency_ms: int
    final: str | None = None
    retry_after_s: float | None = None


@celery_app.task(name=DELIVER_TASK, time_limit=TASK_TIME_LIMIT_S, soft_time_limit=40)
def deliver_webhook(delivery_id: str) -> str:
    return deliver(delivery_id)


def deliver(
    delivery_id: str,
    settings: Settings | None = None,
    *,
    app: Celery | None = None,
    resolver: Resolver | None = None,
    transport: httpx.BaseTransport | None = None,
) -> str:
    """Send the delivery's next attempt if it is ours to send. Returns the delivery's
    status afterwards; "skipped" if it was not ours, "superseded" if a redelivery
    restarted it meanwhile."""
    settings = settings or get_settings()
    db_url = settings.resolved_database_url
    with session_scope(db_url) as session:
        row = webhook_queries.claim_delivery(
            session, delivery_id=delivery_id, lease_seconds=LEASE_S
        )
        if row is None:
            return "skipped"
        attempt, round_attempts = row.attempt_count, row.round_attempts
        url, payload = row.url, row.payload
        made_with_key, secret = webhook_queries.signing_key_of_job(
            session, job_id=row.job_id, audiobook_id=row.audiobook_id
        )
    if not made_with_key and settings.master_key:
        secret = master_webhook_secret(settings.master_key)
    started_at = utcnow()
    if secret is None:
        outcome = AttemptOutcome(
            None, "Nothing to sign with: the job's key (or the master key) is gone.", 0, "failed"
        )
    else:
        body = encode_body(payload)
        headers = signed_headers(secret, delivery_id, int(time.time()), body)
        try:
            outcome = send_event(
                url,
                body,
                headers,
                allow_private=settings.webhook_allow_private,
                resolver=resolver,
                transport=transport,
            )
        except SoftTimeLimitExceeded:
            outcome = AttemptOutcome(None, "The attempt ran out of time.", _ms_since(started_at))
    status, next_at, countdown_s = _next_step(
        outcome, round_attempts, parse_retry_schedule(settings.webhook_retry_schedule)
    )
    with session_scope(db_url) as session:
        webhook_queries.record_webhook_attempt(
            session,
            delivery_id=delivery_id,
            attempt=attempt,
            status_code=outcome.status_code,
            error=outcome.error,
            latency_ms=outcome.latency_ms,
            created_at=started_at,
        )
        current = webhook_queries.finish_delivery_attempt(
            session,
            delivery_id=delivery_id,
            attempt=attempt,
            round_attempts=round_attempts,
            status=status,
            next_attempt_at=next_at,
            message_due_at=next_at if countdown_s is not None else None,
        )
    log.info(
        "webhook %s attempt %d: %s -> %s",
        delivery_id,
        attempt,
        outcome.status_code or "no answer",
        status if current else "superseded",
    )
    if not current:
        # Redelivered while this attempt ran: its message found the lock; send it now.
        publish_delivery(delivery_id, app=app)
        return "superseded"
    if countdown_s is not None:
        publish_delivery(delivery_id, app=app, countdown_s=countdown_s)
    return status


def _next_step(
    outcome: AttemptOutcome, round_attempts: int, schedule: tuple[float, ...]
) -> tuple[str, datetime | None, float | None]:
    """(status, next_attempt_at, countdown to publish with or None)."""
    if outcome.final is not None:
        return outcome.final, None, None
    delay = retry_delay_s(schedule, round_attempts, outcome.retry_after_s)
    if delay is None:
        return "failed", None, None
    next_at = utcnow() + timedelta(seconds=delay)
    return "pending", next_at, delay if delay <= MAX_COUNTDOWN_S else None


def send_event(
    url: str,
    body: bytes,
    headers: dict[str, str],
    *,
    allow_private: bool,
    resolver: Resolver | None = None,
    transport: httpx.BaseTransport | None = None,
) -> AttemptOutcome:
    """POST `body` to `url` once, through the SSRF guard. Never raises for the network."""
    started = time.monotonic()

    def outcome(status: int | None, error: str | None, **kw: Any) -> AttemptOutcome:
        return AttemptOutcome(status, error, int((time.monotonic() - started) * 1000), **kw)

    try:
        resolved = resolve_safe(url, allow_private=allow_private, resolver=resolver)
    except HostUnresolvable as exc:
        return outcome(None, str(exc))  # DNS may answer next time
    except UnsafeURL as exc:
        return outcome(None, str(exc), final="failed")
    try:
        with (
            pinned_client(resolved, timeout_s=TIMEOUT_S, transport=transport) as client,
            client.stream("POST", url, content=body, headers=headers) as response,
        ):
            status = response.status_code
            retry_after = response.headers.get("retry-after")
            location = response.headers.get("location")
    except httpx.TimeoutException as exc:
        return outcome(None, f"Timed out after {TIMEOUT_S:g} s ({type(exc).__name__}).")
    except httpx.TransportError as exc:
        return outcome(None, f"Could not connect: {exc or type(exc).__name__}.")
    except UnsafeURL as exc:
        return outcome(None, str(exc), final="failed")
    if 200 <= status < 300:
        return outcome(status, None, final="delivered")
    if status == 410:
        return outcome(status, "Answered 410 Gone: no more attempts.", final="gone")
    if 300 <= status < 400:
        where = f" to {location}" if location else ""
        error = f"Answered {status} (a redirect{where}); redirects are not followed."
    else:
        error = f"Answered {status} {_phrase(status)}".rstrip() + "."
    return outcome(status, error, retry_after_s=parse_retry_after(retry_after, now=utcnow()))


# --- signing (Standard Webhooks, v1) --------------------------------------------------


def encode_body(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """`v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`, key = the base64-decoded
    part of `secret` after `whsec_`."""
    key = base64.b64decode(secret.removeprefix(_SECRET_PREFIX))
    digest = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signed_headers(secret: str, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {
        "content-type": "application/json",
        "user-agent": f"speechq-webhooks/{__version__}",
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, msg_id, timestamp, body),
    }


def master_webhook_secret(master_key: str) -> str:
    """The secret for jobs made with the master key, derived so it needs no storage:
    `whsec_` + base64(HMAC-SHA256(master key, "speechq-webhooks"))."""
    digest = hmac.new(master_key.encode(), MASTER_SECRET_LABEL, hashlib.sha256).digest()
    return _SECRET_PREFIX + base64.b64encode(digest).decode()


# --- retries --------------------------------------------------------------------------


def parse_retry_schedule(text: str) -> tuple[float, ...]:
    """ "5,300,1800" -> (5.0, 300.0, 1800.0): the delays before the 2nd, 3rd… attempts."""
    delays = tuple(float(part) for part in text.split(",") if part.strip())
    if any(delay < 0 for delay in delays):
        raise ValueError(f"SPEECHQ_WEBHOOK_RETRY_SCHEDULE has a negative delay: {text!r}")
    return delays


def parse_retry_after(value: str | None, *, now: datetime) -> float | None:
    """Seconds to wait from a Retry-After header (delay-seconds or an HTTP date), or None
    if absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def retry_delay_s(
    schedule: tuple[float, ...], round_attempts: int, retry_after_s: float | None
) -> float | None:
    """The wait after attempt `round_attempts` (1-based) failed, or None when the schedule
    is spent. Retry-After wins when it asks for longer (up to MAX_RETRY_AFTER_S)."""
    if round_attempts > len(schedule):
        return None
    delay = schedule[round_attempts - 1]
    if retry_after_s is not None:
        delay = max(delay, min(retry_after_s, MAX_RETRY_AFTER_S))
    return delay


def _iso(value: datetime) -> str:
    if value.tzinfo is None:  # SQLite hands back naive UTC
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _ms_since(started_at: datetime) -> int:
    return int((utcnow() - started_at).total_seconds() * 1000)


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""
