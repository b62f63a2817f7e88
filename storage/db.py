"""Database engine and sessions. SQLite (embedded) gets WAL and a busy timeout, since
the API, the worker and beat share one file."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

__all__ = ["get_engine", "get_sessionmaker", "session_scope", "dispose_engines"]

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


def _create_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    # Sized for the API's thread pool (40); no pre-ping round trip on every checkout: a
    # dropped connection fails one query and the pool replaces it.
    return create_engine(url, pool_size=20, max_overflow=30, pool_recycle=1800)


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
