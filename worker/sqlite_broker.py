"""kombu's SQLAlchemy transport, tuned for SQLite shared by several processes.

The stock transport passes every transport option to `create_engine` (so `polling_interval`
cannot be set) and opens SQLite without WAL or a busy timeout, so concurrent publishers
hit "database is locked" often. It also sets itself up racily: the API, the worker and
beat start together and each creates the tables and the queue rows it uses; the losers
got "table already exists", "database is locked" or a UNIQUE violation, and the last is
not a connection error to Celery, so a worker could stop consuming for good at start.
This subclass polls faster, opens the file the way `storage.db` does (made 0600 in a
0700 folder first, since messages carry job bodies), and retries its setup until it
reads what another process made. It is registered under the `sqla` alias,
so `sqla+sqlite:///…` uses it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from kombu.transport import TRANSPORT_ALIASES
from kombu.transport.sqlalchemy import Channel as _Channel
from kombu.transport.sqlalchemy import Transport as _Transport
from sqlalchemy import create_engine, event
from sqlalchemy.exc import IntegrityError, OperationalError

from storage.db import prepare_sqlite_file

__all__ = ["Channel", "Transport", "register"]

POLLING_INTERVAL_S = 0.1
# Setup races last as long as another process's CREATE TABLE or INSERT: milliseconds.
SETUP_ATTEMPTS = 20
SETUP_PAUSE_S = 0.05

T = TypeVar("T")


def _pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _retry_setup(step: Callable[[], T], on_error: Callable[[], None] = lambda: None) -> T:
    """Run a setup step again while another process is doing the same thing."""
    for attempt in range(SETUP_ATTEMPTS):
        try:
            return step()
        except (IntegrityError, OperationalError):
            on_error()
            if attempt == SETUP_ATTEMPTS - 1:
                raise
            time.sleep(SETUP_PAUSE_S * (attempt + 1))
    raise AssertionError("unreachable")


class Channel(_Channel):
    def _engine_from_config(self) -> Any:
        url = self.connection.client.hostname
        if not url.startswith("sqlite"):
            return super()._engine_from_config()
        prepare_sqlite_file(url)
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
        event.listen(engine, "connect", _pragmas)
        return engine

    def _open(self) -> Any:
        # `create_all` checks, then creates: another process may create in between.
        return _retry_setup(super()._open)

    def _get_or_create(self, queue: str) -> Any:
        def find_or_insert() -> Any:
            found = self._find_queue(queue)
            if found is not None:
                return found
            self.session.add(self.queue_cls(queue))
            self.session.commit()  # a UNIQUE violation here means another process won
            return self._find_queue(queue)

        return _retry_setup(find_or_insert, on_error=self.session.rollback)

    def _find_queue(self, queue: str) -> Any:
        return self.session.query(self.queue_cls).filter(self.queue_cls.name == queue).first()


class Transport(_Transport):
    Channel = Channel
    polling_interval = POLLING_INTERVAL_S


def register() -> None:
    TRANSPORT_ALIASES["sqla"] = f"{__name__}:Transport"
    TRANSPORT_ALIASES["sqlalchemy"] = f"{__name__}:Transport"
