"""`/healthz`, `/readyz`, `/metrics`: no key needed."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from api.deps import StateDep
from api.metrics import REGISTRY
from api.state import AppState
from storage.db import get_engine

router = APIRouter(tags=["operations"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "a dependency is down"}})
async def readyz(state: StateDep) -> JSONResponse:
    checks = await run_in_threadpool(_check_all, state)
    ready = all(c["status"] == "ok" for c in checks.values())
    return JSONResponse(
        {"status": "ok" if ready else "unavailable", "checks": checks},
        status_code=200 if ready else 503,
    )


def _check_all(state: AppState) -> dict[str, dict[str, Any]]:
    return {
        "database": _check(lambda: _ping_database(state)),
        "broker": _check(lambda: _ping_broker(state)),
        "storage": _check(state.store.check),
    }


def _check(fn: Any) -> dict[str, Any]:
    try:
        fn()
    except Exception as exc:
        # The class name only: a message could carry a URL with credentials.
        return {"status": "error", "error": type(exc).__name__}
    return {"status": "ok"}


def _ping_database(state: AppState) -> None:
    with get_engine(state.database_url).connect() as conn:
        conn.execute(text("SELECT 1"))


def _ping_broker(state: AppState) -> None:
    with state.celery.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=2)


@router.get("/metrics", response_class=Response)
def metrics() -> Response:
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
