"""Choose deployments for a model and call them: retries on retryable errors, the next
deployment on permanent ones, then the `fallbacks` models. Every attempt is reported."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from speechq.registry import Registry
from worker.providers import get_provider
from worker.providers.base import Deployment, SpeechProvider
from worker.providers.errors import (
    InvalidInput,
    PermanentError,
    ProviderError,
    RateLimited,
    RetryableError,
)

__all__ = ["Attempt", "RoutedResult", "AllDeploymentsFailed", "Router"]

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_BACKOFF_S = 30.0


@dataclass(frozen=True)
class Attempt:
    deployment: Deployment
    ok: bool
    latency_ms: int
    error: str | None = None


@dataclass(frozen=True)
class RoutedResult(Generic[T]):
    value: T
    deployment: Deployment
    latency_ms: int


class AllDeploymentsFailed(Exception):
    """Every deployment of the model and of its fallbacks failed."""

    def __init__(self, message: str, *, last: ProviderError | None) -> None:
        super().__init__(message)
        self.last = last


class Router:
    def __init__(
        self,
        registry: Registry,
        *,
        on_attempt: Callable[[Attempt], None],
        sleep: Callable[[float], None] = time.sleep,
        provider_factory: Callable[[Deployment], SpeechProvider] = get_provider,
    ) -> None:
        self.registry = registry
        self.on_attempt = on_attempt
        self.sleep = sleep
        self.provider_factory = provider_factory
        settings = registry.router_settings
        self.num_retries = int(settings.get("num_retries", 2))
        self.retry_after_s = float(settings.get("retry_after", 0.5))

    def candidates(self, model: str) -> list[Deployment]:
        """The model's deployments in order, then each fallback model's."""
        names = [model, *self.registry.fallbacks_for(self.registry.resolve(model) or model)]
        seen: set[str] = set()
        out: list[Deployment] = []
        for name in names:
            for deployment in self.registry.deployments_for(name):
                if deployment.id not in seen:
                    seen.add(deployment.id)
                    out.append(deployment)
        return out

    def call(
        self,
        model: str,
        fn: Callable[[SpeechProvider, Deployment], T],
        *,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> RoutedResult[T]:
        last: ProviderError | None = None
        for deployment in self.candidates(model):
            for try_number in range(self.num_retries + 1):
                if should_stop():
                    raise AllDeploymentsFailed("stopped", last=last)
                started = time.perf_counter()
                try:
                    value = fn(self.provider_factory(deployment), deployment)
                except ProviderError as exc:
                    latency_ms = round((time.perf_counter() - started) * 1000)
                    self.on_attempt(Attempt(deployment, False, latency_ms, _describe(exc)))
                    last = exc
                    if isinstance(exc, InvalidInput):
                        raise
                    if isinstance(exc, PermanentError) or try_number == self.num_retries:
                        break
                    self.sleep(self._backoff_s(try_number, exc))
                    continue
                except Exception as exc:
                    # A bug or an engine crash: recorded like any attempt, then raised.
                    latency_ms = round((time.perf_counter() - started) * 1000)
                    self.on_attempt(Attempt(deployment, False, latency_ms, type(exc).__name__))
                    raise
                latency_ms = round((time.perf_counter() - started) * 1000)
                self.on_attempt(Attempt(deployment, True, latency_ms))
                return RoutedResult(value, deployment, latency_ms)
        raise AllDeploymentsFailed(
            f"every deployment of {model!r} failed" + (f": {last.message}" if last else ""),
            last=last,
        )

    def _backoff_s(self, try_number: int, exc: RetryableError) -> float:
        if isinstance(exc, RateLimited) and exc.retry_after_s is not None:
            return min(exc.retry_after_s, MAX_BACKOFF_S)
        # Exponential with full jitter, so retrying workers do not arrive together.
        return random.uniform(0, min(MAX_BACKOFF_S, self.retry_after_s * 2**try_number))


def _describe(exc: ProviderError) -> str:
    status = f" (HTTP {exc.status_code})" if exc.status_code else ""
    return f"{type(exc).__name__}{status}: {exc.message}"[:1000]
