"""The schema exists only through Alembic: up, down and up again on SQLite and PostgreSQL,
and the models agree with the migrated schema."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from storage.migrate import downgrade, upgrade
from storage.models import Base
from tests.services import temporary_postgres_database

TABLES = {"api_keys", "jobs", "provider_attempts", "usage_records", "router_counters"}
TABLES |= {"webhook_deliveries", "webhook_attempts"}
TABLES |= {"audiobooks", "audiobook_chapters", "audiobook_segments", "audiobook_segment_cache"}
TABLES |= {"audiobook_dispatch_locks"}


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/migrations.db"
    else:
        with temporary_postgres_database() as url:
            yield url


def _tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def test_upgrade_downgrade_upgrade(database_url: str) -> None:
    upgrade(database_url)
    assert _tables(database_url) == TABLES
    downgrade(database_url, "base")
    assert _tables(database_url) == set()
    upgrade(database_url)
    assert _tables(database_url) == TABLES


def test_models_match_migrated_schema(database_url: str) -> None:
    upgrade(database_url)
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            assert compare_metadata(context, Base.metadata) == []
    finally:
        engine.dispose()
