"""Feeding a book's segments to the `audiobook` queue, never more than the deployments can
take at once.

The queue holds at most the model's capacity (the sum of its deployments' caps) in
segments: the rest wait as `pending` rows. So a book of ten thousand segments never
stands in front of a single speech job in a worker, and every finished segment makes
room for the next. Inside a segment, the router holds a slot of the deployment it calls
(`SegmentSlots`), so each deployment stays within its own cap.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from celery import Celery

from speechq.registry import Registry
from speechq.settings import Settings
from storage import audiobook_queries as books
from storage.db import session_scope
from worker.celery_app import celery_app
from worker.providers.base import Deployment

__all__ = [
    "AUDIOBOOK_QUEUE",
    "SEGMENT_TASK",
    "CHAPTER_TASK",
    "BOOK_TASK",
    "deployment_cap",
    "capacity",
    "dispatch",
    "publish_segments",
    "publish_chapter",
    "publish_book",
    "SegmentSlots",
]

log = logging.getLogger(__name__)

AUDIOBOOK_QUEUE = "audiobook"
SEGMENT_TASK = "speechq.run_audiobook_segment"
CHAPTER_TASK = "speechq.assemble_audiobook_chapter"
BOOK_TASK = "speechq.assemble_audiobook"


def deployment_cap(deployment: Deployment, settings: Settings) -> int:
    configured = deployment.params.get("audiobook_concurrency")
    return max(1, int(configured)) if configured else settings.audiobook_concurrency


def capacity(registry: Registry, model: str, settings: Settings) -> int:
    return sum(deployment_cap(d, settings) for d in registry.deployments_for(model))


def dispatch(
    database_url: str,
    registry: Registry,
    settings: Settings,
    *,
    model: str,
    app: Celery | None = None,
) -> int:
    """Publish as many pending segments of `model` as its free capacity allows."""
    with session_scope(database_url) as session:
        books.lock_dispatch(session, model=model)
        free = capacity(registry, model, settings) - books.in_flight_count(session, model=model)
        ids = books.take_pending(session, model=model, limit=free)
    return publish_segments(ids, app=app)


def publish_segments(
    segment_ids: Sequence[int], *, app: Celery | None = None, countdown: float | None = None
) -> int:
    """Publish "run segment X" for each (to run `countdown` seconds from now, if given); a
    failed publish leaves the segment queued for the sweeper to publish again."""
    published = 0
    for segment_id in segment_ids:
        published += _send(app, SEGMENT_TASK, [segment_id], countdown=countdown)
    return published


def publish_chapter(book_id: str, index: int, version: int, *, app: Celery | None = None) -> bool:
    return _send(app, CHAPTER_TASK, [book_id, index, version])


def publish_book(book_id: str, book_round: int, *, app: Celery | None = None) -> bool:
    return _send(app, BOOK_TASK, [book_id, book_round])


def _send(
    app: Celery | None, task: str, args: list[object], *, countdown: float | None = None
) -> bool:
    try:
        (app or celery_app).send_task(
            task,
            args=args,
            queue=AUDIOBOOK_QUEUE,
            countdown=countdown,
            retry=True,
            retry_policy={"max_retries": 2, "interval_start": 0, "interval_step": 0.2},
        )
    except Exception:
        log.warning("could not publish %s%s; the sweeper will", task, args, exc_info=True)
        return False
    return True


class SegmentSlots:
    """The router's per-deployment cap for one running segment (a `SlotGate`)."""

    def __init__(self, database_url: str, settings: Settings, segment_id: int, run: int) -> None:
        self.database_url = database_url
        self.settings = settings
        self.segment_id = segment_id
        self.run = run

    def acquire(self, deployment: Deployment) -> bool:
        with session_scope(self.database_url) as session:
            return books.take_slot(
                session,
                segment_id=self.segment_id,
                run=self.run,
                deployment=deployment.id,
                cap=deployment_cap(deployment, self.settings),
            )

    def release(self, deployment: Deployment) -> None:
        with session_scope(self.database_url) as session:
            books.release_slot(session, segment_id=self.segment_id)
