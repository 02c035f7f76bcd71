"""Whether the database holds the schema this release was written for.

`/readyz` asks on every poll, so it costs one round trip and no file reads: the
migrations' revisions are listed here rather than read from alembic/ (an
installed API need not ship the scripts). tests/services/test_migrations.py
fails until a new migration is added to REVISIONS.
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.exc import ProgrammingError

from shared.core.db import get_engine

# Every migration of alembic/versions/, oldest first; the last is this release's head.
REVISIONS = (
    "0001",
    "0002_token_fingerprint",
    "0003_scheduling",
    "0004_job_metrics_totals",
    "0005_model_text_columns",
    "0006_api_key_names",
    "0007_job_metadata",
    "0008_model_metadata",
)
HEAD = REVISIONS[-1]
# The advisory lock `tabpfn-api migrate` holds while it upgrades (alembic/env.py): two
# containers that start together take turns, and the second finds nothing to do.
# Advisory locks are per database; any fixed 64-bit number no other code uses will do.
MIGRATION_LOCK = 0x7461_6270_666E_6D67  # "tabpfnmg"
# PostgreSQL's SQLSTATE for a table that does not exist.
_UNDEFINED_TABLE = "42P01"


def schema_problem() -> str | None:
    """Why the database is not ready for this release, in a line for an operator; None
    when it is. Raises (as any query does) when the database cannot be reached.

    A revision this release does not know is taken for a newer release's, migrated
    first in a rolling upgrade: this release keeps serving until it is replaced.
    """
    with get_engine().connect() as connection:
        try:
            found = connection.execute(text("select version_num from alembic_version")).scalars()
            revisions = set(found)
        except ProgrammingError as exc:
            if getattr(exc.orig, "pgcode", None) != _UNDEFINED_TABLE:
                raise
            revisions = set()
    if not revisions:
        return "not migrated: run `tabpfn-api migrate`"
    behind = revisions & set(REVISIONS[:-1])
    if behind:
        return (
            f"schema at revision {', '.join(sorted(behind))}, this release needs {HEAD}: "
            "run `tabpfn-api migrate`"
        )
    return None
