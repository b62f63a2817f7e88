"""Dependencies: the session, the caller (with tenant scoping decided once, here)."""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from api.errors import ApiError
from api.state import AppState
from storage import queries
from storage.db import get_sessionmaker

__all__ = [
    "Principal",
    "StateDep",
    "SessionDep",
    "CurrentKey",
    "AdminKey",
    "get_state",
    "authenticate",
    "bearer_token",
    "key_principal",
    "master_principal",
    "PRINCIPAL_STATE",
    "require_admin",
]


PRINCIPAL_STATE = "speechq_principal"


@dataclass(frozen=True)
class Principal:
    """Who is calling. `tenant` owns what they create; `scope` is what they may see."""

    key_id: str | None
    team: str | None
    is_admin: bool
    webhook_secret: str | None = None
    budget_usd: float | None = None
    rpm_limit: int | None = None
    guardrails: tuple[str, ...] = ()

    @property
    def tenant(self) -> str:
        if self.key_id is None:
            return "admin"
        return f"team_{self.team}" if self.team else self.key_id

    @property
    def scope(self) -> str | None:
        """The tenant filter for queries; None lets an admin see everything."""
        return None if self.is_admin else self.tenant


def get_state(request: Request) -> AppState:
    return request.app.state.speechq  # type: ignore[no-any-return]


StateDep = Annotated[AppState, Depends(get_state)]


def get_session(state: StateDep) -> Iterator[Session]:
    session = get_sessionmaker(state.database_url)()
    try:
        yield session
    finally:
        session.close()


SessionDep = Annotated[Session, Depends(get_session)]


def bearer_token(authorization: str) -> str:
    """The key in an `Authorization: Bearer <key>` header, or 401."""
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise ApiError(
            401,
            "unauthorized",
            "Missing API key. Send it as 'Authorization: Bearer <key>'.",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return token


def master_principal(state: AppState, token: str) -> Principal | None:
    """The admin, if `token` is the master key (no database read); else None."""
    master = state.settings.master_key
    if master and hmac.compare_digest(token.encode(), master.encode()):
        return Principal(key_id=None, team=None, is_admin=True)
    return None


def key_principal(state: AppState, token: str) -> Principal:
    """The caller whose stored key `token` is, or 401. Reads the key in a session of its
    own, closed before returning: nothing waits on a request's pooled connection."""
    with get_sessionmaker(state.database_url)() as session:
        row = queries.find_api_key(session, key=token)
    if row is None:
        raise ApiError(
            401,
            "unauthorized",
            "Invalid or revoked API key.",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return Principal(
        key_id=row.id,
        team=row.team,
        is_admin=row.is_admin,
        webhook_secret=row.webhook_secret,
        budget_usd=row.budget_usd,
        rpm_limit=row.rpm_limit,
        guardrails=tuple(row.guardrails or ()),
    )


def authenticate(state: AppState, authorization: str) -> Principal:
    """The caller named by an `Authorization` header, or 401."""
    token = bearer_token(authorization)
    return master_principal(state, token) or key_principal(state, token)


def get_principal(request: Request, state: StateDep) -> Principal:
    # The request guard checked the key before any of the body was read.
    principal = request.scope.get("state", {}).get(PRINCIPAL_STATE)
    if isinstance(principal, Principal):
        return principal
    return authenticate(state, request.headers.get("authorization", ""))


CurrentKey = Annotated[Principal, Depends(get_principal)]


def require_admin(principal: CurrentKey) -> Principal:
    if not principal.is_admin:
        raise ApiError(403, "forbidden", "This route needs an admin key.")
    return principal


AdminKey = Annotated[Principal, Depends(require_admin)]
