"""`/v1/usage`: cost and volume over a date range, grouped; scoped to the caller's tenant."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Query

from api.deps import CurrentKey, SessionDep
from api.errors import ApiError
from api.schemas import UsagePublic, UsageRow
from storage import queries

router = APIRouter(prefix="/v1/usage", tags=["usage"])

DEFAULT_RANGE_DAYS = 30
# Days a range may name: the end's next midnight must still be a date.
FIRST_DAY, LAST_DAY = date(1970, 1, 1), date(9998, 12, 31)


@router.get("", response_model=UsagePublic)
def get_usage(
    session: SessionDep,
    principal: CurrentKey,
    start: Annotated[date | None, Query(description="first day, YYYY-MM-DD (UTC)")] = None,
    end: Annotated[date | None, Query(description="last day, inclusive, YYYY-MM-DD")] = None,
    group_by: Annotated[Literal["model", "provider", "user", "day", "key"], Query()] = "model",
) -> UsagePublic:
    for param, day in (("start", start), ("end", end)):
        if day is not None and not FIRST_DAY <= day <= LAST_DAY:
            raise ApiError(
                400,
                "invalid_request",
                f"'{param}' must be between {FIRST_DAY} and {LAST_DAY}.",
                param=param,
            )
    last = end or datetime.now(UTC).date()
    first = start or max(FIRST_DAY, last - timedelta(days=DEFAULT_RANGE_DAYS - 1))
    if first > last:
        raise ApiError(400, "invalid_request", "'start' is after 'end'.", param="start")
    rows = queries.usage_summary(
        session,
        tenant=principal.scope,
        start=datetime.combine(first, time.min, UTC),
        end=datetime.combine(last + timedelta(days=1), time.min, UTC),
        group_by=group_by,
    )
    data = [UsageRow(**row) for row in rows]
    total = UsageRow(
        group=None,
        requests=sum(r.requests for r in data),
        characters=sum(r.characters for r in data),
        audio_seconds=round(sum(r.audio_seconds for r in data), 3),
        cost_usd=round(sum(r.cost_usd for r in data), 8),
    )
    return UsagePublic(data=data, total=total)
