"""The Celery app. Jobs are "look at job X" messages; the database row is the truth.

Settings chosen for work that is paid for and may be long:
- acks_late + reject_on_worker_lost: a message is acknowledged only after the job ran, so
  a worker that dies hands it back (the job's compare-and-set makes a re-run harmless);
- prefetch 1: a worker never sits on a message that an idle one could run;
- Redis visibility timeout twice the hard time limit: a long job is not redelivered
  to a second worker while the first still runs it.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from kombu import Queue

from speechq.settings import Settings, get_settings
from worker import sqlite_broker

__all__ = [
    "QUEUE_FOR_TYPE",
    "TASK_FOR_TYPE",
    "create_celery",
    "publish_job",
    "celery_app",
]

QUEUE_FOR_TYPE = {"speech": "speech", "transcription": "transcription"}
TASK_FOR_TYPE = {
    "speech": "speechq.run_speech_job",
    "transcription": "speechq.run_transcription_job",
}
SWEEP_INTERVAL_S = 15.0


def create_celery(settings: Settings) -> Celery:
    sqlite_broker.register()
    app = Celery(
        "speechq",
        broker=settings.resolved_broker_url,
        include=["worker.tasks", "worker.webhooks", "worker.audiobook.tasks"],
    )
    transport_options: dict[str, Any] = {}
    if settings.resolved_broker_url.startswith("redis"):
        transport_options["visibility_timeout"] = settings.job_time_limit_seconds * 2
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_time_limit=settings.job_time_limit_seconds,
        task_soft_time_limit=max(1, settings.job_time_limit_seconds - 30),
        task_queues=[
            Queue(name)
            for name in (
                "speech",
                "transcription",
                "audiobook",
                "maintenance",
                "webhooks",
            )
        ],
        task_default_queue="speech",
        broker_transport_options=transport_options,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        beat_schedule={
            "sweep": {
                "task": "speechq.sweep",
                "schedule": SWEEP_INTERVAL_S,
                "options": {"queue": "maintenance", "expires": SWEEP_INTERVAL_S * 2},
            },
        },
    )
    return app


def publish_job(app: Celery, *, job_id: str, job_type: str) -> None:
    """Publish "run job X". Raises if the broker is unreachable after a short retry:
    the caller leaves the job queued and the sweeper publishes it again."""
    app.send_task(
        TASK_FOR_TYPE[job_type],
        args=[job_id],
        queue=QUEUE_FOR_TYPE[job_type],
        retry=True,
        retry_policy={"max_retries": 2, "interval_start": 0, "interval_step": 0.2},
    )


celery_app = create_celery(get_settings())
