"""kombu's SQLAlchemy transport, tuned for SQLite shared by several processes.

The stock transport passes every transport option to `create_engine` (so `polling_interval`
cannot be set) and opens SQLite without WAL or a busy timeout, so concurrent publishers
hit "database is locked" often. This subclass polls faster and opens the file the way
`storage.db` does. It is registered under the `sqla` alias, so `sqla+sqlite:///…` uses it.
"""

from __future__ import annotations

from typing import Any

from kombu.transport import TRANSPORT_ALIASES
from kombu.transport.sqlalchemy import Channel as _Channel
from kombu.transport.sqlalchemy import Transport as _Transport
from sqlalchemy import create_engine, event

__all__ = ["Channel", "Transport", "register"]

POLLING_INTERVAL_S = 0.1


def _pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


class Channel(_Channel):
    def _engine_from_config(self) -> Any:
        url = self.connection.client.hostname
        if not url.startswith("sqlite"):
            return super()._engine_from_config()
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
        event.listen(engine, "connect", _pragmas)
        return engine


class Transport(_Transport):
    Channel = Channel
    polling_interval = POLLING_INTERVAL_S


def register() -> None:
    TRANSPORT_ALIASES["sqla"] = f"{__name__}:Transport"
    TRANSPORT_ALIASES["sqlalchemy"] = f"{__name__}:Transport"
