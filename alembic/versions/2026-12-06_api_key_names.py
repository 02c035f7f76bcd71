"""api_keys.name: a label its owner gives a key, to tell their keys apart

Revision ID: 0006_api_key_names
Revises: 0005_model_text_columns
Create Date: 2026-12-06 10:30:00

Existing keys stay NULL (unnamed), as do keys created without a name.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_api_key_names"
down_revision: str | None = "0005_model_text_columns"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("api_keys", sa.Column("name", sa.String(100), nullable=True))


def downgrade() -> None:
    op.drop_column("api_keys", "name")
