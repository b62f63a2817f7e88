"""`Idempotency-Key` on the submit routes: the same key and body within 24 h return the
first job (200), another body is 409 `idempotency_conflict`, and two concurrent requests
never make two jobs (the database's unique (tenant, idempotency_key) decides)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, timedelta
from typing import Any, TypeVar

from fastapi import Request
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from api.deps import Principal
from api.errors import ApiError
from storage.audiobook_models import Audiobook
from storage.models import Job, utcnow

__all__ = ["WINDOW", "Idempotency", "idempotency_of", "find_previous"]

WINDOW = timedelta(hours=24)
Made = TypeVar("Made", Job, Audiobook)
MAX_KEY_LENGTH = 255


@dataclass(frozen=True)
class Idempotency:
    key: str
    request_hash: str


def idempotency_of(request: Request, body: dict[str, Any]) -> Idempotency | None:
    """The request's Idempotency-Key with a hash of what it asks for, or None."""
    key = request.headers.get("idempotency-key")
    if key is None:
        return None
    key = key.strip()
    if not key or len(key) > MAX_KEY_LENGTH:
        raise ApiError(
            400,
            "invalid_request",
            f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} characters.",
            param="Idempotency-Key",
        )
    canonical = json.dumps(
        {"path": request.url.path, "body": body}, sort_keys=True, separators=(",", ":")
    )
    return Idempotency(key, hashlib.sha256(canonical.encode()).hexdigest())


def find_previous(
    session: Session, principal: Principal, idem: Idempotency, kind: type[Made] = Job
) -> Made | None:
    """The job (or audiobook: `kind`) this key made within the window (same body), None
    if there is none; 409 if the key was used for another body."""
    job = session.scalar(
        select(kind).where(kind.tenant == principal.tenant, kind.idempotency_key == idem.key)
    )
    if job is None:
        return None
    created = job.created_at
    if created.tzinfo is None:  # SQLite hands back naive UTC
        created = created.replace(tzinfo=UTC)
    if utcnow() - created > WINDOW:
        # Past the window the key is free again: release it from the old job.
        session.execute(update(kind).where(kind.id == job.id).values(idempotency_key=None))
        session.commit()
        return None
    if job.request_hash != idem.request_hash:
        raise ApiError(
            409,
            "idempotency_conflict",
            "This Idempotency-Key was used within 24 hours for a different request "
            f"('{job.id}'). Use a new key for a new request.",
            param="Idempotency-Key",
        )
    return job
