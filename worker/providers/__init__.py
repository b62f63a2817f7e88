"""The provider registry: config prefix (`openai/…`) -> provider class."""

from __future__ import annotations

import threading

from worker.providers.base import Deployment, SpeechProvider
from worker.providers.local import LocalProvider
from worker.providers.openai import OpenAIProvider

__all__ = ["PROVIDERS", "get_provider", "close_providers"]

PROVIDERS: dict[str, type[SpeechProvider]] = {
    "local": LocalProvider,
    "openai": OpenAIProvider,
}

_instances: dict[str, SpeechProvider] = {}
_lock = threading.Lock()


def get_provider(deployment: Deployment) -> SpeechProvider:
    """One instance per deployment per process: HTTP pools and local engines are reused."""
    cls = PROVIDERS.get(deployment.provider)
    if cls is None:
        known = ", ".join(sorted(PROVIDERS))
        raise KeyError(f"unknown provider {deployment.provider!r} (known: {known})")
    with _lock:
        provider = _instances.get(deployment.id)
        if provider is None:
            provider = _instances[deployment.id] = cls(deployment)
        return provider


def close_providers() -> None:
    with _lock:
        for provider in _instances.values():
            provider.close()
        _instances.clear()
