"""TabPFN tokens and secrets for tests: one place, so every importer shares one supply.

(tests/conftest.py may be imported twice, as `conftest` by pytest and as
`tests.conftest`; state kept there would exist twice and hand the same
"unused" token to two tests, whose accounts would then be one.)
"""

from __future__ import annotations

import uuid

# Tokens the emulator of the session's stack accepts: one TabPFN account each.
TOKENS = ["demo-token", "alice-token", "bob-token", "carol-token", "dave-token"]
# Unique per run: token fingerprints (and so pacing budgets in Redis) of parallel
# runs sharing one Redis never meet.
SECRET_KEY = f"test-secret-key-not-for-production-{uuid.uuid4().hex[:8]}"

# Setup with a known token recovers its account, so tests that need an account
# of their own each take an unused token (register() without one).
FRESH_TOKENS = [f"fresh-token-{i:04d}" for i in range(1500)]
_unused = iter(FRESH_TOKENS)

# Every secret the suite was handed, for the test that searches logs and data for them.
ISSUED_SECRETS: list[str] = []


def fresh_token() -> str:
    """A TabPFN token the emulator accepts and no account here holds yet."""
    token = next(_unused, None)
    assert token is not None, (
        "FRESH_TOKENS used up: make the list in tests/support/tokens.py longer"
    )
    return token
