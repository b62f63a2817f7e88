"""audiobooks

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-25 15:44:55.536759
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "audiobook_dispatch_locks",
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("touched_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("model"),
    )
    op.create_table(
        "audiobook_segment_cache",
        sa.Column("tenant", sa.String(length=250), nullable=False),
        sa.Column("cache_key", sa.String(length=64), nullable=False),
        sa.Column("object_key", sa.Text(), nullable=False),
        sa.Column("sample_rate", sa.Integer(), nullable=False),
        sa.Column("duration_seconds", sa.Float(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("tenant", "cache_key"),
    )
    with op.batch_alter_table("audiobook_segment_cache", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_audiobook_segment_cache_last_used_at"), ["last_used_at"], unique=False
        )

    op.create_table(
        "audiobooks",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("voice", sa.String(length=200), nullable=True),
        sa.Column("response_format", sa.String(length=10), nullable=False),
        sa.Column("speed", sa.Float(), nullable=False),
        sa.Column("options", sa.JSON(), nullable=False),
        sa.Column("tenant", sa.String(length=250), nullable=False),
        sa.Column("key_id", sa.String(length=40), nullable=True),
        sa.Column("team", sa.String(length=200), nullable=True),
        sa.Column("user", sa.String(length=256), nullable=True),
        sa.Column("metadata", sa.JSON(), nullable=True),
        sa.Column("webhook_url", sa.Text(), nullable=True),
        sa.Column("max_cost_usd", sa.Float(), nullable=True),
        sa.Column("idempotency_key", sa.String(length=255), nullable=True),
        sa.Column("request_hash", sa.String(length=64), nullable=True),
        sa.Column("estimated_cost_usd", sa.Float(), nullable=False),
        sa.Column("round", sa.Integer(), nullable=False),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.Column("error", sa.JSON(), nullable=True),
        sa.Column("assembly_runs", sa.Integer(), nullable=False),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint(
            "tenant", "idempotency_key", name="uq_audiobooks_tenant_idempotency_key"
        ),
    )
    with op.batch_alter_table("audiobooks", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_audiobooks_status"), ["status"], unique=False)
        batch_op.create_index("ix_audiobooks_tenant_id", ["tenant", "id"], unique=False)

    op.create_table(
        "audiobook_chapters",
        sa.Column("book_id", sa.String(length=40), nullable=False),
        sa.Column("index", sa.Integer(), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("voice", sa.String(length=200), nullable=True),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("characters", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("assembly_runs", sa.Integer(), nullable=False),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("duration_seconds", sa.Float(), nullable=True),
        sa.Column("loudness_lufs", sa.Float(), nullable=True),
        sa.Column("gain_db", sa.Float(), nullable=True),
        sa.Column("part_key", sa.Text(), nullable=True),
        sa.Column("content_key", sa.Text(), nullable=True),
        sa.Column("content_bytes", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(["book_id"], ["audiobooks.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("book_id", "index"),
    )
    op.create_table(
        "audiobook_segments",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("book_id", sa.String(length=40), nullable=False),
        sa.Column("chapter_index", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("index", sa.Integer(), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("voice", sa.String(length=200), nullable=True),
        sa.Column("is_title", sa.Boolean(), nullable=False),
        sa.Column("pause_after_ms", sa.Integer(), nullable=False),
        sa.Column("cache_key", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("runs", sa.Integer(), nullable=False),
        sa.Column("deployment", sa.String(length=200), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("queued_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("cached", sa.Boolean(), nullable=False),
        sa.Column("cost_usd", sa.Float(), nullable=False),
        sa.Column("error", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(
            ["book_id", "chapter_index"],
            ["audiobook_chapters.book_id", "audiobook_chapters.index"],
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("audiobook_segments", schema=None) as batch_op:
        batch_op.create_index(
            "ix_audiobook_segments_chapter",
            ["book_id", "chapter_index", "version", "index"],
            unique=False,
        )
        batch_op.create_index(
            "ix_audiobook_segments_status_model", ["status", "model", "id"], unique=False
        )
        batch_op.create_index(
            "ix_audiobook_segments_deployment_status", ["deployment", "status"], unique=False
        )

    with op.batch_alter_table("usage_records", schema=None) as batch_op:
        batch_op.add_column(sa.Column("audiobook_id", sa.String(length=40), nullable=True))
        batch_op.alter_column("job_id", existing_type=sa.VARCHAR(length=40), nullable=True)
        batch_op.create_unique_constraint("uq_usage_audiobook_call", ["audiobook_id", "call_key"])
        batch_op.create_foreign_key(
            "fk_usage_records_audiobook_id",
            "audiobooks",
            ["audiobook_id"],
            ["id"],
            ondelete="CASCADE",
        )

    with op.batch_alter_table("webhook_deliveries", schema=None) as batch_op:
        batch_op.add_column(sa.Column("audiobook_id", sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column("round", sa.Integer(), nullable=False, server_default="0"))
        batch_op.alter_column("job_id", existing_type=sa.VARCHAR(length=40), nullable=True)
        batch_op.create_unique_constraint(
            "uq_webhook_deliveries_audiobook_round_type", ["audiobook_id", "round", "type"]
        )
        batch_op.create_foreign_key(
            "fk_webhook_deliveries_audiobook_id",
            "audiobooks",
            ["audiobook_id"],
            ["id"],
            ondelete="CASCADE",
        )


def downgrade() -> None:
    # Rows that belong to audiobooks cannot outlive them (job_id becomes required again).
    op.execute("DELETE FROM webhook_deliveries WHERE job_id IS NULL")
    op.execute("DELETE FROM usage_records WHERE job_id IS NULL")
    with op.batch_alter_table("webhook_deliveries", schema=None) as batch_op:
        batch_op.drop_constraint("fk_webhook_deliveries_audiobook_id", type_="foreignkey")
        batch_op.drop_constraint("uq_webhook_deliveries_audiobook_round_type", type_="unique")
        batch_op.alter_column("job_id", existing_type=sa.VARCHAR(length=40), nullable=False)
        batch_op.drop_column("round")
        batch_op.drop_column("audiobook_id")

    with op.batch_alter_table("usage_records", schema=None) as batch_op:
        batch_op.drop_constraint("fk_usage_records_audiobook_id", type_="foreignkey")
        batch_op.drop_constraint("uq_usage_audiobook_call", type_="unique")
        batch_op.alter_column("job_id", existing_type=sa.VARCHAR(length=40), nullable=False)
        batch_op.drop_column("audiobook_id")

    with op.batch_alter_table("audiobook_segments", schema=None) as batch_op:
        batch_op.drop_index("ix_audiobook_segments_deployment_status")
        batch_op.drop_index("ix_audiobook_segments_status_model")
        batch_op.drop_index("ix_audiobook_segments_chapter")

    op.drop_table("audiobook_segments")
    op.drop_table("audiobook_chapters")
    with op.batch_alter_table("audiobooks", schema=None) as batch_op:
        batch_op.drop_index("ix_audiobooks_tenant_id")
        batch_op.drop_index(batch_op.f("ix_audiobooks_status"))

    op.drop_table("audiobooks")
    with op.batch_alter_table("audiobook_segment_cache", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audiobook_segment_cache_last_used_at"))

    op.drop_table("audiobook_segment_cache")
    op.drop_table("audiobook_dispatch_locks")
