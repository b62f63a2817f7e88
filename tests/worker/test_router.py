"""The router against real shared state: the database (embedded) and Redis (production)."""

from __future__ import annotations

import multiprocessing
import random
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from speechq.registry import Registry, parse_config
from storage.counters import Counters, DatabaseCounters, RedisCounters
from storage.migrate import upgrade
from tests.services import REDIS_HOST, REDIS_PORT, require_redis
from worker.providers.base import Deployment, SpeechProvider
from worker.providers.errors import (
    AuthenticationFailed,
    InvalidInput,
    ProviderError,
    ProviderUnavailable,
    RateLimited,
    UnsupportedFeature,
)
from worker.router import AllDeploymentsFailed, Attempt, Router

REDIS_ROUTER_DB = 8


def config(**router_settings: Any) -> Registry:
    return parse_config(
        {
            "model_list": [
                {"model_name": "tts", "litellm_params": {"model": "openai/a"}},
                {"model_name": "tts", "litellm_params": {"model": "openai/b"}},
                {"model_name": "backup", "litellm_params": {"model": "openai/c"}},
                {"model_name": "last-resort", "litellm_params": {"model": "openai/d"}},
            ],
            "router_settings": {
                "num_retries": 2,
                "fallbacks": [{"tts": ["backup"]}],
                "routing_strategy": "simple-shuffle",
                **router_settings,
            },
        }
    )


def state_url(kind: str, tmp_path: Path) -> str:
    if kind == "database":
        url = f"sqlite:///{tmp_path}/router.db"
        upgrade(url)
        return url
    require_redis()
    redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=REDIS_ROUTER_DB).flushdb()
    return f"redis://{REDIS_HOST}:{REDIS_PORT}/{REDIS_ROUTER_DB}"


def open_state(url: str) -> Counters:
    return RedisCounters(url) if url.startswith("redis") else DatabaseCounters(url)


