"""The real services the tests use: PostgreSQL and Redis on this machine.

Under CI=true a missing service fails the test; elsewhere it skips it."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

POSTGRES_ADMIN_URL = os.environ.get(
    "SPEECHQ_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379


def reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def require(host: str, port: int, name: str) -> None:
    if reachable(host, port):
        return
    message = f"{name} is not running on {host}:{port} (start it with ./scripts/services.sh)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def require_postgres() -> None:
    require("127.0.0.1", 5432, "PostgreSQL")


def require_redis() -> None:
    require(REDIS_HOST, REDIS_PORT, "Redis")


@contextmanager
def temporary_postgres_database() -> Iterator[str]:
    """A fresh, empty database; dropped afterwards. Yields its SQLAlchemy URL."""
    import psycopg

    require_postgres()
    name = f"speechq_test_{uuid.uuid4().hex[:10]}"
    admin = POSTGRES_ADMIN_URL.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
