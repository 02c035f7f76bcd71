"""Fitted models of the caller."""

from __future__ import annotations

import uuid
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request, Response, status

from api.deps import Caller, CurrentUser, SessionDep
from api.schemas import MERGE_PATCH_BODY, ErrorOut, LabelsUpdate, ModelOut
from shared.jobs import list_cursor
from shared.jobs import submit as jobs
from shared.jobs.job_metadata import parse_filters
from shared.jobs.relabel import relabel_model
from shared.models import FittedModel

router = APIRouter(prefix="/models", tags=["models"])


def model_out(model: FittedModel) -> ModelOut:
    return ModelOut.model_validate(model, from_attributes=True)


@router.get(
    "",
    summary="List your fitted models, newest first",
    responses={
        404: {"model": ErrorOut, "description": "model_not_found: `before` is no model of yours"}
    },
)
def list_models(
    request: Request,
    response: Response,
    session: SessionDep,
    user: CurrentUser,
    limit: Annotated[
        int | None, Query(ge=1, le=1000, description="At most this many; without it, all of them")
    ] = None,
    before: Annotated[
        str | None,
        Query(
            max_length=100,
            description="Cursor: from the `Link` header of the page before (or the id of "
            "its last model)",
        ),
    ] = None,
    metadata: Annotated[
        list[str] | None,
        Query(
            description="key:value (repeatable): only models whose metadata holds every "
            "pair, e.g. ?metadata=name:churn."
        ),
    ] = None,
) -> list[ModelOut]:
    """With `limit`, a page that has more after it carries the next page's address in a
    `Link` header (`rel="next"`, RFC 8288); the last page has none."""
    # One more than asked: whether a next page exists, without sending an empty one.
    wanted = None if limit is None else limit + 1
    filters = metadata or []
    page = jobs.list_models(
        session=session,
        user=user,
        limit=wanted,
        before=list_cursor.decode(before),
        labels=parse_filters(filters),
    )
    if limit is not None and len(page) > limit:
        page = page[:limit]
        # Where the page ended, not only its last model: the next page follows even if
        # that model is deleted meanwhile (shared.jobs.list_cursor).
        cursor = list_cursor.encode(page[-1].created_at, page[-1].id)
        query = urlencode(
            [("limit", limit), ("before", cursor), *(("metadata", f) for f in filters)]
        )
        response.headers["Link"] = f'<{request.url.path}?{query}>; rel="next"'
    return [model_out(m) for m in page]


@router.get(
    "/{model_id}",
    summary="A fitted model",
    responses={404: {"model": ErrorOut, "description": "model_not_found"}},
)
def get_model(model_id: uuid.UUID, session: SessionDep, user: CurrentUser) -> ModelOut:
    return model_out(jobs.get_model(session=session, user=user, model_id=model_id))


@router.patch(
    "/{model_id}",
    summary="Change a fitted model's metadata",
    openapi_extra=MERGE_PATCH_BODY,
    responses={
        404: {"model": ErrorOut, "description": "model_not_found"},
        422: {"model": ErrorOut, "description": "validation_error: the labels' rules"},
    },
)
def update_model(
    model_id: uuid.UUID, body: LabelsUpdate, session: SessionDep, user: CurrentUser
) -> ModelOut:
    """`metadata` is merged into the model's labels as a JSON Merge Patch (RFC 7396):
    `{"metadata": {"name": "churn", "stage": null}}` sets `name` and removes `stage`;
    `{"metadata": null}` removes them all. A model starts with its fit job's labels.
    `Content-Type: application/json` or `application/merge-patch+json`."""
    if "metadata" not in body.model_fields_set:  # nothing to change: the model as it is
        return get_model(model_id, session, user)
    return model_out(
        relabel_model(session=session, user=user, model_id=model_id, patch=body.metadata)
    )


@router.delete(
    "/{model_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a fitted model, here and in your TabPFN account",
    responses={404: {"model": ErrorOut, "description": "model_not_found"}},
)
def delete_model(model_id: uuid.UUID, user: Caller) -> Response:
    """Predictions with it answer `model_not_found` afterwards. The header
    `Upstream-Deleted: false` says TabPFN could not be reached to delete its copy."""
    # No SessionDep: the service holds a connection only while it deletes the row,
    # not while TabPFN deletes its copy.
    upstream_deleted = jobs.delete_model(user=user, model_id=model_id)
    return Response(
        status_code=status.HTTP_204_NO_CONTENT,
        headers={"Upstream-Deleted": str(upstream_deleted).lower()},
    )
