from __future__ import annotations

import pytest

from speechq.registry import parse_config
from worker.providers.base import Deployment, SpeechProvider
from worker.providers.errors import (
    AuthenticationFailed,
    InvalidInput,
    ProviderError,
    ProviderUnavailable,
    RateLimited,
)
from worker.router import AllDeploymentsFailed, Attempt, Router

CONFIG = {
    "model_list": [
        {"model_name": "tts", "litellm_params": {"model": "openai/a"}},
        {"model_name": "tts", "litellm_params": {"model": "openai/b"}},
        {"model_name": "backup", "litellm_params": {"model": "openai/c"}},
    ],
    "router_settings": {"num_retries": 2, "fallbacks": [{"tts": ["backup"]}]},
}


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


def make_router(sleeps: list[float], attempts: list[Attempt]) -> Router:
    return Router(
        parse_config(CONFIG),
        on_attempt=attempts.append,
        sleep=sleeps.append,
        provider_factory=lambda d: SpeechProvider(d),
    )


def test_retryable_error_retries_same_deployment() -> None:
    sleeps: list[float] = []
    attempts: list[Attempt] = []
    script = Script({"a": [ProviderUnavailable("boom", status_code=503), "audio"]})
    routed = make_router(sleeps, attempts).call("tts", script)
    assert routed.value == "audio"
    assert routed.deployment.model == "a"
    assert script.calls == ["a", "a"]
    assert [a.ok for a in attempts] == [False, True]
    assert "HTTP 503" in (attempts[0].error or "")
    assert len(sleeps) == 1 and 0 <= sleeps[0] <= 0.5


def test_rate_limit_honours_retry_after() -> None:
    sleeps: list[float] = []
    script = Script({"a": [RateLimited("slow down", retry_after_s=7), "audio"]})
    make_router(sleeps, []).call("tts", script)
    assert sleeps == [7]


def test_exhausted_retries_move_to_next_deployment_then_fallback() -> None:
    sleeps: list[float] = []
    attempts: list[Attempt] = []
    script = Script(
        {
            "a": [ProviderUnavailable("x")] * 3,
            "b": [AuthenticationFailed("bad key", status_code=401)],
            "c": ["from backup"],
        }
    )
    routed = make_router(sleeps, attempts).call("tts", script)
    assert routed.value == "from backup"
    # Three tries on a (1 + num_retries), none more on b after a permanent error.
    assert script.calls == ["a", "a", "a", "b", "c"]
    assert len(sleeps) == 2
    assert [a.deployment.id for a in attempts] == ["tts#0"] * 3 + ["tts#1", "backup#0"]


def test_invalid_input_fails_at_once() -> None:
    attempts: list[Attempt] = []
    script = Script({"a": [InvalidInput("text too long", status_code=400)]})
    with pytest.raises(InvalidInput):
        make_router([], attempts).call("tts", script)
    assert script.calls == ["a"]
    assert len(attempts) == 1


def test_all_failed_carries_last_error() -> None:
    script = Script(
        {
            "a": [AuthenticationFailed("no")],
            "b": [AuthenticationFailed("no")],
            "c": [AuthenticationFailed("last one")],
        }
    )
    with pytest.raises(AllDeploymentsFailed, match="last one") as info:
        make_router([], []).call("tts", script)
    assert isinstance(info.value.last, AuthenticationFailed)


def test_stop_is_checked_before_each_attempt() -> None:
    script = Script({"a": [ProviderUnavailable("x")] * 3})
    calls = iter([False, True])
    with pytest.raises(AllDeploymentsFailed, match="stopped"):
        make_router([], []).call("tts", script, should_stop=lambda: next(calls))
    assert script.calls == ["a"]


def test_unexpected_exception_is_recorded_then_raised() -> None:
    attempts: list[Attempt] = []

    def crash(provider: SpeechProvider, deployment: Deployment) -> str:
        raise RuntimeError("engine crashed")

    with pytest.raises(RuntimeError):
        make_router([], attempts).call("tts", crash)
    assert attempts[0].error == "RuntimeError"
