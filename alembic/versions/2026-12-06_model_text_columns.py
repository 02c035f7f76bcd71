"""fitted_models.text_columns: a test set's columns the model was fitted on as text stay text

Revision ID: 0005_model_text_columns
Revises: 0004_job_metrics_totals
Create Date: 2026-12-06 04:00:00

Existing models stay NULL (not recorded): their test sets are read as before.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005_model_text_columns"
down_revision: str | None = "0004_job_metrics_totals"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "fitted_models",
        sa.Column("text_columns", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    )


def downgrade() -> None:
    op.drop_column("fitted_models", "text_columns")
