"""Celery tasks of the `audiobook` queue, and the sweeper's share of audiobook upkeep."""

from __future__ import annotations

import logging

from storage import audiobook_queries as books
from storage.db import session_scope
from worker.celery_app import celery_app
from worker.once import once

from .assembly import BookAssembler
from .dispatch import BOOK_TASK, CHAPTER_TASK, SEGMENT_TASK, dispatch, publish_segments
from .progress import advance
from .segments import SegmentRunner

__all__ = [
    "run_audiobook_segment",
    "assemble_audiobook_chapter",
    "assemble_audiobook",
    "sweep_audiobooks",
]

log = logging.getLogger(__name__)


@once
def _segments() -> SegmentRunner:
    from worker.tasks import get_runner  # the job runner's store, registry and counters

    runner = get_runner()
    return SegmentRunner(runner.settings, runner.registry, runner.store, runner.counters)


@once
def _assembler() -> BookAssembler:
    from worker.tasks import get_runner

    runner = get_runner()
    return BookAssembler(runner.settings, runner.store, runner.events)


@celery_app.task(name=SEGMENT_TASK)
def run_audiobook_segment(segment_id: int) -> str | None:
    runner = _segments()
    outcome = runner.run(segment_id)
    if outcome is None:
        return None
    settings = runner.settings
    advance(settings, _assembler().events, outcome.book_id, chapter=outcome.chapter_index)
    # This segment's slot is free: the next pending one may go.
    dispatch(settings.resolved_database_url, runner.registry, settings, model=outcome.model)
    return outcome.status


@celery_app.task(name=CHAPTER_TASK)
def assemble_audiobook_chapter(book_id: str, index: int, version: int) -> str | None:
    return _assembler().chapter(book_id, index, version)


@celery_app.task(name=BOOK_TASK)
def assemble_audiobook(book_id: str, book_round: int) -> str | None:
    return _assembler().book(book_id, book_round)


def sweep_audiobooks() -> dict[str, int]:
    """Take back segments whose worker died, publish again what may have been lost,
    dispatch pending segments, and move every running book on."""
    runner = _segments()
    settings = runner.settings
    url = settings.resolved_database_url
    with session_scope(url) as session:
        requeued, lost = books.reclaim_segments(session, max_runs=settings.max_job_runs)
        stale = books.segments_to_republish(session, older_than_s=settings.requeue_after_seconds)
        models = books.models_with_pending(session)
        running = books.books_in_progress(session)
    published = publish_segments([*requeued, *stale])
    for model in models:
        try:
            published += dispatch(url, runner.registry, settings, model=model)
        except Exception:
            log.warning("could not dispatch segments of %s", model, exc_info=True)
    for book_id in running:
        advance(settings, _assembler().events, book_id, republish=True)
    return {
        "segments_reclaimed": len(requeued),
        "segments_lost": len(lost),
        "segments_published": published,
        "books_advanced": len(running),
    }
