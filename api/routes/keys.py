"""`/v1/keys` (admin): create, list and revoke API keys."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import AdminKey, SessionDep, StateDep
from api.errors import ApiError
from api.schemas import KeyCreate, KeyCreated, KeyDeleted, KeysPublic, key_public
from storage import queries

router = APIRouter(prefix="/v1/keys", tags=["keys"])


@router.post("", response_model=KeyCreated)
def create_key(body: KeyCreate, state: StateDep, session: SessionDep, _: AdminKey) -> KeyCreated:
    unknown = state.guardrails.unknown_names(body.guardrails or [])
    if unknown:
        raise ApiError(
            400,
            "invalid_request",
            f"No guardrail named {', '.join(map(repr, unknown))} in the config.",
            param="guardrails",
        )
    row, plaintext = queries.create_api_key(
        session,
        name=body.name,
        team=body.team,
        budget_usd=body.budget_usd,
        rpm_limit=body.rpm_limit,
        is_admin=body.is_admin,
        guardrails=body.guardrails,
    )
    session.commit()
    # The only response that ever carries the key and its webhook secret.
    return KeyCreated(
        **key_public(row).model_dump(), key=plaintext, webhook_secret=row.webhook_secret
    )


@router.get("", response_model=KeysPublic)
def list_keys(session: SessionDep, _: AdminKey) -> KeysPublic:
    return KeysPublic(data=[key_public(row) for row in queries.list_api_keys(session)])


@router.delete("/{key_id}", response_model=KeyDeleted)
def revoke_key(key_id: str, session: SessionDep, _: AdminKey) -> KeyDeleted:
    row = queries.revoke_api_key(session, key_id=key_id)
    if row is None:
        raise ApiError(404, "not_found", f"No key with id '{key_id}'.", param="id")
    session.commit()
    return KeyDeleted(id=key_id)