@pytest.fixture(params=["database", "redis"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return state_url(request.param, tmp_path)


@pytest.fixture
def state(url: str) -> Iterator[Counters]:
    opened = open_state(url)
    yield opened
    opened.close()


class Script:
    """Answers each deployment's calls from a list of outcomes, in order."""

    def __init__(self, outcomes: dict[str, list[object]]) -> None:
        self.outcomes = outcomes
        self.calls: list[str] = []

    def __call__(self, provider: SpeechProvider, deployment: Deployment) -> str:
        self.calls.append(deployment.model)
        outcome = self.outcomes[deployment.model].pop(0)
        if isinstance(outcome, ProviderError):
            raise outcome
        return str(outcome)


class InOrder:
    """Answers calls from one list of outcomes, whichever deployment is called."""

    def __init__(self, outcomes: list[object]) -> None:
        self.outcomes = outcomes
        self.calls: list[str] = []

    def __call__(self, provider: SpeechProvider, deployment: Deployment) -> str:
        self.calls.append(deployment.model)
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, ProviderError):
            raise outcome
        return str(outcome)


def make_router(
    state: Counters,
    registry: Registry | None = None,
    *,
    sleeps: list[float] | None = None,
    attempts: list[Attempt] | None = None,
    seed: int = 1,
) -> Router:
    return Router(
        registry or config(routing_strategy="least-busy"),
        state,
        on_attempt=(attempts if attempts is not None else []).append,
        sleep=(sleeps if sleeps is not None else []).append,
        provider_factory=lambda d: SpeechProvider(d),
        rng=random.Random(seed),
    )


def first_choice(router: Router) -> str:
    """Which deployment a call would try first (this consumes the router's randomness)."""
    return router.order("tts")[0].model


# --- state backends ------------------------------------------------------------------


def test_state_incr_get_set_expire(state: Counters) -> None:
    assert state.get("k") is None
    assert state.incr("k", 1, ttl_s=0.5) == 1
    assert state.incr("k", 2.5, ttl_s=100) == 3.5
    assert state.get("k") == 3.5
    time.sleep(0.6)  # the TTL set on creation still holds
    assert state.get("k") is None
    assert state.incr("k", 1, ttl_s=10) == 1
    state.set("s", 7, ttl_s=10)
    assert state.get("s") == 7


# --- retries and fallbacks --------------------------------------------------------------


def test_retryable_error_retries_same_deployment(state: Counters) -> None:
    sleeps: list[float] = []
    attempts: list[Attempt] = []
    router = make_router(state, sleeps=sleeps, attempts=attempts)
    script = InOrder([ProviderUnavailable("boom", status_code=503), "audio"])
    routed = router.call("tts", script)
    assert routed.value == "audio"
    assert script.calls == [routed.deployment.model] * 2
    assert [a.ok for a in attempts] == [False, True]
    assert "HTTP 503" in (attempts[0].error or "")
    assert len(sleeps) == 1 and 0 <= sleeps[0] <= 0.5


def test_rate_limit_honours_retry_after(state: Counters) -> None:
    sleeps: list[float] = []
    router = make_router(state, sleeps=sleeps)
    router.call("tts", InOrder([RateLimited("slow down", retry_after_s=7), "audio"]))
    assert sleeps == [7]


def test_backoff_grows_exponentially(state: Counters) -> None:
    sleeps: list[float] = []
    router = make_router(state, config(num_retries=3, allowed_fails=10), sleeps=sleeps)
    script = InOrder([ProviderUnavailable("x")] * 3 + ["ok"])
    router.call("tts", script)
    assert len(set(script.calls)) == 1
    assert len(sleeps) == 3
    for try_number, slept in enumerate(sleeps):
        assert 0 <= slept <= 0.5 * 2**try_number


def test_exhausted_retries_move_to_next_deployment_then_fallback(state: Counters) -> None:
    attempts: list[Attempt] = []
    router = make_router(state, config(allowed_fails=10), attempts=attempts)
    script = InOrder(
        [ProviderUnavailable("x")] * 3
        + [AuthenticationFailed("bad key", status_code=401), "from backup"]
    )
    routed = router.call("tts", script)
    assert routed.value == "from backup"
    # 1 + num_retries tries on the first, none more after a permanent error.
    first, second = script.calls[0], script.calls[3]
    assert {first, second} == {"a", "b"}
    assert script.calls == [first] * 3 + [second, "c"]
    assert [a.deployment.model_name for a in attempts] == ["tts"] * 4 + ["backup"]


def test_not_found_moves_on_without_retry(state: Counters) -> None:
    router = make_router(state)
    script = InOrder([UnsupportedFeature("no such model", status_code=404), "ok"])
    assert router.call("tts", script).value == "ok"
    assert sorted(script.calls) == ["a", "b"]


def test_default_fallbacks(state: Counters) -> None:
    registry = config(fallbacks=[], default_fallbacks=["last-resort"])
    router = make_router(state, registry)
    script = Script(
        {"a": [AuthenticationFailed("x")], "b": [AuthenticationFailed("x")], "d": ["rescued"]}
    )
    assert router.call("tts", script).value == "rescued"
    assert router.model_chain("tts") == ["tts", "last-resort"]


def test_invalid_input_fails_at_once(state: Counters) -> None:
    attempts: list[Attempt] = []
    router = make_router(state, attempts=attempts)
    script = InOrder([InvalidInput("text too long", status_code=400)])
    with pytest.raises(InvalidInput):
        router.call("tts", script)
    assert len(script.calls) == 1
    assert len(attempts) == 1


def test_all_failed_carries_last_error(state: Counters) -> None:
    script = Script({m: [AuthenticationFailed(f"no {m}")] for m in "abc"})
    with pytest.raises(AllDeploymentsFailed, match="no c") as info:
        make_router(state).call("tts", script)
    assert isinstance(info.value.last, AuthenticationFailed)


def test_stop_is_checked_before_each_retry(state: Counters) -> None:
    router = make_router(state, config(allowed_fails=10))
    answers = iter([False, True])
    checks: list[bool] = []

    def should_stop() -> bool:
        checks.append(next(answers))
        return checks[-1]

    script = InOrder([ProviderUnavailable("x")] * 3)
    with pytest.raises(AllDeploymentsFailed, match="stopped"):
        router.call("tts", script, should_stop=should_stop)
    # Not before the first try (the job was just claimed); before the second and third.
    assert len(script.calls) == 2
    assert checks == [False, True]


def test_unexpected_exception_is_recorded_then_raised(state: Counters) -> None:
    attempts: list[Attempt] = []

    def crash(provider: SpeechProvider, deployment: Deployment) -> str:
        raise RuntimeError("engine crashed")

    with pytest.raises(RuntimeError):
        make_router(state, attempts=attempts).call("tts", crash)
    assert attempts[0].error == "RuntimeError"


# --- strategies ---------------------------------------------------------------------------


def test_simple_shuffle_follows_weights(state: Counters) -> None:
    registry = parse_config(
        {
            "model_list": [
                {"model_name": "tts", "litellm_params": {"model": "openai/a", "weight": 9}},
                {"model_name": "tts", "litellm_params": {"model": "openai/b", "weight": 1}},
            ],
        }
    )
    router = make_router(state, registry, seed=42)
    firsts = Counter(first_choice(router) for _ in range(2000))
    assert 0.86 < firsts["a"] / 2000 < 0.94


def test_simple_shuffle_weights_by_rpm_without_weight(state: Counters) -> None:
    registry = parse_config(
        {
            "model_list": [
                {"model_name": "tts", "litellm_params": {"model": "openai/a", "rpm": 100000}},
                {"model_name": "tts", "litellm_params": {"model": "openai/b", "rpm": 300000}},
            ],
        }
    )
    router = make_router(state, registry, seed=7)
    firsts = Counter(first_choice(router) for _ in range(2000))
    assert 0.70 < firsts["b"] / 2000 < 0.80


def test_least_busy_picks_fewest_in_flight(state: Counters) -> None:
    router = make_router(state, config(routing_strategy="least-busy"))
    state.incr("busy:tts#0", 3, 60)
    state.incr("busy:tts#1", 1, 60)
    assert [d.id for d in router.order("tts")] == ["tts#1", "tts#0"]


def test_in_flight_count_returns_to_zero(state: Counters) -> None:
    seen: list[float | None] = []

    def observe(provider: SpeechProvider, deployment: Deployment) -> str:
        seen.append(state.get(f"busy:{deployment.id}"))
        return "ok"

    routed = make_router(state).call("tts", observe)
    assert seen == [1]
    assert state.get(f"busy:{routed.deployment.id}") == 0


def test_latency_based_prefers_fastest_and_measures_new_ones_first(state: Counters) -> None:
    router = make_router(state, config(routing_strategy="latency-based-routing"))
    state.set("latency:tts#0", 500, 60)
    assert [d.id for d in router.order("tts")] == ["tts#1", "tts#0"]  # unmeasured first
    state.set("latency:tts#1", 900, 60)
    assert [d.id for d in router.order("tts")] == ["tts#0", "tts#1"]


def test_latency_is_a_moving_average(state: Counters) -> None:
    router = make_router(state)
    router._record_latency(router.registry.deployments_for("tts")[0], 100)
    router._record_latency(router.registry.deployments_for("tts")[0], 200)
    assert state.get("latency:tts#0") == pytest.approx(130)


# --- cooldowns and rpm ---------------------------------------------------------------------


def test_cooldown_after_allowed_fails_then_recovery(state: Counters) -> None:
    registry = config(
        routing_strategy="least-busy", allowed_fails=1, cooldown_time=1, num_retries=0
    )
    router = make_router(state, registry)

    def a_is_down(provider: SpeechProvider, deployment: Deployment) -> str:
        if deployment.model == "a":
            raise ProviderUnavailable("down")
        return "ok"

    while (state.get("fails:tts#0") or 0) < 2:
        assert router.call("tts", a_is_down).value == "ok"
    assert state.get("cooldown:tts#0") == 1
    # Cooling down: last in the order, whatever the strategy says.
    assert [d.id for d in router.order("tts")] == ["tts#1", "tts#0"]
    time.sleep(1.1)
    assert state.get("cooldown:tts#0") is None


def test_retries_stop_when_the_deployment_cools_down(state: Counters) -> None:
    router = make_router(state, config(allowed_fails=0, num_retries=5))
    script = InOrder([ProviderUnavailable("down"), "ok"])
    assert router.call("tts", script).value == "ok"
    assert sorted(script.calls) == ["a", "b"]


def test_rpm_limit_moves_traffic_to_the_next_deployment(state: Counters) -> None:
    registry = parse_config(
        {
            "model_list": [
                {
                    "model_name": "tts",
                    "litellm_params": {"model": "openai/a", "rpm": 2, "weight": 1000000},
                },
                {"model_name": "tts", "litellm_params": {"model": "openai/b", "rpm": 1000}},
            ],
        }
    )
    router = make_router(state, registry)
    router.clock = lambda: 1_800_000_000.0  # one rpm window for the whole case
    used = [router.call("tts", lambda p, d: d.model).value for _ in range(4)]
    assert used[:2] == ["a", "a"]
    assert used[2:] == ["b", "b"]


def test_routing_works_when_state_is_down() -> None:
    broken = RedisCounters("redis://127.0.0.1:1/0")  # nothing listens there
    router = make_router(broken, config(routing_strategy="latency-based-routing"))
    assert router.call("tts", lambda p, d: "ok").value == "ok"


def test_unknown_strategy_is_refused(state: Counters) -> None:
    with pytest.raises(ValueError, match="routing_strategy"):
        make_router(state, config(routing_strategy="round-robin"))


# --- two worker processes share cooldowns ----------------------------------------------------


def _a_is_down(provider: SpeechProvider, deployment: Deployment) -> str:
    if deployment.model == "a":
        raise ProviderUnavailable("down")
    return "ok"


def _fail_in_another_process(url: str) -> None:
    state = open_state(url)
    router = make_router(
        state,
        config(routing_strategy="least-busy", allowed_fails=1, cooldown_time=60, num_retries=0),
    )
    while (state.get("fails:tts#0") or 0) < 2:
        router.call("tts", _a_is_down)
    state.close()


def test_cooldown_is_shared_between_processes(url: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    worker = ctx.Process(target=_fail_in_another_process, args=(url,))
    worker.start()
    worker.join(60)
    assert worker.exitcode == 0
    state = open_state(url)
    try:
        assert state.get("cooldown:tts#0") == 1
        router = make_router(state, config(routing_strategy="least-busy", cooldown_time=60))
        # This process never saw `a` fail, yet sends nothing to it while it cools down.
        for _ in range(5):
            assert [d.id for d in router.order("tts")] == ["tts#1", "tts#0"]
            assert router.call("tts", _a_is_down).deployment.id == "tts#1"
    finally:
        state.close()


# --- per-deployment slots (audiobook segments) ----------------------------------------


class Slots:
    """A SlotGate with a fixed number of free slots per deployment model."""

    def __init__(self, free: dict[str, int]) -> None:
        self.free = free
        self.held: list[str] = []
        self.released: list[str] = []

    def acquire(self, deployment: Deployment) -> bool:
        if self.free.get(deployment.model, 0) <= 0:
            return False
        self.free[deployment.model] -= 1
        self.held.append(deployment.model)
        return True

    def release(self, deployment: Deployment) -> None:
        self.free[deployment.model] += 1
        self.released.append(deployment.model)


def test_a_full_deployment_is_skipped_for_one_with_a_free_slot(state: Counters) -> None:
    router = make_router(state)
    script = Script({"a": ["from a"], "b": ["from b"]})
    slots = Slots({"a": 0, "b": 1})
    assert router.call("tts", script, slots=slots).value == "from b"
    assert script.calls == ["b"]
    assert slots.held == slots.released == ["b"]  # the slot is given back after the call


def test_every_deployment_full_raises_no_free_slot_without_calling(state: Counters) -> None:
    from worker.router import NoFreeSlot

    router = make_router(state)
    script = Script({"a": ["x"], "b": ["x"], "c": ["x"]})
    with pytest.raises(NoFreeSlot):
        router.call("tts", script, slots=Slots({}))
    assert script.calls == []


def test_a_slot_is_released_when_its_deployment_fails(state: Counters) -> None:
    router = make_router(state)
    down = ProviderUnavailable("down")
    script = InOrder([down, down, down, down, down, down, "from backup"])
    slots = Slots({"a": 1, "b": 1, "c": 1})
    assert router.call("tts", script, slots=slots).value == "from backup"
    assert sorted(slots.held) == sorted(slots.released) == ["a", "b", "c"]
    assert slots.free == {"a": 1, "b": 1, "c": 1}
