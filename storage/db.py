"""Database engine and sessions. SQLite (embedded) gets WAL and a busy timeout, since
the API, the worker and beat share one file, and private modes, since it holds webhook
secrets and transcripts: its folder 0700 when made here, the file 0600."""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy.orm import Session, sessionmaker

__all__ = [
    "get_engine",
    "get_sessionmaker",
    "session_scope",
    "dispose_engines",
    "sqlite_path",
    "prepare_sqlite_file",
]

PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600
# SQLite's companions of a database file; it makes them with the database file's mode.
_SQLITE_COMPANIONS = ("-wal", "-shm", "-journal")

# The API runs its sync routes on 40 threads (anyio's default); a few more for the
# event loop's own reads. A request that still finds no connection gives up after
# POOL_TIMEOUT_S and is answered 503 with Retry-After (api/errors.py).
POOL_MAX_CONNECTIONS = 50
POOL_TIMEOUT_S = 10

_engines: dict[str, Engine] = {}
_sessionmakers: dict[str, sessionmaker[Session]] = {}
_lock = threading.Lock()


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL; None for other databases and in-memory SQLite."""
    if not url.startswith("sqlite"):
        return None
    database = make_url(url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database)


def prepare_sqlite_file(url: str) -> None:
    """Make a SQLite URL's folder (0700) and file (0600) before SQLite does, so neither
    depends on the umask: SQLite would make the file 0644, and its -wal and -shm files
    copy the file's mode. An existing file (or companion) that is looser is tightened.
    Other URLs are left alone."""
    path = sqlite_path(url)
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR_MODE)
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE))
    except FileExistsError:
        pass
    for file in (path, *(path.with_name(path.name + s) for s in _SQLITE_COMPANIONS)):
        _tighten(file)


def _tighten(path: Path) -> None:
    try:
        st = path.lstat()
        if st.st_mode & 0o077 and not stat.S_ISLNK(st.st_mode):
            path.chmod(st.st_mode & 0o700)  # the owner's bits only
    except FileNotFoundError:
        pass
    except PermissionError:  # another user's file: theirs to set
        pass


def _create_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        prepare_sqlite_file(url)
        # As many connections as the API has threads (SQLite's are cheap), so a burst
        # waits on SQLite's write lock, never on the pool.
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            pool_size=5,
            max_overflow=POOL_MAX_CONNECTIONS - 5,
            pool_timeout=POOL_TIMEOUT_S,
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    # Sized for the API's thread pool; no pre-ping round trip on every checkout: a dropped
    # connection fails one query and the pool replaces it.
    return create_engine(
        url,
        pool_size=20,
        max_overflow=POOL_MAX_CONNECTIONS - 20,
        pool_timeout=POOL_TIMEOUT_S,
        pool_recycle=1800,
    )


def get_engine(url: str) -> Engine:
    with _lock:
        if url not in _engines:
            _engines[url] = _create_engine(url)
        return _engines[url]


def get_sessionmaker(url: str) -> sessionmaker[Session]:
    engine = get_engine(url)
    with _lock:
        if url not in _sessionmakers:
            _sessionmakers[url] = sessionmaker(engine, expire_on_commit=False)
        return _sessionmakers[url]


@contextmanager
def session_scope(url: str) -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    session = get_sessionmaker(url)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def dispose_engines() -> None:
    """Drop pooled connections inherited across a fork (Celery prefork children)."""
    with _lock:
        for engine in _engines.values():
            engine.dispose(close=False)
