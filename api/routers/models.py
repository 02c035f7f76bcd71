"""Fitted models of the caller."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Response, status

from api.deps import Caller, CurrentUser, SessionDep
from api.schemas import ErrorOut, ModelOut
from shared.jobs import submit as jobs
from shared.models import FittedModel

router = APIRouter(prefix="/models", tags=["models"])


def model_out(model: FittedModel) -> ModelOut:
    return ModelOut.model_validate(model, from_attributes=True)


@router.get("", summary="List your fitted models")
def list_models(session: SessionDep, user: CurrentUser) -> list[ModelOut]:
    return [model_out(m) for m in jobs.list_models(session=session, user=user)]


@router.get(
    "/{model_id}",
    summary="A fitted model",
    responses={404: {"model": ErrorOut, "description": "model_not_found"}},
)
def get_model(model_id: uuid.UUID, session: SessionDep, user: CurrentUser) -> ModelOut:
    return model_out(jobs.get_model(session=session, user=user, model_id=model_id))


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
