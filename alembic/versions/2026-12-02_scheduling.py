"""Scheduling: round-robin and pacing state on users, wait reasons on jobs

Revision ID: 0003_scheduling
Revises: 0002_token_fingerprint
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_scheduling"
down_revision: str | None = "0002_token_fingerprint"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "users",
        sa.Column(
            "last_served_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("'1970-01-01 00:00:00+00'"),
            nullable=False,
        ),
    )
    op.create_index("ix_users_last_served_at", "users", ["last_served_at"], unique=False)
    op.add_column(
        "users", sa.Column("upstream_paused_until", sa.DateTime(timezone=True), nullable=True)
    )
    op.add_column("jobs", sa.Column("wait_reason", sa.String(length=32), nullable=True))
    op.create_index(
        "ix_jobs_queued_user_id_created_at",
        "jobs",
        ["user_id", "created_at"],
        unique=False,
        postgresql_where=sa.text("status = 'queued'"),
    )
    op.create_index(
        "ix_jobs_running_user_id",
        "jobs",
        ["user_id"],
        unique=False,
        postgresql_where=sa.text("status = 'running'"),
    )


def downgrade() -> None:
    op.drop_index("ix_jobs_running_user_id", table_name="jobs")
    op.drop_index("ix_jobs_queued_user_id_created_at", table_name="jobs")
    op.drop_column("jobs", "wait_reason")
    op.drop_column("users", "upstream_paused_until")
    op.drop_index("ix_users_last_served_at", table_name="users")
    op.drop_column("users", "last_served_at")
