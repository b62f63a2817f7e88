"""Redis stops while jobs are being submitted, then comes back: every accepted job ends.

A private redis-server on its own port, so the machine's shared Redis is left alone."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.integration.conftest import Stack, _wait_healthy, free_port
from tests.services import temporary_postgres_database

pytestmark = pytest.mark.integration


def _start_redis(port: int) -> subprocess.Popen[bytes]:
    binary = shutil.which("redis-server")
    if binary is None:
        message = "redis-server is not installed"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            import redis

            redis.Redis(port=port, socket_connect_timeout=0.2).ping()
            return proc
        except Exception:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("redis-server did not start")


@pytest.fixture
def outage_stack(tmp_path: Path) -> Iterator[tuple[Stack, int, list[subprocess.Popen[bytes]]]]:
    redis_port = free_port()
    redis_procs = [_start_redis(redis_port)]
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "model_list": [
                    {"model_name": "local-tts", "litellm_params": {"model": "local/piper"}}
                ]
            }
        )
    )
    with temporary_postgres_database() as database_url:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SPEECHQ_")}
        master = "sq-master-" + secrets.token_urlsafe(12)
        env.update(
            {
                "SPEECHQ_DATA_DIR": str(tmp_path),
                "SPEECHQ_CONFIG": str(config),
                "SPEECHQ_MASTER_KEY": master,
                "SPEECHQ_DATABASE_URL": database_url,
                "SPEECHQ_BROKER_URL": f"redis://127.0.0.1:{redis_port}/0",
                "SPEECHQ_REQUEUE_AFTER_SECONDS": "3",
            }
        )
        subprocess.run(
            [sys.executable, "-m", "speechq.cli", "migrate"],
            env=env,
            check=True,
            capture_output=True,
        )
        port = free_port()
        stack = Stack("production", f"http://127.0.0.1:{port}", master, env, tmp_path)
        stack.start("api", "api", "--port", str(port))
        stack.start("worker", "worker", "--concurrency", "2")
        stack.start("beat", "beat")
        try:
            _wait_healthy(stack)
            yield stack, redis_port, redis_procs
        finally:
            stack.stop_all()
            for proc in redis_procs:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGKILL)
                    proc.wait()


def test_every_accepted_job_finishes_across_a_redis_outage(
    outage_stack: tuple[Stack, int, list[subprocess.Popen[bytes]]],
) -> None:
    stack, redis_port, redis_procs = outage_stack
    accepted: list[str] = []
    accepted_during = 0
    with stack.client() as client:
        for phase in ("before", "during", "after"):
            if phase == "during":
                redis_procs[0].send_signal(signal.SIGKILL)
                redis_procs[0].wait()
            if phase == "after":
                redis_procs.append(_start_redis(redis_port))
            for i in range(4):
                try:
                    response = client.post(
                        "/v1/jobs/speech",
                        json={"model": "local-tts", "input": f"Job {phase} {i}."},
                        timeout=30,
                    )
                except httpx.HTTPError:
                    continue  # not accepted: the client would retry
                if response.status_code == 202:
                    accepted.append(response.json()["id"])
                    accepted_during += phase == "during"
        # The job row is the truth: with the broker down the API still accepts the job.
        assert accepted_during == 4
        assert len(accepted) == 12
        ended = {job_id: stack.wait_for_job(client, job_id, timeout_s=120) for job_id in accepted}
    assert {job["status"] for job in ended.values()} == {"succeeded"}
