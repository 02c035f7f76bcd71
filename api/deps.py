"""Dependencies shared by the routes: one DB session per request, and the caller."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from shared.db import session_scope
from shared.errors import Unauthorized
from shared.models import User
from shared.users import authenticate


def get_session() -> Iterator[Session]:
    with session_scope() as session:
        yield session


# scope="function": commit before the response is sent, so a client that got
# a 201 can use what it created at once (the default "request" scope commits
# only after the response went out).
SessionDep = Annotated[Session, Depends(get_session, scope="function")]

_bearer = HTTPBearer(auto_error=False, description="An API key from POST /auth/setup.")


def get_current_user(
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> User:
    if credentials is None:
        raise Unauthorized("Send your API key as 'Authorization: Bearer <api_key>'.")
    return authenticate(session=session, api_key=credentials.credentials)


CurrentUser = Annotated[User, Depends(get_current_user)]
