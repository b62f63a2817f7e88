"""`/v1/jobs/{id}/webhooks` and `/v1/audiobooks/{id}/webhooks`: the webhook deliveries of a
job or an audiobook and their attempts; redelivery."""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import APIRouter
from sqlalchemy.orm import Session

from api.deps import CurrentKey, SessionDep, StateDep
from api.errors import ApiError
from api.job_access import load
from api.state import AppState
from api.webhook_schemas import (
    WebhookDeliveriesPublic,
    WebhookDeliveryPublic,
    webhook_delivery_public,
)
from speechq.domain import TERMINAL_STATUSES
from storage import audiobook_queries, webhook_queries
from storage.audiobook_models import Audiobook
from storage.webhook_models import WebhookDelivery
from worker.webhooks import publish_delivery, redeliver_audiobook_event, redeliver_job_event

router = APIRouter(tags=["webhooks"])


@router.get("/v1/jobs/{job_id}/webhooks", response_model=WebhookDeliveriesPublic)
def list_job_webhooks(
    job_id: str, session: SessionDep, principal: CurrentKey
) -> WebhookDeliveriesPublic:
    job = load(session, principal, job_id)
    rows = webhook_queries.deliveries_for_job(session, job_id=job.id)
    return _listing(session, rows)


@router.post(
    "/v1/jobs/{job_id}/webhooks/redeliver", status_code=202, response_model=WebhookDeliveryPublic
)
def redeliver_job_webhook(
    job_id: str, state: StateDep, session: SessionDep, principal: CurrentKey
) -> WebhookDeliveryPublic:
    """Send the job's terminal event again: the same event, so the same webhook-id and
    body (receivers that deduplicate on webhook-id see a repeat), from the start of the
    retry schedule, with the attempts so far kept."""
    job = load(session, principal, job_id)
    if job.status not in TERMINAL_STATUSES:
        raise ApiError(
            409,
            "job_not_finished",
            f"The job is {job.status}; its webhook is sent once it has ended.",
            param="id",
        )
    if not job.webhook_url:
        raise ApiError(
            400, "invalid_request", "The job has no webhook_url to send to.", param="webhook_url"
        )
    row = redeliver_job_event(session, job=job)
    assert row is not None  # ended, with a webhook_url
    return _sent_again(state, session, row)


def _book(session: SessionDep, principal: CurrentKey, book_id: str) -> Audiobook:
    book = audiobook_queries.get_book(session, book_id=book_id, tenant=principal.scope)
    if book is None:
        raise ApiError(404, "not_found", f"No audiobook with id '{book_id}'.", param="id")
    return book


@router.get("/v1/audiobooks/{book_id}/webhooks", response_model=WebhookDeliveriesPublic)
def list_audiobook_webhooks(
    book_id: str, session: SessionDep, principal: CurrentKey
) -> WebhookDeliveriesPublic:
    """One delivery per end of the book (a retry or a re-render ends it again)."""
    book = _book(session, principal, book_id)
    rows = webhook_queries.deliveries_for_audiobook(session, audiobook_id=book.id)
    return _listing(session, rows)


@router.post(
    "/v1/audiobooks/{book_id}/webhooks/redeliver",
    status_code=202,
    response_model=WebhookDeliveryPublic,
)
def redeliver_audiobook_webhook(
    book_id: str, state: StateDep, session: SessionDep, principal: CurrentKey
) -> WebhookDeliveryPublic:
    """Send the event of the book's latest end again, as for jobs."""
    book = _book(session, principal, book_id)
    if book.status not in TERMINAL_STATUSES:
        raise ApiError(
            409,
            "job_not_finished",
            f"The audiobook is {book.status}; its webhook is sent once it has ended.",
            param="id",
        )
    if not book.webhook_url:
        raise ApiError(
            400,
            "invalid_request",
            "The audiobook has no webhook_url to send to.",
            param="webhook_url",
        )
    row = redeliver_audiobook_event(session, book=book)
    assert row is not None  # ended, with a webhook_url
    return _sent_again(state, session, row)


def _listing(session: Session, rows: Sequence[WebhookDelivery]) -> WebhookDeliveriesPublic:
    attempts = webhook_queries.attempts_for_deliveries(session, delivery_ids=[r.id for r in rows])
    return WebhookDeliveriesPublic(
        data=[webhook_delivery_public(row, attempts[row.id]) for row in rows]
    )


def _sent_again(state: AppState, session: Session, row: WebhookDelivery) -> WebhookDeliveryPublic:
    """Commit the restarted delivery, then publish it (the worker must see the restart)."""
    session.commit()
    publish_delivery(row.id, app=state.celery)
    attempts = webhook_queries.attempts_for_deliveries(session, delivery_ids=[row.id])
    return webhook_delivery_public(row, attempts[row.id])
