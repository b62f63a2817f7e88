"""Provider faults with the real worker: a 500, a 429 with Retry-After, a hang past the
deployment's timeout, a refused connection and undecodable audio are retried on the same
deployment or fall back to another model, and never crash-loop: every job ends, once.

The misbehaving provider is `tests.fakes.ScriptedOpenAI` (the `fault-*-tts` models of
`_config`); the stack's router runs with `num_retries: 2`, so each deployment is tried
three times before the next one."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from storage.models import Job, ProviderAttempt, UsageRecord
from tests.fakes import HANG_SECONDS, ScriptedOpenAI
from tests.integration.conftest import Stack
from worker import audio

pytestmark = pytest.mark.integration

TRIES = 3  # 1 + num_retries, per deployment


def _text(stack: Stack, what: str) -> str:
    """An input of this test's own: the scripted fake counts calls per (fault, input)."""
    return f"{what} on the {stack.kind} stack, run {uuid.uuid4().hex[:8]}."


def _run(stack: Stack, client: httpx.Client, model: str, text: str) -> dict[str, Any]:
    submitted = client.post("/v1/jobs/speech", json={"model": model, "input": text})
    assert submitted.status_code == 202, submitted.text
    # Bounded: three hangs of the 1 s timeout plus backoff and the fallback fit easily.
    return stack.wait_for_job(client, submitted.json()["id"], timeout_s=90)


