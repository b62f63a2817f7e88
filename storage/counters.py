"""Counters with a time-to-live shared by every process: the router's cooldowns, failures,
calls in flight, latency averages and rpm windows, and the API's per-key rate limits.

Three primitives are enough for all of them. Redis holds them in production; the database
holds them on the embedded default (SQLite has no Redis beside it).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from datetime import timedelta

import redis
from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from storage.db import get_sessionmaker
from storage.models import RouterCounter, utcnow

__all__ = ["Counters", "RedisCounters", "DatabaseCounters", "open_counters"]


class Counters(ABC):
    @abstractmethod
    def incr(self, key: str, amount: float, ttl_s: float) -> float:
        """Add `amount` (creating the counter at 0 if absent or expired); return the new
        value. The TTL is set when the counter is created and kept on later increments."""

    def get(self, key: str) -> float | None:
        return self.get_many([key])[0]

    @abstractmethod
    def get_many(self, keys: list[str]) -> list[float | None]:
        """Current values, None for absent or expired counters, in the order asked."""

    @abstractmethod
    def set(self, key: str, value: float, ttl_s: float) -> None: ...

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""


class RedisCounters(Counters):
    # INCRBYFLOAT and a first-time EXPIRE in one round trip, atomically.
    _INCR = """
    local value = redis.call('INCRBYFLOAT', KEYS[1], ARGV[1])
    if redis.call('PTTL', KEYS[1]) < 0 then
        redis.call('PEXPIRE', KEYS[1], ARGV[2])
    end
    return value
    """

    def __init__(self, url: str, prefix: str = "speechq:counters:") -> None:
        self.client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        self.prefix = prefix
        self._incr = self.client.register_script(self._INCR)

    def incr(self, key: str, amount: float, ttl_s: float) -> float:
        ttl_ms = max(1, int(ttl_s * 1000))
        return float(self._incr(keys=[self.prefix + key], args=[amount, ttl_ms]))

    def get_many(self, keys: list[str]) -> list[float | None]:
        if not keys:
            return []
        values = self.client.mget([self.prefix + key for key in keys])
        return [None if value is None else float(value) for value in values]

    def set(self, key: str, value: float, ttl_s: float) -> None:
        self.client.set(self.prefix + key, value, px=max(1, int(ttl_s * 1000)))

    def close(self) -> None:
        self.client.close()


class DatabaseCounters(Counters):
    def __init__(self, database_url: str) -> None:
        self.sessionmaker = get_sessionmaker(database_url)
        self.dialect = postgresql if database_url.startswith("postgresql") else sqlite

    def incr(self, key: str, amount: float, ttl_s: float) -> float:
        now = utcnow()
        with self.sessionmaker.begin() as session:
            self._drop_expired(session, key)
            insert = self.dialect.insert(RouterCounter).values(
                key=key, value=amount, expires_at=now + timedelta(seconds=ttl_s)
            )
            upsert = insert.on_conflict_do_update(
                index_elements=[RouterCounter.key],
                set_={"value": RouterCounter.value + amount},
            ).returning(RouterCounter.value)
            return float(session.execute(upsert).scalar_one())

    def get_many(self, keys: list[str]) -> list[float | None]:
        if not keys:
            return []
        with self.sessionmaker() as session:
            rows = session.execute(
                select(RouterCounter.key, RouterCounter.value).where(
                    RouterCounter.key.in_(keys), RouterCounter.expires_at > utcnow()
                )
            )
            found = {key: float(value) for key, value in rows}
        return [found.get(key) for key in keys]

    def set(self, key: str, value: float, ttl_s: float) -> None:
        expires_at = utcnow() + timedelta(seconds=ttl_s)
        with self.sessionmaker.begin() as session:
            insert = self.dialect.insert(RouterCounter).values(
                key=key, value=value, expires_at=expires_at
            )
            session.execute(
                insert.on_conflict_do_update(
                    index_elements=[RouterCounter.key],
                    set_={"value": value, "expires_at": expires_at},
                )
            )

    @staticmethod
    def _drop_expired(session: Session, key: str) -> None:
        session.execute(
            delete(RouterCounter).where(
                RouterCounter.key == key, RouterCounter.expires_at <= utcnow()
            )
        )


def open_counters(*, broker_url: str, database_url: str) -> Counters:
    if broker_url.startswith(("redis://", "rediss://")):
        return RedisCounters(broker_url)
    return DatabaseCounters(database_url)
