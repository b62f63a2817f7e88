"""API key material: generation, hashing and the lookup prefix. Keys are never stored."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

__all__ = [
    "KEY_PREFIX",
    "generate_api_key",
    "key_lookup_prefix",
    "hash_api_key",
    "verify_api_key",
    "generate_webhook_secret",
]

KEY_PREFIX = "sq-"
_LOOKUP_CHARS = 12


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
