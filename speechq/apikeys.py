"""API keys: the rules a new key must meet (`NewKey`, shared by `POST /v1/keys` and
`speechq keys create`), and key material: generation, hashing and the lookup prefix.
Keys are never stored."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from typing import Annotated

from pydantic import ConfigDict, Field, StringConstraints

from speechq.text_checks import CheckedModel

__all__ = [
    "KEY_PREFIX",
    "NewKey",
    "generate_api_key",
    "key_lookup_prefix",
    "hash_api_key",
    "verify_api_key",
    "generate_webhook_secret",
]

KEY_PREFIX = "sq-"
_LOOKUP_CHARS = 12


class NewKey(CheckedModel):
    """What a new key may be given; the API's `KeyCreate` and the CLI both validate here
    (text no database can store included: `CheckedModel`)."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, max_length=200)
    # Teams name a storage prefix, so keep them to safe characters.
    team: str | None = Field(
        default=None, min_length=1, max_length=100, pattern=r"^[A-Za-z0-9._-]+$"
    )
    budget_usd: float | None = Field(default=None, ge=0, le=1_000_000_000)
    rpm_limit: int | None = Field(default=None, ge=1, le=1_000_000)
    is_admin: bool = False
    # Config guardrails (by name) this key opts into, beyond those on by default.
    guardrails: list[Annotated[str, StringConstraints(max_length=200)]] | None = Field(
        default=None, max_length=50
    )


def generate_api_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def key_lookup_prefix(key: str) -> str:
    return key[: len(KEY_PREFIX) + _LOOKUP_CHARS]


def hash_api_key(key: str) -> str:
    # Keys carry 256 random bits, so one SHA-256 is enough (no password stretching needed).
    return hashlib.sha256(key.encode()).hexdigest()


def verify_api_key(key: str, key_hash: str) -> bool:
    return hmac.compare_digest(hash_api_key(key), key_hash)


def generate_webhook_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
