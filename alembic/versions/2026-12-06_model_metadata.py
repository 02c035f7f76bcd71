"""fitted_models.labels: the caller's labels on a model (the API's `metadata`), and an
index to filter by them

Revision ID: 0008_model_metadata
Revises: 0007_job_metadata
Create Date: 2026-12-06 14:30:00

A model starts with the labels its fit job had when it ended (the ending statement
copies them); the existing models are given their fit jobs' labels the same way, so
`GET /models?metadata=key:value` finds a model whatever release fitted it. As for
jobs, the GIN index covers only the models that have labels.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0008_model_metadata"
down_revision: str | None = "0007_job_metadata"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("fitted_models", sa.Column("labels", postgresql.JSONB(), nullable=True))
    op.execute(
        """
        UPDATE fitted_models m SET labels = j.labels
        FROM jobs j WHERE j.id = m.fit_job_id AND j.labels IS NOT NULL
        """
    )
    op.create_index(
        "ix_fitted_models_labels",
        "fitted_models",
        ["labels"],
        postgresql_using="gin",
        postgresql_ops={"labels": "jsonb_path_ops"},
        postgresql_where=sa.text("labels IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_fitted_models_labels", table_name="fitted_models")
    op.drop_column("fitted_models", "labels")
