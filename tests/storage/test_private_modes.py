"""What `storage` (and the embedded broker) write is private whatever the umask, since they
may be used as a library: folders 0700, files 0600 (audio, transcripts, webhook secrets)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from kombu import Connection
from sqlalchemy import text

from storage.db import get_engine
from storage.objects import LocalObjectStore, open_object_store
from worker import sqlite_broker


@pytest.fixture
def open_umask() -> Iterator[None]:
    """The loosest umask, so only explicit modes keep anything private."""
    before = os.umask(0)
    try:
        yield
    finally:
        os.umask(before)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_local_store_writes_private_folders_and_files(tmp_path: Path, open_umask: None) -> None:
    store = open_object_store(f"file://{tmp_path}/data/blobs")
    store.put_bytes("team-a/jobs/job_1/speech.mp3", b"audio")
    with store.open_writer("team-a/jobs/job_2/speech.mp3") as writer:
        writer.write(b"more audio")

    data = tmp_path / "data"
    folders = [data, data / "blobs", *(p for p in data.rglob("*") if p.is_dir())]
    files = [p for p in data.rglob("*") if p.is_file()]
    assert len(files) == 2
    assert {str(p): oct(_mode(p)) for p in folders} == {str(p): "0o700" for p in folders}
    assert {str(p): oct(_mode(p)) for p in files} == {str(p): "0o600" for p in files}


def test_local_store_leaves_an_existing_root_alone(tmp_path: Path, open_umask: None) -> None:
    root = tmp_path / "shared"
    root.mkdir(mode=0o755)
    LocalObjectStore(root).put_bytes("a/b.txt", b"x")
    assert _mode(root) == 0o755
    assert _mode(root / "a") == 0o700
    assert _mode(root / "a" / "b.txt") == 0o600


def test_sqlite_database_and_its_wal_files_are_private(tmp_path: Path, open_umask: None) -> None:
    path = tmp_path / "data" / "speechq.db"
    engine = get_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as connection:
            connection.execute(text("CREATE TABLE secrets (value TEXT)"))
            connection.execute(text("INSERT INTO secrets VALUES ('whsec_x')"))
            connection.commit()
            # While a connection is open, WAL mode keeps its -wal and -shm files.
            made = {p.name: oct(_mode(p)) for p in path.parent.iterdir()}
    finally:
        engine.dispose()
    assert made == {name: "0o600" for name in ("speechq.db", "speechq.db-wal", "speechq.db-shm")}
    assert _mode(path.parent) == 0o700


def test_existing_loose_sqlite_file_is_tightened(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    path.touch(mode=0o644)
    path.chmod(0o644)
    engine = get_engine(f"sqlite:///{path}")
    engine.dispose()
    assert _mode(path) == 0o600


def test_embedded_broker_file_is_private(tmp_path: Path, open_umask: None) -> None:
    sqlite_broker.register()
    path = tmp_path / "data" / "broker.db"
    with Connection(f"sqla+sqlite:///{path}") as connection:
        channel = connection.default_channel
        channel._new_queue("speech")
        channel._put("speech", {"body": "a job"})
        made = {p.name: oct(_mode(p)) for p in path.parent.iterdir()}
    assert made, "the broker made no file"
    assert made == dict.fromkeys(made, "0o600")
    assert made.keys() >= {"broker.db"}
    assert _mode(path.parent) == 0o700
