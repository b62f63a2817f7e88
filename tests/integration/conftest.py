"""The whole service as real processes: `speechq migrate`, `api`, `worker` and `beat`,
once on the embedded default (SQLite, SQLite broker, local folder) and once on the
production shape (PostgreSQL, Redis, S3 through moto over HTTP)."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from sqlalchemy import create_engine
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from speechq.settings import Settings
from tests.fakes import (
    FAKE_OPENAI_KEY,
    SLOW_MODEL,
    FakeOpenAI,
    ScriptedOpenAI,
    start_fake_openai,
    start_scripted_openai,
)
from tests.services import REDIS_HOST, REDIS_PORT, require_redis, temporary_postgres_database

STARTUP_TIMEOUT_S = 60
REDIS_TEST_DB = 7
REDIS_BARE_DB = 8


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Stack:
    kind: str
    base_url: str
    master_key: str
    env: dict[str, str]
    data_dir: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    logs: dict[str, Path] = field(default_factory=dict)
    # Every secret this stack has seen; none may appear in any log (checked at teardown).
    secrets: set[str] = field(default_factory=set)

    def client(self, key: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key or self.master_key}"}
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=90)

    def start(self, name: str, *args: str) -> None:
        log = self.data_dir / f"{name}.log"
        self.logs[name] = log
        self.processes[name] = subprocess.Popen(
            [sys.executable, "-m", "speechq.cli", *args],
            env=self.env,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def stop(self, name: str, sig: int = signal.SIGTERM) -> None:
        proc = self.processes.pop(name)
        if proc.poll() is None:
            os.killpg(proc.pid, sig)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    def stop_all(self) -> None:
        for name in list(self.processes):
            self.stop(name)

    def assert_running(self) -> None:
        """Fail now, with its log, if a process of the stack died (a test that stops one on
        purpose uses `stop`, which forgets it)."""
        for name, proc in self.processes.items():
            if proc.poll() is not None:
                tail = self.logs[name].read_text(errors="replace")[-4000:]
                raise AssertionError(f"{name} exited with {proc.returncode}:\n{tail}")

    def wait_for_job(
        self, client: httpx.Client, job_id: str, timeout_s: float = 60
    ) -> dict[str, Any]:
        return self._wait_for_end(client, f"/v1/jobs/{job_id}", timeout_s)

    def wait_for_book(
        self, client: httpx.Client, book_id: str, timeout_s: float = 120
    ) -> dict[str, Any]:
        return self._wait_for_end(client, f"/v1/audiobooks/{book_id}", timeout_s)

    def _wait_for_end(self, client: httpx.Client, path: str, timeout_s: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while True:
            found = client.get(path, params={"wait": 10}).json()
            if found["status"] in ("succeeded", "failed", "canceled"):
                return found
            self.assert_running()
            if time.monotonic() > deadline:
                raise AssertionError(f"{path} still {found['status']} after {timeout_s}s: {found}")

    def make_key(self, **body: Any) -> dict[str, Any]:
        with self.client() as client:
            response = client.post("/v1/keys", json=body)
            assert response.status_code == 200, response.text
            created = response.json()
            self.secrets.update({created["key"], created["webhook_secret"]})
            return created

    def db_session(self) -> Session:
        """A session on this stack's database, for checks the API does not expose."""
        url = Settings(
            database_url=self.env.get("SPEECHQ_DATABASE_URL"), data_dir=self.data_dir
        ).resolved_database_url
        return Session(create_engine(url, poolclass=NullPool))

    def stored_keys(self, prefix: str) -> list[str]:
        """Keys in this stack's object store under `prefix` (local folder or S3)."""
        url = self.env.get("SPEECHQ_STORAGE_URL")
        if url is None:
            root = self.data_dir / "blobs"
            return sorted(
                str(p.relative_to(root)) for p in (root / prefix).rglob("*") if p.is_file()
            )
        import boto3

        bucket, _, base = url.removeprefix("s3://").partition("/")
        s3 = boto3.client("s3", endpoint_url=self.env["SPEECHQ_S3_ENDPOINT_URL"])
        listed = s3.list_objects_v2(Bucket=bucket, Prefix=f"{base}/{prefix}")
        return sorted(item["Key"] for item in listed.get("Contents", []))

    def all_logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in self.logs.values() if p.exists())


