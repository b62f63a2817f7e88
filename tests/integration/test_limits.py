"""Per-key rpm limits and budgets, per end-user budgets, across API processes."""

from __future__ import annotations

import pytest

from storage import queries
from tests.integration.conftest import Stack, _wait_healthy, free_port

pytestmark = pytest.mark.integration

PAID = {"model": "openai-tts", "input": "Twenty characters!!!"}  # 20 x $0.000015 = $0.0003


def test_rpm_limit_holds_across_api_processes(stack: Stack) -> None:
    key = stack.make_key(name="limited", rpm_limit=3)
    port = free_port()
    stack.start("api2", "api", "--port", str(port))
    try:
        second = Stack(
            stack.kind,
            f"http://127.0.0.1:{port}",
            stack.master_key,
            stack.env,
            stack.data_dir,
            processes={"api2": stack.processes["api2"]},
        )
        _wait_healthy(second)
        answers = []
        for attempt in range(5):
            target = stack if attempt % 2 == 0 else second
            with target.client(key["key"]) as client:
                answers.append(
                    client.post("/v1/jobs/speech", json={"model": "tts-1", "input": "Hi."})
                )
    finally:
        stack.stop("api2")
    statuses = [a.status_code for a in answers]
    # Three per minute, counted across both processes (a window may turn over once).
    assert statuses.count(202) <= 4, statuses
    limited = [a for a in answers if a.status_code == 429]
    assert limited, statuses
    error = limited[0].json()["error"]
    assert error["code"] == "rate_limited"
    assert 1 <= int(limited[0].headers["Retry-After"]) <= 60


def test_key_budget_refuses_new_jobs_once_spent(stack: Stack) -> None:
    key = stack.make_key(name="budgeted", budget_usd=0.0001)
    with stack.client(key["key"]) as client:
        first = client.post("/v1/jobs/speech", json=PAID)
        assert first.status_code == 202
        assert stack.wait_for_job(client, first.json()["id"])["status"] == "succeeded"
        refused = client.post("/v1/jobs/speech", json=PAID)
        usage = client.get("/v1/usage").json()
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "budget_exceeded"
    assert usage["total"]["cost_usd"] == pytest.approx(0.0003)


def test_end_user_budget_from_config(stack: Stack) -> None:
    key = stack.make_key(name="end-users")
    with stack.client(key["key"]) as client:
        first = client.post("/v1/jobs/speech", json={**PAID, "user": "capped-user"})
        stack.wait_for_job(client, first.json()["id"])
        refused = client.post("/v1/jobs/speech", json={**PAID, "user": "capped-user"})
        other_user = client.post("/v1/jobs/speech", json={**PAID, "user": "someone-else"})
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "budget_exceeded"
    assert refused.json()["error"]["param"] == "user"
    assert other_user.status_code == 202


def test_worker_checks_the_budget_before_calling_the_provider(stack: Stack) -> None:
    """A job accepted before the budget ran out is not run past it."""
    key = stack.make_key(name="spent-meanwhile", budget_usd=0.0001)
    with stack.client(key["key"]) as client:
        first = client.post("/v1/jobs/speech", json=PAID).json()
        assert stack.wait_for_job(client, first["id"])["status"] == "succeeded"
    with stack.db_session() as session:
        # Accepted earlier, published late: a row with no message, found by the sweeper.
        job = queries.create_job(
            session,
            type="speech",
            model="openai-tts",
            tenant=key["id"],
            key_id=key["id"],
            team=None,
            user=None,
            metadata=None,
            webhook_url=None,
            request={"input": PAID["input"], "response_format": "mp3", "speed": 1.0},
        )
        session.commit()
        job_id = job.id
    with stack.client(key["key"]) as client:
        done = stack.wait_for_job(client, job_id)
    assert done["status"] == "failed"
    assert done["error"]["code"] == "budget_exceeded"
    assert done["attempts"] == [] and done["usage"] is None
