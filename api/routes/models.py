"""`/v1/models`: the model names this deployment serves, aliases included."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import CurrentKey, StateDep
from api.schemas import ModelPublic, ModelsPublic

router = APIRouter(prefix="/v1/models", tags=["models"])


@router.get("", response_model=ModelsPublic)
def list_models(state: StateDep, _: CurrentKey) -> ModelsPublic:
    return ModelsPublic(
        data=[
            ModelPublic(id=m.id, owned_by=m.owned_by, mode=m.mode) for m in state.registry.models()
        ]
    )