def _tries(job: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(deployment, status, error class) of every attempt, in order."""
    return [
        (a["deployment"], a["status"], (a["error"] or "").split(" ")[0].rstrip(":"))
        for a in job["attempts"]
    ]


def _db_facts(stack: Stack, job_id: str) -> tuple[Job, list[ProviderAttempt], list[UsageRecord]]:
    with stack.db_session() as session:
        row = session.get(Job, job_id)
        assert row is not None
        attempts = session.scalars(
            select(ProviderAttempt)
            .where(ProviderAttempt.job_id == job_id)
            .order_by(ProviderAttempt.id)
        ).all()
        usage = session.scalars(select(UsageRecord).where(UsageRecord.job_id == job_id)).all()
        session.expunge_all()
    return row, list(attempts), list(usage)


def _assert_ran_once_and_still_serving(
    stack: Stack, client: httpx.Client, job: dict[str, Any]
) -> None:
    """The faulty job ran once (no redelivery, no crash loop) and the worker goes on."""
    row, attempts, _ = _db_facts(stack, job["id"])
    assert row.runs == 1, f"the job ran {row.runs} times"
    for name, proc in stack.processes.items():
        assert proc.poll() is None, f"{name} exited with {proc.returncode}"
    normal = _run(stack, client, "openai-tts", _text(stack, "A normal job after the fault"))
    assert normal["status"] == "succeeded", normal
    assert [a["status"] for a in normal["attempts"]] == ["ok"]
    # Nothing more happened to the faulty job meanwhile.
    row_after, attempts_after, _ = _db_facts(stack, job["id"])
    assert (row_after.status, row_after.runs) == (job["status"], 1)
    assert len(attempts_after) == len(attempts)


def _assert_billed_once(stack: Stack, job: dict[str, Any], deployment: str) -> None:
    _, _, usage = _db_facts(stack, job["id"])
    assert [(u.call_key, u.deployment) for u in usage] == [("main", deployment)]
    assert job["usage"]["cost_usd"] == pytest.approx(usage[0].cost_usd)


def test_http_500_twice_is_retried_on_the_same_deployment(
    stack: Stack, scripted_openai: ScriptedOpenAI
) -> None:
    text = _text(stack, "Five hundred twice")
    with stack.client() as client:
        done = _run(stack, client, "fault-500-tts", text)
        assert done["status"] == "succeeded", done
        assert _tries(done) == [
            ("fault-500-tts#0", "error", "ProviderUnavailable"),
            ("fault-500-tts#0", "error", "ProviderUnavailable"),
            ("fault-500-tts#0", "ok", ""),
        ]
        assert all("(HTTP 500)" in a["error"] for a in done["attempts"][:2])
        assert scripted_openai.count("flaky", text) == 3
        _assert_billed_once(stack, done, "fault-500-tts#0")
        assert done["usage"]["characters"] == len(text)
        _assert_ran_once_and_still_serving(stack, client, done)


def test_429_retry_after_is_waited_for_then_retried(
    stack: Stack, scripted_openai: ScriptedOpenAI
) -> None:
    text = _text(stack, "Slow down please")
    with stack.client() as client:
        done = _run(stack, client, "fault-429-tts", text)
        assert done["status"] == "succeeded", done
        assert _tries(done) == [
            ("fault-429-tts#0", "error", "RateLimited"),
            ("fault-429-tts#0", "ok", ""),
        ]
        assert "(HTTP 429)" in done["attempts"][0]["error"]
        _assert_billed_once(stack, done, "fault-429-tts#0")
        _assert_ran_once_and_still_serving(stack, client, done)
    # Recorded facts, in order: the 429 row is written before the router waits; the
    # successful row when the job ends, `latency_ms` after its call started. So the retry
    # started no earlier than `ok.created_at - ok.latency_ms`, which must be a Retry-After
    # (1 s) past the 429 (a small allowance for the clocks' rounding).
    _, (limited, ok), _ = _db_facts(stack, done["id"])
    assert (limited.status, ok.status) == ("error", "ok")
    retry_started_after_s = (ok.created_at - limited.created_at).total_seconds() - (
        ok.latency_ms / 1000
    )
    assert retry_started_after_s >= 0.9, retry_started_after_s
    # And as the provider saw it: the second request came at least a second after the first.
    first, second = scripted_openai.arrived("rate-limited", text)
    assert second - first >= 0.95, second - first


def test_hang_past_the_timeout_falls_back(stack: Stack, scripted_openai: ScriptedOpenAI) -> None:
    text = _text(stack, "Hanging on the line")
    with stack.client() as client:
        done = _run(stack, client, "fault-hang-tts", text)
        assert done["status"] == "succeeded", done
        assert _tries(done) == [
            *[("fault-hang-tts#0", "error", "ProviderTimeout")] * TRIES,
            ("openai-tts#0", "ok", ""),
        ]
        # Each try gave up at the deployment's 1 s timeout, not when the fake answered.
        for attempt in done["attempts"][:TRIES]:
            assert attempt["latency_ms"] < HANG_SECONDS * 1000, attempt
        assert scripted_openai.count("hang", text) == TRIES
        _assert_billed_once(stack, done, "openai-tts#0")
        _assert_ran_once_and_still_serving(stack, client, done)


def test_connection_refused_falls_back(stack: Stack) -> None:
    with stack.client() as client:
        done = _run(stack, client, "fault-refused-tts", _text(stack, "Nobody home"))
        assert done["status"] == "succeeded", done
        assert _tries(done) == [
            *[("fault-refused-tts#0", "error", "ProviderUnavailable")] * TRIES,
            ("openai-tts#0", "ok", ""),
        ]
        assert all("could not reach" in a["error"] for a in done["attempts"][:TRIES])
        _assert_billed_once(stack, done, "openai-tts#0")
        _assert_ran_once_and_still_serving(stack, client, done)


def test_undecodable_audio_is_a_provider_failure_and_falls_back(
    stack: Stack, scripted_openai: ScriptedOpenAI
) -> None:
    text = _text(stack, "Garbage in")
    with stack.client() as client:
        done = _run(stack, client, "fault-garbage-tts", text)
        assert done["status"] == "succeeded", done
        assert _tries(done) == [
            *[("fault-garbage-tts#0", "error", "ProviderUnavailable")] * TRIES,
            ("openai-tts#0", "ok", ""),
        ]
        assert all("undecodable audio" in a["error"] for a in done["attempts"][:TRIES])
        assert scripted_openai.count("garbage", text) == TRIES
        _assert_billed_once(stack, done, "openai-tts#0")
        # What is stored is the fallback's audio, and it decodes.
        content = client.get(done["result"]["content_url"])
        assert content.status_code == 200
        assert audio.probe(content.content).duration_seconds > 0.5
        _assert_ran_once_and_still_serving(stack, client, done)


def test_provider_down_without_fallback_fails_with_provider_error(
    stack: Stack, scripted_openai: ScriptedOpenAI
) -> None:
    text = _text(stack, "Always five hundred")
    with stack.client() as client:
        done = _run(stack, client, "fault-down-tts", text)
        assert done["status"] == "failed", done
        assert done["error"]["code"] == "provider_error"
        assert done["usage"] is None
        assert _tries(done) == [("fault-down-tts#0", "error", "ProviderUnavailable")] * TRIES
        assert scripted_openai.count("down", text) == TRIES
        _, _, usage = _db_facts(stack, done["id"])
        assert usage == []
        _assert_ran_once_and_still_serving(stack, client, done)
