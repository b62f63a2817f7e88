"""Prometheus metrics for the API: requests by route template, status and latency."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["REGISTRY", "JOBS_SUBMITTED", "MetricsMiddleware"]

REGISTRY = CollectorRegistry(auto_describe=True)

REQUESTS = Counter(
    "speechq_http_requests_total",
    "HTTP answers by route template, status and status class (2xx..5xx), every answer "
    "counted: refused before routing ('unmatched') and failed (5xx) included.",
    ["method", "route", "status", "status_class"],
    registry=REGISTRY,
)
LATENCY = Histogram(
    "speechq_http_request_duration_seconds",
    "HTTP request latency until the response starts.",
    ["method", "route"],
    registry=REGISTRY,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
JOBS_SUBMITTED = Counter(
    "speechq_jobs_submitted_total", "Jobs accepted, by type.", ["type"], registry=REGISTRY
)


class MetricsMiddleware:
    """Pure ASGI, so streamed responses are not buffered. The outermost layer: it sees the
    answer of every other one (`UnhandledErrors` turns a crash into a 500 inside it)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                route = scope.get("route")
                template = getattr(route, "path", "unmatched")
                LATENCY.labels(scope["method"], template).observe(time.perf_counter() - started)
                REQUESTS.labels(scope["method"], template, str(status), f"{status // 100}xx").inc()
            await send(message)

        await self.app(scope, receive, send_wrapper)
