"""Per-key rate limits and budgets, checked before a job is accepted. The worker checks the
budgets again before each provider call (worker/jobs.py)."""

from __future__ import annotations

import logging
import math
import time

from sqlalchemy.orm import Session

from api.deps import Principal
from api.errors import ApiError
from api.state import AppState
from storage import queries

__all__ = ["check_rate_limit", "check_budgets"]

log = logging.getLogger(__name__)
WINDOW_S = 60


def check_rate_limit(state: AppState, principal: Principal) -> None:
    """A fixed one-minute window per key, counted in the shared counters, so the limit
    holds across every API process. If the counters are unreachable the request passes."""
    if principal.rpm_limit is None or principal.key_id is None:
        return
    now = time.time()
    window = int(now // WINDOW_S)
    try:
        used = state.counters.incr(f"rpm-key:{principal.key_id}:{window}", 1, WINDOW_S * 2)
    except Exception:
        log.warning("rate-limit counters unavailable; letting the request through", exc_info=True)
        return
    if used > principal.rpm_limit:
        retry_after = max(1, math.ceil((window + 1) * WINDOW_S - now))
        raise ApiError(
            429,
            "rate_limited",
            f"This key allows {principal.rpm_limit} requests a minute. "
            f"Try again in {retry_after} s.",
            headers={"Retry-After": str(retry_after)},
        )


def check_budgets(
    state: AppState, session: Session, principal: Principal, user: str | None
) -> None:
    if principal.budget_usd is not None and principal.key_id is not None:
        spent = queries.spent_usd(session, key_id=principal.key_id)
        if spent >= principal.budget_usd:
            raise ApiError(
                429,
                "budget_exceeded",
                f"This key has spent ${spent:.4f} of its ${principal.budget_usd:g} budget.",
            )
    limit = state.registry.end_user_budget(user)
    if limit is not None:
        spent = queries.spent_usd(session, tenant=principal.tenant, user=user)
        if spent >= limit:
            raise ApiError(
                429,
                "budget_exceeded",
                f"The end user '{user}' has spent ${spent:.4f} of a ${limit:g} budget.",
                param="user",
            )
