"""api/ and worker/ hold no SQL: every statement lives in a shared/ service or
repository function that routes and tasks call (docs/architecture.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MODULES = sorted(p for d in ("api", "worker") for p in (ROOT / d).rglob("*.py"))
# Types and exceptions are fine: they build no statement.
ALLOWED_IMPORTS = {"sqlalchemy.orm": {"Session"}, "sqlalchemy.exc": None}
# Methods that run a statement, on a session or a connection.
RUNS_SQL = {"execute", "scalar", "scalars", "get", "add", "flush", "merge", "delete", "commit"}


def _sql_in(path: Path) -> list[tuple[int, str]]:
    """(line, what) of each SQL import or statement call in a module."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sqlalchemy"):
            allowed = ALLOWED_IMPORTS.get(node.module, set())
            names = {a.name for a in node.names}
            if allowed is not None and names - allowed:
                found.append((node.lineno, f"from {node.module} import {sorted(names - allowed)}"))
        elif isinstance(node, ast.Import):
            sql = [a.name for a in node.names if a.name.startswith("sqlalchemy")]
            found += [(node.lineno, f"import {name}") for name in sql]
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in RUNS_SQL
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id in {"session", "connection", "db"}
        ):
            found.append((node.lineno, f"{node.func.value.id}.{node.func.attr}"))
    return found


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_sql_statements(path):
    relative = str(path.relative_to(ROOT))
    found = _sql_in(path)
    assert found == [], f"{relative} runs SQL itself; move it into shared/: {found}"


def test_the_scan_sees_sql(tmp_path):
    # The scan itself must catch each form, or the test above cannot fail.
    module = tmp_path / "route.py"
    module.write_text(
        "from sqlalchemy import select, text\n"
        "import sqlalchemy\n"
        "def f(session):\n"
        "    session.execute(select(1))\n"
        "    session.get(object, 1)\n"
        "    session.add(object())\n"
        "    session.commit()\n"
    )
    assert [what for _, what in _sql_in(module)] == [
        "from sqlalchemy import ['select', 'text']",
        "import sqlalchemy",
        "session.execute",
        "session.get",
        "session.add",
        "session.commit",
    ]
