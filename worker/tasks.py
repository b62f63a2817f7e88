"""Celery tasks: run a job, and the periodic sweeper that keeps the database the truth."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from celery.signals import worker_process_init
from sqlalchemy import text

from speechq.registry import load_registry
from speechq.settings import get_settings
from storage import queries
from storage.counters import open_counters
from storage.db import dispose_engines, get_engine, session_scope
from storage.objects import open_object_store
from worker.audiobook.tasks import sweep_audiobooks
from worker.celery_app import celery_app, publish_job
from worker.jobs import JobRunner
from worker.once import once
from worker.providers import get_provider
from worker.retention import expire_audiobooks, expire_results
from worker.webhooks import enqueue_job_event, publish_delivery, requeue_due_deliveries

__all__ = ["run_speech_job", "run_transcription_job", "sweep", "get_runner"]

log = logging.getLogger(__name__)

# The SQLAlchemy transport marks consumed messages invisible but never deletes them.
BROKER_ROWS_KEEP_S = 3600


@worker_process_init.connect
def _after_fork(**_: Any) -> None:
    # Connections opened in the parent must not be shared with forked children.
    dispose_engines()
    # Load local engines now, once per process, rather than in the first job.
    runner = get_runner()
    for deployments in runner.registry.deployments.values():
        for deployment in deployments:
            try:
                get_provider(deployment).warm_up()
            except Exception:
                log.warning("could not warm up %s", deployment.id, exc_info=True)


@once
def get_runner() -> JobRunner:
    settings = get_settings()
    store = open_object_store(
        settings.resolved_storage_url,
        endpoint_url=settings.s3_endpoint_url,
        region_name=settings.s3_region,
    )
    state = open_counters(
        broker_url=settings.resolved_broker_url, database_url=settings.resolved_database_url
    )
    return JobRunner(settings, load_registry(settings.config), store, state)


@celery_app.task(name="speechq.run_speech_job")
def run_speech_job(job_id: str) -> str | None:
    return get_runner().run(job_id)


@celery_app.task(name="speechq.run_transcription_job")
def run_transcription_job(job_id: str) -> str | None:
    return get_runner().run(job_id)


@celery_app.task(name="speechq.sweep")
def sweep() -> dict[str, int]:
    """Publish again jobs left queued too long; take back jobs whose worker died."""
    settings = get_settings()
    url = settings.resolved_database_url
    with session_scope(url) as session:
        # Reclaimed jobs are queued again and so picked up by the next query.
        reclaimed, lost = queries.reclaim_expired_leases(session, max_runs=settings.max_job_runs)
        events = [enqueue_job_event(session, job_id=job_id) for job_id in lost]
        queries.delete_expired_router_counters(session)
    for event in events:
        publish_delivery(event)
    with session_scope(url) as session:
        stale = queries.jobs_to_requeue(session, older_than_s=settings.requeue_after_seconds)
        pending = [(job.id, job.type) for job in stale]
    requeued = 0
    for job_id, job_type in pending:
        try:
            publish_job(celery_app, job_id=job_id, job_type=job_type)
        except Exception:
            log.warning("could not publish job %s again; will retry", job_id, exc_info=True)
            continue
        with session_scope(url) as session:
            queries.mark_enqueued(session, job_id=job_id)
        requeued += 1
    cleaned = _clean_broker_rows(settings.resolved_broker_url)
    expired = expire_results(url, get_runner().store)
    expire_audiobooks(url, get_runner().store, ttl_hours=settings.result_ttl_hours)
    webhooks_requeued = requeue_due_deliveries(url, grace_s=settings.requeue_after_seconds)
    try:
        audiobooks = sweep_audiobooks()
    except Exception:
        log.warning("audiobook sweep failed; the next sweep tries again", exc_info=True)
        audiobooks = {}
    if requeued or reclaimed or cleaned:
        log.info(
            "sweep: requeued=%d reclaimed=%d broker_rows_deleted=%d",
            requeued,
            len(reclaimed),
            cleaned,
        )
    return {
        "requeued": requeued,
        "reclaimed": len(reclaimed),
        "broker_rows_deleted": cleaned,
        "results_expired": expired,
        "jobs_lost": len(lost),
        "webhooks_requeued": webhooks_requeued,
        **audiobooks,
    }


def _clean_broker_rows(broker_url: str) -> int:
    if not broker_url.startswith("sqla+"):
        return 0
    engine = get_engine(broker_url.removeprefix("sqla+"))
    with engine.begin() as conn:
        try:
            result = conn.execute(
                text("DELETE FROM kombu_message WHERE visible = :false AND sent_at < :cutoff"),
                # kombu stamps sent_at with naive local time.
                {"false": False, "cutoff": datetime.now() - timedelta(seconds=BROKER_ROWS_KEEP_S)},
            )
        except Exception:
            # The transport creates its tables lazily; nothing to clean before that.
            return 0
    return int(result.rowcount or 0)
