"""users.tabpfn_token_fingerprint: setup with a known token finds its account

Revision ID: 0002_token_fingerprint
Revises: 0001
Create Date: 2026-12-02 20:00:00

Existing rows stay NULL: the fingerprint is keyed from SECRET_KEY, which a
migration does not have. The API fills them at the first setup that misses
(shared.accounts.users), and `tabpfn-api rotate-secret` fills or recomputes them all.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_token_fingerprint"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "users", sa.Column("tabpfn_token_fingerprint", sa.String(length=64), nullable=True)
    )
    op.create_index(
        op.f("ix_users_tabpfn_token_fingerprint"), "users", ["tabpfn_token_fingerprint"]
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_users_tabpfn_token_fingerprint"), table_name="users")
    op.drop_column("users", "tabpfn_token_fingerprint")
