"""jobs.labels: the caller's key-value labels on a job (the API's `metadata`), and an
index to filter by them

Revision ID: 0007_job_metadata
Revises: 0006_api_key_names
Create Date: 2026-12-06 12:30:00

Named `labels` in the schema because `metadata` is SQLAlchemy's declarative
attribute. Existing jobs stay NULL (no metadata). The GIN index (jsonb_path_ops, for `@>`)
covers only the jobs that have metadata, so jobs without any cost it nothing.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0007_job_metadata"
down_revision: str | None = "0006_api_key_names"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("labels", postgresql.JSONB(), nullable=True))
    op.create_index(
        "ix_jobs_labels",
        "jobs",
        ["labels"],
        postgresql_using="gin",
        postgresql_ops={"labels": "jsonb_path_ops"},
        postgresql_where=sa.text("labels IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_jobs_labels", table_name="jobs")
    op.drop_column("jobs", "labels")
