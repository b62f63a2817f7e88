"""Choose deployments for a model and call them (LiteLLM's `router_settings` semantics).

- order: `routing_strategy` simple-shuffle (weighted by `weight`, else `rpm`), least-busy
  (fewest calls in flight) or latency-based-routing (lowest recent latency); deployments in
  cooldown or over their `rpm` go last;
- retries: a retryable error (429 honouring Retry-After, 408, 5xx, timeouts, connection
  errors) is retried on the same deployment `num_retries` times with exponential backoff
  and jitter; a permanent one (400/401/403/404) moves to the next deployment at once;
  an input the provider refuses fails the call, since no deployment will take it;
- cooldowns: more than `allowed_fails` failures of a deployment within a minute cool it
  down for `cooldown_time` seconds, for every worker process (shared `Counters`);
- fallbacks: when every deployment of the model failed, the models in `fallbacks` (or
  `default_fallbacks`) are tried the same way.
Every attempt is reported through `on_attempt`.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from speechq.registry import Registry
from storage.counters import Counters
from worker.providers import get_provider
from worker.providers.base import Deployment, SpeechProvider
from worker.providers.errors import (
    InvalidInput,
    PermanentError,
    ProviderError,
    RateLimited,
    RetryableError,
)

__all__ = [
    "Attempt",
    "RoutedResult",
    "AllDeploymentsFailed",
    "NoFreeSlot",
    "SlotGate",
    "RouterSettings",
    "Router",
]

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_BACKOFF_S = 30.0
FAILURE_WINDOW_S = 60.0
BUSY_TTL_S = 3600.0
LATENCY_TTL_S = 3600.0
LATENCY_SMOOTHING = 0.3  # weight of the newest sample in the moving average
STRATEGIES = ("simple-shuffle", "least-busy", "latency-based-routing")
_STRATEGY_METRIC = {"least-busy": "busy", "latency-based-routing": "latency"}


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


class NoFreeSlot(Exception):
    """Every deployment was at its concurrency cap: nothing was called; try again later."""


class _NextDeployment(Exception):
    def __init__(self, error: ProviderError | None) -> None:
        self.error = error


class SlotGate(Protocol):
    """A per-deployment concurrency cap: `acquire` a slot before calling a deployment
    (False: it is full, skip it), `release` it after."""

    def acquire(self, deployment: Deployment) -> bool: ...

    def release(self, deployment: Deployment) -> None: ...


@dataclass(frozen=True)
class RouterSettings:
    routing_strategy: str = "simple-shuffle"
    num_retries: int = 2
    retry_after_s: float = 0.5  # base of the backoff
    allowed_fails: int = 3
    cooldown_time_s: float = 5.0

    @classmethod
    def from_config(cls, raw: Mapping[str, Any]) -> RouterSettings:
        strategy = str(raw.get("routing_strategy", cls.routing_strategy))
        if strategy not in STRATEGIES:
            raise ValueError(f"routing_strategy {strategy!r} is not one of {', '.join(STRATEGIES)}")
        return cls(
            routing_strategy=strategy,
            num_retries=int(raw.get("num_retries", cls.num_retries)),
            retry_after_s=float(raw.get("retry_after", cls.retry_after_s)),
            allowed_fails=int(raw.get("allowed_fails", cls.allowed_fails)),
            cooldown_time_s=float(raw.get("cooldown_time", cls.cooldown_time_s)),
        )


class Router:
    def __init__(
        self,
        registry: Registry,
        state: Counters,
        *,
        on_attempt: Callable[[Attempt], None],
        sleep: Callable[[float], None] = time.sleep,
        provider_factory: Callable[[Deployment], SpeechProvider] = get_provider,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.registry = registry
        self.state = state
        self.settings = RouterSettings.from_config(registry.router_settings)
        self.on_attempt = on_attempt
        self.sleep = sleep
        self.provider_factory = provider_factory
        self.rng = rng or random.Random()
        # Wall time, for the per-minute rpm windows (a test pins it: a window may not roll
        # over in the middle of a case).
        self.clock = clock

    # --- choosing ---------------------------------------------------------------------

    def model_chain(self, model: str) -> list[str]:
        """The model, then its fallbacks (or the default fallbacks), without repeats."""
        return self.registry.model_chain(model)

    def candidates(self, model: str) -> list[Deployment]:
        """Every deployment that may serve `model`, in the order they will be tried."""
        return [d for name in self.model_chain(model) for d in self.order(name)]

    def order(self, model: str) -> list[Deployment]:
        deployments = list(self.registry.deployments_for(model))
        count = len(deployments)
        metric = _STRATEGY_METRIC.get(self.settings.routing_strategy)
        minute = int(self.clock() // 60)
        # Everything the order depends on, in one round trip to the shared state.
        keys = [f"cooldown:{d.id}" for d in deployments]
        keys += [f"rpm:{d.id}:{minute}" for d in deployments]
        if metric:
            keys += [f"{metric}:{d.id}" for d in deployments]
        values = self._get_many(keys)
        cooling, rpm_used = values[:count], values[count : 2 * count]
        measured = dict(zip((d.id for d in deployments), values[2 * count :], strict=False))
        spare = {
            d.id
            for d, cool, used in zip(deployments, cooling, rpm_used, strict=True)
            if cool is not None or (d.params.get("rpm") and (used or 0) >= float(d.params["rpm"]))
        }
        ordered = self._by_strategy(deployments, measured)
        # Stable: healthy ones first, in strategy order; then the ones to spare.
        return sorted(ordered, key=lambda d: d.id in spare)

    def _by_strategy(
        self, deployments: list[Deployment], measured: dict[str, float | None]
    ) -> list[Deployment]:
        if self.settings.routing_strategy in _STRATEGY_METRIC:
            # Least busy, or lowest latency; ties at random. A deployment with no latency
            # average yet counts as 0, so it is tried (and measured) first.
            self.rng.shuffle(deployments)
            return sorted(deployments, key=lambda d: measured.get(d.id) or 0.0)
        # Weighted shuffle without replacement (Efraimidis–Spirakis keys).
        return sorted(
            deployments,
            key=lambda d: self.rng.random() ** (1.0 / _weight(d)),
            reverse=True,
        )

    # --- calling ----------------------------------------------------------------------

    def call(
        self,
        model: str,
        fn: Callable[[SpeechProvider, Deployment], T],
        *,
        should_stop: Callable[[], bool] = lambda: False,
        before_attempt: Callable[[], None] | None = None,
        slots: SlotGate | None = None,
    ) -> RoutedResult[T]:
        """`before_attempt` runs before every provider call and may raise to stop (budgets).
        With `slots`, a deployment is tried only while it holds one of its slots; if none
        had a free slot (and none failed), `NoFreeSlot` is raised."""
        last: ProviderError | None = None
        skipped = False
        for deployment in self.candidates(model):
            if slots is not None and not slots.acquire(deployment):
                skipped = True
                continue
            try:
                return self._call_deployment(
                    deployment, fn, last, should_stop=should_stop, before_attempt=before_attempt
                )
            except _NextDeployment as moved_on:
                last = moved_on.error
            finally:
                if slots is not None:
                    slots.release(deployment)
        if last is None and skipped:
            raise NoFreeSlot(f"every deployment of {model!r} is at its concurrency cap")
        raise AllDeploymentsFailed(
            f"every deployment of {model!r} failed" + (f": {last.message}" if last else ""),
            last=last,
        )

    def _call_deployment(
        self,
        deployment: Deployment,
        fn: Callable[[SpeechProvider, Deployment], T],
        last: ProviderError | None,
        *,
        should_stop: Callable[[], bool],
        before_attempt: Callable[[], None] | None,
    ) -> RoutedResult[T]:
        """Tries on one deployment; raises `_NextDeployment` to move on to the next."""
        for try_number in range(self.settings.num_retries + 1):
            # Checked before every attempt but the first: the job was just claimed.
            if last is not None and should_stop():
                raise AllDeploymentsFailed("stopped", last=last)
            if before_attempt is not None:
                before_attempt()
            try:
                return self._attempt(deployment, fn)
            except InvalidInput:
                raise
            except ProviderError as exc:
                last = exc
                cooled = self._record_failure(deployment)
                last_try = try_number == self.settings.num_retries
                if isinstance(exc, PermanentError) or cooled or last_try:
                    break
                assert isinstance(exc, RetryableError)
                self.sleep(self._backoff_s(try_number, exc))
        raise _NextDeployment(last)

    def _attempt(
        self, deployment: Deployment, fn: Callable[[SpeechProvider, Deployment], T]
    ) -> RoutedResult[T]:
        if deployment.params.get("rpm"):
            self._incr(f"rpm:{deployment.id}:{int(self.clock() // 60)}", 1, 120)
        self._incr(f"busy:{deployment.id}", 1, BUSY_TTL_S)
        started = time.perf_counter()
        try:
            value = fn(self.provider_factory(deployment), deployment)
        except ProviderError as exc:
            self.on_attempt(Attempt(deployment, False, _ms_since(started), _describe(exc)))
            raise
        except Exception as exc:
            # A bug or an engine crash: recorded like any attempt, then raised.
            self.on_attempt(Attempt(deployment, False, _ms_since(started), type(exc).__name__))
            raise
        finally:
            self._incr(f"busy:{deployment.id}", -1, BUSY_TTL_S)
        latency_ms = _ms_since(started)
        self._record_latency(deployment, latency_ms)
        self.on_attempt(Attempt(deployment, True, latency_ms))
        return RoutedResult(value, deployment, latency_ms)

    def _record_failure(self, deployment: Deployment) -> bool:
        """Count the failure; True if it put the deployment in cooldown."""
        fails = self._incr(f"fails:{deployment.id}", 1, FAILURE_WINDOW_S)
        if fails is not None and fails > self.settings.allowed_fails:
            self._set(f"cooldown:{deployment.id}", 1, self.settings.cooldown_time_s)
            log.warning(
                "deployment %s cooled down for %ss after %d failures in a minute",
                deployment.id,
                self.settings.cooldown_time_s,
                int(fails),
            )
            return True
        return False

    def _record_latency(self, deployment: Deployment, latency_ms: int) -> None:
        previous = self._get(f"latency:{deployment.id}")
        average = (
            float(latency_ms)
            if previous is None
            else previous + LATENCY_SMOOTHING * (latency_ms - previous)
        )
        self._set(f"latency:{deployment.id}", average, LATENCY_TTL_S)

    def _backoff_s(self, try_number: int, exc: RetryableError) -> float:
        if isinstance(exc, RateLimited) and exc.retry_after_s is not None:
            return min(exc.retry_after_s, MAX_BACKOFF_S)
        # Exponential with full jitter, so retrying workers do not arrive together.
        ceiling = min(MAX_BACKOFF_S, self.settings.retry_after_s * 2**try_number)
        return self.rng.uniform(0, ceiling)

    # --- shared state, failing open: routing works without it ---------------------------

    def _get(self, key: str) -> float | None:
        return self._get_many([key])[0]

    def _get_many(self, keys: list[str]) -> list[float | None]:
        try:
            return self.state.get_many(keys)
        except Exception:
            log.warning("router state unavailable (get %s)", ", ".join(keys), exc_info=True)
            return [None] * len(keys)

    def _incr(self, key: str, amount: float, ttl_s: float) -> float | None:
        try:
            return self.state.incr(key, amount, ttl_s)
        except Exception:
            log.warning("router state unavailable (incr %s)", key, exc_info=True)
            return None

    def _set(self, key: str, value: float, ttl_s: float) -> None:
        try:
            self.state.set(key, value, ttl_s)
        except Exception:
            log.warning("router state unavailable (set %s)", key, exc_info=True)


def _weight(deployment: Deployment) -> float:
    raw = deployment.params.get("weight") or deployment.params.get("rpm") or 1
    return max(float(raw), 1e-6)


def _ms_since(started: float) -> int:
    return round((time.perf_counter() - started) * 1000)


def _describe(exc: ProviderError) -> str:
    status = f" (HTTP {exc.status_code})" if exc.status_code else ""
    return f"{type(exc).__name__}{status}: {exc.message}"[:1000]
