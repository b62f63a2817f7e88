"""What the API process holds for its lifetime: settings, registry, object store, Celery."""

from __future__ import annotations

from dataclasses import dataclass

from celery import Celery

from speechq.guardrails import Guardrails, parse_guardrails
from speechq.job_events import JobEventPublisher, JobWaiter
from speechq.registry import Registry, load_registry
from speechq.settings import Settings
from storage.counters import Counters, open_counters
from storage.objects import ObjectStore, open_object_store
from worker.celery_app import create_celery

__all__ = ["AppState", "build_state"]


@dataclass
class AppState:
    settings: Settings
    registry: Registry
    store: ObjectStore
    celery: Celery
    waiter: JobWaiter
    events: JobEventPublisher
    counters: Counters
    guardrails: Guardrails

    @property
    def database_url(self) -> str:
        return self.settings.resolved_database_url


def build_state(settings: Settings) -> AppState:
    registry = load_registry(settings.config)
    return AppState(
        settings=settings,
        registry=registry,
        store=open_object_store(
            settings.resolved_storage_url,
            endpoint_url=settings.s3_endpoint_url,
            region_name=settings.s3_region,
        ),
        celery=create_celery(settings),
        waiter=JobWaiter(settings.resolved_broker_url),
        events=JobEventPublisher(settings.resolved_broker_url),
        counters=open_counters(
            broker_url=settings.resolved_broker_url, database_url=settings.resolved_database_url
        ),
        guardrails=parse_guardrails(registry.raw.get("guardrails"), resolve_model=registry.resolve),
    )
