"""The budget check run before each provider call, shared by jobs and audiobook segments."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from storage import queries
from storage.db import session_scope
from storage.models import ApiKey

__all__ = ["BudgetExceeded", "Guard", "KeyFacts", "budget_guard", "key_facts"]

Guard = Callable[[], None] | None


class BudgetExceeded(Exception):
    """A key's or an end user's budget was spent before this provider call."""


@dataclass(frozen=True)
class KeyFacts:
    """What a run needs from the key that made its work, read once."""

    budget_usd: float | None
    guardrails: tuple[str, ...]


def key_facts(database_url: str, key_id: str | None) -> KeyFacts:
    """The key's budget and selected guardrails; none for the master key or a deleted key."""
    if key_id is None:
        return KeyFacts(None, ())
    with session_scope(database_url) as session:
        key = session.get(ApiKey, key_id)
        if key is None:
            return KeyFacts(None, ())
        return KeyFacts(key.budget_usd, tuple(key.guardrails or ()))


def budget_guard(
    database_url: str,
    *,
    key_id: str | None,
    key_budget: float | None,
    tenant: str,
    user: str | None,
    user_budget: float | None,
) -> Guard:
    """A check to run before each provider call when a budget applies, else None."""
    if key_budget is None and user_budget is None:
        return None

    def guard() -> None:
        with session_scope(database_url) as session:
            if key_budget is not None:
                spent = queries.spent_usd(session, key_id=key_id)
                if spent >= key_budget:
                    raise BudgetExceeded(f"the key's ${key_budget:g} budget is spent")
            if user_budget is not None:
                spent = queries.spent_usd(session, tenant=tenant, user=user)
                if spent >= user_budget:
                    raise BudgetExceeded(f"the end user's ${user_budget:g} budget is spent")

    return guard
