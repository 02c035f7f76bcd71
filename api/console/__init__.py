"""The web console: static pages at /console that use the public API like any client.

The assets ship inside this package (package data), so a wheel carries them and
the API process serves them: no other server, no build step, nothing fetched
from another origin. Every response from here carries a strict
Content-Security-Policy: scripts, styles and requests only from this origin,
no inline code, no framing.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

STATIC_DIR = Path(__file__).parent / "static"

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # The console's URLs hold job ids; they are nobody else's business.
    "Referrer-Policy": "no-referrer",
    # Revalidate every time (ETags make that cheap), so an upgrade is seen at once.
    "Cache-Control": "no-cache",
}


class ConsoleFiles(StaticFiles):
    """Static files with the console's security headers on every answer."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(SECURITY_HEADERS)
        return response


def mount_console(app: FastAPI) -> None:
    """Serve the console at /console/ (a request for /console is redirected there)."""
    app.mount("/console", ConsoleFiles(directory=STATIC_DIR, html=True), name="console")
