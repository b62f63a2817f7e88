"""Faults with real processes: a worker SIGKILLed in the middle of a job."""

from __future__ import annotations

import signal
import time

import pytest
from sqlalchemy import func, select

from storage.models import Job, UsageRecord
from tests.integration.conftest import Stack

pytestmark = pytest.mark.integration


def test_sigkilled_worker_job_is_finished_by_another_and_billed_once(stack: Stack) -> None:
    with stack.client() as client:
        job = client.post(
            "/v1/jobs/speech", json={"model": "slow-tts", "input": "Survive the crash."}
        ).json()
        deadline = time.monotonic() + 30
        while client.get(f"/v1/jobs/{job['id']}").json()["status"] != "running":
            assert time.monotonic() < deadline, "the job never started"
            time.sleep(0.1)
        # Mid provider call: kill the whole worker (the Celery parent and its children).
        for name in [n for n in stack.processes if n.startswith("worker")]:
            stack.stop(name, signal.SIGKILL)
        stack.start(
            "worker-restarted", "worker", "--concurrency", "2", "--hostname", f"w2-{stack.kind}@%h"
        )
        done = stack.wait_for_job(client, job["id"], timeout_s=90)
    assert done["status"] == "succeeded", done
    with stack.db_session() as session:
        row = session.get(Job, job["id"])
        assert row is not None and row.runs >= 2
        billed = session.scalar(select(func.count()).where(UsageRecord.job_id == job["id"]))
    assert billed == 1
    assert done["usage"]["cost_usd"] > 0
