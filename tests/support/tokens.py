"""TabPFN tokens for tests: one place, so every importer shares one supply.

(tests/conftest.py may be imported twice, as `conftest` by pytest and as
`tests.conftest` by test modules; state kept there would exist twice and hand
the same "unused" token to two tests, whose accounts would then be one.)
"""

from __future__ import annotations

# Setup with a known token recovers its account, so tests that need an account
# of their own each take an unused token (register() without one).
FRESH_TOKENS = [f"fresh-token-{i:04d}" for i in range(1500)]
_unused = iter(FRESH_TOKENS)


def fresh_token() -> str:
    """A TabPFN token the emulator accepts and no account here holds yet."""
    token = next(_unused, None)
    assert token is not None, (
        "FRESH_TOKENS used up: make the list in tests/support/tokens.py longer"
    )
    return token
