"""`speechq up` starts the whole embedded service and prints a URL and a working key, and
keeps its data folder private; `speechq keys` manages keys in the database directly."""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import free_port

pytestmark = pytest.mark.integration


def _env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPEECHQ_")}
    env["SPEECHQ_DATA_DIR"] = str(data_dir)
    return env


def test_up_prints_url_and_key_and_runs_a_job(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "speechq.cli", "up", "--port", str(port)],
        cwd=tmp_path,
        env=_env(tmp_path / "data"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        umask=0o022,
    )
    output: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        while not any("API key:" in line for line in output):
            assert time.monotonic() < deadline, "".join(output)
            line = proc.stdout.readline()
            assert line or proc.poll() is None, "".join(output)
            output.append(line)
        text = "".join(output)
        url = re.search(r"URL:\s+(\S+)", text).group(1)  # type: ignore[union-attr]
        key = re.search(r"API key:\s+(\S+)", text).group(1)  # type: ignore[union-attr]
        assert url == f"http://127.0.0.1:{port}"
        assert (tmp_path / "data" / "master_key").read_text().strip() == key
        headers = {"Authorization": f"Bearer {key}"}
        while True:
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "API never became ready"
            time.sleep(0.2)
        job = httpx.post(
            f"{url}/v1/jobs/speech",
            json={"model": "tts-1", "input": "Up and running."},
            headers=headers,
        ).json()
        done = httpx.get(
            f"{url}/v1/jobs/{job['id']}", params={"wait": 30}, headers=headers, timeout=40
        ).json()
        assert done["status"] == "succeeded", done
        # While everything runs (SQLite's -wal and -shm files exist), and though started
        # with a umask of 022: the folder and every folder in it 0700, every file 0600.
        modes = _modes(tmp_path / "data")
        names = {path.name for path in modes}
        assert {"speechq.db", "speechq.db-wal", "broker.db", "master_key"} <= names, names
        blobs = tmp_path / "data" / "blobs"
        assert any(blobs in path.parents and path.is_file() for path in modes), names
        loose = {str(path): oct(mode) for path, mode in modes.items() if mode != _private(path)}
        assert not loose, loose
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    # Every child stopped with the parent.
    leftover = subprocess.run(
        ["pgrep", "-f", f"--port {port}"], capture_output=True, text=True
    ).stdout.strip()
    assert leftover == ""


def _modes(root: Path) -> dict[Path, int]:
    """The permission bits of `root` and of everything under it."""
    return {path: stat.S_IMODE(path.lstat().st_mode) for path in [root, *root.rglob("*")]}


def _private(path: Path) -> int:
    if path.is_symlink() or not (path.is_dir() or path.is_file()):
        return -1  # nothing else belongs in the data folder
    return 0o700 if path.is_dir() else 0o600


def test_keys_cli(tmp_path: Path) -> None:
    env = _env(tmp_path)

    def run(*args: str) -> str:
        return subprocess.run(
            [sys.executable, "-m", "speechq.cli", *args],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout

    run("migrate")
    created = json.loads(run("keys", "create", "--name", "cli", "--team", "acme"))
    assert created["key"].startswith("sq-") and created["webhook_secret"].startswith("whsec_")
    listed = run("keys", "list")
    assert created["id"] in listed and "active" in listed and created["key"] not in listed
    assert run("keys", "revoke", created["id"]).strip() == f"revoked {created['id']}"
    assert "revoked" in run("keys", "list")