def _config(fake: FakeOpenAI, scripted: ScriptedOpenAI) -> dict[str, Any]:
    openai_params = {"api_base": fake.url, "api_key": "os.environ/FAKE_OPENAI_KEY"}

    def faulty(name: str, api_base: str, **params: Any) -> dict[str, Any]:
        """A deployment on the scripted fake (tests/integration/test_provider_faults.py)."""
        key = "os.environ/FAKE_OPENAI_KEY"
        litellm_params = {"model": "openai/tts-1", "api_base": api_base, "api_key": key, **params}
        return {"model_name": name, "litellm_params": litellm_params}

    return {
        "model_list": [
            {"model_name": "local-tts", "litellm_params": {"model": "local/piper"}},
            {
                "model_name": "short-tts",
                "litellm_params": {"model": "local/piper"},
                "model_info": {"max_characters": 20},
            },
            {"model_name": "local-stt", "litellm_params": {"model": "local/whisper"}},
            {
                "model_name": "short-stt",
                "litellm_params": {"model": "local/whisper"},
                "model_info": {"max_duration_seconds": 1},
            },
            {
                "model_name": "openai-tts",
                "litellm_params": {"model": "openai/tts-1", **openai_params},
            },
            {
                "model_name": "slow-tts",
                "litellm_params": {"model": f"openai/{SLOW_MODEL}", **openai_params},
            },
            {
                "model_name": "broken-tts",
                "params": {"model": "openai/tts-1", "api_base": fake.url, "api_key": "sk-wrong"},
                "model_info": {"mode": "audio_speech"},
            },
            {
                "model_name": "fallback-tts",
                "litellm_params": {
                    "model": "openai/tts-1",
                    "api_base": fake.url,
                    "api_key": "sk-also-wrong",
                },
            },
            faulty("fault-500-tts", scripted.api_base("flaky")),
            faulty("fault-429-tts", scripted.api_base("rate-limited")),
            faulty("fault-hang-tts", scripted.api_base("hang"), timeout=1),
            faulty("fault-refused-tts", scripted.refused_url),
            faulty("fault-garbage-tts", scripted.api_base("garbage")),
            faulty("fault-down-tts", scripted.api_base("down")),
            faulty("down-until-healed-tts", scripted.api_base("down-until-healed")),
            faulty("rate-limited-longer-tts", scripted.api_base("rate-limited-longer")),
        ],
        "end_user_budgets": {"capped-user": 0.0001},
        "guardrails": [
            {
                "guardrail_name": "no-banned-words",
                "type": "denylist",
                "words": ["forbiddenword"],
                "mode": "block",
            },
            {
                "guardrail_name": "pii-mask",
                "type": "pii",
                "mode": "mask",
                "default_on": False,
            },
            {
                "guardrail_name": "no-fox",
                "type": "denylist",
                "words": ["fox"],
                "mode": "mask",
                "apply_to": ["output"],
                "default_on": False,
            },
        ],
        "router_settings": {
            "num_retries": 2,
            "fallbacks": [
                {"fallback-tts": ["openai-tts"]},
                {"fault-hang-tts": ["openai-tts"]},
                {"fault-refused-tts": ["openai-tts"]},
                {"fault-garbage-tts": ["openai-tts"]},
            ],
            "model_group_alias": {
                "tts-1": "local-tts",
                "gpt-4o-mini-tts": "local-tts",
                "whisper-1": "local-stt",
            },
        },
    }


@pytest.fixture(scope="session")
def fake_openai() -> Iterator[FakeOpenAI]:
    fake = start_fake_openai()
    yield fake
    fake.close()


@pytest.fixture(scope="session")
def scripted_openai() -> Iterator[ScriptedOpenAI]:
    """Provider faults on purpose (500, 429, hang, garbage), and a port that refuses."""
    fake = start_scripted_openai()
    yield fake
    fake.close()


