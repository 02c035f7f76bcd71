"""Fitted models of the caller."""

from __future__ import annotations

import uuid

from fastapi import APIRouter

from api.deps import CurrentUser, SessionDep
from api.schemas import ErrorOut, ModelOut
from shared import jobs
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
