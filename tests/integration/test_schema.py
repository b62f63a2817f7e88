"""Schemathesis against the running API's /openapi.json: no 5xx, and every response (the
framework's errors included) documented and matching its schema."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.conftest import Stack, _wait_healthy, free_port

pytestmark = pytest.mark.integration

CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "response_schema_conformance",
        "content_type_conformance",
    ]
)


def test_api_conforms_to_its_openapi_schema(tmp_path: Path) -> None:
    # An API with no worker: jobs stay queued, so generated input never runs an engine.
    # /v1/audio/* wait for a worker and are covered with the openai client instead.
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPEECHQ_")}
    env.update({"SPEECHQ_DATA_DIR": str(tmp_path), "SPEECHQ_MASTER_KEY": "sq-master-schema"})
    port = free_port()
    subprocess.run(
        [sys.executable, "-m", "speechq.cli", "migrate"], env=env, check=True, capture_output=True
    )
    stack = Stack("embedded", f"http://127.0.0.1:{port}", "sq-master-schema", env, tmp_path)
    stack.start("api", "api", "--port", str(port))
    try:
        _wait_healthy(stack)
        run = subprocess.run(
            [
                str(Path(sys.executable).with_name("schemathesis")),
                "run",
                f"{stack.base_url}/openapi.json",
                "--header",
                "Authorization: Bearer sq-master-schema",
                "--checks",
                CHECKS,
                "--max-examples",
                "15",
                "--seed",
                "1",
                "--exclude-path-regex",
                "^/v1/audio/",
                "--no-shrink",
            ],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=tmp_path,  # it leaves a .schemathesis folder behind
        )
    finally:
        stack.stop_all()
    assert run.returncode == 0, run.stdout[-6000:]
    assert "failures" not in run.stdout.splitlines()[-1]
