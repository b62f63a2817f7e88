"""Response schemas of `/v1/jobs/{id}/webhooks` (kept beside api/schemas.py)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel

from api.schemas import unix
from storage.webhook_models import WebhookAttempt, WebhookDelivery

__all__ = [
    "WebhookAttemptPublic",
    "WebhookDeliveryPublic",
    "WebhookDeliveriesPublic",
    "webhook_delivery_public",
]


class WebhookAttemptPublic(BaseModel):
    attempt: int
    status_code: int | None  # None: no answer (timeout, connection error, refused URL)
    error: str | None
    latency_ms: int
    created_at: int


class WebhookDeliveryPublic(BaseModel):
    id: str  # the webhook-id, the same on every attempt and on redelivery
    object: Literal["webhook_delivery"] = "webhook_delivery"
    type: str
    url: str
    status: Literal["pending", "delivered", "failed", "gone"]
    attempts: list[WebhookAttemptPublic]
    created_at: int
    delivered_at: int | None
    next_attempt_at: int | None


class WebhookDeliveriesPublic(BaseModel):
    object: Literal["list"] = "list"
    data: list[WebhookDeliveryPublic]


def webhook_delivery_public(
    row: WebhookDelivery, attempts: Sequence[WebhookAttempt]
) -> WebhookDeliveryPublic:
    return WebhookDeliveryPublic(
        id=row.id,
        type=row.type,
        url=row.url,
        status=row.status,  # type: ignore[arg-type]
        attempts=[
            WebhookAttemptPublic(
                attempt=a.attempt,
                status_code=a.status_code,
                error=a.error,
                latency_ms=a.latency_ms,
                created_at=unix(a.created_at) or 0,
            )
            for a in attempts
        ],
        created_at=unix(row.created_at) or 0,
        delivered_at=unix(row.delivered_at),
        next_attempt_at=unix(row.next_attempt_at),
    )
