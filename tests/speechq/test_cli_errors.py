"""The `speechq` command's failures are one line on stderr and an exit code (2 bad usage
or config, 1 otherwise), never a traceback, and leave nothing behind; the data folder it
makes is private. Each test runs the real command in a fresh directory."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from api.schemas import KeyCreate
from speechq.apikeys import NewKey

TIMEOUT_S = 60


def run_cli(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SPEECHQ_")}
    return subprocess.run(
        [sys.executable, "-m", "speechq.cli", *args],
        cwd=cwd,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        umask=0o022,
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], code: int, *words: str) -> str:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("speechq: "), lines[0]
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def unset_key_config(tmp_path: Path) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(
        "model_list:\n"
        "  - model_name: tts-main\n"
        "    litellm_params:\n"
        "      model: openai/tts-1\n"
        "      api_key: os.environ/SPEECHQ_TEST_NEVER_SET_KEY\n"
    )
    return path


def test_keys_create_rules_are_the_apis() -> None:
    assert issubclass(KeyCreate, NewKey)
    assert KeyCreate.model_json_schema()["properties"] == NewKey.model_json_schema()["properties"]


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--team", "bad team!"], ["invalid --team", "must match ^[A-Za-z0-9._-]+$"]),
        (["--team", ""], ["invalid --team"]),
        (["--rpm-limit", "0"], ["invalid --rpm-limit", "at least 1"]),
        (["--budget-usd", "-1"], ["invalid --budget-usd", "at least 0"]),
        (["--name", "n" * 201], ["invalid --name", "at most 200"]),
        # Not UTF-8: Python reads it as a lone surrogate, which no database can store.
        (["--name", os.fsdecode(b"caf\xe9")], ["invalid --name", "lone surrogate"]),
    ],
)
def test_keys_create_refuses_what_the_api_refuses(
    tmp_path: Path, args: list[str], words: list[str]
) -> None:
    # Checked before the database is looked at: the same answer with or without one.
    result = run_cli(tmp_path, "keys", "create", *args)
    assert_one_line_error(result, 2, *words)
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("args", [["list"], ["create", "--name", "x"], ["revoke", "key_x"]])
def test_keys_without_a_database_says_so(tmp_path: Path, args: list[str]) -> None:
    result = run_cli(tmp_path, "keys", *args)
    line = assert_one_line_error(result, 1, "no database at", "speechq migrate")
    assert str(tmp_path / "data" / "speechq.db") in line
    assert not (tmp_path / "data").exists(), "an empty database was left behind"


def test_keys_on_an_unmigrated_database_says_so(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "speechq.db").touch()
    result = run_cli(tmp_path, "keys", "list")
    assert_one_line_error(result, 1, "has no tables", "speechq migrate")


def test_keys_revoke_of_an_unknown_id(tmp_path: Path) -> None:
    assert run_cli(tmp_path, "migrate").returncode == 0
    result = run_cli(tmp_path, "keys", "revoke", "key_nope")
    assert_one_line_error(result, 1, "no key with id key_nope")


def test_up_on_a_taken_port_stops_before_anything(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        started = time.monotonic()
        result = run_cli(tmp_path, "up", "--port", str(port))
        elapsed = time.monotonic() - started
    line = assert_one_line_error(result, 1, f"port {port} on 127.0.0.1 is in use", "--port")
    assert "API key" not in result.stdout and "URL" not in result.stdout, result.stdout
    assert elapsed < 15, f"took {elapsed:.1f} s: {line}"
    assert not (tmp_path / "data").exists(), "nothing should have been made or started"


@pytest.mark.parametrize("command", ["up", "api", "worker"])
def test_config_with_an_unset_variable_is_one_line(
    tmp_path: Path, unset_key_config: Path, command: str
) -> None:
    port = [] if command == "worker" else ["--port", str(free_port())]
    result = run_cli(tmp_path, command, *port, "--config", str(unset_key_config))
    assert_one_line_error(result, 2, "SPEECHQ_TEST_NEVER_SET_KEY", "tts-main", "model_list[0]")
    assert "API key" not in result.stdout
    assert not (tmp_path / "data").exists(), "nothing should have been made or started"


def test_invalid_setting_is_one_line(tmp_path: Path) -> None:
    result = run_cli(tmp_path, "worker", SPEECHQ_WORKER_CONCURRENCY="0")
    assert_one_line_error(result, 2, "SPEECHQ_WORKER_CONCURRENCY", "at least 1")


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_migrate_makes_a_private_data_folder(tmp_path: Path) -> None:
    # The default folder, ./data, with a umask of 022 (the command sets its own).
    result = run_cli(tmp_path, "migrate")
    assert result.returncode == 0, result.stderr
    data = tmp_path / "data"
    assert {p.name: oct(_mode(p)) for p in data.iterdir()} == {"speechq.db": "0o600"}
    assert _mode(data) == 0o700


def test_migrate_tightens_an_existing_data_folder(tmp_path: Path) -> None:
    data = tmp_path / "shared-data"
    data.mkdir()
    data.chmod(0o755)
    old_db = data / "speechq.db"
    old_db.touch()
    old_db.chmod(0o644)
    result = run_cli(tmp_path, "migrate", SPEECHQ_DATA_DIR=str(data))
    assert result.returncode == 0, result.stderr
    assert _mode(data) == 0o700
    assert _mode(old_db) == 0o600
