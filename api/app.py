"""The FastAPI application."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api.book_process import shutdown_book_processes
from api.errors import UnhandledErrors, install_error_handlers
from api.metrics import MetricsMiddleware
from api.request_guard import RequestGuard
from api.routes import audio, audiobooks, jobs, keys, models, ops, usage, webhooks
from api.schemas import ERROR_RESPONSES
from api.state import build_state
from speechq import __version__
from speechq.settings import Settings, get_settings

__all__ = ["create_app"]


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    state = build_state(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # What start-up made lives as long as the process: keep it out of the collector's
        # full passes, which otherwise stall every request in flight every few seconds.
        gc.collect()
        gc.freeze()
        await state.waiter.start()
        yield
        await state.waiter.stop()
        shutdown_book_processes()
        state.events.close()
        state.celery.close()

    app = FastAPI(
        title="speechq",
        version=__version__,
        description="Queued text-to-speech and transcription with an OpenAI-compatible API.",
        lifespan=lifespan,
        responses=ERROR_RESPONSES,
    )
    app.state.speechq = state
    install_error_handlers(app)
    # Outermost last: metrics see every answer, crashes included; the guard runs before
    # any route (and any body read).
    app.add_middleware(RequestGuard, state=state)
    app.add_middleware(UnhandledErrors)
    app.add_middleware(MetricsMiddleware)
    for module in (jobs, webhooks, audio, audiobooks, keys, models, usage, ops):
        app.include_router(module.router)
    logging.getLogger(__name__).info("speechq API ready (%s models)", len(state.registry.models()))
    return app
