"""Dependencies shared by the routes: one DB session per request, and the caller."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from shared.accounts.users import authenticate
from shared.core.db import session_scope
from shared.core.errors import Unauthorized
from shared.core.rate_limit import check_bad_auth_brake, check_key_rate, record_bad_auth
from shared.models import User


def get_session() -> Iterator[Session]:
    with session_scope() as session:
        yield session


# scope="function": commit before the response is sent, so a client that got
# a 201 can use what it created at once (the default "request" scope commits
# only after the response went out).
SessionDep = Annotated[Session, Depends(get_session, scope="function")]

_bearer = HTTPBearer(auto_error=False, description="An API key from POST /auth/setup.")


def get_current_user(
    request: Request,
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> User:
    client_ip = request.client.host if request.client else "unknown"
    check_bad_auth_brake(client_ip)
    if credentials is None:
        raise Unauthorized("Send your API key as 'Authorization: Bearer <api_key>'.")
    try:
        user, key_id = authenticate(session=session, api_key=credentials.credentials)
    except Unauthorized:
        record_bad_auth(client_ip)
        raise
    check_key_rate(key_id)
    request.state.api_key_id = key_id
    request.state.user = user  # for what a route does after its session closed (api.submit_wait)
    return user


CurrentUser = Annotated[User, Depends(get_current_user)]


def get_caller(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> User:
    """The caller, authenticated in a session of its own that is closed at once.

    For routes that wait (long-poll, event streams) or call the upstream
    (`/usage`, token replacement, model deletion): they must not hold a pooled
    database connection while they wait. `SessionDep` (and `CurrentUser`, which
    authenticates in it) keeps its connection until the route returns.
    """
    with session_scope() as session:
        return get_current_user(request, session, credentials)


Caller = Annotated[User, Depends(get_caller)]

# The bearer credentials alone, for a route that authenticates in a session it
# opens anyway (the long-poll: the key and the job in one transaction).
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
