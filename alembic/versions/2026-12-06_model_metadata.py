"""fitted_models.labels: the caller's labels on a model (the API's `metadata`), and an
index to filter by them

Revision ID: 0008_model_metadata
Revises: 0007_job_metadata
Create Date: 2026-12-06 14:30:00

A model starts with the labels its fit job has when the model is stored, which is
as the job ends (the same statement): a trigger copies them into a model inserted
without labels, so a worker of the release before this one, which knows nothing of
labels and may still be running during a rolling upgrade, stores labelled models
too. The models that exist are given their fit jobs' labels once, here. As for
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
    # Reads the job by its key while the job's ending UPDATE holds its row: the labels
    # are those the end's message and webhook carry.
    op.execute(
        """
        CREATE FUNCTION fitted_models_labels_from_fit() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            NEW.labels := (SELECT labels FROM jobs WHERE id = NEW.fit_job_id);
            RETURN NEW;
        END $$;
        CREATE TRIGGER fitted_models_labels_from_fit BEFORE INSERT ON fitted_models
        FOR EACH ROW WHEN (NEW.labels IS NULL) EXECUTE FUNCTION fitted_models_labels_from_fit();
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
    op.execute("DROP TRIGGER fitted_models_labels_from_fit ON fitted_models")
    op.execute("DROP FUNCTION fitted_models_labels_from_fit()")
    op.drop_index("ix_fitted_models_labels", table_name="fitted_models")
    op.drop_column("fitted_models", "labels")