def _wait_healthy(stack: Stack) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        for name, proc in stack.processes.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited early:\n{stack.all_logs()[-4000:]}")
        try:
            if httpx.get(f"{stack.base_url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"stack not ready in {STARTUP_TIMEOUT_S}s:\n{stack.all_logs()[-4000:]}")


def _bare_env(data_dir: Path, master_key: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPEECHQ_")}
    env.update(
        {
            "SPEECHQ_DATA_DIR": str(data_dir),
            "SPEECHQ_MASTER_KEY": master_key,
            # No worker ever answers: `?wait=` gives up after a second.
            "SPEECHQ_MAX_WAIT_SECONDS": "1",
        }
    )
    return env


def _start_bare(kind: str, env: dict[str, str], data_dir: Path) -> Stack:
    port = free_port()
    subprocess.run(
        [sys.executable, "-m", "speechq.cli", "migrate"], env=env, check=True, capture_output=True
    )
    stack = Stack(kind, f"http://127.0.0.1:{port}", env["SPEECHQ_MASTER_KEY"], env, data_dir)
    stack.start("api", "api", "--port", str(port))
    _wait_healthy(stack)
    return stack


@pytest.fixture(scope="session")
def bare_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """An API on the embedded default with no worker (jobs stay queued) and the production
    default of refusing private addresses."""
    data_dir = tmp_path_factory.mktemp("bare-api")
    stack = _start_bare("embedded", _bare_env(data_dir, "sq-master-bare"), data_dir)
    try:
        yield stack
    finally:
        stack.stop_all()


@pytest.fixture(scope="session")
def bare_production_api(
    tmp_path_factory: pytest.TempPathFactory, s3_server: str, s3_client: Any
) -> Iterator[Stack]:
    """The same on PostgreSQL, Redis (a database of its own) and S3."""
    import redis

    require_redis()
    data_dir = tmp_path_factory.mktemp("bare-production-api")
    bucket = f"speechq-bare-{uuid.uuid4().hex[:8]}"
    s3_client.create_bucket(Bucket=bucket)
    queue = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=REDIS_BARE_DB)
    queue.flushdb()
    with temporary_postgres_database() as database_url:
        env = _bare_env(data_dir, "sq-master-bare-production")
        env.update(
            {
                "SPEECHQ_DATABASE_URL": database_url,
                "SPEECHQ_BROKER_URL": f"redis://{REDIS_HOST}:{REDIS_PORT}/{REDIS_BARE_DB}",
                "SPEECHQ_STORAGE_URL": f"s3://{bucket}/speechq",
                "SPEECHQ_S3_ENDPOINT_URL": s3_server,
            }
        )
        stack = _start_bare("production", env, data_dir)
        try:
            yield stack
        finally:
            stack.stop_all()
            queue.flushdb()


@pytest.fixture(params=["embedded", "production"])
def bare_stack(request: pytest.FixtureRequest) -> Stack:
    """`bare_api` and `bare_production_api` in turn."""
    name = "bare_api" if request.param == "embedded" else "bare_production_api"
    return request.getfixturevalue(name)  # type: ignore[no-any-return]


@pytest.fixture(scope="session", params=["embedded", "production"])
def stack(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    fake_openai: FakeOpenAI,
    scripted_openai: ScriptedOpenAI,
) -> Iterator[Stack]:
    kind: str = request.param
    data_dir = tmp_path_factory.mktemp(f"stack-{kind}")
    config_path = data_dir / "config.yaml"
    config_path.write_text(yaml.safe_dump(_config(fake_openai, scripted_openai)))
    if kind == "production":
        # Before `env` is built: the S3 fixture puts the AWS credentials in os.environ.
        request.getfixturevalue("s3_server")
    port = free_port()
    master_key = "sq-master-" + secrets.token_urlsafe(16)
    env = {
        **os.environ,
        "SPEECHQ_DATA_DIR": str(data_dir),
        "SPEECHQ_CONFIG": str(config_path),
        "SPEECHQ_MASTER_KEY": master_key,
        "SPEECHQ_REQUEUE_AFTER_SECONDS": "3",
        # Short leases: a killed worker's job comes back within a sweep or two.
        "SPEECHQ_JOB_LEASE_SECONDS": "3",
        # Test servers (audio by URL, webhook receivers) listen on 127.0.0.1.
        "SPEECHQ_WEBHOOK_ALLOW_PRIVATE": "true",
        "SPEECHQ_FETCH_ALLOW_PRIVATE": "true",
        "SPEECHQ_WEBHOOK_RETRY_SCHEDULE": "1,1,1,1",
        # Shorter than the slow fake provider, so the 504 path is reachable.
        "SPEECHQ_SYNC_TIMEOUT_SECONDS": "4.5",
        "SPEECHQ_LOG_LEVEL": "INFO",
        "FAKE_OPENAI_KEY": FAKE_OPENAI_KEY,
    }
    cleanups: list[Callable[[], None]] = []
    if kind == "production":
        require_redis()
        db_context = temporary_postgres_database()
        database_url = db_context.__enter__()
        cleanups.append(lambda: db_context.__exit__(None, None, None))
        s3_endpoint = request.getfixturevalue("s3_server")
        s3_client = request.getfixturevalue("s3_client")
        bucket = f"speechq-{uuid.uuid4().hex[:8]}"
        s3_client.create_bucket(Bucket=bucket)
        import redis

        redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=REDIS_TEST_DB).flushdb()
        env.update(
            {
                "SPEECHQ_DATABASE_URL": database_url,
                "SPEECHQ_BROKER_URL": f"redis://{REDIS_HOST}:{REDIS_PORT}/{REDIS_TEST_DB}",
                "SPEECHQ_STORAGE_URL": f"s3://{bucket}/speechq",
                "SPEECHQ_S3_ENDPOINT_URL": s3_endpoint,
            }
        )
    else:
        for name in ("DATABASE_URL", "BROKER_URL", "STORAGE_URL", "S3_ENDPOINT_URL"):
            env.pop(f"SPEECHQ_{name}", None)
    stack = Stack(kind, f"http://127.0.0.1:{port}", master_key, env, data_dir)
    stack.secrets.update({master_key, FAKE_OPENAI_KEY, "sk-wrong", "sk-also-wrong"})
    try:
        subprocess.run(
            [sys.executable, "-m", "speechq.cli", "migrate"],
            env=env,
            check=True,
            capture_output=True,
        )
        stack.start("api", "api", "--port", str(port))
        stack.start("worker", "worker", "--concurrency", "2", "--hostname", f"w1-{kind}@%h")
        stack.start("beat", "beat")
        _wait_healthy(stack)
        yield stack
    finally:
        stack.stop_all()
        for cleanup in reversed(cleanups):
            cleanup()
    logs = stack.all_logs()
    leaked = sorted(secret[:8] + "…" for secret in stack.secrets if secret in logs)
    assert not leaked, f"secrets found in the {kind} stack's logs: {leaked}"
    assert len(logs) > 1000, "the logs the secret check read are empty"
